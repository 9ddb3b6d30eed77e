//! Clearing the way for a swap that keeps timing out: `finish(…, blockers
//! => 'cancel' | 'terminate')`.
//!
//! By default (`'wait'`) a swap that cannot get its lock within the lock
//! timeout backs off and tries again until `finish()`'s timeout: the
//! sessions holding locks on the table are never touched. A DBA may choose
//! instead to cancel their statements or to terminate them. Only sessions
//! holding a granted lock on the table itself, in a transaction open for
//! longer than the lock timeout, are signalled — the application's own
//! short transactions are left alone — and only after a swap attempt has
//! timed out; never halo_migrate's own workers nor the session calling
//! `finish()`. Signals the caller may not send (another
//! role's session, without `pg_signal_backend`) become WARNINGs; the swap
//! then goes on waiting for them.

use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get};
use crate::pg::subxact;
use pgrx::pg_sys::Oid;

/// What `finish()` does to sessions whose locks keep the swap waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Wait,
    /// pg_cancel_backend: the running statement fails; a session idle in
    /// a transaction keeps its locks.
    Cancel,
    /// pg_terminate_backend: the session ends and its transaction rolls back.
    Terminate,
}

impl Policy {
    pub fn parse(s: Option<&str>) -> Result<Policy> {
        match s.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("wait") => Ok(Policy::Wait),
            Some("cancel") => Ok(Policy::Cancel),
            Some("terminate") => Ok(Policy::Terminate),
            Some(other) => Err(MigrateError::InvalidParameter {
                name: "blockers",
                detail: format!("It is \"{other}\"."),
                hint: "Give 'wait' (the default), 'cancel' (their statements) or 'terminate' (their sessions).".into(),
            }),
        }
    }

    fn function(self) -> Option<&'static str> {
        match self {
            Policy::Wait => None,
            Policy::Cancel => Some("pg_catalog.pg_cancel_backend"),
            Policy::Terminate => Some("pg_catalog.pg_terminate_backend"),
        }
    }
}

/// Signal every other client session (and autovacuum) holding a lock on
/// `relid` in a transaction older than `older_than_ms`, as `policy` says;
/// how many were signalled.
pub fn clear(relid: Oid, older_than_ms: i32, policy: Policy) -> Result<usize> {
    let Some(function) = policy.function() else {
        return Ok(0);
    };
    let holders = spi::query(
        "SELECT DISTINCT l.pid, a.state, pg_catalog.left(a.query, 60)
           FROM pg_catalog.pg_locks l
           JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'relation' AND l.granted
            AND l.database = (SELECT oid FROM pg_catalog.pg_database
                               WHERE datname = pg_catalog.current_database())
            AND l.relation = $1
            AND l.pid <> pg_catalog.pg_backend_pid()
            AND a.backend_type IN ('client backend', 'autovacuum worker')
            AND a.xact_start < pg_catalog.clock_timestamp() - $2 * interval '1 millisecond'",
        &[relid.into(), older_than_ms.into()],
        session_row,
    )?;
    signal(holders, function, policy, "held a lock on the table")
}

/// Signal the sessions `pids` whose snapshots keep the swap waiting
/// (snapshots.rs), as `policy` says; how many were signalled.
pub fn clear_snapshot_holders(pids: &[i32], older_than_ms: i32, policy: Policy) -> Result<usize> {
    let Some(function) = policy.function() else {
        return Ok(0);
    };
    spi::exec("SELECT pg_catalog.pg_stat_clear_snapshot()", &[])?;
    let holders = spi::query(
        "SELECT a.pid, a.state, pg_catalog.left(a.query, 60)
           FROM pg_catalog.pg_stat_activity a
          WHERE a.pid = ANY ($1) AND a.pid <> pg_catalog.pg_backend_pid()
            AND a.backend_type IN ('client backend', 'background worker')
            -- still holding an old snapshot (not a new session on a reused pid)
            AND a.backend_xmin IS NOT NULL
            AND a.xact_start < pg_catalog.clock_timestamp() - $2 * interval '1 millisecond'",
        &[pids.to_vec().into(), older_than_ms.into()],
        session_row,
    )?;
    signal(
        holders,
        function,
        policy,
        "held a snapshot older than the swap",
    )
}

fn session_row(r: &spi::Row) -> Result<(i32, String, String)> {
    Ok((
        get::<i32>(r, 1)?,
        r.get::<String>(2)?.unwrap_or_default(),
        r.get::<String>(3)?.unwrap_or_default(),
    ))
}

fn signal(
    holders: Vec<(i32, String, String)>,
    function: &str,
    policy: Policy,
    why: &str,
) -> Result<usize> {
    let mut signalled = 0;
    for (pid, state, query) in holders {
        if policy == Policy::Cancel && state != "active" {
            pgrx::notice!(
                "halo_migrate: backend {pid} {why} but is {state}: cancelling has no effect on it (blockers => 'terminate' would end it)"
            );
            continue;
        }
        let sent = subxact::attempt("signal a blocking session", || {
            spi::exec(&format!("SELECT {function}($1)"), &[pid.into()])
        });
        match sent {
            Ok(()) => {
                signalled += 1;
                pgrx::notice!(
                    "halo_migrate: {} backend {pid} ({state}: {query}), which {why}",
                    if policy == Policy::Cancel {
                        "cancelled the statement of"
                    } else {
                        "terminated"
                    }
                );
            }
            Err(e) => pgrx::warning!("halo_migrate: could not signal backend {pid}: {e}"),
        }
    }
    Ok(signalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_wait_is_the_default() {
        assert_eq!(Policy::parse(None).unwrap(), Policy::Wait);
        assert_eq!(Policy::parse(Some(" Cancel ")).unwrap(), Policy::Cancel);
        assert_eq!(Policy::parse(Some("terminate")).unwrap(), Policy::Terminate);
        assert!(Policy::parse(Some("kill")).is_err());
        assert_eq!(Policy::Wait.function(), None);
    }
}
