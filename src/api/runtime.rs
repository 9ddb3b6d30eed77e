//! `migrate.pause()`, `migrate.resume()` and `migrate.throttle()`: steering
//! a running migration. Each changes the migration's row; every driver reads
//! it before each unit of work, so a change takes effect within one batch.

use super::control::table_migration;
use super::{call, Regclass};
use crate::bgw::worker;
use crate::engine::state::{self, Migration, Phase};
use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get};
use pgrx::datetime::Interval;
use pgrx::prelude::*;

/// Hold the migration still after the unit of work in progress.
#[pg_extern(volatile, parallel_unsafe)]
fn pause(tbl: Option<Regclass>) -> String {
    call(|| pause_migration(tbl))
}

/// Continue a paused or interrupted migration; relaunch its worker if gone.
#[pg_extern(volatile, parallel_unsafe)]
fn resume(tbl: Option<Regclass>) -> String {
    call(|| resume_migration(tbl))
}

/// Change how fast the migration copies; NULL leaves a setting as it is.
#[pg_extern(volatile, parallel_unsafe)]
fn throttle(
    tbl: Option<Regclass>,
    batch_rows: default!(Option<i32>, "NULL"),
    batch_pause: default!(Option<Interval>, "NULL"),
    target_batch_time: default!(Option<Interval>, "NULL"),
    max_replica_lag: default!(Option<Interval>, "NULL"),
) -> String {
    call(|| {
        throttle_migration(
            tbl,
            batch_rows,
            batch_pause,
            target_batch_time,
            max_replica_lag,
        )
    })
}

/// The table's live migration, locked against concurrent control calls.
fn live(tbl: Option<Regclass>) -> Result<Migration> {
    let m = table_migration(tbl)?;
    if m.phase.is_terminal() {
        return Err(MigrateError::NoMigration {
            table: m.table_name,
        });
    }
    spi::exec(
        "SELECT 1 FROM migrate.migrations WHERE id = $1 FOR NO KEY UPDATE",
        &[m.id.into()],
    )?;
    state::load(m.id)?.ok_or_else(|| MigrateError::Internal(format!("migration {} vanished", m.id)))
}

fn pause_migration(tbl: Option<Regclass>) -> Result<String> {
    let m = live(tbl)?;
    state::set_paused(m.id, true)?;
    Ok(format!(
        "migration {} of {} paused (it was {}); migrate.resume() continues it",
        m.id,
        m.table_name,
        m.phase.as_str()
    ))
}

fn resume_migration(tbl: Option<Regclass>) -> Result<String> {
    let m = live(tbl)?;
    state::set_paused(m.id, false)?;
    let relaunch = m.background && !state::worker_alive(m.worker_pid)?;
    if relaunch {
        // The worker runs as the role that started the migration, whoever
        // resumes it (only members of that role see the migration at all).
        worker::launch_after_commit(m.id, m.role_oid)?;
    }
    Ok(format!(
        "migration {} of {} resumed in phase {}{}",
        m.id,
        m.table_name,
        m.phase.as_str(),
        if relaunch {
            "; a new worker starts when this transaction commits"
        } else if m.background {
            ""
        } else {
            "; drive it with migrate.step()"
        }
    ))
}

/// Milliseconds of a non-negative interval of at most a day.
fn interval_ms(i: Option<Interval>, name: &'static str) -> Result<Option<i32>> {
    let Some(i) = i else { return Ok(None) };
    let us = i.as_micros();
    if !(0..=86_400_000_000).contains(&us) {
        return Err(MigrateError::InvalidParameter {
            name,
            detail: format!("It is {} ms.", us / 1000),
            hint: "Give an interval between 0 (off) and 1 day.".into(),
        });
    }
    Ok(Some((us / 1000) as i32))
}

fn throttle_migration(
    tbl: Option<Regclass>,
    batch_rows: Option<i32>,
    batch_pause: Option<Interval>,
    target_batch_time: Option<Interval>,
    max_replica_lag: Option<Interval>,
) -> Result<String> {
    if let Some(n) = batch_rows {
        if !(1..=10_000_000).contains(&n) {
            return Err(MigrateError::InvalidParameter {
                name: "batch_rows",
                detail: format!("It is {n}."),
                hint: "Give a number of rows between 1 and 10000000.".into(),
            });
        }
    }
    let pause = interval_ms(batch_pause, "batch_pause")?;
    let target = interval_ms(target_batch_time, "target_batch_time")?;
    let lag = interval_ms(max_replica_lag, "max_replica_lag")?;
    if lag.is_some_and(|l| l > 0) {
        let can_read = spi::query(
            "SELECT pg_catalog.has_function_privilege('pg_catalog.pg_stat_get_wal_senders()', 'EXECUTE')
                AND pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')",
            &[],
            |r| get::<bool>(r, 1),
        )?;
        if !can_read.first().copied().unwrap_or(false) {
            return Err(MigrateError::ReplicaLagPrivilege);
        }
    }
    let m = live(tbl)?;
    // A plan of statements has no batches: throttling it is harmless (the
    // command line throttles whatever it starts), so it is allowed.
    if m.phase == Phase::Validating && !m.runs_statements() {
        return Err(MigrateError::not_supported(
            "throttling a migration after its swap",
            format!("Migration {} only has constraints left to validate.", m.id),
            "Let it finish.",
        ));
    }
    let row = state::set_throttle(m.id, batch_rows, pause, target, lag)?;
    let off = |ms: i32| {
        if ms > 0 {
            format!("{ms} ms")
        } else {
            "off".to_string()
        }
    };
    Ok(format!(
        "migration {} of {}: batch_rows {}, batch_pause {}, target_batch_time {}, max_replica_lag {}",
        m.id,
        m.table_name,
        row.0,
        off(row.1),
        off(row.2),
        off(row.3)
    ))
}

/// Is the DDL running now in this session halo_migrate's own? Read by the
/// DDL guard's event triggers; nothing in SQL can make it true.
#[pg_extern(volatile, parallel_unsafe)]
fn internal_ddl() -> bool {
    crate::pg::ddl_pass::active()
}

/// Keep `migrate.migrations` out of logical decoding (run once, by CREATE
/// EXTENSION): its progress updates would otherwise be sent to subscribers
/// of a `FOR ALL TABLES` publication, which have no such table.
#[pg_extern(volatile, parallel_unsafe)]
fn hide_state_from_decoding() {
    let oid = crate::catalog::relation_oid("migrate.migrations").unwrap_or_else(|e| e.report());
    crate::engine::storage::hide_from_decoding(oid, oid);
}

pgrx::extension_sql!(
    "SELECT migrate.hide_state_from_decoding();
     REVOKE ALL ON FUNCTION migrate.hide_state_from_decoding() FROM PUBLIC;",
    name = "hide_state",
    requires = [hide_state_from_decoding],
    finalize
);
