//! The background worker that drives one migration.
//!
//! Launched by `start()` as a dynamic background worker (no
//! shared_preload_libraries needed), connected to the same database as the
//! role that called `start()` — never with more privilege. It first waits
//! for `start()`'s transaction: if that rolled back, there is nothing to do.
//! Then it loops: one unit of work per transaction (`driver::step`), pausing
//! when idle, until the migration is over or it is asked to stop (SIGTERM is
//! honoured between units, never in the middle of one).
//!
//! An ERROR inside a unit aborts that transaction; the worker then records
//! the failure and cleans up in a fresh transaction (`driver::fail`).
//!
//! After the swap of a revertible migration the worker stays, idle, until
//! the revert window closes, and closes it itself when its time is up.

use crate::engine::driver::{self, Cutover, Outcome};
use crate::engine::state;
use crate::error::{MigrateError, Result};
use crate::pg::activity;
use crate::pg::spi;
use crate::pg::xact::transaction;
use crate::{engine::concurrent, pg::toplevel};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::Duration;

pub const BACKEND_TYPE: &str = "halo_migrate worker";

/// Launch the worker for migration `id`, as `role`, to begin once the
/// current transaction commits (and not at all if it rolls back).
pub fn launch_after_commit(id: i64, role: pg_sys::Oid) -> Result<()> {
    let xid = spi::one(
        "SELECT pg_catalog.pg_current_xact_id()::text::bigint",
        &[],
        |r| spi::get::<i64>(r, 1),
    )?;
    // A worker is on its way: until it registers, finish() waits for it
    // rather than taking the old, dead pid as a sign that nobody drives.
    crate::engine::state::set_worker(id, None)?;
    launch(id, role, xid, false)?;
    // A partitioned table's rewrite: helpers copy other partitions at once,
    // as many as its jobs allow and it has partitions beyond the first.
    launch_helpers(id, role, xid)
}

/// A partitioned table's rewrite still copying: helpers for up to `jobs`
/// workers in all (counting those alive), never more than it has
/// partitions. Helpers are optional: without a free worker slot the
/// migration goes on with fewer, and says so.
fn launch_helpers(id: i64, role: pg_sys::Oid, xid: i64) -> Result<()> {
    use crate::engine::state::{tree, Phase};
    let Some(m) = state::load(id)? else {
        return Ok(());
    };
    let copying = matches!(
        m.phase,
        Phase::Copying | Phase::Indexing | Phase::Verifying | Phase::Replaying
    );
    let Some(jobs) = m.jobs.filter(|_| copying) else {
        return Ok(());
    };
    let parts = tree::parts(id)?.len() as i32;
    let alive = tree::helper_pids(id)?.len() as i32;
    for _ in (1 + alive)..jobs.min(parts) {
        if launch(id, role, xid, true).is_err() {
            pgrx::notice!(
                "halo_migrate: no background worker slot for another helper of migration {id}; it goes on with fewer workers (see max_worker_processes)"
            );
            break;
        }
    }
    Ok(())
}

/// Launch the worker for migration `id` (with `helper`, one of a
/// partitioned table's helpers). `start_xid` is the transaction that
/// created the migration.
fn launch(id: i64, role: pg_sys::Oid, start_xid: i64, helper: bool) -> Result<()> {
    // SAFETY: reading backend-global identifiers of the current session.
    let db = unsafe { pg_sys::MyDatabaseId };
    BackgroundWorkerBuilder::new(&format!("halo_migrate migration {id}"))
        .set_type(BACKEND_TYPE)
        .set_library("halo_migrate")
        .set_function("halo_migrate_worker_main")
        .set_argument(id.into_datum())
        .set_extra(&format!(
            "{} {} {start_xid} {}",
            db.to_u32(),
            role.to_u32(),
            u8::from(helper)
        ))
        .enable_spi_access()
        .load_dynamic()
        .map(|_| ())
        .map_err(|_| MigrateError::NoWorkerSlot)
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn halo_migrate_worker_main(arg: pg_sys::Datum) {
    let id = arg.value() as i64;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let extra: Vec<u64> = BackgroundWorker::get_extra()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // Three fields: launched by a library before helpers existed.
    let (db, role, start_xid, helper) = match extra[..] {
        [db, role, xid] => (db, role, xid, 0),
        [db, role, xid, helper] => (db, role, xid, helper),
        _ => {
            log!("halo_migrate worker: malformed start arguments");
            return;
        }
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(db as u32)),
        Some(pg_sys::Oid::from(role as u32)),
    );

    if !wait_for_start(id, start_xid as i64) {
        return;
    }
    // A library newer than the SQL objects (a session that loaded the old
    // one started us after a package upgrade) leaves the migration alone:
    // it shows as interrupted, and is resumed after the update.
    if let Err(e) = transaction(crate::catalog::check_version) {
        log!("halo_migrate worker for migration {id}: {e}");
        return;
    }
    if helper == 1 {
        return run_helper(id);
    }
    let registered = transaction(|| {
        spi::exec(
            "SELECT pg_catalog.set_config('application_name', $1, false)",
            &[format!("halo_migrate migration {id}").into()],
        )?;
        // SAFETY: reading this backend's own pid.
        let pid = unsafe { pg_sys::MyProcPid };
        state::set_worker(id, Some(pid))
    });
    if let Err(e) = registered {
        log!("halo_migrate worker for migration {id}: {e}");
        return;
    }

    // worker_pid stays set when the worker exits: a migration that is not
    // over and whose worker is gone shows as interrupted in status().
    match transaction(|| state::load(id)) {
        Ok(Some(m)) if m.runs_statements() => run_concurrent(id),
        Ok(_) => run_rewrite(id),
        Err(e) => log!("halo_migrate worker for migration {id}: {e}"),
    }
}

/// A rewrite: one unit of work per transaction until it is over.
fn run_rewrite(id: i64) {
    while !stop_requested() {
        super::reload_if_asked();
        match transaction(|| driver::step(id, Cutover::WhenRequested)) {
            Ok(Outcome::Progress(what)) => activity::report(true, &what),
            Ok(Outcome::Idle { ms, note }) => {
                activity::report(false, &note);
                BackgroundWorker::wait_latch(Some(Duration::from_millis(ms)));
            }
            Ok(Outcome::Busy) => {
                BackgroundWorker::wait_latch(Some(Duration::from_millis(500)));
            }
            Ok(Outcome::Finished(_)) => return linger(id),
            Err(e) => return record_failure(id, &e),
        }
    }
}

/// A helper of a partitioned table's rewrite: works on the partitions the
/// others do not, until none is left to copy, index or catch up. It
/// registers nowhere (the tree's own worker does); a failure fails the tree.
fn run_helper(id: i64) {
    let named = transaction(|| {
        spi::exec(
            "SELECT pg_catalog.set_config('application_name', $1, false)",
            &[crate::engine::state::tree::helper_name(id).into()],
        )
    });
    if let Err(e) = named {
        log!("halo_migrate helper for migration {id}: {e}");
        return;
    }
    while !stop_requested() {
        super::reload_if_asked();
        match transaction(|| crate::engine::tree::helper_step(id)) {
            Ok(Outcome::Progress(what)) => activity::report(true, &what),
            Ok(Outcome::Idle { ms, note }) => {
                activity::report(false, &note);
                BackgroundWorker::wait_latch(Some(Duration::from_millis(ms)));
            }
            Ok(Outcome::Busy) => {
                BackgroundWorker::wait_latch(Some(Duration::from_millis(500)));
            }
            Ok(Outcome::Finished(_)) => return,
            // Cancelled by abort() or by a failing worker of the tree (or by
            // hand): the unit rolled back, nothing to record.
            Err(e) if e.sqlstate() == pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED => {
                log!("halo_migrate helper for migration {id}: cancelled");
                return;
            }
            Err(e) => return record_failure(id, &e),
        }
    }
}

/// A revertible migration that swapped: stay until its revert window
/// closes (revert(), forget(), or expiry, which is done here), looking once
/// a second.
fn linger(id: i64) {
    while !stop_requested() {
        match transaction(|| crate::engine::revert::tend(id)) {
            Ok(true) => {
                activity::report(false, "revert window open");
                BackgroundWorker::wait_latch(Some(Duration::from_secs(1)));
            }
            Ok(false) => return,
            Err(e) => {
                // Say a lock not had in time: the next look tries again.
                log!("halo_migrate migration {id}: closing its revert window: {e}");
                BackgroundWorker::wait_latch(Some(Duration::from_secs(5)));
            }
        }
    }
}

/// A concurrent or two-phase plan: its statements in order, each in a
/// transaction of its own (an index build as a top-level command), progress
/// committed after each.
fn run_concurrent(id: i64) {
    // Our own CREATE INDEX and ALTER TABLE pass the DDL guard.
    crate::pg::ddl_pass::for_this_session();
    while !stop_requested() {
        super::reload_if_asked();
        let m = match transaction(|| state::load(id)) {
            Ok(Some(m)) if !m.phase.is_terminal() => m,
            Ok(_) => return,
            Err(e) => return record_failure(id, &e),
        };
        let Some(sql) = m.index_sql.get(m.indexes_built as usize) else {
            let _ = transaction(|| state::set_phase(id, state::Phase::Done));
            return;
        };
        if m.paused {
            activity::report(false, "paused; migrate.resume() continues");
            BackgroundWorker::wait_latch(Some(Duration::from_millis(500)));
            continue;
        }
        let count = || state::record_index_built(id, None);
        let recorded = if concurrent::needs_top_level(sql) {
            // A build cut short (a crash, a restart) left its index behind,
            // which cleanup() drops, like an undo would.
            transaction(|| concurrent::cleanup(&m))
                .and_then(|_| toplevel::exec(sql))
                .and_then(|_| transaction(count))
        } else {
            // The statement and its count commit together, so that undo()
            // always knows exactly what was done.
            transaction(|| {
                concurrent::run_statement(&m, m.indexes_built as usize)?;
                count()
            })
        };
        if let Err(e) = recorded {
            return record_failure(id, &e);
        }
    }
}

fn record_failure(id: i64, e: &MigrateError) {
    log!("halo_migrate migration {id} failed: {e}");
    let tree_before_swap = transaction(|| state::load(id))
        .ok()
        .flatten()
        .is_some_and(|m| {
            m.is_tree() && !m.phase.is_terminal() && m.phase != state::Phase::Validating
        });
    if tree_before_swap {
        return record_tree_failure(id, e);
    }
    if let Err(e2) = transaction(|| driver::fail(id, e)) {
        log!("halo_migrate migration {id}: recording the failure failed too: {e2}");
    }
}

/// A partitioned table's rewrite failed in one of its workers. One worker
/// handles it (the tree's failure lock): those failing at the same moment,
/// or cancelled by it, leave it be. It stops the other workers first (their
/// units are cancelled, so nothing waits for a long index build), then
/// records the failure with a note that the cleanup is still to be done,
/// then cleans up and drops the note: if the cleanup is cut short,
/// `abort()` finishes it. A tree that swapped meanwhile is left as it is.
fn record_tree_failure(id: i64, e: &MigrateError) {
    match transaction(|| state::tree::try_failure_lock(id)) {
        Ok(true) => {}
        _ => {
            log!("halo_migrate migration {id}: another session handles the tree's failure");
            return;
        }
    }
    let handled = handle_tree_failure(id, e);
    let _ = transaction(|| state::tree::release_failure_lock(id));
    if let Err(e2) = handled {
        log!("halo_migrate migration {id}: handling the failure failed too: {e2}");
    }
}

fn handle_tree_failure(id: i64, e: &MigrateError) -> Result<()> {
    transaction(|| match state::load(id)? {
        Some(m) => crate::engine::tree::stop_workers(&m, true),
        None => Ok(()),
    })?;
    let note = format!(
        "{}; run migrate.abort() to finish it.",
        driver::CLEANUP_INCOMPLETE
    );
    let failed = transaction(|| {
        let failed = state::tree::set_failed_before_cleanup(id, e, &note)?;
        if failed {
            state::tree::end_parts(id, state::Phase::Failed)?;
        }
        Ok(failed)
    })?;
    if !failed {
        return Ok(());
    }
    transaction(|| {
        if let Some(m) = state::load(id)? {
            driver::cleanup(&m)?;
        }
        state::drop_note(id, &format!("\n?{}[^\n]*", driver::CLEANUP_INCOMPLETE))
    })
}

/// SIGTERM arrived (pgrx's own flag resets when read; PostgreSQL's stays set).
fn stop_requested() -> bool {
    // SAFETY: a sig_atomic_t flag of this process, set by the signal handler.
    BackgroundWorker::sigterm_received()
        || unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) } != 0
}

/// Wait until `start()`'s transaction is over: true if it committed.
fn wait_for_start(id: i64, xid: i64) -> bool {
    loop {
        let status = transaction(|| {
            spi::text(
                "SELECT pg_catalog.pg_xact_status($1::text::pg_catalog.xid8)",
                &[xid.into()],
            )
        });
        match status.ok().flatten().as_deref() {
            Some("committed") => return true,
            Some("in progress") => {}
            _ => {
                log!("halo_migrate migration {id}: start() did not commit; nothing to do");
                return false;
            }
        }
        // start() commits right after launching us: look again soon, since
        // every millisecond here adds to the migration's wall time.
        BackgroundWorker::wait_latch(Some(Duration::from_millis(10)));
        if stop_requested() {
            return false;
        }
    }
}
