//! Versioned (expand/contract) migrations: old and new application
//! versions served at once.
//!
//! `start(…, version => 'v2')` *expands*, in its own transaction under the
//! lock timeout: what the new shape needs is added to the table (a column,
//! a NOT VALID check), a trigger fills columns a write leaves NULL (`up`
//! for old clients, `down` for new ones), and the schema `<schema>_v2`
//! gets one view per table of the schema, the migrated table's in its new
//! shape. A worker then backfills existing rows in batches of heap blocks
//! and validates the checks (`step`); the migration is then *expanded*
//! (phase `ready`) and needs no worker. `finish()` *contracts*
//! (`contract.rs`): the table takes the new shape in one lock-bounded
//! transaction of catalog-only statements. `abort()` or a failure takes the
//! expand phase back (`contract::undo`).
//!
//! Invariants: nothing an old client reads changes before the contract,
//! except a column the expand phase adds; every view of a version schema
//! is `security_invoker`, so readers' own privileges and row security
//! apply; a version schema is halo_migrate's: it goes, with everything in
//! it, when its last migration is taken back or a later version contracts.

pub mod contract;

use crate::catalog::{self, versioned as cat};
use crate::engine::driver::Outcome;
use crate::engine::setup::{self, Options};
use crate::engine::state::{self, versioned as vstate, Migration, Phase};
use crate::engine::{locks, throttle};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get};
use crate::plan::model::Strategy;
use crate::plan::parse_versioned::{check_expression, versioned_cmds};
use crate::plan::sqlgen;
use crate::plan::versioned::{self as vplan, Input, VersionPlan};
use pgrx::pg_sys::Oid;
use std::collections::BTreeMap;

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

/// Expand: set the versioned migration up in the caller's transaction; its
/// id, and whether it wants a worker (a backfill or validations to run).
pub fn start(oid: Oid, alter: &str, opts: &Options, req: &Request) -> Result<(i64, bool)> {
    let facts = &catalog::load_table(oid)?;
    let table = QualifiedName::new(&facts.schema, &facts.name);
    crate::plan::check_privileges(facts, &crate::plan::parse::parse_alter(alter)?)?;
    refuse_table_kind(facts, &table)?;
    setup::refuse_busy(facts, &table)?;
    let up = expressions(req.up.as_deref(), "up")?;
    let down = expressions(req.down.as_deref(), "down")?;
    let columns = cat::columns(oid)?;
    let constraint_name = |col: Option<&str>, label: &str| {
        sqlgen::choose_name(&facts.name, col, label, &|n: &str| {
            catalog::constraint_name_taken(facts.namespace, n)
        })
    };
    let cmds = versioned_cmds(alter)?;
    refuse_dropped_in_use(oid, &cmds)?;
    refuse_type_change_dependents(oid, &cmds)?;
    let plan = vplan::build(&Input {
        table: &table,
        columns: &columns,
        cmds: &cmds,
        up: &up,
        down: &down,
        constraint_name: &constraint_name,
        new_column_name: &|col: &str| new_column_name(&req.version, col),
    })?;
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
    let schema = version_schema(&facts.schema, &req.version)?;
    let shared = claim_schema(&schema)?;
    let backfill = locks::retry("expand the table", opts.lock_timeout_ms, 50, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        expand(oid, &table, &plan, &schema, shared, facts.namespace)
    })?;
    record(oid, &table, alter, opts, req, &plan, &schema, backfill)
}

/// The new column of a column whose type changes: `_halo_<version>_<col>`
/// (shortened to fit a name).
fn new_column_name(version: &str, column: &str) -> String {
    sqlgen::make_object_name(&format!("_halo_{version}"), Some(column), "")
}

/// A column whose type changes by a second column must have nothing that
/// depends on it (an index, a constraint, a view, …): the contract drops
/// the old column, and with it all of that.
fn refuse_type_change_dependents(oid: Oid, cmds: &[vplan::VersionedCmd]) -> Result<()> {
    let versions = vstate::all_schemas()?;
    for c in cmds {
        if let vplan::VersionedCmd::AlterType { column, .. } = c {
            if let Some(what) = cat::column_dependents(oid, column, &versions)? {
                return Err(MigrateError::not_supported(
                    "a type change in a versioned migration of a column that other objects use",
                    format!("{what} depends on column \"{column}\"."),
                    "A versioned type change gives the column a new, second column and drops the \
                     old one at the contract, with what depends on it. Change the type with \
                     migrate.start() without version, or drop the dependent object first.",
                ));
            }
        }
    }
    Ok(())
}

/// A column the contract drops must not be used outside the version
/// schemas (whose views the contract drops or makes again): PostgreSQL
/// would refuse the DROP COLUMN at the contract.
fn refuse_dropped_in_use(oid: Oid, cmds: &[vplan::VersionedCmd]) -> Result<()> {
    let dropped: Vec<String> = cmds
        .iter()
        .filter_map(|c| match c {
            vplan::VersionedCmd::DropColumn { column, text }
                if !text.to_ascii_lowercase().contains("cascade") =>
            {
                Some(column.clone())
            }
            _ => None,
        })
        .collect();
    match cat::users_outside_versions(oid, &dropped, &vstate::all_schemas()?)? {
        None => Ok(()),
        Some((column, users)) => Err(MigrateError::DependentObjects {
            column,
            table: catalog::display_name(oid)?,
            users,
        }),
    }
}

/// Versioned migrations of ordinary tables only, for now.
fn refuse_table_kind(facts: &crate::plan::model::TableFacts, table: &QualifiedName) -> Result<()> {
    if facts.leaves.is_some() || facts.parent.is_some() || facts.children > 0 {
        return Err(MigrateError::not_supported(
            "a versioned migration of a partitioned or inheritance table",
            format!("{table} is part of a partition or inheritance tree."),
            "Run the change with migrate.start() without version.",
        ));
    }
    Ok(())
}

/// `up`/`down` as column => expression, each checked to be one expression.
fn expressions(json: Option<&str>, option: &'static str) -> Result<BTreeMap<String, String>> {
    let Some(json) = json else {
        return Ok(BTreeMap::new());
    };
    let bad = |detail: String| MigrateError::InvalidParameter {
        name: option,
        detail,
        hint: format!(
            "Give an object of column => SQL expression, e.g. {option} => '{{\"score\": \"0\"}}'."
        ),
    };
    let kind = spi::text("SELECT pg_catalog.jsonb_typeof($1::jsonb)", &[json.into()])?;
    if kind.as_deref() != Some("object") {
        return Err(bad("It is not a JSON object.".into()));
    }
    let pairs = spi::query(
        "SELECT key, pg_catalog.jsonb_typeof(value), value #>> '{}' FROM pg_catalog.jsonb_each($1::jsonb)",
        &[json.into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?, r.get::<String>(3)?)),
    )?;
    let mut out = BTreeMap::new();
    for (k, kind, v) in pairs {
        let expr = match (kind.as_str(), v) {
            ("string", Some(v)) => v,
            _ => return Err(bad(format!("The value for \"{k}\" is not a string."))),
        };
        check_expression(&k, &expr, option)?;
        out.insert(k, expr);
    }
    Ok(out)
}

/// `<schema>_<version>`, checked to be a usable, unquoted-length name.
fn version_schema(schema: &str, version: &str) -> Result<String> {
    let name = vplan::version_schema(schema, version);
    if version.is_empty() || name.len() > 63 || version.contains('\0') {
        return Err(MigrateError::InvalidParameter {
            name: "version",
            detail: format!("The version schema would be \"{name}\"."),
            hint: "Give a short, non-empty version name, e.g. 'v2'.".into(),
        });
    }
    Ok(name)
}

/// May this migration use `schema`? A schema of that name must not exist,
/// or be a version schema of another migration (the version is then shared
/// by both). Whether it exists already.
fn claim_schema(schema: &str) -> Result<bool> {
    if !cat::schema_exists(schema)? {
        return Ok(false);
    }
    match vstate::other_user_of_schema(schema, 0)? {
        Some(_) => Ok(true),
        None => Err(MigrateError::VersionSchemaTaken {
            schema: schema.to_string(),
        }),
    }
}

/// The expand phase's changes, in one attempt under the lock timeout; the
/// backfill's statement, if rows need one.
fn expand(
    oid: Oid,
    table: &QualifiedName,
    plan: &VersionPlan,
    schema: &str,
    shared: bool,
    namespace: u32,
) -> Result<Option<String>> {
    for sql in &plan.expand_sql {
        spi::exec(sql, &[])?;
    }
    // A mapped CHECK's expression as PostgreSQL reads it, now that it exists.
    let mut plan = plan.clone();
    for c in &mut plan.checks {
        c.expr = cat::check_expression(oid, &c.constraint)?;
    }
    let plan = &plan;
    if !plan.fills.is_empty() || !plan.syncs.is_empty() || !plan.checks.is_empty() {
        let base: Vec<String> = cat::columns(oid)?.into_iter().map(|c| c.name).collect();
        let function = fill_function(oid);
        spi::exec(
            &vplan::fill_function(&function, table, &base, &plan.view_columns, plan)?,
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
        spi::exec(&format!("GRANT USAGE ON SCHEMA {s} TO PUBLIC"), &[])?;
        for (name, other) in cat::tables_of_schema(namespace)? {
            if other != oid {
                let q = catalog::qualified_name(other)?.unwrap_or(QualifiedName::new("", &name));
                create_view(schema, &name, &q, &passthrough(other)?)?;
            }
        }
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
    let (blocks, _) = cat::blocks_and_density(oid)?;
    let density = rows_per_block(oid, table)?;
    let backfill_blocks = if backfill.is_some() { blocks } else { 0 };
    let v = vstate::Versioned {
        version: req.version.clone(),
        version_schema: schema.to_string(),
        expand_undo: plan.undo_sql.clone(),
        contract_sql: plan.contract_sql.clone(),
        backfill_sql: backfill,
    };
    vstate::record(
        id,
        &v,
        req.up.clone(),
        &plan.validate_sql,
        backfill_blocks,
        (blocks as f64 * density) as i64,
    )?;
    if phase == Phase::Ready {
        vstate::set_expanded(id)?;
        return Ok((id, false));
    }
    Ok((id, opts.background))
}

/// One unit of a versioned migration's work: a backfill batch, a
/// validation, or (when wanted) the contract.
pub fn step(m: &Migration, cutover: crate::engine::driver::Cutover) -> Result<Outcome> {
    let table = catalog::qualified_name(m.relid)?.ok_or_else(|| {
        MigrateError::Internal(format!("table of migration {} no longer exists", m.id))
    })?;
    spi::with_search_path(&m.search_path.clone(), || match m.phase {
        Phase::Copying => backfill_step(m, &table),
        Phase::Indexing => validate_step(m),
        Phase::Ready => contract::contract_or_rest(m, &table, cutover),
        p => Ok(Outcome::Finished(p)),
    })
}

/// Fill the rows of the next heap blocks that have a NULL to fill (the
/// trigger computes the values); the rows written since start() were
/// filled by the trigger already.
fn backfill_step(m: &Migration, table: &QualifiedName) -> Result<Outcome> {
    if let Some(note) = throttle::hold(m)? {
        return Ok(Outcome::Idle { ms: 1000, note });
    }
    let density = rows_per_block(m.relid, table)?;
    let blocks = ((m.batch_rows as f64 / density).ceil() as i64).max(1);
    let from = m.copy_next;
    let to = (from + blocks).min(m.copy_end);
    let sql = vstate::load(m.id)?
        .and_then(|v| v.backfill_sql)
        .ok_or_else(|| MigrateError::Internal(format!("migration {} has no backfill", m.id)))?;
    let t0 = std::time::Instant::now();
    let rows = spi::exec_count(
        &sql,
        &[format!("({from},0)").into(), format!("({to},0)").into()],
    )?;
    let took_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let done = to >= m.copy_end;
    let phase = match (done, m.index_sql.is_empty()) {
        (false, _) => Phase::Copying,
        (true, false) => Phase::Indexing,
        (true, true) => Phase::Ready,
    };
    let batch_rows = throttle::adapt_batch_rows(m.batch_rows, took_ms, m.target_batch_ms);
    state::record_copy_batch(m.id, rows, to, phase, batch_rows)?;
    if phase == Phase::Ready {
        vstate::set_expanded(m.id)?;
    }
    let note = format!(
        "filled {rows} rows (heap blocks {from} to {to} of {})",
        m.copy_end
    );
    Ok(if m.batch_pause_ms > 0 {
        Outcome::Idle {
            ms: m.batch_pause_ms as u64,
            note,
        }
    } else {
        Outcome::Progress(note)
    })
}

/// Validate the next NOT NULL check (SHARE UPDATE EXCLUSIVE: writes go on).
fn validate_step(m: &Migration) -> Result<Outcome> {
    let i = m.indexes_built.max(0) as usize;
    let Some(sql) = m.index_sql.get(i) else {
        vstate::set_expanded(m.id)?;
        return Ok(Outcome::Progress("expanded".into()));
    };
    {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        crate::pg::activity::announce(&format!("validating: {sql}"));
        locks::retry("validate a check", m.lock_timeout_ms, 600, || {
            spi::exec(sql, &[])
        })?;
    }
    let last = i + 1 >= m.index_sql.len();
    state::record_index_built(m.id, last.then_some(Phase::Ready))?;
    if last {
        vstate::set_expanded(m.id)?;
    }
    Ok(Outcome::Progress(sql.clone()))
}

/// `migrate.drop_version()`: drop a version schema no live migration uses.
pub fn drop_version(schema: &str) -> Result<()> {
    if !cat::schema_exists(schema)? || !vstate::is_version_schema(schema)? {
        return Err(MigrateError::NoVersion {
            schema: schema.to_string(),
        });
    }
    if let Some((id, table)) = vstate::other_user_live(schema, 0)? {
        return Err(MigrateError::VersionInUse {
            schema: schema.to_string(),
            id,
            table,
        });
    }
    locks::retry(
        "drop a version schema",
        crate::gucs::lock_timeout_ms(),
        50,
        || contract::drop_schema(schema),
    )
}

/// Rows per heap block: from the statistics, or (never analyzed) counted
/// in the table's first blocks, which costs a few block reads.
fn rows_per_block(oid: Oid, table: &QualifiedName) -> Result<f64> {
    let (known, density) = spi::one(
        "SELECT c.reltuples >= 0 AND c.relpages > 0,
                greatest(coalesce(c.reltuples / nullif(c.relpages, 0), 1), 1)::float8
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| Ok((get::<bool>(r, 1)?, get::<f64>(r, 2)?)),
    )?;
    if known {
        return Ok(density);
    }
    let sampled = spi::one(
        &format!("SELECT count(*) FROM {table} WHERE ctid < '(16,0)'::tid"),
        &[],
        |r| get::<i64>(r, 1),
    )?;
    let (blocks, _) = cat::blocks_and_density(oid)?;
    Ok((sampled as f64 / blocks.clamp(1, 16) as f64).max(1.0))
}
