//! End-to-end tests: real PostgreSQL 15 clusters with the installed extension,
//! driven through several client connections at once.
//!
//! Each test starts its own throwaway cluster (`harness::Cluster`), so tests
//! can crash, restart or reconfigure theirs without disturbing the others.

mod concurrent;
mod copy;
mod cutover;
mod engine;
mod expand_contract;
mod faults;
mod harness;
mod names;
mod operations;
mod partition_rewrite;
mod partitioned;
mod plan;
mod promise;
mod replication;
mod revert;
mod safety;
mod verify;
mod versions;
