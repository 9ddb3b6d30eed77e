//! A migration's revert window, as stored in its row of `migrate.migrations`
//! (`revertible`, `revert_window`, `revertible_until`, `kept_constraint*`,
//! `reverts`), and the typed writes that open and close it.
//!
//! Invariant: `revertible_until` is set only by the swap that kept the old
//! storage ([`open`], in the swap's transaction) and cleared only in the
//! transaction that removes the kept table, the log and the trigger
//! ([`close`]): the window is open exactly while those exist.

use super::update;
use crate::error::Result;

/// Where a migration's revert window stands; for a revert, what it reverts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// `start(revertible => true)`.
    pub wanted: bool,
    /// The window's length, in seconds, from the swap.
    pub seconds: i32,
    /// The swap kept the old storage, and the window has not closed.
    pub open: bool,
    /// It is open, but its time is up (the worker or step() closes it).
    pub expired: bool,
    /// When it closes, as text.
    pub until: Option<String>,
    /// A revert: the migration it takes back.
    pub reverts: Option<i64>,
    /// The table's CHECK and FOREIGN KEY constraints before the swap.
    pub constraints: Vec<KeptConstraint>,
    /// The table's statistics objects before the swap: qualified name,
    /// U+001F, the CREATE STATISTICS that makes it.
    pub statistics: Vec<String>,
    /// A revert: the columns it restores in place (the migration dropped
    /// them; the kept table has their values).
    pub undrop: Vec<String>,
    /// A revert: statements run on the table's empty storage after the
    /// inverse ALTER (indexes on restored columns).
    pub revert_sql: Vec<String>,
}

/// A constraint as it was before the swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptConstraint {
    pub name: String,
    pub definition: String,
    pub validated: bool,
}

pub(super) const COLUMNS: &str =
    ", revertible, coalesce(extract(epoch FROM revert_window)::integer, 0),
    revertible_until IS NOT NULL, coalesce(revertible_until <= pg_catalog.clock_timestamp(), false),
    revertible_until::text, reverts, kept_constraints, kept_constraint_defs, kept_constraint_valid,
    undrop, revert_sql, kept_statistics";

/// Read the columns above, starting at ordinal `at`.
pub(super) fn from_row(r: &crate::pg::spi::Row, at: usize) -> Result<Window> {
    use crate::pg::spi::get;
    let names: Vec<String> = get(r, at + 6)?;
    let defs: Vec<String> = get(r, at + 7)?;
    let valid: Vec<bool> = get(r, at + 8)?;
    Ok(Window {
        wanted: get(r, at)?,
        seconds: get(r, at + 1)?,
        open: get(r, at + 2)?,
        expired: get(r, at + 3)?,
        until: r.get(at + 4)?,
        reverts: r.get(at + 5)?,
        constraints: names
            .into_iter()
            .zip(defs)
            .zip(valid)
            .map(|((name, definition), validated)| KeptConstraint {
                name,
                definition,
                validated,
            })
            .collect(),
        undrop: get(r, at + 9)?,
        revert_sql: get(r, at + 10)?,
        statistics: get(r, at + 11)?,
    })
}

/// The swap kept the old storage: open the window for its length from now,
/// remembering the table's constraints as they were.
pub fn open(id: i64, constraints: &[KeptConstraint], statistics: Vec<String>) -> Result<()> {
    update(
        id,
        "revertible_until = pg_catalog.clock_timestamp() + revert_window,
         kept_constraints = $2, kept_constraint_defs = $3, kept_constraint_valid = $4,
         kept_statistics = $5",
        vec![
            constraints
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .into(),
            constraints
                .iter()
                .map(|c| c.definition.clone())
                .collect::<Vec<_>>()
                .into(),
            constraints
                .iter()
                .map(|c| c.validated)
                .collect::<Vec<_>>()
                .into(),
            statistics.into(),
        ],
    )
}

/// Why a window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Reverted,
    Forgotten,
    Expired,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Reverted => "reverted",
            Closed::Forgotten => "forgotten",
            Closed::Expired => "expired",
        }
    }
}

/// The kept table, the log and the trigger are gone (in this transaction).
pub fn close(id: i64, why: Closed) -> Result<()> {
    update(
        id,
        "revertible_until = NULL, window_closed = $2",
        vec![why.as_str().into()],
    )
}

/// Record that revert `revert_id` takes back migration `of`, restoring
/// columns `undrop` and running `revert_sql` at its swap.
pub fn set_reverts(
    revert_id: i64,
    of: i64,
    undrop: Vec<String>,
    revert_sql: Vec<String>,
) -> Result<()> {
    update(
        revert_id,
        "reverts = $2, undrop = $3, revert_sql = $4",
        vec![of.into(), undrop.into(), revert_sql.into()],
    )
}
