//! Resuming interrupted migrations when the server starts.
//!
//! With halo_migrate in `shared_preload_libraries` (and
//! `halo_migrate.auto_resume` on, the default), `_PG_init` registers one
//! static background worker, the launcher. Once recovery has finished — at
//! server start, and again after a crash restart — it lists the databases
//! that accept connections and, one at a time, starts a short-lived worker
//! in each. That worker does nothing unless the extension is installed
//! there; if it is, it starts a new migration worker for every background
//! migration that is not over and has no live worker. Each migration worker
//! runs as the role that started the migration, as always: the launcher and
//! the per-database workers never run a migration themselves.
//!
//! After a package upgrade, the library may be newer than the extension's
//! SQL objects in a database. Its resumer then starts nothing: it logs once
//! that the database awaits `ALTER EXTENSION halo_migrate UPDATE`, starts a
//! successor that looks again a few seconds later (before connecting, so a
//! dropped database simply ends the chain), and exits; once the versions
//! match, the migrations are resumed as usual. No resumer is ever restarted
//! by the postmaster.
//!
//! Invariants: the launcher never touches a database's tables (it reads
//! only the shared catalog `pg_database`); a migration driven by `step()`
//! (`background => false`) is never resumed by it; paused migrations get a
//! worker that stays paused until `migrate.resume()`. The launcher stays
//! alive, asleep, until shutdown: the postmaster forgets a static worker
//! that has exited, so one that exited would not run after a crash restart.

use crate::bgw::worker;
use crate::error::Result;
use crate::pg::spi::{self, get};
use crate::pg::xact::transaction;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::Duration;

/// Register the launcher; only possible while shared_preload_libraries loads.
pub fn register() {
    // SAFETY: a plain global flag, set by the postmaster while it loads
    // shared_preload_libraries; read-only here.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    if !crate::gucs::auto_resume() {
        return;
    }
    BackgroundWorkerBuilder::new("halo_migrate launcher")
        .set_type("halo_migrate launcher")
        .set_library("halo_migrate")
        .set_function("halo_migrate_launcher_main")
        // Shared memory and a (database-less) connection, after recovery.
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn halo_migrate_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the launcher reads only the shared catalog pg_database.
    BackgroundWorker::connect_worker_to_spi(None, None);
    for (db, name) in databases() {
        match start_resumer(db, &name, Start::Now) {
            Ok(handle) => {
                let _ = handle.wait_for_shutdown();
            }
            Err(_) => log!("halo_migrate launcher: no worker slot to check database {name}"),
        }
        if BackgroundWorker::sigterm_received() {
            return;
        }
        super::reload_if_asked();
    }
    while BackgroundWorker::wait_latch(None) {}
}

/// When a resumer starts its work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At once (the launcher's sweep).
    Now,
    /// After UPDATE_RECHECK: the previous resumer of the database found it
    /// awaiting `ALTER EXTENSION halo_migrate UPDATE` (and said so).
    Again,
}

/// Start a resumer for database `db`. It never restarts by itself: one that
/// fails (the database was dropped meanwhile, say) is simply gone, and one
/// that must look again starts its own successor (`Start::Again`).
fn start_resumer(
    db: pg_sys::Oid,
    name: &str,
    start: Start,
) -> std::result::Result<
    pgrx::bgworkers::DynamicBackgroundWorker,
    pgrx::bgworkers::DynamicBackgroundWorkerLoadError,
> {
    let builder = BackgroundWorkerBuilder::new(&format!("halo_migrate resumer for {name}"))
        .set_type("halo_migrate resumer")
        .set_library("halo_migrate")
        .set_function("halo_migrate_resumer_main")
        .set_argument((db.to_u32() as i64).into_datum())
        .set_extra(if start == Start::Again { "again" } else { "" })
        .enable_spi_access();
    match start {
        // SAFETY: this process's own pid, so that the launcher can wait for it.
        Start::Now => builder.set_notify_pid(unsafe { pg_sys::MyProcPid }),
        Start::Again => builder,
    }
    .load_dynamic()
}

/// The databases that accept connections, read as the autovacuum launcher
/// does: a catalog scan, since a process without a database cannot run SQL.
fn databases() -> Vec<(pg_sys::Oid, String)> {
    let mut out = Vec::new();
    // SAFETY: we are a background worker initialised without a database and
    // outside a transaction; the scan runs inside the transaction started
    // here, on a catalog relation opened and closed in it, and every tuple
    // heap_getnext returns is a valid pg_database row until the next call.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::GetTransactionSnapshot();
        let rel =
            crate::pg::rel::Rel::open_catalog(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock);
        let scan = pg_sys::table_beginscan_catalog(rel.get(), 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            let db = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tup);
            // datconnlimit -2: a database whose DROP was interrupted.
            if db.datallowconn && !db.datistemplate && db.datconnlimit != -2 {
                let name = std::ffi::CStr::from_ptr(db.datname.data.as_ptr());
                out.push((db.oid, name.to_string_lossy().into_owned()));
            }
        }
        pg_sys::table_endscan(scan);
        drop(rel);
        pg_sys::CommitTransactionCommand();
    }
    out
}

/// One database: relaunch the workers of its interrupted migrations.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn halo_migrate_resumer_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    let again = BackgroundWorker::get_extra() == "again";
    // A successor waits before it connects: holding no connection to the
    // database meanwhile, it never keeps a DROP DATABASE waiting.
    if again && !BackgroundWorker::wait_latch(Some(UPDATE_RECHECK)) {
        return;
    }
    // The bootstrap superuser: it must read every role's migrations. It
    // only starts workers, each of which runs as its migration's role.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    match transaction(resume_interrupted) {
        Ok(Resumed::Ids(ids)) if !ids.is_empty() => {
            log!("halo_migrate: resuming interrupted migrations {ids:?} after a restart")
        }
        Ok(Resumed::Ids(_)) => {}
        Ok(Resumed::AwaitingUpdate {
            installed,
            waiting,
            database,
        }) => {
            let said = format!(
                "halo_migrate: {waiting} migration(s) wait for ALTER EXTENSION halo_migrate \
                 UPDATE: the extension is version {installed}, the library {}",
                crate::catalog::LIBRARY_VERSION
            );
            // Said once at LOG; each later look only at DEBUG1.
            if again {
                debug1!("{said}");
            } else {
                log!("{said}");
            }
            if start_resumer(db, &database, Start::Again).is_err() {
                log!("halo_migrate resumer: no worker slot to look at the database again");
            }
        }
        Err(e) => log!("halo_migrate resumer: {e}"),
    }
}

/// How often a database whose extension awaits an update is looked at again.
const UPDATE_RECHECK: Duration = Duration::from_secs(5);

/// What a resumer found in its database.
enum Resumed {
    /// The migrations it started a worker for.
    Ids(Vec<i64>),
    /// The SQL objects are another version than this library: migrations
    /// not over are left untouched until the extension is updated.
    AwaitingUpdate {
        installed: String,
        waiting: i64,
        /// Its name (read in the transaction: the catalogs need one).
        database: String,
    },
}

/// Start a worker for each background migration that is not over and has
/// none; the ids of those resumed. The workers begin when this commits.
fn resume_interrupted() -> Result<Resumed> {
    let Some(installed) = crate::catalog::installed_version()? else {
        return Ok(Resumed::Ids(Vec::new()));
    };
    if installed != crate::catalog::LIBRARY_VERSION {
        // Only columns every upgradable version (0.1.0 on) has: the table
        // may be an old one.
        let waiting = spi::query(
            "SELECT count(*) FROM migrate.migrations
              WHERE background
                AND (phase NOT IN ('done', 'failed', 'aborted') OR revertible_until IS NOT NULL)",
            &[],
            |r| get::<i64>(r, 1),
        )?;
        let waiting = waiting.into_iter().next().unwrap_or(0);
        return Ok(if waiting > 0 {
            let database =
                spi::text("SELECT pg_catalog.current_database()::text", &[])?.unwrap_or_default();
            Resumed::AwaitingUpdate {
                installed,
                waiting,
                database,
            }
        } else {
            Resumed::Ids(Vec::new())
        });
    }
    let orphans = spi::query(
        "SELECT m.id, m.role_oid
           FROM migrate.migrations m, (SELECT migrate.live_workers() AS pids OFFSET 0) w
          WHERE m.background
            -- a partition's part is driven by its tree's workers
            AND m.tree_id IS NULL
            AND (m.phase NOT IN ('done', 'failed', 'aborted')
                 -- a revert window: its worker closes it when its time is up
                 OR m.revertible_until IS NOT NULL)
            AND NOT coalesce(m.worker_pid = ANY (w.pids), false)
          ORDER BY m.id",
        &[],
        |r| Ok((get::<i64>(r, 1)?, get::<pg_sys::Oid>(r, 2)?)),
    )?;
    for &(id, role) in &orphans {
        worker::launch_after_commit(id, role)?;
    }
    Ok(Resumed::Ids(
        orphans.into_iter().map(|(id, _)| id).collect(),
    ))
}
