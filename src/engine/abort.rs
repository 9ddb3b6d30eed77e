//! `migrate.abort()`: stop the worker, then remove everything the migration
//! created; the table is exactly as before. Refused once a rewrite has
//! swapped (only validations are left then).

use crate::engine::driver;
use crate::engine::locks;
use crate::engine::state::{self, Migration, Phase};
use crate::error::{MigrateError, Result};
use crate::pg::spi;
use std::time::{Duration, Instant};

/// Stop the worker and remove everything the migration created (or take
/// back the statements a plan of statements ran): the table is as before.
pub fn abort(m: Migration) -> Result<()> {
    // A tree's worker handling a failure finishes first; from here on no
    // worker records one (its cancel below included).
    let m = if m.is_tree() {
        state::tree::wait_failure_lock(m.id)?;
        state::load(m.id)?.unwrap_or(m)
    } else {
        m
    };
    // A failure whose cleanup could not be finished (say, a lock not had in
    // time) says to run abort(): finish the cleanup, keep the failure.
    if m.phase == Phase::Failed
        && m.error_detail
            .as_deref()
            .is_some_and(|d| d.contains(driver::CLEANUP_INCOMPLETE))
    {
        driver::cleanup(&m)?;
        return state::drop_note(m.id, &format!("\n?{}[^\n]*", driver::CLEANUP_INCOMPLETE));
    }
    if m.phase.is_terminal() {
        return Err(MigrateError::NoMigration {
            table: m.table_name,
        });
    }
    if m.phase == Phase::Validating && !m.runs_statements() {
        return Err(MigrateError::not_supported(
            "aborting a migration after its swap",
            format!("Migration {} already put the new table in place; only constraint validation remains.", m.id),
            "Let it finish with migrate.finish().",
        ));
    }
    let mut cancelled = false;
    if m.is_tree() {
        // Its worker and helpers, their units cancelled (an index build on
        // a large partition can take long).
        crate::engine::tree::stop_workers(&m, true)?;
    } else if let Some(pid) = m.worker_pid {
        if state::worker_alive(Some(pid))? {
            if m.runs_statements() || m.strategy == crate::plan::model::Strategy::Versioned {
                // SIGTERM is only looked at between statements; a CREATE
                // INDEX CONCURRENTLY (or a backfill batch, a validation)
                // can wait for long, so cancel it.
                spi::exec("SELECT pg_catalog.pg_cancel_backend($1)", &[pid.into()])?;
                cancelled = true;
            }
            spi::exec("SELECT pg_catalog.pg_terminate_backend($1)", &[pid.into()])?;
            let t0 = Instant::now();
            while state::worker_alive(Some(pid))? {
                if t0.elapsed() > Duration::from_secs(60) {
                    return Err(MigrateError::Internal(format!(
                        "the worker (pid {pid}) did not stop within a minute"
                    )));
                }
                locks::sleep_ms(50)?;
            }
        }
    }
    let m = state::lock(m.id)?.ok_or_else(|| MigrateError::Busy {
        table: m.table_name.clone(),
        id: m.id,
        phase: "being driven by another session",
    })?;
    if cancelled && m.phase == Phase::Failed && m.error_sqlstate.as_deref() == Some("57014") {
        // The worker failed because we cancelled it, and cleaned up.
        state::clear_error(m.id)?;
        return state::set_phase(m.id, Phase::Aborted);
    }
    if m.phase.is_terminal() || (m.phase == Phase::Validating && !m.runs_statements()) {
        return Err(MigrateError::not_supported(
            "aborting a migration that has ended or swapped",
            format!("Migration {} is {}.", m.id, m.phase.as_str()),
            "See migrate.status().",
        ));
    }
    driver::cleanup(&m)?;
    state::set_phase(m.id, Phase::Aborted)
}
