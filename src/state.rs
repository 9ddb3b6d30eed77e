//! The state of each migration: one row of `migrate.migrations`.
//!
//! Progress is written in the same transaction as the work it describes (a
//! copied batch, a replayed batch, the swap), so the row is always exactly as
//! far as the committed work: a restarted worker continues from it.

use crate::error::{MigrateError, Result};
use crate::spi::{self, get};
use pgrx::pg_sys::Oid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Copying,
    Indexing,
    Replaying,
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
            Copying, Indexing, Replaying, Ready, Swapping, Validating, Done, Failed, Aborted,
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
    /// "rewrite", "concurrent" or "two-phase" (instant plans end in start()).
    pub strategy: String,
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
}

impl Migration {
    /// A concurrent or two-phase plan: its statements in `index_sql`, each
    /// in a transaction of its own, so that no validation runs under a lock
    /// an earlier statement of the same transaction took.
    pub fn runs_statements(&self) -> bool {
        self.strategy == "concurrent" || self.strategy == "two-phase"
    }

    /// A statement of the plan not yet run must be a top-level command
    /// (CREATE INDEX CONCURRENTLY), which only the worker can run.
    pub fn needs_worker(&self) -> bool {
        self.runs_statements()
            && self
                .index_sql
                .iter()
                .skip(self.indexes_built.max(0) as usize)
                .any(|s| crate::concurrent::needs_top_level(s))
    }
}

const COLUMNS: &str = "id, relid, table_name, phase, backlog, batch_rows, lock_timeout_ms, auto_finish, background,
    coalesce(relfilenode, 0), search_path, shadow_sql, swap_sql, index_sql, post_swap_sql, altered_columns, added_columns,
    coalesce(copy_targets, ''), coalesce(copy_exprs, ''), coalesce(log_as_orig, ''),
    coalesce(key_map, ''), coalesce(shadow_match, ''), coalesce(orig_match, ''),
    copy_next, coalesce(copy_end, 0), indexes_built, post_swap_done, rows_copied, coalesce(rows_total, 0),
    worker_pid, error, error_sqlstate, error_detail, strategy, concurrent_indexes,
    paused, batch_pause_ms, coalesce(target_batch_ms, 0), coalesce(max_replica_lag_ms, 0), role_oid,
    snapshot_safe, waiting_for, snapshot_holders, undo_sql, not_null_of";

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
        strategy: get(r, 34)?,
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
    })
}

/// The migration, locked for the caller's transaction so that only one
/// driver (worker, `step()`, `finish()`) works on it at a time. `None` when
/// it does not exist or another driver holds it.
pub fn lock(id: i64) -> Result<Option<Migration>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM migrate.migrations WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED"
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
    let sql = format!("SELECT {COLUMNS} FROM migrate.migrations WHERE id = $1");
    Ok(spi::query(&sql, &[id.into()], from_row)?.into_iter().next())
}

/// The table's live migration, else its most recent one.
pub fn latest_for_table(relid: Oid) -> Result<Option<Migration>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM migrate.migrations WHERE relid = $1
          ORDER BY phase IN ('done', 'failed', 'aborted'), id DESC LIMIT 1"
    );
    Ok(spi::query(&sql, &[relid.into()], from_row)?
        .into_iter()
        .next())
}

/// Run an UPDATE of this migration's row; `set` is the SET list, with the
/// id as `$1` and further values from `$2`.
pub fn update(id: i64, set: &str, args: Vec<pgrx::datum::DatumWithOid<'static>>) -> Result<()> {
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
    )
}

/// Record a failure: the phase, the error and when.
pub fn set_failed(id: i64, phase: Phase, e: &MigrateError) -> Result<()> {
    update(
        id,
        "phase = $2, error = $3, error_sqlstate = $4, error_detail = $5, finished_at = pg_catalog.clock_timestamp()",
        vec![
            phase.as_str().into(),
            e.to_string().into(),
            crate::error::sqlstate_text(e.sqlstate()).into(),
            e.detail().into(),
        ],
    )
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
    let alive = spi::query("SELECT migrate.worker_alive($1)", &[pid.into()], |r| {
        get::<bool>(r, 1)
    })?;
    Ok(alive.first().copied().unwrap_or(false))
}
