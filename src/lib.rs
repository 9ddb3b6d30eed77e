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
//! - `gucs`     — settings; `error` — the one error type
#![deny(unsafe_op_in_unsafe_fn)]

use pgrx::prelude::*;

mod api;
mod catalog;
mod error;
mod gucs;
mod ident;
mod parse;
mod plan;
mod probe;
mod spi;
mod split;
mod subxact;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
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
