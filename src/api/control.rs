//! `migrate.finish()`, `migrate.abort()` and `migrate.step()`: acting on a
//! running migration.

use super::{or_report, required, Regclass};
use crate::blockers;
use crate::driver::{self, Cutover, Outcome, CUTOVER_LOCK_KEY};
use crate::error::{sqlstate_code, MigrateError, Result};
use crate::locks;
use crate::spi::{self, get};
use crate::state::{self, Migration, Phase};
use pgrx::datetime::Interval;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Wait for the copy to catch up, swap, validate; a one-line summary.
/// `blockers`: what to do to sessions whose locks keep the swap waiting
/// ('wait', 'cancel' or 'terminate').
#[pg_extern(volatile, parallel_unsafe)]
fn finish(
    tbl: Option<Regclass>,
    timeout: default!(Option<Interval>, "NULL"),
    blockers: default!(Option<&str>, "'wait'"),
) -> String {
    or_report(blockers::Policy::parse(blockers).and_then(|b| finish_migration(tbl, timeout, b)))
}

/// Stop the migration and remove everything it created.
#[pg_extern(volatile, parallel_unsafe)]
fn abort(tbl: Option<Regclass>) {
    or_report(abort_migration(tbl))
}

/// One unit of work (a copy batch, an index, a replay batch, a validation)
/// in the caller's transaction; what it did.
#[pg_extern(volatile, parallel_unsafe)]
fn step(tbl: Option<Regclass>) -> String {
    or_report(step_migration(tbl))
}

pub(super) fn table_migration(tbl: Option<Regclass>) -> Result<Migration> {
    let oid = required(tbl, "tbl")?.0;
    state::latest_for_table(oid)?.ok_or_else(|| MigrateError::NoMigration {
        table: crate::catalog::qualified_name(oid)
            .ok()
            .flatten()
            .map_or(format!("{}", oid.to_u32()), |q| q.to_string()),
    })
}

/// The error a failed migration stored, raised again.
fn stored_error(m: &Migration) -> MigrateError {
    MigrateError::Postgres {
        code: sqlstate_code(m.error_sqlstate.as_deref().unwrap_or("XX000")),
        message: format!("migration {} of {} failed: {}", m.id, m.table_name, m.error.as_deref().unwrap_or("unknown error")),
        detail: m.error_detail.clone(),
        hint: Some("The table is as it was before the migration (see migrate.status()); start it again once the cause is fixed.".into()),
        context: String::new(),
    }
}

fn summary(m: &Migration) -> Result<String> {
    if m.strategy != "rewrite" {
        return Ok(format!(
            "migration {} of {} done ({})",
            m.id, m.table_name, m.strategy
        ));
    }
    let secs = spi::query(
        "SELECT extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at)::float8
           FROM migrate.migrations WHERE id = $1",
        &[m.id.into()],
        |r| get::<f64>(r, 1),
    )?;
    Ok(format!(
        "migration {} of {} done: {} rows copied, {} in {:.1} s",
        m.id,
        m.table_name,
        m.rows_copied,
        if m.post_swap_sql.is_empty() {
            "swapped".to_string()
        } else {
            format!("swapped, {} constraint(s) validated", m.post_swap_sql.len())
        },
        secs.first().copied().unwrap_or(0.0)
    ))
}

fn ended(m: &Migration) -> Result<Option<String>> {
    match m.phase {
        Phase::Done => Ok(Some(summary(m)?)),
        Phase::Failed => Err(stored_error(m)),
        Phase::Aborted => Err(MigrateError::Postgres {
            code: PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message: format!("migration {} of {} was aborted", m.id, m.table_name),
            detail: None,
            hint: Some("Start it again with migrate.start().".into()),
            context: String::new(),
        }),
        _ => Ok(None),
    }
}

fn finish_migration(
    tbl: Option<Regclass>,
    timeout: Option<Interval>,
    blockers: blockers::Policy,
) -> Result<String> {
    let deadline = match timeout {
        None => None,
        // as_micros() already counts the days and months of the interval.
        Some(i) if i.as_micros() > 0 => {
            Some(Instant::now() + Duration::from_micros(i.as_micros() as u64))
        }
        Some(_) => {
            return Err(MigrateError::InvalidParameter {
                name: "timeout",
                detail: "It must be a positive interval.".into(),
                hint: "Give e.g. '10 minutes', or NULL to wait as long as it takes.".into(),
            })
        }
    };
    let isolation = spi::text(
        "SELECT pg_catalog.current_setting('transaction_isolation')",
        &[],
    )?;
    if isolation.as_deref() != Some("read committed") {
        return Err(MigrateError::Postgres {
            code: PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            message: "migrate.finish() must run in a READ COMMITTED transaction".into(),
            detail: Some("It watches the migration's progress, which a snapshot taken once would never show.".into()),
            hint: Some("Call it on its own, outside an explicit REPEATABLE READ or SERIALIZABLE transaction.".into()),
            context: String::new(),
        });
    }
    let m = table_migration(tbl)?;
    if let Some(s) = ended(&m)? {
        return Ok(s);
    }
    if m.needs_worker() {
        return Err(MigrateError::Postgres {
            code: PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message: format!(
                "migration {} of {} is still building its index CONCURRENTLY",
                m.id, m.table_name
            ),
            detail: Some("CREATE INDEX CONCURRENTLY waits for every transaction that holds an older snapshot, this one included: a function that waited for it would wait forever.".into()),
            hint: Some(format!(
                "CALL migrate.wait('{}') waits for it (it commits between checks); or watch migrate.status().",
                m.table_name.replace('\'', "''")
            )),
            context: String::new(),
        });
    }
    let id = m.id;
    // Tell the worker we are waiting: it swaps as soon as it has caught up.
    spi::exec(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[CUTOVER_LOCK_KEY.into(), (id as i32).into()],
    )?;
    let mut last_notice = Instant::now();
    let waiting_since = Instant::now();
    let mut attempts_seen = swap_attempts(id)?;
    let mut snapshot_signalled: Vec<i32> = Vec::new();
    // Whether this call performed the swap (and so holds its lock).
    let mut swapped_here = false;
    // A worker cannot go on while this transaction holds the migration's
    // row (say, throttle() then finish() in one transaction): drive it here.
    let held_here = state::held_by_this_transaction(id)?;
    if held_here && m.background {
        pgrx::notice!(
            "halo_migrate: this transaction has changed migration {id} (throttle, pause, resume or step): its worker waits until it commits, so finish() carries the migration on itself"
        );
    }
    loop {
        let m = state::load(id)?
            .ok_or_else(|| MigrateError::Internal(format!("migration {id} vanished")))?;
        if let Some(s) = ended(&m)? {
            return Ok(s);
        }
        // A background migration is the worker's; finish() drives it itself
        // only when the worker is gone (or never showed up).
        let driven_by_worker = m.background
            && !held_here
            && (state::worker_alive(m.worker_pid)?
                || (m.worker_pid.is_none() && waiting_since.elapsed() < Duration::from_secs(10)));
        if !driven_by_worker && m.runs_statements() {
            return Err(MigrateError::Postgres {
                code: PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                message: format!(
                    "migration {id} of {} runs its statements one transaction each, and has no worker",
                    m.table_name
                ),
                detail: Some("finish() runs in one transaction: a validation there would scan the table under the lock an earlier statement of the same transaction took.".into()),
                hint: Some(format!(
                    "Drive it with SELECT migrate.step('{}') until it is done, one call per transaction (each call runs one statement).",
                    m.table_name.replace('\'', "''")
                )),
                context: String::new(),
            });
        }
        if !driven_by_worker && m.phase == Phase::Validating && swapped_here {
            // Our own swap's lock is held until this transaction commits:
            // validating here would block writes. Leave it to step().
            return Ok(format!(
                "migration {id} of {} swapped; {} constraint(s) still to validate: run SELECT migrate.step('{}') after this transaction",
                m.table_name,
                m.post_swap_sql.len() - m.post_swap_done as usize,
                m.table_name
            ));
        }
        let pause = if driven_by_worker {
            // The worker needs us for nothing more: notice the swap and
            // what follows it promptly, since the caller waits. The last
            // index build, the replay and the swap can all fit in one long
            // pause, so only the copy gets one.
            match m.phase {
                Phase::Copying => 200,
                _ => 20,
            }
        } else {
            let outcome = driver::step(id, Cutover::Now)?;
            if matches!(m.phase, Phase::Replaying | Phase::Ready | Phase::Swapping) {
                swapped_here |= state::load(id)?.is_some_and(|n| n.phase == Phase::Validating);
            }
            match outcome {
                Outcome::Progress(_) | Outcome::Finished(_) => 0,
                Outcome::Idle { ms, .. } => ms,
                Outcome::Busy => 200,
            }
        };
        if blockers != blockers::Policy::Wait {
            // A swap attempt (ours or the worker's) timed out since we last
            // looked: clear the way for the next one.
            let attempts = swap_attempts(id)?;
            if attempts > attempts_seen {
                attempts_seen = attempts;
                blockers::clear(m.relid, m.lock_timeout_ms, blockers)?;
            }
            // Sessions whose old snapshots hold the swap back (snapshots.rs).
            let fresh: Vec<i32> = m
                .snapshot_holders
                .iter()
                .copied()
                .filter(|p| !snapshot_signalled.contains(p))
                .collect();
            if !fresh.is_empty() {
                snapshot_signalled.extend(&fresh);
                blockers::clear_snapshot_holders(&fresh, m.lock_timeout_ms, blockers)?;
            }
        }
        if last_notice.elapsed() >= Duration::from_secs(5) {
            last_notice = Instant::now();
            pgrx::notice!(
                "halo_migrate: {} {}{}: {} of ~{} rows copied, {} changes waiting{}",
                m.table_name,
                m.phase.as_str(),
                if m.paused { " (paused)" } else { "" },
                m.rows_copied,
                m.rows_total,
                m.backlog,
                m.waiting_for
                    .as_deref()
                    .map_or(String::new(), |w| format!("; the swap waits for {w}"))
            );
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(MigrateError::Postgres {
                code: PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                message: format!(
                    "migrate.finish() timed out; migration {id} of {} is still {}",
                    m.table_name,
                    m.phase.as_str()
                ),
                detail: Some("The migration goes on; nothing was swapped.".into()),
                hint: Some(
                    "Call migrate.finish() again later, or cancel it with migrate.abort().".into(),
                ),
                context: String::new(),
            });
        }
        if pause > 0 {
            locks::sleep_ms(pause)?;
        }
    }
}

/// Swap attempts so far (each one that timed out counts).
fn swap_attempts(id: i64) -> Result<i32> {
    Ok(spi::query(
        "SELECT swap_attempts FROM migrate.migrations WHERE id = $1",
        &[id.into()],
        |r| get::<i32>(r, 1),
    )?
    .first()
    .copied()
    .unwrap_or(0))
}

fn abort_migration(tbl: Option<Regclass>) -> Result<()> {
    let m = table_migration(tbl)?;
    // A failure whose cleanup could not be finished (say, a lock not had in
    // time) says to run abort(): finish the cleanup, keep the failure.
    if m.phase == Phase::Failed
        && m.error_detail.as_deref().is_some_and(|d| d.contains(driver::CLEANUP_INCOMPLETE))
    {
        driver::cleanup(&m)?;
        return state::update(
            m.id,
            "error_detail = NULLIF(pg_catalog.regexp_replace(error_detail, $2, ''), '')",
            vec![format!("\n?{}[^\n]*", driver::CLEANUP_INCOMPLETE).into()],
        );
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
    if let Some(pid) = m.worker_pid {
        if state::worker_alive(Some(pid))? {
            if m.runs_statements() {
                // SIGTERM is only looked at between statements; a CREATE
                // INDEX CONCURRENTLY can wait for long, so cancel it.
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
        state::update(
            m.id,
            "error = NULL, error_sqlstate = NULL, error_detail = NULL",
            vec![],
        )?;
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

fn step_migration(tbl: Option<Regclass>) -> Result<String> {
    let m = table_migration(tbl)?;
    if let Some(s) = ended(&m).unwrap_or_else(|e| Some(format!("failed: {e}"))) {
        return Ok(s);
    }
    if m.background && state::worker_alive(m.worker_pid)? {
        return Ok(format!(
            "busy: background worker {} drives migration {}",
            m.worker_pid.unwrap_or(0),
            m.id
        ));
    }
    if m.needs_worker() {
        return Err(MigrateError::Postgres {
            code: PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message: format!(
                "migration {} of {} has no worker to build its index",
                m.id, m.table_name
            ),
            detail: Some(
                "An index built CONCURRENTLY can only be built by the background worker.".into(),
            ),
            hint: Some("Run migrate.abort() and start the migration again.".into()),
            context: String::new(),
        });
    }
    let id = m.id;
    match crate::subxact::attempt("in migrate.step()", || driver::step(id, Cutover::Never)) {
        Ok(Outcome::Progress(s)) => Ok(s),
        Ok(Outcome::Idle { note, .. }) => Ok(note),
        Ok(Outcome::Busy) => Ok(format!(
            "busy: another session is working on migration {id}"
        )),
        Ok(Outcome::Finished(p)) => Ok(p.as_str().to_string()),
        Err(e) => {
            driver::fail(id, &e)?;
            Ok(format!("failed: {e}"))
        }
    }
}
