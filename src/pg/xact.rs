//! Transactions a background worker runs itself: one helper to start one,
//! run a unit of work in it, and commit it or, after an error, abort it.
//!
//! Invariant: on return no transaction is open, whatever `f` did (returned
//! an error, raised an ERROR), so the caller may start the next one.

use crate::error::{MigrateError, Result};
use pgrx::pg_sys;
use pgrx::PgTryBuilder;
use std::panic::AssertUnwindSafe;

/// Run `f` in a transaction of its own: committed if it returns `Ok`,
/// aborted if it returns `Err` or raises an ERROR.
pub fn transaction<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    // SAFETY: the worker is connected to a database and not inside a
    // transaction (every path below ends the one it starts).
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let f = AssertUnwindSafe(f);
    let r = PgTryBuilder::new(move || {
        let f = f;
        (f.0)()
    })
    .catch_others(|e| Err(MigrateError::from_caught(e, "in the halo_migrate worker")))
    .execute();
    // SAFETY: the transaction started above is current: on success we pop
    // our snapshot and commit; on error AbortCurrentTransaction releases
    // snapshots, locks and memory, as PostgreSQL's own workers do.
    unsafe {
        if r.is_ok() {
            pg_sys::PopActiveSnapshot();
        }
        end(r.is_ok());
    }
    r
}

/// End the current transaction: commit it after `ok`, else abort it (which
/// releases its locks, snapshots, portals and memory, as PostgreSQL's own
/// workers do after an ERROR).
///
/// # Safety
/// A transaction must be current, and nothing may use its resources after.
pub unsafe fn end(ok: bool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if ok {
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
}
