//! The end of a versioned migration: the contract (`finish()`), or the
//! expand phase taken back (`abort()`, a failure).
//!
//! Invariants: each runs in one transaction, in attempts bounded by the
//! migration's lock timeout, so it happens whole or not at all. The
//! contract's statements are catalog-only (checks validated before), so
//! the table is held for moments. Views that other live versions have of
//! the table are made again after the contract, in the table's new shape;
//! the version schemas of the table's earlier, contracted migrations go.

use super::{create_view, fill_function, fill_trigger, passthrough};
use crate::catalog::versioned as cat;
use crate::engine::driver::{finish_is_waiting, Cutover, Outcome};
use crate::engine::locks;
use crate::engine::state::{self, versioned as vstate, Migration, Phase};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi;

/// Expanded: contract when asked (finish(), or auto_finish); otherwise the
/// worker's work is over.
pub fn contract_or_rest(m: &Migration, table: &QualifiedName, cutover: Cutover) -> Result<Outcome> {
    let wanted = match cutover {
        Cutover::Never => false,
        Cutover::Now => true,
        Cutover::WhenRequested => m.auto_finish || finish_is_waiting(m.id)?,
    };
    if !wanted {
        return Ok(Outcome::Finished(Phase::Ready));
    }
    contract(m, table)?;
    Ok(Outcome::Progress("contracted".into()))
}

/// The table takes the new shape; the migration is done.
fn contract(m: &Migration, table: &QualifiedName) -> Result<()> {
    let v = vstate::load(m.id)?
        .ok_or_else(|| MigrateError::Internal(format!("migration {} has no version", m.id)))?;
    let earlier = vstate::earlier_schemas_of_table(m.relid, m.id)?;
    locks::retry("contract the table", m.lock_timeout_ms, 600, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        spi::exec(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"), &[])?;
        drop_fill_trigger(m.relid, table)?;
        // Other live versions show this table as it is: their views go
        // now and come back in its new shape.
        let mut others = Vec::new();
        for schema in vstate::live_schemas_except(m.id)? {
            if schema == v.version_schema || earlier.contains(&schema) {
                continue;
            }
            for view in cat::views_reading(&schema, m.relid)? {
                drop_view(&schema, &view)?;
                others.push((schema.clone(), view));
            }
        }
        for schema in &earlier {
            if schema != &v.version_schema && vstate::other_user_live(schema, m.id)?.is_none() {
                drop_schema(schema)?;
            }
        }
        for sql in &v.contract_sql {
            spi::exec(sql, &[])?;
        }
        let now = crate::catalog::qualified_name(m.relid)?
            .ok_or_else(|| MigrateError::Internal("the table vanished".into()))?;
        for (schema, view) in &others {
            create_view(schema, view, &now, &passthrough(m.relid)?)?;
        }
        state::set_phase(m.id, Phase::Done)
    })
}

/// Take the expand phase back: the trigger, what it added to the table,
/// and its view (the whole version schema when no other migration uses it).
pub fn undo(m: &Migration) -> Result<()> {
    let Some(v) = vstate::load(m.id)? else {
        return Ok(());
    };
    let table = crate::catalog::qualified_name(m.relid)?;
    locks::retry("take the expand phase back", m.lock_timeout_ms, 600, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        // The views first: they may read a column the expand phase added.
        let shared = cat::schema_exists(&v.version_schema)?
            && vstate::other_user_of_schema(&v.version_schema, m.id)?.is_some();
        if !shared {
            drop_schema(&v.version_schema)?;
        } else {
            for view in cat::views_reading(&v.version_schema, m.relid)? {
                drop_view(&v.version_schema, &view)?;
            }
        }
        let Some(table) = &table else {
            return Ok(());
        };
        drop_fill_trigger(m.relid, table)?;
        for sql in v.expand_undo.iter().rev() {
            spi::exec(sql, &[])?;
        }
        if shared {
            // The version is shared: it shows this table as it is again.
            create_view(
                &v.version_schema,
                table.name.as_str(),
                table,
                &passthrough(m.relid)?,
            )?;
        }
        Ok(())
    })
}

/// The fill trigger and its function, if the migration has them (quietly:
/// most versioned migrations have none).
fn drop_fill_trigger(relid: pgrx::pg_sys::Oid, table: &QualifiedName) -> Result<()> {
    spi::with_setting("client_min_messages", "warning", || {
        spi::exec(
            &format!("DROP TRIGGER IF EXISTS {} ON {table}", fill_trigger(relid)),
            &[],
        )?;
        spi::exec(
            &format!("DROP FUNCTION IF EXISTS {}()", fill_function(relid)),
            &[],
        )
    })
}

fn drop_view(schema: &str, view: &str) -> Result<()> {
    spi::exec(
        &format!("DROP VIEW {}.{}", Ident::new(schema), Ident::new(view)),
        &[],
    )
}

/// A version schema and its views (quietly: it is ours, views and all).
pub(crate) fn drop_schema(schema: &str) -> Result<()> {
    spi::with_setting("client_min_messages", "warning", || {
        spi::exec(
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", Ident::new(schema)),
            &[],
        )
    })
}
