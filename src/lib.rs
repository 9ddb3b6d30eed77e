//! halo_migrate: online schema changes for PostgreSQL.
//!
//! Module map (see doc/how-it-works.md):
//! - `api`      — the SQL surface, thin `#[pg_extern]`s
//! - `parse`    — PostgreSQL's raw parser over the user's ALTER; `split` cuts it into subcommands
//! - `catalog`  — what the system catalogs say about the table
//! - `probe`    — tries subcommands on an empty clone to learn what PostgreSQL would do
//! - `plan`     — pure decisions (strategy per subcommand) and SQL text generation
//! - `subxact`, `spi` — the two thin layers over PostgreSQL's subtransactions and SPI
//! - `ident`    — the one way identifiers get into SQL
//! - `shadow`   — the shadow table and the copy/replay recipe; `capture` — log and trigger
//! - `snapshots` — the swap waits for older snapshots (an MVCC-safe cut-over)
//! - `copy`, `replay`, `swap` — the three data phases of a rewrite; `storage` — the
//!   catalog-level storage exchange the swap needs; `views` — views and policies
//!   on altered columns, recreated around the ALTER
//! - `driver`   — the phase machine (one unit of work per call); `worker` — the background worker;
//!   `launcher` — resumes interrupted migrations at server start (shared_preload_libraries)
//! - `concurrent` — ADD PRIMARY KEY / UNIQUE via an index built CONCURRENTLY, which the
//!   worker runs as a top-level command (`toplevel`)
//! - `state`    — the migrations table; `locks` — the lock-timeout retry loop; `blockers` —
//!   `finish(blockers => …)`, cancelling or terminating sessions that keep the swap waiting
//! - `ddl_pass` — lets the migration's own DDL past the DDL guard (backend-local)
//! - `gucs`     — settings; `error` — the one error type
#![deny(unsafe_op_in_unsafe_fn)]

use pgrx::prelude::*;

mod api;
mod blockers;
mod bulk;
mod capture;
mod catalog;
mod concurrent;
mod copy;
mod ddl_pass;
mod driver;
mod error;
mod gucs;
mod ident;
mod launcher;
mod locks;
mod parse;
mod plan;
mod probe;
mod replay;
mod shadow;
mod snapshots;
mod spi;
mod split;
mod state;
mod storage;
mod subxact;
mod swap;
mod throttle;
mod toplevel;
mod views;
mod worker;

pgrx::extension_sql_file!("schema.sql", name = "schema", bootstrap);

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    launcher::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
