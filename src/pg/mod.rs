//! Thin helpers over PostgreSQL: SPI (`spi`), identifier quoting (`ident`),
//! internal subtransactions (`subxact`), relations closed on drop (`rel`),
//! top-level commands from a worker
//! (`toplevel`), transactions a worker runs itself (`xact`), what this
//! backend shows in pg_stat_activity (`activity`), and the DDL guard's
//! backend-local pass (`ddl_pass`), and the calls whose spelling differs
//! between PostgreSQL versions (`compat`).
//!
//! Layer: the bottom. Nothing here uses any other module of the crate but
//! `error` and `gucs`.

pub mod activity;
pub mod compat;
pub mod ddl_pass;
pub mod ident;
pub mod rel;
pub mod spi;
pub mod subxact;
pub mod toplevel;
pub mod xact;
