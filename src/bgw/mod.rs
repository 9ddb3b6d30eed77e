//! Background workers: `worker` drives one migration; `launcher` resumes
//! interrupted migrations at server start (shared_preload_libraries).
//!
//! Layer: uses `engine` (and `pg`); nothing but `api` and `_PG_init` uses it.

pub mod launcher;
pub mod worker;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;

/// After a SIGHUP (`pg_reload_conf()`), read the configuration files again,
/// as PostgreSQL's own workers do between units of work: settings such as
/// `halo_migrate.bulk_copy` then take effect in a running worker.
pub fn reload_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: called from a worker's main loop between transactions,
        // where PostgreSQL's own workers (autovacuum, pg_cron's launcher)
        // call it; the signal handler only set a flag.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}
