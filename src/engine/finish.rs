//! `migrate.finish()` and `migrate.step()`: the cut-over loop, and one unit
//! of work in the caller's transaction.
//!
//! `finish` never swaps under a lock it cannot bound: each attempt is one
//! `locks::once` with the migration's lock timeout, and between attempts it
//! backs off, acts on blocking sessions as `blockers` says, and reports
//! progress in NOTICEs. A migration driven by its worker is only watched.

use crate::engine::blockers;
use crate::engine::driver::{self, Cutover, Outcome, CUTOVER_LOCK_KEY};
use crate::engine::locks;
use crate::engine::state::{self, Migration, Phase};
use crate::error::{sqlstate_code, MigrateError, Result};
use crate::pg::spi::{self, get};
use std::time::{Duration, Instant};

/// The error a failed migration stored, raised again.
pub fn stored_error(m: &Migration) -> MigrateError {
    MigrateError::Failed {
        id: m.id,
        table: m.table_name.clone(),
        error: m.error.clone().unwrap_or_else(|| "unknown error".into()),
        code: sqlstate_code(m.error_sqlstate.as_deref().unwrap_or("XX000")),
        detail: m.error_detail.clone(),
        hint: m.error_hint.clone(),
    }
}

fn summary(m: &Migration) -> Result<String> {
    if m.strategy != crate::plan::model::Strategy::Rewrite {
        return Ok(format!(
            "migration {} of {} done ({})",
            m.id,
            m.table_name,
            m.strategy.name()
        ));
    }
    let secs = spi::query(
        "SELECT extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at)::float8
           FROM migrate.migrations WHERE id = $1",
        &[m.id.into()],
        |r| get::<f64>(r, 1),
    )?;
    let verified =
        crate::engine::verify::summary(&m.verification).map_or(String::new(), |v| format!(", {v}"));
    if let Some(f) = m.window.reverts {
        let replayed = spi::one(
            "SELECT rows_replayed FROM migrate.migrations WHERE id = $1",
            &[m.id.into()],
            |r| get::<i64>(r, 1),
        )?;
        return Ok(format!(
            "migration {} of {} reverted: {replayed} changed rows mapped back, swapped in {:.1} s",
            f,
            m.table_name,
            secs.first().copied().unwrap_or(0.0)
        ));
    }
    let window = match &m.window.until {
        Some(until) => format!(", revertible until {until}"),
        None => String::new(),
    };
    Ok(format!(
        "migration {} of {} done: {} rows copied{verified}, {} in {:.1} s{window}",
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

pub fn ended(m: &Migration) -> Result<Option<String>> {
    match m.phase {
        Phase::Done => Ok(Some(summary(m)?)),
        Phase::Failed => Err(stored_error(m)),
        Phase::Aborted => Err(MigrateError::Aborted {
            id: m.id,
            table: m.table_name.clone(),
        }),
        _ => Ok(None),
    }
}

/// Wait for the copy to catch up, have the swap done (by the worker, or
/// here when no worker drives the migration), wait for the validations,
/// and return a one-line summary; the migration's error if it failed, or
/// 57014 once `deadline` has passed. `blockers`: what to do to sessions
/// whose locks or old snapshots keep the swap waiting.
pub fn finish(
    m: Migration,
    deadline: Option<Instant>,
    blockers: blockers::Policy,
) -> Result<String> {
    let isolation = spi::text(
        "SELECT pg_catalog.current_setting('transaction_isolation')",
        &[],
    )?;
    if isolation.as_deref() != Some("read committed") {
        return Err(MigrateError::FinishIsolation);
    }
    if let Some(s) = ended(&m)? {
        return Ok(s);
    }
    if m.needs_worker() {
        return Err(MigrateError::StillBuildingConcurrently {
            id: m.id,
            table: m.table_name.clone(),
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
            return Err(MigrateError::StatementsWithoutWorker {
                id,
                table: m.table_name.clone(),
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
                Phase::Copying | Phase::Verifying => 200,
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
            return Err(MigrateError::FinishTimedOut {
                id,
                table: m.table_name.clone(),
                phase: m.phase.as_str(),
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

/// `migrate.step()`: one unit of work in the caller's transaction; what it
/// did (a failure is recorded, cleaned up and reported, not raised).
pub fn step(m: Migration) -> Result<String> {
    if m.window.open {
        // pg_cron users' expiry: the window closes at the first step() after it.
        if !crate::engine::revert::tend(m.id)? {
            return Ok(format!(
                "revert window of migration {} of {} closed (expired)",
                m.id, m.table_name
            ));
        }
    }
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
        return Err(MigrateError::NoIndexWorker {
            id: m.id,
            table: m.table_name.clone(),
        });
    }
    let id = m.id;
    match crate::pg::subxact::attempt("in migrate.step()", || driver::step(id, Cutover::Never)) {
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
