//! Internal subtransactions: how `plan()` tries subcommands on an empty clone
//! and leaves no trace ([`rolled_back`]), and how the engine retries a step
//! that timed out on a lock, or records a failure in the same transaction
//! that saw it ([`attempt`]).
//!
//! Invariant: on return the subtransaction is over (committed into the
//! caller's transaction or rolled back) and the caller's memory context and
//! resource owner are current again, exactly as PL/Python and PL/pgSQL do it.

use crate::error::{MigrateError, Result};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;
use std::panic::AssertUnwindSafe;

/// Run `f` inside a subtransaction, then roll the subtransaction back.
/// An ERROR raised inside comes back as `Err`, already cleaned up.
pub fn rolled_back<R>(f: impl FnOnce() -> R) -> std::result::Result<R, CaughtError> {
    run(f, |_| false)
}

/// Run `f` inside a subtransaction: kept when `f` returns `Ok`, rolled back
/// when it returns `Err` or raises an ERROR (which comes back as
/// [`MigrateError::Postgres`], with `context` saying what was being done).
pub fn attempt<R>(context: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match run(f, |r: &Result<R>| r.is_ok()) {
        Ok(r) => r,
        Err(caught) => Err(MigrateError::from_caught(caught, context)),
    }
}

fn run<R>(
    f: impl FnOnce() -> R,
    keep: impl FnOnce(&R) -> bool,
) -> std::result::Result<R, CaughtError> {
    // SAFETY: we are in a backend with a transaction in progress (called from
    // SQL). BeginInternalSubTransaction switches into the subtransaction's
    // memory context; we switch back so results outlive the rollback.
    let (oldcxt, oldowner) = unsafe {
        let oldcxt = pg_sys::CurrentMemoryContext;
        let oldowner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(oldcxt);
        (oldcxt, oldowner)
    };
    let f = AssertUnwindSafe(f);
    let result = PgTryBuilder::new(move || {
        let f = f;
        Ok((f.0)())
    })
    .catch_others(Err)
    .execute();
    // SAFETY: the subtransaction begun above is still the current one: `f`
    // cannot end it (SPI refuses transaction control inside a function), and
    // pgrx has already flushed the error state of a caught ERROR.
    let commit = matches!(&result, Ok(r) if keep(r));
    unsafe {
        if commit {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(oldcxt);
        pg_sys::CurrentResourceOwner = oldowner;
    }
    result
}
