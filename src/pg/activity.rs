//! What this backend is doing, as pg_stat_activity shows it, and the
//! asynchronous commit of a background worker's units of work.
//!
//! These act only in a background worker (`MyBgworkerEntry` set): a session
//! that calls `step()` or `finish()` keeps its own query text and its own
//! `synchronous_commit`.

use crate::error::Result;
use crate::pg::spi;
use pgrx::pg_sys;

/// Say in pg_stat_activity what a long unit of work is about to do, when
/// running in the worker (a session calling `step()` keeps its own query).
pub fn announce(what: &str) {
    // SAFETY: a process-global pointer, set only in background workers.
    if !unsafe { pg_sys::MyBgworkerEntry }.is_null() {
        report(true, what);
    }
}

/// Let the current unit of work commit without waiting for its WAL to be
/// flushed, when running in the worker (which owns its transactions; a
/// session calling `step()` or `finish()` keeps its own setting).
///
/// Sound for units whose work and progress commit together (a copy batch,
/// an index build, a replay batch): a crash can lose only the last few such
/// commits, and with them the progress that records them, so the worker
/// redoes them. Never used for the swap or what follows it, so a migration
/// reported done stays done.
pub fn commit_asynchronously() -> Result<()> {
    // SAFETY: a process-global pointer, set only in background workers.
    if unsafe { pg_sys::MyBgworkerEntry }.is_null() {
        return Ok(());
    }
    spi::exec("SET LOCAL synchronous_commit = off", &[])
}

/// What the worker is doing, in pg_stat_activity's `state` and `query`.
pub fn report(running: bool, what: &str) {
    let text = std::ffi::CString::new(what.replace('\0', "")).unwrap_or_default();
    let state = if running {
        pg_sys::BackendState::STATE_RUNNING
    } else {
        pg_sys::BackendState::STATE_IDLE
    };
    // SAFETY: a backend may report its activity at any time (the executor's
    // callers do, around every statement); the text is copied into this
    // backend's slot in shared memory before the call returns.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}
