//! `migrate.start(...)`: validate through the planner, then either carry the
//! plan out at once (instant, two-phase) or set up an online rewrite
//! (capture, shadow) and hand it to a background worker.

use super::plan::{plan_steps, Planned};
use super::{or_report, required, Regclass};
use crate::error::{MigrateError, Result};
use crate::ident::QualifiedName;
use crate::plan::model::{Stage, Strategy};
use crate::spi::{self, get};
use crate::{capture, gucs, locks, shadow, state, views, worker};
use pgrx::datetime::Interval;
use pgrx::prelude::*;

/// Start an online migration; returns its id at once.
#[pg_extern(volatile, parallel_unsafe)]
fn start(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    batch_rows: default!(Option<i32>, "NULL"),
    lock_timeout: default!(Option<Interval>, "'100ms'"),
    auto_finish: default!(Option<bool>, "false"),
    background: default!(Option<bool>, "true"),
    snapshot_safe: default!(Option<bool>, "NULL"),
) -> i64 {
    let opts = Requested {
        batch_rows,
        lock_timeout,
        auto_finish,
        background,
        snapshot_safe,
    };
    or_report(start_migration(tbl, alter, opts))
}

/// start()'s options as given (NULL where the caller left them out).
struct Requested {
    batch_rows: Option<i32>,
    lock_timeout: Option<Interval>,
    auto_finish: Option<bool>,
    background: Option<bool>,
    snapshot_safe: Option<bool>,
}

pub(crate) struct Options {
    pub batch_rows: i32,
    pub lock_timeout_ms: i32,
    pub auto_finish: bool,
    pub background: bool,
    /// The swap waits for older snapshots (halo_migrate.snapshot_safe_swap).
    pub snapshot_safe: bool,
}

/// Milliseconds of a positive interval of at most a minute.
pub(crate) fn lock_timeout_ms(i: Interval) -> Result<i32> {
    let us = i.as_micros();
    if i.months() != 0 || i.days() != 0 || !(1_000..=60_000_000).contains(&us) {
        return Err(MigrateError::InvalidParameter {
            name: "lock_timeout",
            detail: format!("It is {} ms.", us / 1000),
            hint: "Give a lock timeout between 1 ms and 1 minute, e.g. '100ms'.".into(),
        });
    }
    Ok((us / 1000) as i32)
}

fn start_migration(tbl: Option<Regclass>, alter: Option<&str>, req: Requested) -> Result<i64> {
    let opts = Options {
        batch_rows: match req.batch_rows {
            None => gucs::batch_rows(),
            Some(n) if n > 0 => n,
            Some(n) => {
                return Err(MigrateError::InvalidParameter {
                    name: "batch_rows",
                    detail: format!("It is {n}."),
                    hint: "Give a positive number of rows, or NULL for halo_migrate.batch_rows."
                        .into(),
                })
            }
        },
        lock_timeout_ms: lock_timeout_ms(required(req.lock_timeout, "lock_timeout")?)?,
        auto_finish: required(req.auto_finish, "auto_finish")?,
        background: required(req.background, "background")?,
        snapshot_safe: req.snapshot_safe.unwrap_or_else(gucs::snapshot_safe_swap),
    };
    let alter_text = required(alter, "alter")?;
    let planned = plan_steps(tbl, alter)?;
    let table = QualifiedName::new(&planned.facts.schema, &planned.facts.name);
    if let Some(live) = state::latest_for_table(pgrx::pg_sys::Oid::from(planned.facts.oid))? {
        if !live.phase.is_terminal() {
            return Err(MigrateError::Busy {
                table: table.to_string(),
                id: live.id,
                phase: live.phase.as_str(),
            });
        }
    }
    let has = |k: Strategy| planned.steps.iter().any(|s| s.strategy == k);
    if has(Strategy::Rewrite) {
        start_rewrite(&planned, &table, alter_text, &opts)
    } else if has(Strategy::Concurrent) || has(Strategy::TwoPhase) {
        start_statements(&planned, &table, alter_text, &opts)
    } else {
        run_direct(&planned, &table, alter_text, &opts)
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
    locks::retry("run the ALTER", opts.lock_timeout_ms, 50, || {
        views::drop_saved(table, &saved)?;
        spi::exec(&sql, &[])?;
        views::recreate(table, &saved)
    })?;
    insert(planned, table, alter, "instant", "done", opts)
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
        ("concurrent", "indexing")
    } else {
        ("two-phase", "validating")
    };
    let id = insert(planned, table, alter, strategy, phase, opts)?;
    state::update(
        id,
        "index_sql = $2, concurrent_indexes = $3, undo_sql = $4, not_null_of = $5",
        vec![
            statements.into(),
            indexes.into(),
            undo.into(),
            not_null_of.into(),
        ],
    )?;
    if opts.background {
        launch_worker(id)?;
    }
    Ok(id)
}

/// Hand migration `id` to a background worker, which starts once this
/// transaction commits.
fn launch_worker(id: i64) -> Result<()> {
    // SAFETY: reading the current user's OID.
    let role = unsafe { pgrx::pg_sys::GetUserId() };
    worker::launch_after_commit(id, role)
}

fn insert(
    planned: &Planned,
    table: &QualifiedName,
    alter: &str,
    strategy: &str,
    phase: &str,
    o: &Options,
) -> Result<i64> {
    let path =
        spi::text("SELECT pg_catalog.current_setting('search_path')", &[])?.unwrap_or_default();
    let finished = if phase == "done" {
        "pg_catalog.clock_timestamp()"
    } else {
        "NULL"
    };
    Ok(spi::query(
        &format!(
            "INSERT INTO migrate.migrations (relid, table_name, alter_sql, strategy, phase, batch_rows,
                 lock_timeout_ms, auto_finish, background, search_path, finished_at,
                 batch_pause_ms, target_batch_ms, max_replica_lag_ms, snapshot_safe)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {finished}, $11,
                     NULLIF($12, 0), NULLIF($13, 0), $14) RETURNING id"
        ),
        &[
            pgrx::pg_sys::Oid::from(planned.facts.oid).into(),
            table.to_string().into(),
            alter.into(),
            strategy.into(),
            phase.into(),
            o.batch_rows.into(),
            o.lock_timeout_ms.into(),
            o.auto_finish.into(),
            o.background.into(),
            path.into(),
            gucs::batch_pause_ms().into(),
            gucs::target_batch_ms().into(),
            gucs::max_replica_lag_ms().into(),
            o.snapshot_safe.into(),
        ],
        |r| get::<i64>(r, 1),
    )?[0])
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
    let id = insert(planned, table, alter, "rewrite", "copying", opts)?;
    let recipe = shadow::create(facts, &planned.cmds, &shadow_cmds)?;
    capture::create_log(facts.oid, table, &recipe.log_columns, &recipe.key_columns)?;
    locks::retry(
        "install the capture trigger",
        opts.lock_timeout_ms,
        50,
        || {
            let _pass = crate::ddl_pass::Pass::for_this_transaction();
            for sql in capture::trigger_sql(facts.oid, table) {
                spi::exec(&sql, &[])?;
            }
            Ok(())
        },
    )?;
    // Under the trigger's lock no write is in flight: every row that exists
    // now lies within these blocks, and every later change is logged.
    let (relfilenode, blocks, rows) = spi::query(
        "SELECT c.relfilenode,
                pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint,
                c.reltuples::bigint
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| Ok((get::<pgrx::pg_sys::Oid>(r, 1)?, get::<i64>(r, 2)?, get::<i64>(r, 3)?)),
    )?[0];
    let rows = if rows >= 0 {
        rows
    } else {
        spi::with_all_rows(|| {
            spi::query(&format!("SELECT count(*) FROM ONLY {table}"), &[], |r| {
                get::<i64>(r, 1)
            })
        })?[0]
    };
    state::update(
        id,
        "relfilenode = $2, copy_end = $3, rows_total = $4, shadow_sql = $5, swap_sql = $6, post_swap_sql = $7,
         index_sql = $8, altered_columns = $9, added_columns = $10, copy_targets = $11, copy_exprs = $12,
         log_as_orig = $13, key_map = $14, shadow_match = $15, orig_match = $16",
        vec![
            relfilenode.into(),
            blocks.into(),
            rows.into(),
            shadow_cmds.into(),
            at_swap.into(),
            after_swap.into(),
            recipe.index_sql.into(),
            recipe.altered_columns.into(),
            recipe.added_columns.into(),
            recipe.copy_targets.into(),
            recipe.copy_exprs.into(),
            recipe.log_as_orig.into(),
            recipe.key_map.into(),
            recipe.shadow_match.into(),
            recipe.orig_match.into(),
        ],
    )?;
    if opts.background {
        launch_worker(id)?;
    }
    Ok(id)
}

/// Columns the plan changes the type of, and columns it drops.
fn changed_columns(planned: &Planned) -> (Vec<String>, Vec<String>) {
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
