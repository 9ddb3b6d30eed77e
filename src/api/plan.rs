//! `migrate.plan(tbl regclass, alter text)`: the exact dry run.

use super::{or_report, required, Regclass};
use crate::error::Result;
use crate::plan::model::{Step, Subcommand, TableFacts};
use crate::plan::{build_plan, Oracle};
use crate::{catalog, gucs, parse, probe};
use pgrx::prelude::*;

/// Dry run: the steps `migrate.start()` would take for this ALTER, and why.
/// Changes nothing.
#[pg_extern(volatile, parallel_unsafe)]
fn plan(
    tbl: Option<Regclass>,
    alter: Option<&str>,
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
    let steps = or_report(plan_steps(tbl, alter)).steps;
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

/// A plan with what it was made from.
pub(crate) struct Planned {
    pub facts: TableFacts,
    pub cmds: Vec<Subcommand>,
    pub steps: Vec<Step>,
}

/// Parse, read the catalogs, probe, decide. Shared with `start()`.
pub(crate) fn plan_steps(tbl: Option<Regclass>, alter: Option<&str>) -> Result<Planned> {
    let oid = required(tbl, "tbl")?.0;
    let alter = required(alter, "alter")?;
    let facts = catalog::load_table(oid)?;
    let cmds = parse::parse_alter(alter)?;
    // PostgreSQL checks this before it looks at the subcommands' columns:
    // checked here before the probe (whose clone lives where anyone may
    // create), so that the first error is PostgreSQL's.
    crate::plan::check_privileges(&facts, &cmds)?;
    let dropped: Vec<String> = cmds
        .iter()
        .filter_map(|c| match &c.kind {
            // With CASCADE, PostgreSQL drops the views and policies too
            // (and a rewrite refuses it: recreated views would be lost).
            crate::plan::model::CmdKind::DropColumn {
                column,
                cascade: false,
            } => Some(column.clone()),
            _ => None,
        })
        .collect();
    let guarded = crate::views::users_of_dropped(oid, &dropped)?;
    let probes = probe::probe(&facts, &cmds, &guarded, gucs::lock_timeout_ms())?;
    crate::views::refuse_dropped(oid, &dropped)?;
    let constraint_taken = |n: &str| catalog::constraint_name_taken(facts.namespace, n);
    let relation_taken = |n: &str| catalog::relation_name_taken(facts.namespace, n);
    let oracle = Oracle {
        constraint_taken: &constraint_taken,
        relation_taken: &relation_taken,
        lock_of: &parse::lock_of_statement,
    };
    let steps = build_plan(&facts, &cmds, &probes, &oracle)?;
    Ok(Planned { facts, cmds, steps })
}
