//! The end of a versioned migration: the contract (`finish()`), or the
//! expand phase taken back (`abort()`, a failure); and `drop_version()`.
//!
//! Invariants: each runs in one transaction, so it happens whole or not at
//! all. The contract is one attempt per call, bounded by the migration's
//! lock timeout; `finish()` retries it with back-off, within its own
//! deadline, acting on blockers between attempts as for a swap. Only
//! `finish()` contracts, never the worker, so a contract that fails leaves
//! the migration expanded, with both shapes served. Statements name the
//! table as it is named when they run. Only a schema that carries
//! halo_migrate's mark is dropped.

use super::{create_view, fill_function, fill_trigger, passthrough};
use crate::catalog::versioned as cat;
use crate::engine::driver::{Cutover, Outcome};
use crate::engine::locks;
use crate::engine::state::{self, versioned as vstate, Migration, Phase};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi;
use crate::plan::sqlgen;

/// Expanded: `finish()` contracts; for anyone else the work is over until
/// then (the worker leaves; `step()` says so).
pub fn contract_or_rest(m: &Migration, table: &QualifiedName, cutover: Cutover) -> Result<Outcome> {
    if cutover != Cutover::Now {
        return Ok(Outcome::Finished(Phase::Ready));
    }
    match locks::once("contract the table", m.lock_timeout_ms, || {
        contract(m, table)
    }) {
        Ok(()) => Ok(Outcome::Progress("contracted".into())),
        Err(e)
            if locks::is_lock_timeout(&e)
                || e.sqlstate() == pgrx::PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED =>
        {
            // Counted like a swap attempt: finish() then acts on the
            // sessions in the way (blockers) before the next one.
            let n = state::count_swap_attempt(m.id)?;
            pgrx::notice!(
                "halo_migrate: contract attempt {n} of {table} did not get its locks in time; retrying"
            );
            Ok(Outcome::Idle {
                ms: locks::backoff_ms(n.max(1) as u32, locks::jitter()?),
                note: format!("the contract waits for a lock: {e}"),
            })
        }
        Err(e) => Err(e),
    }
}

/// The table takes the new shape; the migration is done.
fn contract(m: &Migration, table: &QualifiedName) -> Result<()> {
    let v = vstate::load(m.id)?
        .ok_or_else(|| MigrateError::Internal(format!("migration {} has no version", m.id)))?;
    let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
    super::lock_table(m.relid, table, m.lock_timeout_ms)?;
    drop_fill_trigger(m.relid, table)?;
    // The table's earlier, contracted versions go, unless a live migration
    // of another table shares one. Views of this table in every other
    // version schema go now and come back in its new shape.
    let mut others = Vec::new();
    for schema in vstate::all_schemas()? {
        if schema == v.version_schema || !cat::is_version_schema(&schema)? {
            continue;
        }
        let earlier = vstate::earlier_schemas_of_table(m.relid, m.id)?.contains(&schema);
        if earlier && vstate::other_user_live(&schema, m.id)?.is_none() {
            drop_schema(&schema)?;
            continue;
        }
        for view in cat::views_reading(&schema, m.relid)? {
            drop_view(&schema, &view)?;
            others.push((schema.clone(), view));
        }
    }
    for sub in &v.contract_sql {
        spi::exec(&sqlgen::alter(table, sub), &[])?;
    }
    let now = crate::catalog::qualified_name(m.relid)?
        .ok_or_else(|| MigrateError::Internal("the table vanished".into()))?;
    for (schema, view) in &others {
        create_view(schema, view, &now, &passthrough(m.relid)?)?;
    }
    state::set_phase(m.id, Phase::Done)
}

/// Take the expand phase back: the version's view of the table (the whole
/// version schema when no other migration uses it), the trigger, and what
/// the expand phase added to the table.
pub fn undo(m: &Migration) -> Result<()> {
    let Some(v) = vstate::load(m.id)? else {
        return Ok(());
    };
    locks::retry("take the expand phase back", m.lock_timeout_ms, 600, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        let table = crate::catalog::qualified_name(m.relid)?;
        if let Some(t) = &table {
            super::lock_table(m.relid, t, m.lock_timeout_ms)?;
        }
        // The views first: they may read a column the expand phase added.
        let shared = vstate::other_user_of_schema(&v.version_schema, m.id)?.is_some();
        if !shared {
            drop_schema(&v.version_schema)?;
        } else if cat::is_version_schema(&v.version_schema)? {
            for view in cat::views_reading(&v.version_schema, m.relid)? {
                drop_view(&v.version_schema, &view)?;
            }
        }
        let Some(table) = &table else {
            // The table is gone, and its trigger with it.
            return drop_quietly(&format!(
                "DROP FUNCTION IF EXISTS {}()",
                fill_function(m.relid)
            ));
        };
        drop_fill_trigger(m.relid, table)?;
        for sub in v.expand_undo.iter().rev() {
            spi::exec(&sqlgen::alter(table, sub), &[])?;
        }
        Ok(())
    })
}

/// The fill trigger and its function, if the migration has them (quietly:
/// many versioned migrations have none).
fn drop_fill_trigger(relid: pgrx::pg_sys::Oid, table: &QualifiedName) -> Result<()> {
    drop_quietly(&format!(
        "DROP TRIGGER IF EXISTS {} ON {table}",
        fill_trigger(relid)
    ))?;
    drop_quietly(&format!(
        "DROP FUNCTION IF EXISTS {}()",
        fill_function(relid)
    ))
}

fn drop_quietly(sql: &str) -> Result<()> {
    spi::with_setting("client_min_messages", "warning", || spi::exec(sql, &[]))
}

fn drop_view(schema: &str, view: &str) -> Result<()> {
    spi::exec(
        &format!("DROP VIEW {}.{}", Ident::new(schema), Ident::new(view)),
        &[],
    )
}

/// A version schema and its views, if it carries halo_migrate's mark
/// (quietly: it is ours, views and all).
pub(crate) fn drop_schema(schema: &str) -> Result<()> {
    if !cat::is_version_schema(schema)? {
        return Ok(());
    }
    drop_quietly(&format!("DROP SCHEMA {} CASCADE", Ident::new(schema)))
}

/// `migrate.drop_version()`: drop a version schema no live migration uses.
pub fn drop_version(schema: &str) -> Result<()> {
    if !cat::is_version_schema(schema)? {
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
        || drop_schema(schema),
    )
}
