//! Throttling a migration: pause, a sleep after each copy batch, a batch
//! size that adapts to a target batch duration (like pt-online-schema-
//! change's chunk-time), and waiting while a standby lags.
//!
//! The settings live in the migration's row (`migrate.throttle()` changes
//! them while it runs; `halo_migrate.*` GUCs give their defaults at
//! `start()`), so every driver — the worker, `step()`, `finish()` — obeys
//! them, and they survive a restart. The decisions are pure functions.

use crate::engine::state::Migration;
use crate::error::Result;
use crate::pg::spi::{self, get};

/// The adaptive batch size stays within these bounds.
pub const MIN_BATCH_ROWS: i32 = 100;
pub const MAX_BATCH_ROWS: i32 = 1_000_000;

/// The next batch size, so that a batch takes about `target_ms`: scaled by
/// target / actual, by at most a factor of 2 per batch, so one slow batch
/// (a checkpoint, a lock) does not swing it.
pub fn adapt_batch_rows(current: i32, took_ms: f64, target_ms: i32) -> i32 {
    if target_ms <= 0 || took_ms <= 0.0 {
        return current;
    }
    let factor = (target_ms as f64 / took_ms).clamp(0.5, 2.0);
    ((current as f64 * factor).round() as i64).clamp(MIN_BATCH_ROWS as i64, MAX_BATCH_ROWS as i64)
        as i32
}

/// Why the copy must wait now, if it must.
pub fn hold(m: &Migration) -> Result<Option<String>> {
    if m.max_replica_lag_ms <= 0 {
        return Ok(None);
    }
    let lag = replica_lag_ms()?;
    Ok((lag > m.max_replica_lag_ms as i64).then(|| {
        format!(
            "waiting: a standby's replay lag is {lag} ms (limit {} ms)",
            m.max_replica_lag_ms
        )
    }))
}

/// The largest replay lag of any standby, in ms (0 with none). Needs the
/// privileges of pg_read_all_stats; `throttle()` checks that up front.
pub fn replica_lag_ms() -> Result<i64> {
    Ok(spi::query(
        "SELECT coalesce(max(extract(epoch FROM r.replay_lag) * 1000), 0)::bigint
           FROM pg_catalog.pg_stat_replication r",
        &[],
        |r| get::<i64>(r, 1),
    )?
    .first()
    .copied()
    .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_moves_toward_the_target_by_at_most_2x() {
        assert_eq!(adapt_batch_rows(10_000, 100.0, 0), 10_000, "off");
        assert_eq!(adapt_batch_rows(10_000, 250.0, 500), 20_000);
        assert_eq!(adapt_batch_rows(10_000, 50.0, 500), 20_000, "capped at 2x");
        assert_eq!(adapt_batch_rows(10_000, 1000.0, 500), 5_000);
        assert_eq!(
            adapt_batch_rows(10_000, 60_000.0, 500),
            5_000,
            "capped at 0.5x"
        );
        assert_eq!(adapt_batch_rows(150, 1000.0, 500), MIN_BATCH_ROWS);
        assert_eq!(adapt_batch_rows(900_000, 10.0, 500), MAX_BATCH_ROWS);
        assert_eq!(adapt_batch_rows(10_000, 0.0, 500), 10_000, "no measurement");
    }
}
