//! A partitioned table's rewrite: every partition that holds rows is
//! rewritten as an ordinary table is (its own capture, shadow, copy, index
//! builds and replay: a *part*), by up to `jobs` workers at once, and the
//! whole tree is cut over in one transaction (`swap`).
//!
//! The tree's driver ([`step`]) works on the part that most needs work;
//! helpers ([`helper_step`]) do the same until no part is left to copy,
//! index or catch up. Once every part has caught up, the tree's driver
//! keeps every log short and, when the cut-over is wanted, swaps.
//!
//! Invariants: a part is worked on by one driver at a time (its row is
//! locked, SKIP LOCKED); parts never swap on their own; a failure anywhere
//! fails the tree, and cleaning the tree up cleans every part.

pub mod setup;
pub mod swap;

use crate::catalog;
use crate::engine::driver::{self, Cutover, Outcome};
use crate::engine::state::{self, Migration, Phase};
use crate::engine::{capture, replay};
use crate::error::{MigrateError, Result};
use crate::pg::spi;
use crate::plan::model::LockMode;

/// One unit of work for the tree `m` (locked by the caller).
pub fn step(m: &Migration, cutover: Cutover) -> Result<Outcome> {
    match m.phase {
        Phase::Copying | Phase::Indexing | Phase::Verifying | Phase::Replaying => {
            let out = match state::tree::lock_part_to_work(m.id)? {
                Some(part) => step_part(m, &part)?,
                None => Outcome::Idle {
                    ms: 200,
                    note: "the helpers are working on the last partitions".into(),
                },
            };
            let phase = state::tree::phase_of_parts(m.id)?;
            state::tree::record_progress(m.id, phase)?;
            Ok(match (phase, out) {
                (Phase::Ready, _) => Outcome::Progress("every partition caught up".into()),
                (_, out) => out,
            })
        }
        Phase::Ready | Phase::Swapping => catch_up_or_swap(m, cutover),
        Phase::Validating => driver::validate_step(m),
        Phase::Done | Phase::Failed | Phase::Aborted => Ok(Outcome::Finished(m.phase)),
    }
}

/// One unit of work of a helper of the tree `tree_id`: `Finished` once no
/// part is left for it.
pub fn helper_step(tree_id: i64) -> Result<Outcome> {
    let Some(tree) = state::load(tree_id)? else {
        return Ok(Outcome::Finished(Phase::Aborted));
    };
    if !matches!(
        tree.phase,
        Phase::Copying | Phase::Indexing | Phase::Verifying | Phase::Replaying
    ) {
        return Ok(Outcome::Finished(tree.phase));
    }
    if tree.paused {
        return Ok(Outcome::Idle {
            ms: 500,
            note: "paused; migrate.resume() continues".into(),
        });
    }
    // Every part taken (by the others, or locked for a moment by
    // throttle()): look again; a helper ends only with the copy phases.
    match state::tree::lock_part_to_work(tree_id)? {
        Some(part) => step_part(&tree, &part),
        None => Ok(Outcome::Idle {
            ms: 500,
            note: "every partition is being worked on".into(),
        }),
    }
}

/// One unit of a part's own rewrite, under the tree's runtime controls.
fn step_part(tree: &Migration, part: &Migration) -> Result<Outcome> {
    let mut part = part.clone();
    part.batch_pause_ms = tree.batch_pause_ms;
    part.target_batch_ms = tree.target_batch_ms;
    part.max_replica_lag_ms = tree.max_replica_lag_ms;
    let table = catalog::qualified_name(part.relid)?.ok_or_else(|| {
        MigrateError::Internal(format!("partition {} no longer exists", part.table_name))
    })?;
    let path = part.search_path.clone();
    spi::with_search_path(&path, || driver::step_phase(&part, &table, Cutover::Never))
}

/// Every part has caught up: replay each log, and swap once the backlog
/// is small and the cut-over is wanted.
fn catch_up_or_swap(m: &Migration, cutover: Cutover) -> Result<Outcome> {
    let parts = state::tree::lock_parts(m.id)?;
    let mut leaves = Vec::with_capacity(parts.len());
    let (mut replayed, mut backlog) = (0, 0);
    for p in &parts {
        let table = catalog::qualified_name(p.relid)?.ok_or_else(|| {
            MigrateError::Internal(format!("partition {} no longer exists", p.table_name))
        })?;
        let n = spi::with_search_path(&p.search_path, || {
            replay::replay_batch(p, &table, p.batch_rows as i64)
        })?;
        let left = replay::backlog(p)?;
        state::record_replay(p.id, n, left, Phase::Ready)?;
        replayed += n;
        backlog += left;
        leaves.push(swap::Leaf { part: p, table });
    }
    let wanted = match cutover {
        Cutover::Never => false,
        Cutover::Now => true,
        Cutover::WhenRequested => m.auto_finish || driver::finish_is_waiting(m.id)?,
    };
    let caught_up = backlog < i64::from(m.batch_rows);
    let phase = if caught_up && wanted {
        Phase::Swapping
    } else {
        Phase::Ready
    };
    state::tree::record_progress(m.id, phase)?;
    if phase != Phase::Swapping {
        crate::pg::activity::commit_asynchronously()?;
        return Ok(if replayed > 0 {
            Outcome::Progress(format!("replayed {replayed} changes, {backlog} waiting"))
        } else {
            Outcome::Idle {
                ms: 200,
                note: "caught up (ready); run migrate.finish() to swap".into(),
            }
        });
    }
    let table = catalog::qualified_name(m.relid)?.ok_or_else(|| {
        MigrateError::Internal(format!("table of migration {} no longer exists", m.id))
    })?;
    // The last replay and the user's ALTER evaluate the user's expressions:
    // under the caller's search_path of start(), as everywhere else.
    spi::with_search_path(&m.search_path.clone(), || {
        driver::try_swap(m, || swap::swap(m, &table, &leaves))
    })
}

/// Remove what every part created: the capture triggers of all partitions
/// in one attempt within one `lock_timeout` (retried), so that no
/// partition stays locked while another one's lock is waited for; then the
/// shadows, logs and functions. The caller ends the parts with the tree,
/// after stopping the tree's other workers ([`stop_workers`]).
pub fn cleanup(m: &Migration) -> Result<()> {
    let parts = state::tree::parts(m.id)?;
    let all = crate::engine::locks::TreeLock {
        parent: LockMode::AccessExclusive,
        partitions: LockMode::AccessExclusive,
    };
    crate::engine::locks::retry(
        "remove the capture triggers",
        m.lock_timeout_ms,
        100,
        || {
            // Read at each attempt: a partition dropped meanwhile is skipped
            // (after a failure the DDL guard no longer holds the tree).
            let mut tables = Vec::new();
            for p in &parts {
                if let Some(t) = catalog::qualified_name(p.relid)? {
                    tables.push((t, p.relid.to_u32()));
                }
            }
            let names: Vec<_> = tables.iter().map(|(t, _)| t.clone()).collect();
            crate::engine::locks::lock_in_order(&names, all, m.lock_timeout_ms)?;
            for (t, oid) in &tables {
                for sql in capture::drop_trigger_sql(*oid, t) {
                    spi::exec(&sql, &[])?;
                }
            }
            Ok(())
        },
    )?;
    for p in &parts {
        let oid = p.relid.to_u32();
        spi::exec(
            &format!(
                "DROP TABLE IF EXISTS {}",
                crate::plan::sqlgen::shadow_table(oid)
            ),
            &[],
        )?;
        capture::drop_log(oid)?;
    }
    Ok(())
}

/// Stop the tree's other workers — its helpers, and with `main` its own
/// worker — and wait until they are gone: a unit of work is cancelled (an
/// index build can take long), then the worker terminated. A cancelled
/// helper exits without recording anything; a cancelled tree worker finds
/// the tree's failure lock held by whoever stops it (the failing worker,
/// `abort()`), and exits without recording anything either.
pub fn stop_workers(m: &Migration, main: bool) -> Result<()> {
    // SAFETY: reading this backend's own pid.
    let me = unsafe { pgrx::pg_sys::MyProcPid };
    let t0 = std::time::Instant::now();
    loop {
        spi::exec("SELECT pg_catalog.pg_stat_clear_snapshot()", &[])?;
        let mut pids = state::tree::helper_pids(m.id)?;
        if main {
            pids.extend(state::tree::main_worker_pid(m.id, m.worker_pid)?);
        }
        pids.retain(|&p| p != me);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            spi::exec(
                "SELECT pg_catalog.pg_cancel_backend($1), pg_catalog.pg_terminate_backend($1)",
                &[pid.into()],
            )?;
        }
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            return Err(MigrateError::Internal(format!(
                "the workers of migration {} did not stop within a minute",
                m.id
            )));
        }
        crate::engine::locks::sleep_ms(50)?;
    }
}
