//! Versioned (expand/contract) migrations: old and new application
//! versions served at once.
//!
//! `start(…, version => 'v2')` *expands*, in its own transaction under the
//! lock timeout: what the new shape needs is added to the table (a column,
//! a NOT VALID check), a trigger keeps the two shapes in step (`up` for old
//! clients' writes, `down` for new ones'), and the schema `<schema>_v2`
//! gets a view of the table in its new shape. New clients put that schema
//! first on their `search_path`; every other name is found in the base
//! schema. A worker then backfills existing rows and validates the checks
//! (`backfill.rs`); the migration is then *expanded* (phase `ready`) and
//! needs no worker. `finish()` *contracts* (`contract.rs`): the table takes
//! the new shape in one lock-bounded transaction of catalog-only
//! statements. `abort()` or a failure takes the expand phase back.
//!
//! Invariants: nothing an old client reads changes before the contract,
//! except a column the expand phase adds; every view of a version schema
//! is `security_invoker`, so readers' own privileges and row security
//! apply; a version schema carries halo_migrate's mark, and only a marked
//! schema is ever dropped; statements run after start() name the table as
//! it is named then.

pub mod backfill;
pub mod contract;
mod refuse;

use crate::catalog::{self, versioned as cat};
use crate::engine::locks;
use crate::engine::setup::{self, Options};
use crate::engine::state::{self, versioned as vstate, Phase};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi;
use crate::plan::model::Strategy;
use crate::plan::parse_versioned::versioned_cmds;
use crate::plan::sqlgen;
use crate::plan::versioned::{self as vplan, Input, VersionPlan};
use pgrx::pg_sys::Oid;

/// The lock the expand phase, the contract and the rollback take on every
/// member of the table's tree, all within one lock timeout.
pub(crate) const ACCESS_EXCLUSIVE: locks::TreeLock = locks::TreeLock {
    parent: crate::plan::model::LockMode::AccessExclusive,
    partitions: crate::plan::model::LockMode::AccessExclusive,
};

/// Lock the table in ACCESS EXCLUSIVE: a partitioned table's whole tree
/// within one lock timeout; an ordinary table under the lock timeout in
/// force (the caller's attempt sets it).
pub(crate) fn lock_table(oid: Oid, table: &QualifiedName, lock_timeout_ms: i32) -> Result<()> {
    if catalog::is_partitioned(oid)? {
        locks::lock_tree(oid, ACCESS_EXCLUSIVE, lock_timeout_ms)
    } else {
        spi::exec(
            &format!("LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE"),
            &[],
        )
    }
}

/// `start()`'s versioned options.
pub struct Request {
    pub version: String,
    /// jsonb text of `up` and `down`, as given.
    pub up: Option<String>,
    pub down: Option<String>,
}

/// The trigger that fills columns, and its function.
pub fn fill_trigger(oid: Oid) -> Ident {
    Ident::new(format!("halo_version_{}", oid.to_u32()))
}
pub fn fill_function(oid: Oid) -> QualifiedName {
    QualifiedName::new("migrate", format!("version_{}", oid.to_u32()))
}

/// A versioned migration decided and checked, nothing changed yet.
struct Prepared {
    table: QualifiedName,
    plan: VersionPlan,
    schema: String,
    /// The version schema exists already (another migration's version).
    shared: bool,
}

/// Check everything `start()` checks and decide the plan.
fn prepare(oid: Oid, alter: &str, req: &Request, dry_run: bool) -> Result<Prepared> {
    let facts = &catalog::load_table(oid)?;
    let table = QualifiedName::new(&facts.schema, &facts.name);
    crate::plan::check_privileges(facts, &crate::plan::parse::parse_alter(alter)?)?;
    refuse::table_kind(facts, &table)?;
    if dry_run {
        // As start() would refuse, without start()'s lock on the tree.
        if let Some(live) = state::latest_for_table(oid)?.filter(|m| !m.phase.is_terminal()) {
            return Err(MigrateError::Busy {
                table: table.to_string(),
                id: live.id,
                phase: live.phase.as_str(),
            });
        }
    } else {
        setup::refuse_busy(facts, &table)?;
    }
    let up = refuse::expressions(req.up.as_deref(), "up")?;
    let down = refuse::expressions(req.down.as_deref(), "down")?;
    let columns = cat::columns(oid)?;
    let constraint_name = |col: Option<&str>, label: &str| {
        sqlgen::choose_name(&facts.name, col, label, &|n: &str| {
            catalog::constraint_name_taken(facts.namespace, n)
        })
    };
    let cmds = versioned_cmds(alter)?;
    refuse::dropped_in_use(oid, &cmds)?;
    refuse::type_change_dependents(oid, &cmds)?;
    refuse::partition_key(facts, &cmds)?;
    refuse::foreign_key_on_tree(facts, &cmds)?;
    let plan = vplan::build(&Input {
        table: &table,
        columns: &columns,
        cmds: &cmds,
        up: &up,
        down: &down,
        constraint_name: &constraint_name,
        new_column_name: &|col: &str| new_column_name(&req.version, col),
    })?;
    refuse::trigger_targets(facts, &plan)?;
    // The backfill and the validations must see every row: under row
    // security they would miss hidden ones, and a type change's contract
    // would then drop the only copy of their values.
    if facts.row_security_applies && vplan::backfill_batch(&table, &plan).is_some() {
        return Err(MigrateError::RowSecurity {
            table: table.to_string(),
        });
    }
    for text in &plan.must_be_instant {
        let steps = setup::plan(oid, text, false)?.steps;
        if steps.iter().any(|s| s.strategy != Strategy::Instant) {
            return Err(MigrateError::not_supported(
                "a column added with a rewrite, a scan or an index in a versioned migration",
                format!("\"{text}\" is not a catalog-only change."),
                "Add the column with a constant default or none (give its values with up), \
                 and its constraints and indexes in a later migration.",
            ));
        }
    }
    let schema = refuse::version_schema(&facts.schema, &req.version)?;
    let shared = refuse::claim_schema(&schema)?;
    Ok(Prepared {
        table,
        plan,
        schema,
        shared,
    })
}

/// Expand: set the versioned migration up in the caller's transaction; its
/// id, and whether it wants a worker (a backfill or validations to run).
pub fn start(oid: Oid, alter: &str, opts: &Options, req: &Request) -> Result<(i64, bool)> {
    let Prepared {
        table,
        plan,
        schema,
        shared,
    } = prepare(oid, alter, req, false)?;
    let backfill = locks::retry("expand the table", opts.lock_timeout_ms, 50, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        expand(oid, &table, &plan, &schema, shared, opts.lock_timeout_ms)
    })?;
    record(oid, &table, alter, opts, req, &plan, &schema, backfill)
}

/// The dry run of a versioned migration (`migrate.plan_version()`): what
/// `start()` and `finish()` would do, phase by phase, as (phase, what).
/// Changes nothing.
pub fn describe(oid: Oid, alter: &str, req: &Request) -> Result<Vec<(&'static str, String)>> {
    let Prepared {
        table,
        mut plan,
        schema,
        shared,
    } = prepare(oid, alter, req, true)?;
    // The expressions over the old shape resolve now, as in start(); those
    // over the new shape need its view, which start() creates.
    let old_side = plan
        .fills
        .iter()
        .filter(|f| f.side == vplan::Side::Old)
        .map(|f| &f.expr)
        .chain(plan.syncs.iter().map(|s| &s.up))
        .chain(plan.checks.iter().map(|c| &c.up));
    for expr in old_side {
        spi::exec(&format!("SELECT ({expr}) FROM {table} LIMIT 0"), &[])?;
    }
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for sql in &plan.expand_sql {
        out.push(("expand", sql.clone()));
    }
    if !shared {
        out.push((
            "expand",
            format!(
                "CREATE SCHEMA {} (marked as halo_migrate's; USAGE to PUBLIC)",
                Ident::new(&schema)
            ),
        ));
    }
    out.push((
        "expand",
        format!(
            "{} (SELECT, INSERT, UPDATE, DELETE to PUBLIC; the reader's own rights on the table apply)",
            vplan::create_view(&schema, &plan.view_name, &table, &plan.view_columns)
        ),
    ));
    for s in &plan.syncs {
        out.push((
            "expand",
            format!(
                "trigger {}: keeps {} and {} in step: {} := {} (old clients), {} := {} (new clients)",
                fill_trigger(oid), s.old, s.new, s.new, s.up, s.old, s.down
            ),
        ));
    }
    for f in &plan.fills {
        let (who, shape) = match f.side {
            vplan::Side::Old => ("old clients' writes", "old"),
            vplan::Side::New => ("new clients' writes", "new"),
        };
        out.push((
            "expand",
            format!(
                "trigger {}: {} := {} when a write leaves it NULL ({who}; over the {shape} columns)",
                fill_trigger(oid), f.column, f.expr
            ),
        ));
    }
    for c in &mut plan.checks {
        out.push((
            "expand",
            format!(
                "trigger {}: {} := {} when a write breaks {}",
                fill_trigger(oid),
                c.column,
                c.up,
                c.constraint
            ),
        ));
        c.table_expr = format!("<the row breaks {}>", c.constraint);
    }
    if let Some(b) = vplan::backfill_batch(&table, &plan) {
        out.push((
            "backfill",
            format!("{b}, in batches of heap blocks ($1, $2), each its own transaction"),
        ));
    }
    for sql in &plan.validate_sql {
        out.push(("validate", sql.clone()));
    }
    out.push((
        "expanded",
        "both shapes served until finish() or abort()".into(),
    ));
    for sql in &plan.contract_sql {
        out.push(("contract", sql.clone()));
    }
    Ok(out)
}

/// The new column of a column whose type changes: `_halo_<version>_<col>`
/// (shortened to fit a name).
fn new_column_name(version: &str, column: &str) -> String {
    sqlgen::make_object_name(&format!("_halo_{version}"), Some(column), "")
}

/// The expand phase's changes, in one attempt under the lock timeout; the
/// backfill's statement, if rows need one.
fn expand(
    oid: Oid,
    table: &QualifiedName,
    plan: &VersionPlan,
    schema: &str,
    shared: bool,
    lock_timeout_ms: i32,
) -> Result<Option<String>> {
    let trigger = !plan.fills.is_empty() || !plan.syncs.is_empty() || !plan.checks.is_empty();
    if !plan.expand_sql.is_empty() || trigger {
        // Every member of a tree within one lock timeout (a plain table
        // is its own tree).
        lock_table(oid, table, lock_timeout_ms)?;
    }
    for sql in &plan.expand_sql {
        spi::exec(sql, &[])?;
    }
    // A mapped CHECK's expression as PostgreSQL reads it, now that it exists.
    let mut plan = plan.clone();
    for c in &mut plan.checks {
        (c.expr, c.table_expr) = cat::constraint_condition(oid, &c.constraint, &c.column, table)?;
    }
    let plan = &plan;
    if trigger {
        let base: Vec<(String, String)> = cat::columns(oid)?
            .into_iter()
            .map(|c| (c.name, c.type_sql))
            .collect();
        let function = fill_function(oid);
        spi::exec(
            &vplan::fill_function(&function, &base, &plan.view_columns, plan)?,
            &[],
        )?;
        spi::exec(
            &format!(
                "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()",
                fill_trigger(oid)
            ),
            &[],
        )?;
    }
    let s = Ident::new(schema);
    if !shared {
        spi::exec(&format!("CREATE SCHEMA {s}"), &[])?;
        spi::exec(
            &format!(
                "COMMENT ON SCHEMA {s} IS {}",
                sqlgen::literal(&format!("{} of {}", cat::VERSION_SCHEMA_MARK, table.schema))
            ),
            &[],
        )?;
        spi::exec(&format!("GRANT USAGE ON SCHEMA {s} TO PUBLIC"), &[])?;
    }
    for v in cat::views_reading(schema, oid)? {
        spi::exec(&format!("DROP VIEW {s}.{}", Ident::new(v)), &[])?;
    }
    create_view(schema, &plan.view_name, table, &plan.view_columns)?;
    // Each expression is resolved now against its shape, so that a typo
    // fails start(), not the first write or the backfill.
    let view = QualifiedName::new(schema, &plan.view_name);
    let exprs = plan
        .fills
        .iter()
        .map(|f| (f.side, &f.expr))
        .chain(
            plan.syncs
                .iter()
                .flat_map(|s| [(vplan::Side::Old, &s.up), (vplan::Side::New, &s.down)]),
        )
        .chain(plan.checks.iter().map(|c| (vplan::Side::Old, &c.up)));
    for (side, expr) in exprs {
        let from = if side == vplan::Side::Old {
            table
        } else {
            &view
        };
        spi::exec(&format!("SELECT ({expr}) FROM {from} LIMIT 0"), &[])?;
    }
    Ok(vplan::backfill_batch(table, plan))
}

/// A view in a version schema, writable by whoever may write the table.
pub(crate) fn create_view(
    schema: &str,
    name: &str,
    table: &QualifiedName,
    columns: &[(String, String)],
) -> Result<()> {
    spi::exec(&vplan::create_view(schema, name, table, columns), &[])?;
    spi::exec(
        &format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {}.{} TO PUBLIC",
            Ident::new(schema),
            Ident::new(name)
        ),
        &[],
    )
}

/// The table's columns as they are, for a view that shows it unchanged.
pub(crate) fn passthrough(oid: Oid) -> Result<Vec<(String, String)>> {
    Ok(cat::columns(oid)?
        .into_iter()
        .map(|c| (c.name.clone(), c.name))
        .collect())
}

/// Record the migration: expanded already, or backfilling/validating first.
fn record(
    oid: Oid,
    table: &QualifiedName,
    alter: &str,
    opts: &Options,
    req: &Request,
    plan: &VersionPlan,
    schema: &str,
    backfill: Option<String>,
) -> Result<(i64, bool)> {
    let phase = if backfill.is_some() {
        Phase::Copying
    } else if !plan.validate_sql.is_empty() {
        Phase::Indexing
    } else {
        Phase::Ready
    };
    let id = state::create(state::New {
        relid: oid,
        table_name: table.to_string(),
        alter_sql: alter.to_string(),
        strategy: Strategy::Versioned,
        phase,
        batch_rows: opts.batch_rows,
        lock_timeout_ms: opts.lock_timeout_ms,
        auto_finish: opts.auto_finish,
        background: opts.background,
        snapshot_safe: opts.snapshot_safe,
        verify: false,
        revert_window_s: None,
        down: req.down.clone(),
    })?;
    let extent = cat::extent(oid)?;
    let blocks = extent.blocks;
    let density = backfill::rows_per_block(oid, table)?;
    let backfill_blocks = if backfill.is_some() { blocks } else { 0 };
    // Kept without the table's name, which may change before they run.
    let subs = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| vplan::subcommand_of(table, s).to_string())
            .collect()
    };
    let v = vstate::Versioned {
        version: req.version.clone(),
        version_schema: schema.to_string(),
        expand_undo: subs(&plan.undo_sql),
        contract_sql: subs(&plan.contract_sql),
        // Kept without the table's name too: "AS halo_migrate_t SET …".
        backfill_sql: backfill.map(|b| {
            b.strip_prefix(&format!("UPDATE {table} "))
                .unwrap_or(&b)
                .to_string()
        }),
    };
    vstate::record(
        id,
        &v,
        req.up.clone(),
        &subs(&plan.validate_sql),
        backfill_blocks,
        (extent.pages as f64 * density) as i64,
    )?;
    if phase == Phase::Ready {
        vstate::set_expanded(id)?;
        return Ok((id, false));
    }
    Ok((id, opts.background))
}
