//! The rows of a partitioned table's rewrite: one for the tree, one per
//! partition that holds rows (its *part*: capture, shadow, copy, replay of
//! that partition, as an ordinary table's rewrite has them).
//!
//! Invariants: a part never swaps on its own; only the tree's driver does,
//! for every part at once. A part's row is locked (SKIP LOCKED) by whoever
//! works on it, so the tree's worker and its helpers never work on one part
//! at a time. The tree's row holds the sums of its parts' progress, written
//! only by the tree's own driver.

use super::{columns, from_row, update, Migration, Phase};
use crate::error::Result;
use crate::pg::spi::{self, get};

/// The columns `Migration::tree_id` and `Migration::jobs` are read from.
pub(super) const COLUMNS: &str = ", tree_id, jobs";

/// Make migration `id` a part of the tree's migration `tree_id`.
pub fn make_part(id: i64, tree_id: i64) -> Result<()> {
    update(id, "tree_id = $2", vec![tree_id.into()])
}

/// Make migration `id` a tree's, copied by `jobs` workers at once.
pub fn make_tree(id: i64, jobs: i32) -> Result<()> {
    update(id, "jobs = $2", vec![jobs.into()])
}

/// The tree's parts, as last committed, largest first.
pub fn parts(tree_id: i64) -> Result<Vec<Migration>> {
    let sql = format!(
        "SELECT {} FROM migrate.migrations WHERE tree_id = $1 ORDER BY copy_end DESC, id",
        columns()
    );
    spi::query(&sql, &[tree_id.into()], from_row)
}

/// The part that most needs work and nobody else works on, locked for the
/// caller's transaction: one still copying, the most blocks left first (so
/// the largest partitions start first and the copy ends evenly), then one
/// indexing, verifying or replaying, then — so that no log grows while the
/// largest partitions are still copied — the caught-up part looked at
/// longest ago.
pub fn lock_part_to_work(tree_id: i64) -> Result<Option<Migration>> {
    let sql = format!(
        "SELECT {} FROM migrate.migrations
          WHERE tree_id = $1 AND phase IN ('copying', 'indexing', 'verifying', 'replaying', 'ready')
          ORDER BY phase = 'copying' DESC, phase = 'ready', coalesce(copy_end, 0) - copy_next DESC,
                   updated_at, id
          LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED",
        columns()
    );
    Ok(spi::query(&sql, &[tree_id.into()], from_row)?
        .into_iter()
        .next())
}

/// Every part, locked for the caller's transaction (waiting for a helper
/// to end its unit of work): before the tree's cut-over.
pub fn lock_parts(tree_id: i64) -> Result<Vec<Migration>> {
    let sql = format!(
        "SELECT {} FROM migrate.migrations WHERE tree_id = $1 ORDER BY id FOR NO KEY UPDATE",
        columns()
    );
    spi::query(&sql, &[tree_id.into()], from_row)
}

/// The phase the tree is in, from its parts: the earliest of theirs, and
/// `ready` once every part has caught up.
pub fn phase_of_parts(tree_id: i64) -> Result<Phase> {
    let phase = spi::text(
        "SELECT CASE WHEN bool_or(phase = 'copying') THEN 'copying'
                     WHEN bool_or(phase = 'indexing') THEN 'indexing'
                     WHEN bool_or(phase = 'verifying') THEN 'verifying'
                     WHEN bool_or(phase = 'replaying') THEN 'replaying'
                     ELSE 'ready' END
           FROM migrate.migrations WHERE tree_id = $1",
        &[tree_id.into()],
    )?
    .unwrap_or_else(|| "ready".into());
    Phase::parse(&phase)
}

/// The tree's row takes the sums of its parts' progress, and `phase`.
pub fn record_progress(tree_id: i64, phase: Phase) -> Result<()> {
    update(
        tree_id,
        "(rows_copied, rows_total, rows_replayed, backlog, indexes_built) =
             (SELECT coalesce(sum(p.rows_copied), 0), coalesce(sum(p.rows_total), 0),
                     coalesce(sum(p.rows_replayed), 0), coalesce(sum(p.backlog), 0),
                     coalesce(sum(p.indexes_built), 0)::integer
                FROM migrate.migrations p WHERE p.tree_id = $1),
         phase = $2",
        vec![phase.as_str().into()],
    )
}

/// Every part not yet ended takes the tree's end: `phase` (done, failed or
/// aborted).
pub fn end_parts(tree_id: i64, phase: Phase) -> Result<()> {
    spi::exec(
        "UPDATE migrate.migrations
            SET phase = $2, updated_at = pg_catalog.clock_timestamp(),
                finished_at = pg_catalog.clock_timestamp()
          WHERE tree_id = $1 AND phase NOT IN ('done', 'failed', 'aborted')",
        &[tree_id.into(), phase.as_str().into()],
    )
}

/// The ids of the helpers' backends working for the tree (their
/// application_name says so).
pub fn helper_pids(tree_id: i64) -> Result<Vec<i32>> {
    spi::query(
        "SELECT a.pid FROM pg_catalog.pg_stat_activity a
          WHERE a.backend_type = 'halo_migrate worker' AND a.application_name = $1
            AND a.datname = pg_catalog.current_database()",
        &[helper_name(tree_id).into()],
        |r| get::<i32>(r, 1),
    )
}

/// The tree's own worker, if it is alive (by its name, so that a pid
/// reused by another backend is never taken for it).
pub fn main_worker_pid(tree_id: i64, pid: Option<i32>) -> Result<Option<i32>> {
    let Some(pid) = pid else { return Ok(None) };
    Ok(spi::query(
        "SELECT a.pid FROM pg_catalog.pg_stat_activity a
          WHERE a.pid = $1 AND a.backend_type = 'halo_migrate worker'
            AND a.application_name = $2 AND a.datname = pg_catalog.current_database()",
        &[
            pid.into(),
            format!("halo_migrate migration {tree_id}").into(),
        ],
        |r| get::<i32>(r, 1),
    )?
    .into_iter()
    .next())
}

/// Advisory lock class of a tree's failure handling: held by the worker
/// that records a tree's failure and cleans up (session-level, over its
/// transactions) and by `abort()`, so that only one of them acts.
pub const FAILURE_LOCK_KEY: i32 = 0x48414C46;

/// Try to become the one that handles the tree's failure (held by this
/// session until [`release_failure_lock`]).
pub fn try_failure_lock(tree_id: i64) -> Result<bool> {
    spi::one(
        "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
        &[FAILURE_LOCK_KEY.into(), (tree_id as i32).into()],
        |r| get::<bool>(r, 1),
    )
}

/// Let go of the lock [`try_failure_lock`] took.
pub fn release_failure_lock(tree_id: i64) -> Result<()> {
    spi::exec(
        "SELECT pg_catalog.pg_advisory_unlock($1, $2)",
        &[FAILURE_LOCK_KEY.into(), (tree_id as i32).into()],
    )
}

/// Wait for whoever handles the tree's failure, and keep the others out
/// until the caller's transaction ends (`abort()`).
pub fn wait_failure_lock(tree_id: i64) -> Result<()> {
    spi::exec(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[FAILURE_LOCK_KEY.into(), (tree_id as i32).into()],
    )
}

/// Record the tree's failure, with the note that its cleanup is still to
/// be done, if it has not swapped or ended meanwhile; whether it did.
pub fn set_failed_before_cleanup(
    tree_id: i64,
    e: &crate::error::MigrateError,
    note: &str,
) -> Result<bool> {
    Ok(!spi::query(
        "UPDATE migrate.migrations
            SET phase = 'failed', error = $2, error_sqlstate = $3,
                error_detail = coalesce($4 || E'\\n', '') || $5,
                error_hint = 'Run migrate.abort() to remove what the migration left behind.',
                finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp()
          WHERE id = $1 AND phase IN ('copying', 'indexing', 'verifying', 'replaying', 'ready', 'swapping')
      RETURNING id",
        &[
            tree_id.into(),
            e.to_string().into(),
            crate::error::sqlstate_text(e.sqlstate()).into(),
            e.detail().into(),
            note.into(),
        ],
        |r| get::<i64>(r, 1),
    )?
    .is_empty())
}

/// The application_name of the tree's helpers.
pub fn helper_name(tree_id: i64) -> String {
    format!("halo_migrate migration {tree_id} helper")
}
