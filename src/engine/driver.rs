//! The phase machine of a rewrite: one unit of work per call.
//!
//! copying → indexing → replaying [→ verifying → replaying] ⇄ ready → (swap)
//! → validating → done.
//! Whoever drives the migration — the background worker, `migrate.step()`
//! from pg_cron, or `migrate.finish()` — calls [`step`] inside a transaction
//! and commits after it. The migration's row is locked for the duration
//! (SKIP LOCKED), so two drivers never work on one migration at once, and
//! each unit's progress commits with its work.
//!
//! [`fail`] and [`cleanup`] remove everything a migration created before the
//! swap; after the swap there is nothing of ours left to remove.

use crate::catalog;
use crate::engine::copy;
use crate::engine::locks;
use crate::engine::replay;
use crate::engine::snapshots;
use crate::engine::state::{self, Migration, Phase};
use crate::engine::swap;
use crate::engine::throttle;
use crate::engine::verify;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi;
use std::time::Instant;

/// Whether this call may perform the swap when the copy has caught up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cutover {
    /// `step()`: never; `finish()` does it.
    Never,
    /// The worker: when started with auto_finish, or while `finish()` waits.
    WhenRequested,
    /// `finish()` driving the migration itself.
    Now,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Work was done; call again.
    Progress(String),
    /// Nothing to do right now; call again after a pause.
    Idle { ms: u64, note: String },
    /// Another driver holds the migration.
    Busy,
    /// The migration is over.
    Finished(Phase),
}

pub use crate::engine::locks::CUTOVER_LOCK_KEY;

pub fn step(id: i64, cutover: Cutover) -> Result<Outcome> {
    let Some(m) = state::lock(id)? else {
        return Ok(Outcome::Busy);
    };
    if m.phase.is_terminal() {
        return Ok(Outcome::Finished(m.phase));
    }
    if m.paused {
        return Ok(Outcome::Idle {
            ms: 500,
            note: "paused; migrate.resume() continues".into(),
        });
    }
    if let Some(tree) = m.tree_id {
        return Err(MigrateError::Internal(format!(
            "migration {id} is a partition's part of migration {tree}, which drives it"
        )));
    }
    if m.strategy == crate::plan::model::Strategy::Versioned {
        return crate::engine::versioned::backfill::step(&m, cutover);
    }
    if m.is_tree() {
        return crate::engine::tree::step(&m, cutover);
    }
    if m.runs_statements() {
        return crate::engine::concurrent::step(&m);
    }
    let table = catalog::qualified_name(m.relid)?.ok_or_else(|| {
        MigrateError::Internal(format!("table of migration {id} no longer exists"))
    })?;
    spi::with_search_path(&m.search_path.clone(), || step_phase(&m, &table, cutover))
}

pub(crate) fn step_phase(
    m: &Migration,
    table: &QualifiedName,
    cutover: Cutover,
) -> Result<Outcome> {
    match m.phase {
        Phase::Copying => {
            if let Some(note) = throttle::hold(m)? {
                return Ok(Outcome::Idle { ms: 1000, note });
            }
            crate::pg::activity::commit_asynchronously()?;
            let t0 = Instant::now();
            let (rows, next) = copy::copy_batch(m, table)?;
            let took_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let phase = if next >= m.copy_end {
                Phase::Indexing
            } else {
                Phase::Copying
            };
            let batch_rows = throttle::adapt_batch_rows(m.batch_rows, took_ms, m.target_batch_ms);
            state::record_copy_batch(m.id, rows, next, phase, batch_rows)?;
            let note = format!(
                "copied {rows} rows (heap blocks {} to {next} of {})",
                m.copy_next, m.copy_end
            );
            Ok(if m.batch_pause_ms > 0 {
                Outcome::Idle {
                    ms: m.batch_pause_ms as u64,
                    note,
                }
            } else {
                Outcome::Progress(note)
            })
        }
        Phase::Indexing => {
            crate::pg::activity::commit_asynchronously()?;
            let done = copy::build_next_index(m)?;
            let phase = if done {
                Phase::Replaying
            } else {
                Phase::Indexing
            };
            state::record_index_built(m.id, Some(phase))?;
            let what = m
                .index_sql
                .get(m.indexes_built as usize)
                .map_or("no index to build".into(), |s| s.clone());
            Ok(Outcome::Progress(format!("built: {what}")))
        }
        Phase::Replaying | Phase::Ready | Phase::Swapping => replay_or_swap(m, table, cutover),
        Phase::Verifying => {
            if let Some(note) = throttle::hold(m)? {
                return Ok(Outcome::Idle { ms: 1000, note });
            }
            crate::pg::activity::commit_asynchronously()?;
            let (checked, replayed) = verify::step(m, table)?;
            let note = verify::note(&checked, replayed);
            Ok(match checked {
                verify::Checked::Waiting if replayed == 0 => Outcome::Idle { ms: 100, note },
                _ if m.batch_pause_ms > 0 => Outcome::Idle {
                    ms: m.batch_pause_ms as u64,
                    note,
                },
                _ => Outcome::Progress(note),
            })
        }
        Phase::Validating => validate_step(m),
        Phase::Done | Phase::Failed | Phase::Aborted => Ok(Outcome::Finished(m.phase)),
    }
}

/// One validation after the swap (VALIDATE CONSTRAINT), under bounded lock waits.
pub(crate) fn validate_step(m: &Migration) -> Result<Outcome> {
    let i = m.post_swap_done as usize;
    if let Some(sql) = m.post_swap_sql.get(i) {
        // A revertible migration's window makes the DDL guard hold
        // the table from its swap on: its own validations pass.
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        crate::pg::activity::announce(&format!("validating: {sql}"));
        locks::retry("validate a constraint", m.lock_timeout_ms, 600, || {
            spi::exec(sql, &[])
        })?;
    }
    let done = i + 1 >= m.post_swap_sql.len();
    let phase = if done { Phase::Done } else { Phase::Validating };
    state::record_validated(m.id)?;
    state::set_phase(m.id, phase)?;
    Ok(Outcome::Progress(
        m.post_swap_sql.get(i).cloned().unwrap_or_default(),
    ))
}

fn replay_or_swap(m: &Migration, table: &QualifiedName, cutover: Cutover) -> Result<Outcome> {
    let n = replay::replay_batch(m, table, m.batch_rows as i64)?;
    let backlog = replay::backlog(m)?;
    let caught_up = backlog < m.batch_rows as i64;
    let wanted = match cutover {
        Cutover::Never => false,
        Cutover::Now => true,
        Cutover::WhenRequested => m.auto_finish || finish_is_waiting(m.id)?,
    };
    // Verification comes first once the replay has caught up; it can be
    // asked for only by start(), and only a clean pass ends it.
    let unverified = m.verification.wanted && !m.verification.verified;
    let phase = match (caught_up, wanted) {
        (true, _) if unverified => Phase::Verifying,
        (true, true) => Phase::Swapping,
        (true, false) => Phase::Ready,
        (false, _) => Phase::Replaying,
    };
    state::record_replay(m.id, n, backlog, phase)?;
    if phase == Phase::Verifying {
        return Ok(Outcome::Progress(format!(
            "replayed {n} changes; caught up, verifying"
        )));
    }
    if phase != Phase::Swapping {
        crate::pg::activity::commit_asynchronously()?;
        return Ok(if n > 0 {
            Outcome::Progress(format!("replayed {n} changes, {backlog} waiting"))
        } else {
            Outcome::Idle {
                ms: 200,
                note: format!(
                    "caught up ({}); run migrate.finish() to swap",
                    phase.as_str()
                ),
            }
        });
    }
    try_swap(m, || swap::swap(m, table))
}

/// One attempt at the swap, after the snapshots older than it are gone
/// (snapshot_safe): on a lock timeout the caller tries again later.
pub(crate) fn try_swap(
    m: &Migration,
    swap: impl FnOnce() -> Result<Vec<String>>,
) -> Result<Outcome> {
    if m.snapshot_safe {
        let old = snapshots::older_than(m.relid, m.lock_timeout_ms, CUTOVER_LOCK_KEY)?;
        if !old.is_empty() {
            let pids: Vec<i32> = old.iter().map(|h| h.pid).collect();
            return waiting_for_snapshots(m, &snapshots::describe(&old), &pids, 100);
        }
        if m.waiting_for.is_some() {
            state::set_waiting_for(m.id, None, &[])?;
        }
    }
    match locks::once("swap the table", m.lock_timeout_ms, swap) {
        Ok(after) => {
            if m.waiting_for.is_some() {
                state::set_waiting_for(m.id, None, &[])?;
            }
            let phase = if m.post_swap_sql.is_empty() && after.is_empty() {
                Phase::Done
            } else {
                Phase::Validating
            };
            state::record_swap(m.id, after)?;
            state::set_phase(m.id, phase)?;
            Ok(Outcome::Progress("swapped".into()))
        }
        Err(e) if locks::is_lock_timeout(&e) => {
            let attempts = state::count_swap_attempt(m.id)?;
            pgrx::notice!(
                "halo_migrate: swap attempt {attempts} for {} timed out after {} ms waiting for its lock; retrying",
                m.table_name,
                m.lock_timeout_ms
            );
            Ok(Outcome::Idle {
                ms: locks::backoff_ms(attempts.max(1) as u32, locks::jitter()?),
                note: "swap lock busy".into(),
            })
        }
        Err(MigrateError::SnapshotsHeld { holders, pids }) => {
            // Counted like a lock timeout, so that finish(blockers => …)
            // acts on the sessions after a failed attempt.
            state::count_swap_attempt(m.id)?;
            waiting_for_snapshots(m, &holders, &pids, 50)
        }
        Err(e) => Err(e),
    }
}

/// The swap holds off for sessions whose snapshots predate it: say so in
/// the migration's row (status()) and, when it changes, in a NOTICE.
pub(crate) fn waiting_for_snapshots(
    m: &Migration,
    what: &str,
    pids: &[i32],
    ms: u64,
) -> Result<Outcome> {
    // Only when the sessions change: the row is not rewritten at every look.
    if m.snapshot_holders != pids {
        pgrx::notice!(
            "halo_migrate: the swap of {} waits for {what}; they would otherwise read the new table through an old snapshot (migrate.finish(blockers => 'terminate') ends them; snapshot_safe => false opts out)",
            m.table_name
        );
        state::set_waiting_for(m.id, Some(what), pids)?;
    }
    Ok(Outcome::Idle {
        ms,
        note: format!("waiting for {what}"),
    })
}

/// Is `finish()` waiting for this migration (holding the cut-over lock)?
pub(crate) fn finish_is_waiting(id: i64) -> Result<bool> {
    let free = spi::one(
        "SELECT pg_catalog.pg_try_advisory_xact_lock_shared($1, $2)",
        &[CUTOVER_LOCK_KEY.into(), (id as i32).into()],
        |r| spi::get::<bool>(r, 1),
    )?;
    Ok(!free)
}

/// The note a failure whose cleanup could not be finished carries.
pub const CLEANUP_INCOMPLETE: &str = "Cleanup is incomplete";

/// Remove what a migration created before its swap: the triggers (under
/// bounded lock waits), the shadow, the log, the function.
pub fn cleanup(m: &Migration) -> Result<()> {
    if m.strategy == crate::plan::model::Strategy::Versioned {
        return crate::engine::versioned::contract::undo(m);
    }
    if m.is_tree() {
        return crate::engine::tree::cleanup(m);
    }
    if m.runs_statements() {
        return crate::engine::concurrent::undo(m);
    }
    if m.window.reverts.is_some() {
        // A revert's shadow, log and trigger are the window's: they stay.
        return crate::engine::revert::drop_stash(m.relid.to_u32());
    }
    crate::engine::capture::remove(m.relid, m.lock_timeout_ms)
}

/// Record a failure and clean up. Before the swap the table is left exactly
/// as it was; after it (validation), the swap stands and the error says so.
pub fn fail(id: i64, e: &MigrateError) -> Result<()> {
    let Some(m) = state::load(id)? else {
        return Ok(());
    };
    if m.phase.is_terminal() {
        return Ok(());
    }
    if m.phase == Phase::Validating && !m.runs_statements() {
        let e = MigrateError::ValidationAfterSwap {
            code: e.sqlstate(),
            cause: e.to_string(),
            detail: e.detail(),
        };
        return state::set_failed(id, Phase::Failed, &e);
    }
    if m.is_tree() {
        // Called from SQL (step()): a worker handling the tree's failure
        // finishes first; then the tree's workers must not go on with
        // parts whose shadows are being dropped.
        state::tree::wait_failure_lock(id)?;
        match state::load(id)? {
            Some(t) if !t.phase.is_terminal() => crate::engine::tree::stop_workers(&t, true)?,
            _ => return Ok(()),
        }
    }
    let cleaned = cleanup(&m);
    state::set_failed(id, Phase::Failed, e)?;
    if let Err(c) = cleaned {
        state::note_incomplete_cleanup(
            id,
            &format!("{CLEANUP_INCOMPLETE} ({c}); run migrate.abort() to finish it."),
        )?;
    }
    Ok(())
}
