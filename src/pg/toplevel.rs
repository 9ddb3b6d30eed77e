//! Running one statement as a top-level command, from the background worker.
//!
//! `CREATE INDEX CONCURRENTLY` refuses to run inside a function or a
//! transaction block, so SPI cannot run it. A background worker has no
//! client and no enclosing transaction: like pg_cron's workers, it can run
//! the statement through a portal the way `exec_simple_query` does, with
//! `isTopLevel = true`, and the statement commits its own transactions.
//!
//! Invariants: called only from the worker, outside any transaction; it
//! starts the first transaction itself and leaves none open, whether the
//! statement succeeds or raises an ERROR. The parse and plan trees live in a
//! memory context of their own, because the statement commits (and frees)
//! the transaction it started in.

use crate::error::{MigrateError, Result};
use pgrx::pg_sys;
use pgrx::PgTryBuilder;
use std::ffi::CString;

/// Run `sql` (exactly one statement) as a top-level command.
pub fn exec(sql: &str) -> Result<()> {
    let text = CString::new(sql)
        .map_err(|_| MigrateError::Internal("statement text contains a NUL byte".into()))?;
    // SAFETY: the worker is connected to a database and outside any
    // transaction (the invariant of this module); the context is a child of
    // TopMemoryContext, deleted below on every path.
    let cxt = unsafe {
        pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"halo_migrate top-level statement".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        )
    };
    // SAFETY: as above; StartTransactionCommand makes a transaction current.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr());
    }
    let ptr = text.as_ptr();
    let r = PgTryBuilder::new(move || {
        // SAFETY: a transaction is current, `ptr` outlives the portal (the
        // CString is dropped only after this returns), and `cxt` is live.
        unsafe { run_portal(ptr, cxt) };
        Ok(())
    })
    .catch_others(|e| Err(MigrateError::from_caught(e, "in the halo_migrate worker")))
    .execute();
    // SAFETY: a transaction started by us or by the statement is current:
    // commit it on success; AbortCurrentTransaction releases locks (session
    // locks too), snapshots, portals and memory after an ERROR. Only then
    // is our context unused and freed.
    unsafe {
        crate::pg::xact::end(r.is_ok());
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        pg_sys::MemoryContextDelete(cxt);
    }
    r
}

/// Parse, plan and run `sql` through an unnamed portal, as
/// `exec_simple_query` does for one statement.
///
/// # Safety
/// A transaction must be current, `sql` must point to a NUL-terminated
/// string that outlives the call, and `cxt` must be a live memory context
/// that outlives the transaction(s) the statement runs in.
unsafe fn run_portal(sql: *const std::ffi::c_char, cxt: pg_sys::MemoryContext) {
    // SAFETY: guaranteed by the caller; every pointer below comes from
    // PostgreSQL's own parse, analysis and planning of `sql`.
    unsafe {
        pg_sys::CurrentMemoryContext = cxt;
        let parsed = pg_sys::pg_parse_query(sql);
        if parsed.is_null() || (*parsed).length != 1 {
            pgrx::error!("halo_migrate: a top-level statement must be exactly one statement");
        }
        let raw = (*(*parsed).elements).ptr_value as *mut pg_sys::RawStmt;
        let tag = pg_sys::CreateCommandTag((*raw).stmt);
        let snapshot = pg_sys::analyze_requires_snapshot(raw);
        if snapshot {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
            raw,
            sql,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        );
        let plans = pg_sys::pg_plan_queries(queries, sql, 0, std::ptr::null_mut());
        if snapshot {
            pg_sys::PopActiveSnapshot();
        }
        let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
        (*portal).visible = false;
        pg_sys::PortalDefineQuery(
            portal,
            std::ptr::null(),
            sql,
            tag,
            plans,
            std::ptr::null_mut(),
        );
        pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
        let dest = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
        let mut qc = pg_sys::QueryCompletion::default();
        // PortalRun switches back to the current TopTransactionContext (or
        // to `cxt`) after a statement that committed on its own.
        super::compat::portal_run_all(portal, dest, &mut qc);
        if let Some(destroy) = (*dest).rDestroy {
            destroy(dest);
        }
        pg_sys::PortalDrop(portal, false);
    }
}
