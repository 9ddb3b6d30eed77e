//! `migrate.finish()`, `migrate.abort()` and `migrate.step()`: acting on a
//! running migration. Each checks its arguments, finds the table's
//! migration and calls into `engine::finish` or `engine::abort`.

use super::{call, required, Regclass};
use crate::engine::state::{self, Migration};
use crate::engine::{abort, blockers, finish as cutover};
use crate::error::{MigrateError, Result};
use pgrx::datetime::Interval;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Wait for the copy to catch up, swap, validate; a one-line summary.
/// `blockers`: what to do to sessions whose locks keep the swap waiting
/// ('wait', 'cancel' or 'terminate').
#[pg_extern(volatile, parallel_unsafe)]
fn finish(
    tbl: Option<Regclass>,
    timeout: default!(Option<Interval>, "NULL"),
    blockers: default!(Option<&str>, "'wait'"),
) -> String {
    call(|| {
        blockers::Policy::parse(blockers).and_then(|b| {
            let deadline = deadline(timeout)?;
            cutover::finish(table_migration(tbl)?, deadline, b)
        })
    })
}

/// Stop the migration and remove everything it created.
#[pg_extern(volatile, parallel_unsafe)]
fn abort(tbl: Option<Regclass>) {
    call(|| table_migration(tbl).and_then(abort::abort))
}

/// One unit of work (a copy batch, an index, a replay batch, a validation)
/// in the caller's transaction; what it did.
#[pg_extern(volatile, parallel_unsafe)]
fn step(tbl: Option<Regclass>) -> String {
    call(|| table_migration(tbl).and_then(cutover::step))
}

/// When `timeout` from now passes (NULL: never).
pub(super) fn deadline(timeout: Option<Interval>) -> Result<Option<Instant>> {
    Ok(match timeout {
        None => None,
        // as_micros() already counts the days and months of the interval.
        Some(i) if i.as_micros() > 0 => {
            Some(Instant::now() + Duration::from_micros(i.as_micros() as u64))
        }
        Some(_) => {
            return Err(MigrateError::InvalidParameter {
                name: "timeout",
                detail: "It must be a positive interval.".into(),
                hint: "Give e.g. '10 minutes', or NULL to wait as long as it takes.".into(),
            })
        }
    })
}

pub(super) fn table_migration(tbl: Option<Regclass>) -> Result<Migration> {
    let oid = required(tbl, "tbl")?.0;
    state::latest_for_table(oid)?.ok_or_else(|| MigrateError::NoMigration {
        table: crate::catalog::qualified_name(oid)
            .ok()
            .flatten()
            .map_or(format!("{}", oid.to_u32()), |q| q.to_string()),
    })
}
