//! Bounded lock waits: the lock-timeout retry loop.
//!
//! Every statement that locks the user's table beyond ACCESS SHARE runs here:
//! with `lock_timeout` set, inside a subtransaction, so that a timeout rolls
//! back just that attempt. Between attempts we sleep with exponential back-off
//! and jitter. While we wait in the lock queue, other sessions queue behind
//! us; `lock_timeout` is what bounds their wait.

use crate::error::{MigrateError, Result};
use crate::pg::spi;
use crate::pg::subxact;
use crate::plan::model::{CmdKind, ConstraintType, LockMode, Subcommand};
use pgrx::PgSqlErrorCode;

/// Advisory lock keys: (HALO, migration id) is held by `finish()` while it
/// waits for the worker to swap.
pub const CUTOVER_LOCK_KEY: i32 = 0x48414C4F;

/// Advisory lock class of a partition tree's root, held by `start()`
/// until its transaction ends.
pub const TREE_LOCK_KEY: i32 = 0x48414C50;

/// Hold, until the end of the transaction, the advisory lock of the
/// partition tree `relid` belongs to (its root; itself if it is in none).
pub fn lock_partition_root(relid: pgrx::pg_sys::Oid) -> Result<()> {
    spi::exec(
        "SELECT pg_catalog.pg_advisory_xact_lock(
                ($1::pg_catalog.int8 << 32)
                | coalesce(pg_catalog.pg_partition_root($2), $2)::pg_catalog.int8)",
        &[TREE_LOCK_KEY.into(), relid.into()],
    )
}

/// Is this error a lock timeout (55P03)?
pub fn is_lock_timeout(e: &MigrateError) -> bool {
    e.sqlstate() == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE
}

/// Back-off before retry number `attempt` (1-based): 50 ms doubling up to
/// 2 s, plus up to 50 % jitter so that two waiters do not keep colliding.
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let base = 50u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(2000);
    base + (base as f64 * 0.5 * jitter.clamp(0.0, 1.0)) as u64
}

/// Run `f` with `lock_timeout = timeout_ms` in a subtransaction.
pub fn once<R>(what: &str, timeout_ms: i32, f: impl FnOnce() -> Result<R>) -> Result<R> {
    spi::with_setting("lock_timeout", &format!("{timeout_ms}ms"), || {
        subxact::attempt(what, f)
    })
}

/// [`once`], retried on lock timeouts up to `attempts` times.
pub fn retry<R>(
    what: &str,
    timeout_ms: i32,
    attempts: u32,
    mut f: impl FnMut() -> Result<R>,
) -> Result<R> {
    let mut n = 0;
    loop {
        n += 1;
        match once(what, timeout_ms, &mut f) {
            Err(e) if is_lock_timeout(&e) && n < attempts => sleep_ms(backoff_ms(n, jitter()?))?,
            Err(e) if is_lock_timeout(&e) => {
                return Err(MigrateError::LockNotAvailable {
                    what: what.to_string(),
                    attempts: n,
                    timeout_ms,
                })
            }
            r => return r,
        }
    }
}

/// The locks a statement on a partitioned table takes: on the parent, and
/// on every partition under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLock {
    pub parent: LockMode,
    pub partitions: LockMode,
}

impl TreeLock {
    /// What PostgreSQL takes for `sql`, an ALTER TABLE of the parent made of
    /// `subcommands`: the statement's lock on every member, except that
    /// adding index-backed constraints takes only SHARE on the partitions
    /// (`DefineIndex`).
    pub fn of(sql: &str, subcommands: &[Subcommand]) -> Result<TreeLock> {
        let parent = crate::plan::parse::lock_of_statement(sql)?;
        let only_indexes = !subcommands.is_empty()
            && subcommands.iter().all(|c| {
                matches!(&c.kind, CmdKind::AddConstraint(s)
                    if s.using_index.is_none()
                        && matches!(s.contype, ConstraintType::PrimaryKey | ConstraintType::Unique))
            });
        Ok(TreeLock {
            parent,
            partitions: if only_indexes {
                LockMode::Share
            } else {
                parent
            },
        })
    }
}

/// Lock the partitioned table `relid` and every partition under it in
/// `modes`: the parent first, then by depth and OID, each `LOCK TABLE ONLY`
/// waiting only for what is left of `timeout_ms`. PostgreSQL's own
/// recursion would give every partition a full `lock_timeout`, so a tree of
/// many partitions, each briefly busy, could hold the parent (and queue
/// every writer behind it) for many timeouts. Call it inside an attempt
/// ([`once`]): the locks are then held by the statement that follows and
/// released when the attempt fails. `lock_timeout` is put back afterwards,
/// for the other tables the statement locks (a referenced table).
pub fn lock_tree(relid: pgrx::pg_sys::Oid, modes: TreeLock, timeout_ms: i32) -> Result<()> {
    lock_in_order(&crate::catalog::tree::members(relid)?, modes, timeout_ms)
}

/// Lock `members` in order, the first in `modes.parent`, the others in
/// `modes.partitions`, all within `timeout_ms` (see [`lock_tree`]).
pub fn lock_in_order(
    members: &[crate::pg::ident::QualifiedName],
    modes: TreeLock,
    timeout_ms: i32,
) -> Result<()> {
    let each: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mode = if i == 0 {
                modes.parent
            } else {
                modes.partitions
            };
            (m.clone(), mode)
        })
        .collect();
    lock_each(&each, timeout_ms)
}

/// Lock each relation in its mode, in order, all within `timeout_ms` (see
/// [`lock_tree`]).
pub fn lock_each(
    members: &[(crate::pg::ident::QualifiedName, LockMode)],
    timeout_ms: i32,
) -> Result<()> {
    let began = std::time::Instant::now();
    let restore =
        spi::text("SELECT pg_catalog.current_setting('lock_timeout')", &[])?.unwrap_or_default();
    for (member, mode) in members {
        let left = (i64::from(timeout_ms) - began.elapsed().as_millis() as i64).max(1);
        spi::set_local("lock_timeout", &format!("{left}ms"))?;
        spi::exec(
            &format!("LOCK TABLE ONLY {member} IN {} MODE", mode.sql_name()),
            &[],
        )?;
    }
    spi::set_local("lock_timeout", &restore)
}

/// Sleep, interruptibly (query cancel and termination work).
pub fn sleep_ms(ms: u64) -> Result<()> {
    spi::exec(
        "SELECT pg_catalog.pg_sleep($1)",
        &[(ms as f64 / 1000.0).into()],
    )
}

/// A random number in [0, 1), for back-off jitter.
pub fn jitter() -> Result<f64> {
    spi::one("SELECT pg_catalog.random()", &[], |r| spi::get::<f64>(r, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(1, 0.0), 50);
        assert_eq!(backoff_ms(2, 0.0), 100);
        assert_eq!(backoff_ms(6, 0.0), 1600);
        assert_eq!(backoff_ms(30, 0.0), 2000);
        assert_eq!(backoff_ms(30, 1.0), 3000);
    }
}
