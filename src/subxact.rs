//! Internal subtransactions that are always rolled back: how `plan()` tries
//! subcommands on an empty clone of the table and leaves no trace.
//!
//! Invariant: on return, whatever happened inside (success or ERROR), the
//! subtransaction has been rolled back and the caller's memory context and
//! resource owner are current again, exactly as PL/Python and PL/pgSQL do it.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;
use std::panic::AssertUnwindSafe;

/// Run `f` inside a subtransaction, then roll the subtransaction back.
/// An ERROR raised inside comes back as `Err`, already cleaned up.
pub fn rolled_back<R>(f: impl FnOnce() -> R) -> Result<R, CaughtError> {
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
    unsafe {
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(oldcxt);
        pg_sys::CurrentResourceOwner = oldowner;
    }
    result
}
