//! The state of each migration: one row of `migrate.migrations`.
//!
//! Progress is written in the same transaction as the work it describes (a
//! copied batch, a replayed batch, the swap), so the row is always exactly as
//! far as the committed work: a restarted worker continues from it.

pub mod tree;
pub mod verification;
pub mod versioned;
pub mod window;

pub use verification::Verification;
pub use window::Window;

use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get};
use crate::plan::model::Strategy;
use pgrx::pg_sys::Oid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Copying,
    Indexing,
    Replaying,
    Verifying,
    Ready,
    Swapping,
    Validating,
    Done,
    Failed,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Indexing => "indexing",
            Phase::Replaying => "replaying",
            Phase::Verifying => "verifying",
            Phase::Ready => "ready",
            Phase::Swapping => "swapping",
            Phase::Validating => "validating",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Result<Phase> {
        use Phase::*;
        [
            Copying, Indexing, Replaying, Verifying, Ready, Swapping, Validating, Done, Failed,
            Aborted,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| MigrateError::Internal(format!("unknown phase \"{s}\"")))
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Aborted)
    }
}

/// One migration, as stored.
#[derive(Clone, Debug)]
pub struct Migration {
    pub id: i64,
    pub relid: Oid,
    pub table_name: String,
    pub phase: Phase,
    /// Captured changes not yet replayed, as of the last unit of work.
    pub backlog: i64,
    pub batch_rows: i32,
    pub lock_timeout_ms: i32,
    pub auto_finish: bool,
    pub background: bool,
    pub relfilenode: Oid,
    pub search_path: String,
    pub shadow_sql: Vec<String>,
    pub swap_sql: Vec<String>,
    pub index_sql: Vec<String>,
    pub post_swap_sql: Vec<String>,
    pub altered_columns: Vec<String>,
    pub added_columns: Vec<String>,
    pub copy_targets: String,
    pub copy_exprs: String,
    pub log_as_orig: String,
    pub key_map: String,
    pub shadow_match: String,
    pub orig_match: String,
    pub copy_next: i64,
    pub copy_end: i64,
    pub indexes_built: i32,
    pub post_swap_done: i32,
    pub rows_copied: i64,
    pub rows_total: i64,
    pub worker_pid: Option<i32>,
    pub error: Option<String>,
    pub error_sqlstate: Option<String>,
    pub error_detail: Option<String>,
    /// The failure's own hint (None: the generic one).
    pub error_hint: Option<String>,
    /// Rewrite, concurrent or two-phase (instant plans end in start()).
    pub strategy: Strategy,
    /// Concurrent and two-phase plans: what takes each statement back.
    pub undo_sql: Vec<String>,
    /// The column whose NOT NULL each statement validates ("" for none).
    pub not_null_of: Vec<String>,
    /// Concurrent plan: the indexes it builds, by bare name.
    pub concurrent_indexes: Vec<String>,
    /// Runtime control (`pause`, `throttle`); 0 means off.
    pub paused: bool,
    pub batch_pause_ms: i32,
    pub target_batch_ms: i32,
    pub max_replica_lag_ms: i32,
    /// The role that started the migration: its worker runs as this role.
    pub role_oid: Oid,
    /// The swap waits for snapshots older than itself (snapshots.rs).
    pub snapshot_safe: bool,
    /// What the swap waits for now, as shown by status().
    pub waiting_for: Option<String>,
    /// The sessions it waits for.
    pub snapshot_holders: Vec<i32>,
    /// The replay key's columns (a rewrite).
    pub key_columns: Vec<String>,
    /// Verification before the swap (`start(verify => true)`).
    pub verification: Verification,
    /// The revert window (`start(revertible => true)`), or what a revert reverts.
    pub window: Window,
    /// A partition's part of a partitioned table's rewrite: the tree's migration.
    pub tree_id: Option<i64>,
    /// A partitioned table's rewrite: workers copying its partitions at once.
    pub jobs: Option<i32>,
}

impl Migration {
    /// A partitioned table's rewrite (the tree's row, not a part).
    pub fn is_tree(&self) -> bool {
        self.jobs.is_some()
    }

    /// A concurrent or two-phase plan: its statements in `index_sql`, each
    /// in a transaction of its own, so that no validation runs under a lock
    /// an earlier statement of the same transaction took.
    pub fn runs_statements(&self) -> bool {
        matches!(self.strategy, Strategy::Concurrent | Strategy::TwoPhase)
    }

    /// A statement of the plan not yet run must be a top-level command
    /// (CREATE INDEX CONCURRENTLY), which only the worker can run.
    pub fn needs_worker(&self) -> bool {
        self.runs_statements()
            && self
                .index_sql
                .iter()
                .skip(self.indexes_built.max(0) as usize)
                .any(|s| crate::engine::concurrent::needs_top_level(s))
    }
}

const MAIN_COLUMNS: &str = "id, relid, table_name, phase, backlog, batch_rows, lock_timeout_ms, auto_finish, background,
    coalesce(relfilenode, 0), search_path, shadow_sql, swap_sql, index_sql, post_swap_sql, altered_columns, added_columns,
    coalesce(copy_targets, ''), coalesce(copy_exprs, ''), coalesce(log_as_orig, ''),
    coalesce(key_map, ''), coalesce(shadow_match, ''), coalesce(orig_match, ''),
    copy_next, coalesce(copy_end, 0), indexes_built, post_swap_done, rows_copied, coalesce(rows_total, 0),
    worker_pid, error, error_sqlstate, error_detail, strategy, concurrent_indexes,
    paused, batch_pause_ms, coalesce(target_batch_ms, 0), coalesce(max_replica_lag_ms, 0), role_oid,
    snapshot_safe, waiting_for, snapshot_holders, undo_sql, not_null_of, key_columns, error_hint, ";

/// Every column a [`Migration`] is read from.
fn columns() -> String {
    format!(
        "{MAIN_COLUMNS}{}{}{}",
        verification::COLUMNS,
        window::COLUMNS,
        tree::COLUMNS
    )
}

fn from_row(r: &spi::Row) -> Result<Migration> {
    Ok(Migration {
        id: get(r, 1)?,
        relid: get(r, 2)?,
        table_name: get(r, 3)?,
        phase: Phase::parse(&get::<String>(r, 4)?)?,
        backlog: get(r, 5)?,
        batch_rows: get(r, 6)?,
        lock_timeout_ms: get(r, 7)?,
        auto_finish: get(r, 8)?,
        background: get(r, 9)?,
        relfilenode: get(r, 10)?,
        search_path: get(r, 11)?,
        shadow_sql: get(r, 12)?,
        swap_sql: get(r, 13)?,
        index_sql: get(r, 14)?,
        post_swap_sql: get(r, 15)?,
        altered_columns: get(r, 16)?,
        added_columns: get(r, 17)?,
        copy_targets: get(r, 18)?,
        copy_exprs: get(r, 19)?,
        log_as_orig: get(r, 20)?,
        key_map: get(r, 21)?,
        shadow_match: get(r, 22)?,
        orig_match: get(r, 23)?,
        copy_next: get(r, 24)?,
        copy_end: get(r, 25)?,
        indexes_built: get(r, 26)?,
        post_swap_done: get(r, 27)?,
        rows_copied: get(r, 28)?,
        rows_total: get(r, 29)?,
        worker_pid: r.get(30)?,
        error: r.get(31)?,
        error_sqlstate: r.get(32)?,
        error_detail: r.get(33)?,
        strategy: {
            let name: String = get(r, 34)?;
            Strategy::parse(&name)
                .ok_or_else(|| MigrateError::Internal(format!("unknown strategy \"{name}\"")))?
        },
        concurrent_indexes: get(r, 35)?,
        paused: get(r, 36)?,
        batch_pause_ms: get(r, 37)?,
        target_batch_ms: get(r, 38)?,
        max_replica_lag_ms: get(r, 39)?,
        role_oid: get(r, 40)?,
        snapshot_safe: get(r, 41)?,
        waiting_for: r.get(42)?,
        snapshot_holders: get(r, 43)?,
        undo_sql: get(r, 44)?,
        not_null_of: get(r, 45)?,
        key_columns: get(r, 46)?,
        error_hint: r.get(47)?,
        verification: verification::from_row(r, 48)?,
        window: window::from_row(r, 57)?,
        tree_id: r.get(69)?,
        jobs: r.get(70)?,
    })
}

/// The migration, locked for the caller's transaction so that only one
/// driver (worker, `step()`, `finish()`) works on it at a time. `None` when
/// it does not exist or another driver holds it.
pub fn lock(id: i64) -> Result<Option<Migration>> {
    let sql = format!(
        "SELECT {} FROM migrate.migrations WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
        columns()
    );
    Ok(spi::query(&sql, &[id.into()], from_row)?.into_iter().next())
}

/// Has the caller's transaction changed or locked the migration's row (a
/// `throttle()`, `pause()`, `resume()` or `step()` not yet committed)? A
/// worker cannot take the row until this transaction ends.
pub fn held_by_this_transaction(id: i64) -> Result<bool> {
    let ids = spi::query(
        "SELECT xmin::text::bigint, xmax::text::bigint FROM migrate.migrations WHERE id = $1",
        &[id.into()],
        |r| Ok((get::<i64>(r, 1)?, get::<i64>(r, 2)?)),
    )?;
    Ok(ids.iter().any(|&(xmin, xmax)| {
        [xmin, xmax].into_iter().any(|x| {
            // SAFETY: a pure lookup in this backend's transaction state; any
            // 32-bit value is a valid argument (0 is never current). An xmax
            // that is a MultiXactId is compared as an xid: at worst finish()
            // then drives the migration itself, which is always correct.
            x != 0
                && unsafe { pgrx::pg_sys::TransactionIdIsCurrentTransactionId((x as u32).into()) }
        })
    }))
}

/// The migration as last committed, without locking it.
pub fn load(id: i64) -> Result<Option<Migration>> {
    let sql = format!("SELECT {} FROM migrate.migrations WHERE id = $1", columns());
    Ok(spi::query(&sql, &[id.into()], from_row)?.into_iter().next())
}

/// The table's live migration, else its most recent one.
pub fn latest_for_table(relid: Oid) -> Result<Option<Migration>> {
    let sql = format!(
        "SELECT {} FROM migrate.migrations WHERE relid = $1 AND tree_id IS NULL
          ORDER BY phase IN ('done', 'failed', 'aborted'), id DESC LIMIT 1",
        columns()
    );
    Ok(spi::query(&sql, &[relid.into()], from_row)?
        .into_iter()
        .next())
}

/// A live migration of another member of `relid`'s partition tree (a
/// partitioned table above it, or a partition below it): its id, table and
/// phase.
pub fn live_in_tree(relid: Oid) -> Result<Option<(i64, String, String)>> {
    Ok(spi::query(
        "SELECT id, table_name, phase FROM migrate.migrations
          WHERE phase NOT IN ('done', 'failed', 'aborted') AND relid <> $1
            AND (relid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors($1) a)
                 OR relid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t))
          ORDER BY id LIMIT 1",
        &[relid.into()],
        |r| Ok((get(r, 1)?, get(r, 2)?, get(r, 3)?)),
    )?
    .into_iter()
    .next())
}

/// Run an UPDATE of this migration's row; `set` is the SET list, with the
/// id as `$1` and further values from `$2`. Private: every change of a
/// migration's row is one of the typed functions below.
fn update(id: i64, set: &str, args: Vec<pgrx::datum::DatumWithOid<'static>>) -> Result<()> {
    let mut all = vec![id.into()];
    all.extend(args);
    spi::exec(
        &format!("UPDATE migrate.migrations SET {set}, updated_at = pg_catalog.clock_timestamp() WHERE id = $1"),
        &all,
    )
}

pub fn set_phase(id: i64, phase: Phase) -> Result<()> {
    let finished = if phase.is_terminal() {
        ", finished_at = pg_catalog.clock_timestamp()"
    } else {
        ""
    };
    update(
        id,
        &format!("phase = $2{finished}"),
        vec![phase.as_str().into()],
    )?;
    // A tree's parts end with it.
    if phase.is_terminal() {
        tree::end_parts(id, phase)?;
    }
    Ok(())
}

/// Record a failure: the phase, the error and when.
pub fn set_failed(id: i64, phase: Phase, e: &MigrateError) -> Result<()> {
    update(
        id,
        "phase = $2, error = $3, error_sqlstate = $4, error_detail = $5, error_hint = $6,
         finished_at = pg_catalog.clock_timestamp()",
        vec![
            phase.as_str().into(),
            e.to_string().into(),
            crate::error::sqlstate_text(e.sqlstate()).into(),
            e.detail().into(),
            e.hint().into(),
        ],
    )?;
    tree::end_parts(id, phase)
}

/// A new migration, as `start()` records it.
pub struct New {
    pub relid: Oid,
    pub table_name: String,
    pub alter_sql: String,
    pub strategy: Strategy,
    pub phase: Phase,
    pub batch_rows: i32,
    pub lock_timeout_ms: i32,
    pub auto_finish: bool,
    pub background: bool,
    pub snapshot_safe: bool,
    pub verify: bool,
    /// Keep the old storage at the swap, for this many seconds (a rewrite only).
    pub revert_window_s: Option<i32>,
    /// `down` expressions for revert(), as jsonb text.
    pub down: Option<String>,
}

/// Record a new migration (done already, for an instant plan); its id. The
/// runtime throttles start from the `halo_migrate.*` settings, and the
/// search_path is the caller's, for the user's own expressions.
pub fn create(n: New) -> Result<i64> {
    let path =
        spi::text("SELECT pg_catalog.current_setting('search_path')", &[])?.unwrap_or_default();
    let finished = if n.phase.is_terminal() {
        "pg_catalog.clock_timestamp()"
    } else {
        "NULL"
    };
    spi::query(
        &format!(
            "INSERT INTO migrate.migrations (relid, table_name, alter_sql, strategy, phase, batch_rows,
                 lock_timeout_ms, auto_finish, background, search_path, finished_at,
                 batch_pause_ms, target_batch_ms, max_replica_lag_ms, snapshot_safe, verify,
                 revertible, revert_window, down_sql)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {finished}, $11,
                     NULLIF($12, 0), NULLIF($13, 0), $14, $15,
                     $16 IS NOT NULL, pg_catalog.make_interval(secs => $16), $17::jsonb) RETURNING id"
        ),
        &[
            n.relid.into(),
            n.table_name.into(),
            n.alter_sql.into(),
            n.strategy.name().into(),
            n.phase.as_str().into(),
            n.batch_rows.into(),
            n.lock_timeout_ms.into(),
            n.auto_finish.into(),
            n.background.into(),
            path.into(),
            crate::gucs::batch_pause_ms().into(),
            crate::gucs::target_batch_ms().into(),
            crate::gucs::max_replica_lag_ms().into(),
            n.snapshot_safe.into(),
            n.verify.into(),
            n.revert_window_s.map(f64::from).into(),
            n.down.into(),
        ],
        |r| get::<i64>(r, 1),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal("INSERT ... RETURNING returned no row".into()))
}

/// A copy batch of `rows` rows committed; the copy goes on at block `next`.
pub fn record_copy_batch(
    id: i64,
    rows: u64,
    next: i64,
    phase: Phase,
    batch_rows: i32,
) -> Result<()> {
    update(
        id,
        "rows_copied = rows_copied + $2, copy_next = $3, phase = $4, batch_rows = $5",
        vec![
            (rows as i64).into(),
            next.into(),
            phase.as_str().into(),
            batch_rows.into(),
        ],
    )
}

/// One more index of the shadow built, or one more statement of a plan of
/// statements run (`phase`: the phase after it, if it changes).
pub fn record_index_built(id: i64, phase: Option<Phase>) -> Result<()> {
    match phase {
        Some(p) => update(
            id,
            "indexes_built = indexes_built + 1, phase = $2",
            vec![p.as_str().into()],
        ),
        None => update(id, "indexes_built = indexes_built + 1", vec![]),
    }
}

/// `n` captured changes replayed; `backlog` left.
pub fn record_replay(id: i64, n: u64, backlog: i64, phase: Phase) -> Result<()> {
    update(
        id,
        "rows_replayed = rows_replayed + $2, backlog = $3, phase = $4",
        vec![(n as i64).into(), backlog.into(), phase.as_str().into()],
    )
}

/// The swap committed with this attempt; `after` are its validations.
pub fn record_swap(id: i64, after: Vec<String>) -> Result<()> {
    update(
        id,
        "post_swap_sql = post_swap_sql || $2, swap_attempts = swap_attempts + 1, backlog = 0",
        vec![after.into()],
    )
}

/// A swap attempt that did not commit (lock timeout, old snapshots); how
/// many attempts there have been.
pub fn count_swap_attempt(id: i64) -> Result<i32> {
    spi::query(
        "UPDATE migrate.migrations SET swap_attempts = swap_attempts + 1,
                updated_at = pg_catalog.clock_timestamp()
          WHERE id = $1 RETURNING swap_attempts",
        &[id.into()],
        |r| get(r, 1),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal(format!("migration {id} vanished")))
}

/// One more post-swap validation done.
pub fn record_validated(id: i64) -> Result<()> {
    update(id, "post_swap_done = post_swap_done + 1", vec![])
}

/// A failure's note that its cleanup could not be finished.
pub fn note_incomplete_cleanup(id: i64, note: &str) -> Result<()> {
    update(
        id,
        "error_detail = coalesce(error_detail || E'\\n', '') || $2,
         error_hint = 'Run migrate.abort() to remove what the migration left behind.'",
        vec![note.into()],
    )
}

/// Remove the note that matches `pattern` (a regular expression) from the
/// failure's detail, once the cleanup is finished after all.
pub fn drop_note(id: i64, pattern: &str) -> Result<()> {
    update(
        id,
        "error_detail = NULLIF(pg_catalog.regexp_replace(error_detail, $2, ''), ''),
         error_hint = CASE WHEN error_hint LIKE 'Run migrate.abort()%' THEN NULL ELSE error_hint END",
        vec![pattern.into()],
    )
}

/// Forget the failure (an abort that cancelled the worker caused it).
pub fn clear_error(id: i64) -> Result<()> {
    update(
        id,
        "error = NULL, error_sqlstate = NULL, error_detail = NULL, error_hint = NULL",
        vec![],
    )
}

/// The statements of a concurrent or two-phase plan, with what takes each
/// back, the indexes it builds, and the column each NOT NULL check is of.
pub fn set_statements(
    id: i64,
    statements: Vec<String>,
    indexes: Vec<String>,
    undo: Vec<String>,
    not_null_of: Vec<String>,
) -> Result<()> {
    update(
        id,
        "index_sql = $2, concurrent_indexes = $3, undo_sql = $4, not_null_of = $5",
        vec![
            statements.into(),
            indexes.into(),
            undo.into(),
            not_null_of.into(),
        ],
    )
}

/// Everything a rewrite's copy, replay and swap need, fixed at start.
pub struct RewriteRecipe {
    pub relfilenode: Oid,
    pub copy_end: i64,
    pub rows_total: i64,
    pub shadow_sql: Vec<String>,
    pub swap_sql: Vec<String>,
    pub post_swap_sql: Vec<String>,
    pub recipe: crate::engine::shadow::Recipe,
}

pub fn set_rewrite_recipe(id: i64, r: RewriteRecipe) -> Result<()> {
    update(
        id,
        "relfilenode = $2, copy_end = $3, rows_total = $4, shadow_sql = $5, swap_sql = $6, post_swap_sql = $7,
         index_sql = $8, altered_columns = $9, added_columns = $10, copy_targets = $11, copy_exprs = $12,
         log_as_orig = $13, key_map = $14, shadow_match = $15, orig_match = $16, key_columns = $17",
        vec![
            r.relfilenode.into(),
            r.copy_end.into(),
            r.rows_total.into(),
            r.shadow_sql.into(),
            r.swap_sql.into(),
            r.post_swap_sql.into(),
            r.recipe.index_sql.into(),
            r.recipe.altered_columns.into(),
            r.recipe.added_columns.into(),
            r.recipe.copy_targets.into(),
            r.recipe.copy_exprs.into(),
            r.recipe.log_as_orig.into(),
            r.recipe.key_map.into(),
            r.recipe.shadow_match.into(),
            r.recipe.orig_match.into(),
            r.recipe.key_columns.into(),
        ],
    )
}

/// Hold the migration still after its current unit of work, or let it go on.
pub fn set_paused(id: i64, paused: bool) -> Result<()> {
    update(id, "paused = $2", vec![paused.into()])
}

/// The worker now driving the migration (None: one is on its way).
pub fn set_worker(id: i64, pid: Option<i32>) -> Result<()> {
    update(id, "worker_pid = $2", vec![pid.into()])
}

/// Runtime throttling; `None` keeps a value, 0 turns a limit off. The values
/// in force after the change: (batch_rows, batch_pause, target, lag) in ms.
pub fn set_throttle(
    id: i64,
    batch_rows: Option<i32>,
    batch_pause_ms: Option<i32>,
    target_ms: Option<i32>,
    lag_ms: Option<i32>,
) -> Result<(i32, i32, i32, i32)> {
    // A tree's parts each copy in batches of their own.
    if let Some(rows) = batch_rows {
        spi::exec(
            "UPDATE migrate.migrations SET batch_rows = $2, updated_at = pg_catalog.clock_timestamp()
              WHERE tree_id = $1",
            &[id.into(), rows.into()],
        )?;
    }
    spi::query(
        "UPDATE migrate.migrations
            SET batch_rows = coalesce($2, batch_rows),
                batch_pause_ms = coalesce($3, batch_pause_ms),
                target_batch_ms = CASE WHEN $4 IS NULL THEN target_batch_ms ELSE NULLIF($4, 0) END,
                max_replica_lag_ms = CASE WHEN $5 IS NULL THEN max_replica_lag_ms ELSE NULLIF($5, 0) END,
                updated_at = pg_catalog.clock_timestamp()
          WHERE id = $1
      RETURNING batch_rows, batch_pause_ms, coalesce(target_batch_ms, 0), coalesce(max_replica_lag_ms, 0)",
        &[id.into(), batch_rows.into(), batch_pause_ms.into(), target_ms.into(), lag_ms.into()],
        |r| Ok((get::<i32>(r, 1)?, get::<i32>(r, 2)?, get::<i32>(r, 3)?, get::<i32>(r, 4)?)),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal(format!("migration {id} vanished")))
}

/// Say what the swap waits for (None: nothing), and which sessions.
pub fn set_waiting_for(id: i64, what: Option<&str>, pids: &[i32]) -> Result<()> {
    update(
        id,
        "waiting_for = $2, snapshot_holders = $3",
        vec![what.map(str::to_string).into(), pids.to_vec().into()],
    )
}

/// Is this backend pid a live halo_migrate worker?
pub fn worker_alive(pid: Option<i32>) -> Result<bool> {
    let Some(pid) = pid else { return Ok(false) };
    // pg_stat_activity is read from a snapshot kept for the transaction: refresh it.
    spi::exec("SELECT pg_catalog.pg_stat_clear_snapshot()", &[])?;
    spi::one("SELECT migrate.worker_alive($1)", &[pid.into()], |r| {
        get::<bool>(r, 1)
    })
}
