//! `migrate.revert()` and `migrate.forget()`: taking a revertible migration
//! back, or keeping it and ending its window. Each checks its arguments,
//! finds the table's migration and calls into `engine::revert`.

use super::control::{deadline, table_migration};
use super::{call, required, Regclass};
use crate::bgw::worker;
use crate::engine::revert;
use crate::engine::state::{self, window::Closed, Migration};
use crate::engine::{blockers, finish as cutover};
use crate::error::{MigrateError, Result};
use pgrx::datetime::Interval;
use pgrx::prelude::*;

/// Bring the table back to its shape before its revertible migration, with
/// every row it has now; a one-line summary. With `background`, a worker
/// does it and this returns at once.
#[pg_extern(volatile, parallel_unsafe)]
fn revert(
    tbl: Option<Regclass>,
    timeout: default!(Option<Interval>, "NULL"),
    background: default!(Option<bool>, "false"),
) -> String {
    call(|| revert_table(tbl, timeout, background))
}

/// End the revert window now: drop the kept table, the log and the trigger.
#[pg_extern(volatile, parallel_unsafe)]
fn forget(tbl: Option<Regclass>) -> String {
    call(|| forget_window(tbl))
}

fn revert_table(
    tbl: Option<Regclass>,
    timeout: Option<Interval>,
    background: Option<bool>,
) -> Result<String> {
    let background = required(background, "background")?;
    let deadline = deadline(timeout)?;
    let latest = migrated(tbl)?;
    if !latest.phase.is_terminal() {
        if latest.window.reverts.is_none() {
            return Err(MigrateError::Busy {
                table: latest.table_name.clone(),
                id: latest.id,
                phase: latest.phase.as_str(),
            });
        }
        // A revert already under way (its worker, or one cut short): see it through.
        return cutover::finish(latest, deadline, blockers::Policy::Wait);
    }
    let f = window_owner(&latest)?;
    if f.window.expired {
        return Err(MigrateError::RevertWindowExpired {
            id: f.id,
            table: f.table_name.clone(),
            at: f.window.until.clone().unwrap_or_default(),
        });
    }
    let table = crate::catalog::qualified_name(f.relid)?.ok_or(MigrateError::TableGone {
        oid: f.relid.to_u32(),
    })?;
    let id = revert::begin(&f, &table, background)?;
    if background {
        // SAFETY: reading the current user's OID.
        let role = unsafe { pgrx::pg_sys::GetUserId() };
        worker::launch_after_commit(id, role)?;
        return Ok(format!(
            "revert of migration {} of {} started as migration {id}; migrate.finish('{}') waits for it",
            f.id,
            f.table_name,
            f.table_name.replace('\'', "''")
        ));
    }
    let m = state::load(id)?
        .ok_or_else(|| MigrateError::Internal(format!("migration {id} vanished")))?;
    cutover::finish(m, deadline, blockers::Policy::Wait)
}

/// The table's latest migration; a table never migrated has nothing to revert.
fn migrated(tbl: Option<Regclass>) -> Result<Migration> {
    table_migration(tbl).map_err(|e| match e {
        MigrateError::NoMigration { table } => MigrateError::NothingToRevert {
            table,
            why: "It has never been migrated.".into(),
        },
        e => e,
    })
}

/// The migration whose window is open: the latest one, or (after a revert
/// that failed or was aborted) the one that revert was of.
fn window_owner(latest: &Migration) -> Result<Migration> {
    let id = match revert::open_window_of(latest.relid)? {
        Some(id) => id,
        None => {
            return Err(MigrateError::NothingToRevert {
                table: latest.table_name.clone(),
                why: match (latest.window.reverts, closed_reason(latest.id)?) {
                    (Some(f), _) => format!(
                        "Its latest migration, {}, took back migration {f}.",
                        latest.id
                    ),
                    (None, Some(why)) => format!(
                        "The revert window of migration {} is closed ({why}).",
                        latest.id
                    ),
                    (None, None) => format!(
                        "Migration {} was not started with revertible => true.",
                        latest.id
                    ),
                },
            })
        }
    };
    state::load(id)?.ok_or_else(|| MigrateError::Internal(format!("migration {id} vanished")))
}

fn closed_reason(id: i64) -> Result<Option<String>> {
    crate::pg::spi::text(
        "SELECT window_closed FROM migrate.migrations WHERE id = $1",
        &[id.into()],
    )
}

fn forget_window(tbl: Option<Regclass>) -> Result<String> {
    let latest = migrated(tbl)?;
    if !latest.phase.is_terminal() && latest.window.reverts.is_some() {
        return Err(MigrateError::Busy {
            table: latest.table_name.clone(),
            id: latest.id,
            phase: latest.phase.as_str(),
        });
    }
    let f = window_owner(&latest)?;
    revert::close_window(&f, Closed::Forgotten)?;
    Ok(format!(
        "revert window of migration {} of {} closed; the kept table, the log and the capture trigger are gone",
        f.id, f.table_name
    ))
}
