//! An MVCC-safe swap: never commit it while another transaction could still
//! read the table through a snapshot taken before it.
//!
//! After the swap the table's storage is the shadow's, whose rows were
//! written by the copy and replay transactions and by the swap itself. A
//! snapshot taken before the swap commits does not see the swap's own
//! writes, nor those of copy batches that committed after it was taken: had
//! it read the table afterwards, it would have seen a table that never
//! existed (PostgreSQL's own rewriting ALTER shows such a reader an empty
//! table). So, unless the migration opted out (`snapshot_safe => false`):
//!
//! 1. Before it queues for its lock, the swap waits while any session of
//!    this database holds a snapshot in a transaction older than the lock
//!    timeout ([`older_than`]): a REPEATABLE READ or SERIALIZABLE
//!    transaction, a cursor, or a long statement.
//! 2. Holding its lock, just before it commits, it waits (at most the lock
//!    timeout) for every session holding a snapshot in a transaction that
//!    began before the lock was granted ([`began_before`]); if one remains,
//!    the attempt rolls back and is retried, like a lock timeout.
//!
//! Not counted: this session; halo_migrate's workers; sessions in
//! `finish()` (they hold or wait for the cut-over advisory lock); sessions
//! holding a lock on the table itself, whose transactions (snapshots and
//! all) the swap's lock waits for anyway — counting them would starve the
//! swap under long writes; sessions waiting for a lock on the table, which
//! are blocked behind the swap and, in READ COMMITTED, take a fresh snapshot
//! once they get the lock; and
//! sessions waiting for a lock this session holds (a `pause()` waiting for
//! the migration's row), which would otherwise wait for each other. Other
//! backend types (autovacuum, WAL senders) never read the table through SQL.

use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get};
use pgrx::pg_sys::Oid;

/// A session holding an old snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub state: String,
    pub xact_age_ms: i64,
    pub query: String,
}

/// Which transactions count as older than the swap.
#[derive(Clone, Copy, Debug)]
enum Since<'a> {
    /// Began more than this many milliseconds ago.
    AgeMs(i32),
    /// Began before this timestamp (SQL text of a timestamptz value).
    Before(&'a str),
}

/// Sessions holding a snapshot in a transaction older than `ms`.
pub fn older_than(relid: Oid, ms: i32, cutover_key: i32) -> Result<Vec<Holder>> {
    holders(relid, Since::AgeMs(ms), cutover_key)
}

/// Sessions holding a snapshot in a transaction that began before `ts`.
pub fn began_before(relid: Oid, ts: &str, cutover_key: i32) -> Result<Vec<Holder>> {
    holders(relid, Since::Before(ts), cutover_key)
}

fn holders(relid: Oid, since: Since, cutover_key: i32) -> Result<Vec<Holder>> {
    // Through a SECURITY DEFINER function: without pg_read_all_stats, other
    // roles' sessions would show no snapshot here (schema.sql).
    let (since_sql, arg): (&str, pgrx::datum::DatumWithOid) = match since {
        Since::AgeMs(ms) => (
            "pg_catalog.clock_timestamp() - $2 * interval '1 millisecond'",
            ms.into(),
        ),
        Since::Before(ts) => ("$2::text::timestamptz", ts.into()),
    };
    spi::query(
        &format!("SELECT * FROM migrate.snapshot_holders($1, {since_sql}, $3)"),
        &[relid.into(), arg, cutover_key.into()],
        |r| {
            Ok(Holder {
                pid: get(r, 1)?,
                state: get(r, 2)?,
                xact_age_ms: get(r, 3)?,
                query: get(r, 4)?,
            })
        },
    )
}

/// One line naming the sessions, for status() and NOTICEs.
pub fn describe(holders: &[Holder]) -> String {
    let shown: Vec<String> = holders
        .iter()
        .take(5)
        .map(|h| {
            format!(
                "pid {} ({}, transaction open {:.1} s: {})",
                h.pid,
                h.state,
                h.xact_age_ms as f64 / 1000.0,
                h.query
            )
        })
        .collect();
    let more = holders.len().saturating_sub(shown.len());
    let mut s = format!("snapshots older than the swap held by {}", shown.join("; "));
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Inside the swap, holding its lock: wait up to `budget_ms` for sessions
/// whose transaction began before `locked_at` to let go of their snapshots.
pub fn wait_in_lock(relid: Oid, locked_at: &str, budget_ms: i32, cutover_key: i32) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let held = began_before(relid, locked_at, cutover_key)?;
        if held.is_empty() {
            return Ok(());
        }
        if t0.elapsed().as_millis() as i64 >= budget_ms as i64 {
            return Err(MigrateError::SnapshotsHeld {
                holders: describe(&held),
                pids: held.iter().map(|h| h.pid).collect(),
            });
        }
        crate::engine::locks::sleep_ms(5)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_described_with_their_age_and_at_most_five() {
        let h = |pid| Holder {
            pid,
            state: "idle in transaction".into(),
            xact_age_ms: 8300,
            query: "SELECT count(*) FROM other".into(),
        };
        assert_eq!(
            describe(&[h(7)]),
            "snapshots older than the swap held by pid 7 (idle in transaction, transaction open 8.3 s: SELECT count(*) FROM other)"
        );
        let many: Vec<Holder> = (1..=7).map(h).collect();
        let d = describe(&many);
        assert!(d.contains("pid 5 ") && !d.contains("pid 6 "));
        assert!(d.ends_with("; and 2 more"));
    }
}
