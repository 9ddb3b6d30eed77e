//! Setting a migration up: planning it (`plan`, shared with `migrate.plan()`),
//! and `start`: an instant plan carried out at once; a two-phase or
//! concurrent plan recorded statement by statement with its undo; a rewrite
//! given its capture log and trigger, its shadow and its copy recipe.
//!
//! Invariant: everything here runs in the caller's transaction, so a
//! `start()` that fails leaves nothing behind. Launching the worker is the
//! caller's (the `api` layer's) last step.

use crate::catalog::{self, probe};
use crate::engine::{capture, locks, shadow, state, views};
use crate::error::{MigrateError, Result};
use crate::gucs;
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::model::{Stage, Step, Strategy, Subcommand, TableFacts};
use crate::plan::{build_plan, parse, Oracle};

pub struct Options {
    pub batch_rows: i32,
    pub lock_timeout_ms: i32,
    pub auto_finish: bool,
    pub background: bool,
    /// The swap waits for older snapshots (halo_migrate.snapshot_safe_swap).
    pub snapshot_safe: bool,
    /// Verify the shadow before the swap (halo_migrate.verify); a rewrite only.
    pub verify: bool,
    /// Keep the old storage at the swap, revertible for this many seconds
    /// (halo_migrate.revertible, halo_migrate.revert_window); a rewrite only.
    pub revert_window_s: Option<i32>,
    /// `down` expressions for revert() (jsonb text: column => expression).
    pub down: Option<String>,
    /// Workers rewriting a partitioned table's partitions at once
    /// (halo_migrate.jobs); a tree's rewrite only.
    pub jobs: i32,
}

/// A plan with what it was made from.
pub struct Planned {
    pub facts: TableFacts,
    pub cmds: Vec<Subcommand>,
    pub steps: Vec<Step>,
}

/// Parse, read the catalogs, probe, decide: what `plan()` shows and
/// `start()` carries out.
pub fn plan(oid: pgrx::pg_sys::Oid, alter: &str, revertible: bool) -> Result<Planned> {
    let facts = catalog::load_table(oid)?;
    let cmds = parse::parse_alter(alter)?;
    // PostgreSQL checks this before it looks at the subcommands' columns:
    // checked here before the probe (whose clone lives where anyone may
    // create), so that the first error is PostgreSQL's.
    crate::plan::check_privileges(&facts, &cmds)?;
    let dropped: Vec<String> = cmds
        .iter()
        .filter_map(|c| match &c.kind {
            // With CASCADE, PostgreSQL drops the views and policies too
            // (and a rewrite refuses it: recreated views would be lost).
            crate::plan::model::CmdKind::DropColumn {
                column,
                cascade: false,
            } => Some(column.clone()),
            _ => None,
        })
        .collect();
    let typed: Vec<String> = cmds
        .iter()
        .filter_map(|c| match &c.kind {
            crate::plan::model::CmdKind::AlterColumnType { column, .. } => Some(column.clone()),
            _ => None,
        })
        .collect();
    let guarded = crate::engine::views::users_of_dropped(oid, &dropped)?;
    let probes = probe::probe(&facts, &cmds, &guarded, gucs::lock_timeout_ms())?;
    // After the probe, as PostgreSQL checks the rules only once the
    // subcommands themselves are found valid.
    crate::engine::views::refuse_rules(oid, &typed)?;
    crate::engine::views::refuse_dropped(oid, &guarded)?;
    let constraint_taken = |n: &str| catalog::constraint_name_taken(facts.namespace, n);
    let relation_taken = |n: &str| catalog::relation_name_taken(facts.namespace, n);
    let oracle = Oracle {
        constraint_taken: &constraint_taken,
        relation_taken: &relation_taken,
        relation_taken_in: &catalog::relation_name_taken,
        constraint_taken_in: &catalog::constraint_name_taken,
        lock_of: &parse::lock_of_statement,
    };
    let kept_bytes = if revertible {
        Some(spi::one(
            "SELECT pg_catalog.pg_total_relation_size($1)",
            &[oid.into()],
            |r| get::<i64>(r, 1),
        )?)
    } else {
        None
    };
    let steps = build_plan(&facts, &cmds, &probes, &oracle, kept_bytes)?;
    Ok(Planned { facts, cmds, steps })
}

/// Refuse a migration of a table that has one live, in its tree or in a
/// revert window. Two start()s in one partition tree wait for each other.
pub fn refuse_busy(facts: &TableFacts, table: &QualifiedName) -> Result<()> {
    if let Some(live) = state::latest_for_table(pgrx::pg_sys::Oid::from(facts.oid))? {
        if !live.phase.is_terminal() {
            return Err(MigrateError::Busy {
                table: table.to_string(),
                id: live.id,
                phase: live.phase.as_str(),
            });
        }
    }
    // Two start()s in one tree (the parent and a partition) wait for each
    // other here, so that the second sees the first's migration.
    locks::lock_partition_root(pgrx::pg_sys::Oid::from(facts.oid))?;
    if let Some((id, other, phase)) = state::live_in_tree(pgrx::pg_sys::Oid::from(facts.oid))? {
        return Err(MigrateError::TreeBusy {
            table: table.to_string(),
            other,
            id,
            phase,
        });
    }
    if let Some(live) = crate::engine::revert::open_window_of(pgrx::pg_sys::Oid::from(facts.oid))? {
        return Err(MigrateError::RevertWindowOpen {
            table: table.to_string(),
            id: live,
        });
    }
    Ok(())
}

/// Set up the migration `planned` describes, in the caller's transaction:
/// an instant plan is carried out at once; a plan of statements or a
/// rewrite is recorded (a rewrite also gets its capture and shadow) for a
/// worker, or `step()`, to carry out. The migration's id, and whether it
/// wants a worker.
pub fn start(planned: &Planned, alter: &str, opts: &Options) -> Result<(i64, bool)> {
    let table = QualifiedName::new(&planned.facts.schema, &planned.facts.name);
    refuse_busy(&planned.facts, &table)?;
    let has = |k: Strategy| planned.steps.iter().any(|s| s.strategy == k);
    if opts.verify && !has(Strategy::Rewrite) {
        pgrx::notice!(
            "halo_migrate: nothing to verify: the ALTER does not copy {table}, PostgreSQL changes it in place"
        );
    }
    if opts.revert_window_s.is_some() && !has(Strategy::Rewrite) {
        return Err(MigrateError::not_supported(
            "revertible => true for an ALTER that does not copy the table",
            format!("PostgreSQL changes {table} in place for this ALTER, so there is no old storage to keep."),
            "Take it back with the opposite ALTER (run through migrate.start() too), or start it without revertible.",
        ));
    }
    if has(Strategy::Rewrite) && planned.facts.leaves.is_some() {
        Ok((
            crate::engine::tree::setup::start(planned, &table, alter, opts)?,
            opts.background,
        ))
    } else if has(Strategy::Rewrite) {
        Ok((
            start_rewrite(planned, &table, alter, opts)?,
            opts.background,
        ))
    } else if has(Strategy::Concurrent) || has(Strategy::TwoPhase) {
        Ok((
            start_statements(planned, &table, alter, opts)?,
            opts.background,
        ))
    } else {
        Ok((run_direct(planned, &table, alter, opts)?, false))
    }
}

/// Instant plans: the ALTER as one statement, under a bounded lock wait,
/// retried with back-off, in the caller's transaction.
fn run_direct(
    planned: &Planned,
    table: &QualifiedName,
    alter: &str,
    opts: &Options,
) -> Result<i64> {
    // An instant type change under views: PostgreSQL would refuse it, so the
    // views (if any) come off and go back on within the same bounded attempt.
    let saved = views::save(
        pgrx::pg_sys::Oid::from(planned.facts.oid),
        &changed_columns(planned).0,
    )?;
    // One ALTER TABLE with all the subcommands, as the user wrote it:
    // PostgreSQL orders them by its own passes (a type change before a
    // default), which one statement per subcommand would not.
    let texts: Vec<&str> = planned.cmds.iter().map(|c| c.text.as_str()).collect();
    let sql = crate::plan::sqlgen::alter(table, &texts.join(", "));
    let tree = match planned.facts.leaves {
        Some(_) => Some(locks::TreeLock::of(&sql, &planned.cmds)?),
        None => None,
    };
    let relid = pgrx::pg_sys::Oid::from(planned.facts.oid);
    locks::retry("run the ALTER", opts.lock_timeout_ms, 50, || {
        if let Some(modes) = tree {
            locks::lock_tree(relid, modes, opts.lock_timeout_ms)?;
        }
        views::drop_saved(table, &saved)?;
        spi::exec(&sql, &[])?;
        views::recreate(table, &saved)
    })?;
    insert(
        planned,
        table,
        alter,
        Strategy::Instant,
        state::Phase::Done,
        opts,
    )
}

/// A concurrent or two-phase plan runs statement by statement, each in a
/// transaction of its own (concurrent.rs): a validation must not run in the
/// transaction whose `ADD … NOT VALID` took ACCESS EXCLUSIVE, and no
/// function can run CREATE INDEX CONCURRENTLY. The worker runs them (or
/// `step()`, one per call, for a two-phase plan without a worker).
fn start_statements(
    planned: &Planned,
    table: &QualifiedName,
    alter: &str,
    opts: &Options,
) -> Result<i64> {
    use crate::plan::model::Undo;
    if let Some(s) = planned.steps.iter().find(|s| s.undo == Undo::Irreversible) {
        return Err(MigrateError::not_supported(
            "combining this subcommand with a validated constraint or an index build",
            format!(
                "\"{}\" runs at once, while the rest of the ALTER is validated or built over several \
                 transactions: if that failed, the first could not be taken back, and the table \
                 would be left half-altered.",
                s.subcommand.as_deref().unwrap_or(&s.sql)
            ),
            "Run it as a migration of its own, before or after the others.",
        ));
    }
    let concurrent = planned
        .steps
        .iter()
        .any(|s| s.strategy == Strategy::Concurrent);
    if concurrent && !opts.background {
        return Err(MigrateError::not_supported(
            "background => false for an index built CONCURRENTLY",
            "CREATE INDEX CONCURRENTLY cannot run inside a function, so neither migrate.step() nor migrate.finish() can build it; only the background worker can.".to_string(),
            "Start it with background => true (the default).",
        ));
    }
    let statements: Vec<String> = planned.steps.iter().map(|s| s.sql.clone()).collect();
    let indexes: Vec<String> = planned
        .steps
        .iter()
        .filter_map(|s| match &s.stage {
            Stage::BuildIndex(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    let undo: Vec<String> = planned
        .steps
        .iter()
        .map(|s| match &s.undo {
            Undo::Sql(sql) => sql.clone(),
            _ => String::new(),
        })
        .collect();
    let not_null_of: Vec<String> = planned
        .steps
        .iter()
        .map(|s| match &s.stage {
            Stage::ValidateNotNull(column) => column.clone(),
            _ => String::new(),
        })
        .collect();
    let (strategy, phase) = if concurrent {
        (Strategy::Concurrent, state::Phase::Indexing)
    } else {
        (Strategy::TwoPhase, state::Phase::Validating)
    };
    let id = insert(planned, table, alter, strategy, phase, opts)?;
    state::set_statements(id, statements, indexes, undo, not_null_of)?;
    Ok(id)
}

pub(crate) fn insert(
    planned: &Planned,
    table: &QualifiedName,
    alter: &str,
    strategy: Strategy,
    phase: state::Phase,
    o: &Options,
) -> Result<i64> {
    state::create(state::New {
        relid: pgrx::pg_sys::Oid::from(planned.facts.oid),
        table_name: table.to_string(),
        alter_sql: alter.to_string(),
        strategy,
        phase,
        batch_rows: o.batch_rows,
        lock_timeout_ms: o.lock_timeout_ms,
        auto_finish: o.auto_finish,
        background: o.background,
        snapshot_safe: o.snapshot_safe,
        // Only a rewrite has a copy to verify.
        verify: o.verify && strategy == Strategy::Rewrite,
        revert_window_s: o.revert_window_s.filter(|_| strategy == Strategy::Rewrite),
        down: o.down.clone().filter(|_| strategy == Strategy::Rewrite),
    })
}

/// A rewrite: capture, shadow, then the worker (or `step()`) does the rest.
fn start_rewrite(
    planned: &Planned,
    table: &QualifiedName,
    alter: &str,
    opts: &Options,
) -> Result<i64> {
    let facts = &planned.facts;
    let oid = pgrx::pg_sys::Oid::from(facts.oid);
    let mut shadow_cmds = Vec::new();
    let (mut at_swap, mut after_swap) = (Vec::new(), Vec::new());
    for s in &planned.steps {
        match &s.stage {
            Stage::Shadow(text) => shadow_cmds.push(text.clone()),
            Stage::AtSwap => at_swap.push(s.sql.clone()),
            Stage::AfterSwap => after_swap.push(s.sql.clone()),
            _ => {}
        }
    }
    refuse_view_dependencies(planned, oid)?;
    let id = insert(
        planned,
        table,
        alter,
        Strategy::Rewrite,
        state::Phase::Copying,
        opts,
    )?;
    let recipe = shadow::create(facts, &planned.cmds, &shadow_cmds)?;
    if opts.verify {
        let shadow = crate::plan::sqlgen::shadow_table(facts.oid).to_string();
        let key_using = planned.cmds.iter().find_map(|c| match &c.kind {
            crate::plan::model::CmdKind::AlterColumnType {
                column,
                using: Some(_),
                ..
            } if recipe.key_columns.contains(column) => Some(column.clone()),
            _ => None,
        });
        crate::engine::verify::check_supported(
            oid,
            catalog::relation_oid(&shadow)?,
            &recipe.key_columns,
            key_using.as_deref(),
        )?;
    }
    if opts.revert_window_s.is_some() {
        crate::engine::revert::check_revertible(oid, &planned.cmds, &recipe, opts.down.as_deref())?;
    }
    capture::create_log(
        facts.oid,
        table,
        &recipe.log_columns,
        &recipe.key_columns,
        capture::Guard::Migration,
    )?;
    locks::retry(
        "install the capture trigger",
        opts.lock_timeout_ms,
        50,
        || {
            let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
            for sql in capture::trigger_sql(facts.oid, table) {
                spi::exec(&sql, &[])?;
            }
            Ok(())
        },
    )?;
    // Under the trigger's lock no write is in flight: every row that exists
    // now lies within these blocks, and every later change is logged.
    let (relfilenode, blocks, rows) = spi::one(
        "SELECT c.relfilenode,
                pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint,
                c.reltuples::bigint
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| Ok((get::<pgrx::pg_sys::Oid>(r, 1)?, get::<i64>(r, 2)?, get::<i64>(r, 3)?)),
    )?;
    let rows = if rows >= 0 {
        rows
    } else {
        spi::with_all_rows(|| {
            spi::one(&format!("SELECT count(*) FROM ONLY {table}"), &[], |r| {
                get::<i64>(r, 1)
            })
        })?
    };
    state::set_rewrite_recipe(
        id,
        state::RewriteRecipe {
            relfilenode,
            copy_end: blocks,
            rows_total: rows,
            shadow_sql: shadow_cmds,
            swap_sql: at_swap,
            post_swap_sql: after_swap,
            recipe,
        },
    )?;
    Ok(id)
}

/// Columns the plan changes the type of, and columns it drops.
pub(crate) fn changed_columns(planned: &Planned) -> (Vec<String>, Vec<String>) {
    use crate::plan::model::CmdKind;
    let (mut typed, mut dropped) = (Vec::new(), Vec::new());
    for c in &planned.cmds {
        match &c.kind {
            CmdKind::AlterColumnType { column, .. } => typed.push(column.clone()),
            CmdKind::DropColumn { column, .. } => dropped.push(column.clone()),
            _ => {}
        }
    }
    (typed, dropped)
}

/// Views and policies on columns whose type changes are recreated at the
/// swap if they can be exactly (those on dropped columns were refused by
/// the planner, as PostgreSQL refuses them).
fn refuse_view_dependencies(planned: &Planned, oid: pgrx::pg_sys::Oid) -> Result<()> {
    views::check(oid, &changed_columns(planned).0)
}
