//! halo_migrate: online schema changes for PostgreSQL.
//!
//! Layers, each a folder (see doc/how-it-works.md and README's layout):
//! - `api`     — the SQL surface, `#[pg_extern]`s
//! - `bgw`     — the background worker and the launcher
//! - `engine`  — the phase machine and its steps (copy, replay, swap, …)
//! - `catalog` — what the catalogs say about the table; the empty-clone probe
//! - `plan`    — parsing the ALTER and the pure planning decisions
//! - `pg`      — thin PostgreSQL helpers (SPI, quoting, subtransactions, …)
//! - `error`, `gucs` — the one error type; settings
//!
//! A module uses only its own layer and those below it: api → bgw → engine
//! → catalog → plan → pg. `scripts/layers.sh` checks it (part of `make test`).
#![deny(unsafe_op_in_unsafe_fn)]

use pgrx::prelude::*;

mod api;
mod bgw;
mod catalog;
mod engine;
mod error;
mod gucs;
mod pg;
mod plan;

pgrx::extension_sql_file!("schema.sql", name = "schema", bootstrap);

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    bgw::launcher::register();
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
