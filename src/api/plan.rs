//! `migrate.plan(tbl regclass, alter text, revertible boolean)`: the exact dry run.

use super::{call, required, Regclass};
use crate::engine::setup;
use crate::error::Result;
use pgrx::prelude::*;

/// Dry run: the steps `migrate.start()` would take for this ALTER, and why.
/// Changes nothing.
#[pg_extern(volatile, parallel_unsafe)]
fn plan(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    revertible: default!(Option<bool>, "false"),
) -> TableIterator<
    'static,
    (
        name!(step, i32),
        name!(subcommand, Option<String>),
        name!(strategy, String),
        name!(sql, String),
        name!(lock, Option<String>),
        name!(rewrites, bool),
        name!(reason, String),
    ),
> {
    let steps =
        call(|| required(revertible, "revertible").and_then(|r| plan_steps(tbl, alter, r))).steps;
    TableIterator::new(steps.into_iter().enumerate().map(|(i, s)| {
        (
            i as i32 + 1,
            s.subcommand,
            s.strategy.name().to_string(),
            s.sql,
            s.lock.map(|l| l.name().to_string()),
            s.rewrites,
            s.reason,
        )
    }))
}

/// Check the arguments, then plan. Shared with `start()`.
pub(crate) fn plan_steps(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    revertible: bool,
) -> Result<setup::Planned> {
    let oid = required(tbl, "tbl")?.0;
    setup::plan(oid, required(alter, "alter")?, revertible)
}
