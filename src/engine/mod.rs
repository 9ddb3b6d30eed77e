//! The engine: the phase machine of a migration and each of its steps.
//!
//! `setup` plans a migration and sets it up; `driver` runs one unit of
//! work per call (copy, index, replay, swap, validate); `finish` is the
//! cut-over loop of `migrate.finish()`, `abort` takes a migration back; the data phases of a rewrite are `capture`, `shadow`, `copy`
//! (with `bulk`, its fast path), `replay` and `swap` (with `storage`, the
//! catalog-level storage exchange, `views`, views and policies recreated
//! around the ALTER, and `snapshots`, the wait for older snapshots);
//! `verify` proves the shadow equal to the ALTERed table before the swap;
//! `concurrent` runs plans of statements (concurrent and two-phase). `state`
//! owns the `migrate.migrations` rows; `locks` is the lock-timeout retry
//! loop; `blockers` acts on sessions that keep the swap waiting; `throttle`
//! decides pauses and batch sizes; `tree` rewrites a partitioned table
//! partition by partition and cuts the whole tree over at once;
//! `versioned` serves old and new shapes at once (expand/contract).
//!
//! Layer: called by `api` and `bgw`; uses `catalog`, `plan` and `pg`.

pub mod abort;
pub mod blockers;
pub mod bulk;
pub mod capture;
pub mod concurrent;
pub mod copy;
pub mod driver;
pub mod finish;
pub mod kept;
pub mod locks;
pub mod replay;
pub mod revert;
pub mod setup;
pub mod shadow;
pub mod snapshots;
pub mod state;
pub mod storage;
pub mod swap;
pub mod throttle;
pub mod tree;
pub mod verify;
pub mod versioned;
pub mod views;
