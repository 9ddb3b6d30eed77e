//! A rewrite's verification, as stored in its row of `migrate.migrations`
//! (`verify_*` columns), and the typed writes of its progress.
//!
//! Invariant: `verified_at` is set only by [`record_pass`] after a pass over
//! every key range that found no difference, so a migration that crashes or
//! loses its worker resumes the pass where its last chunk committed and
//! never swaps unverified.

use super::{update, Phase};
use crate::error::Result;

/// Where a migration's verification stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// `start(verify => true)`.
    pub wanted: bool,
    /// A pass found no difference (the swap may go ahead).
    pub verified: bool,
    /// The last key checked in this pass (as text), None at its start.
    pub after: Option<Vec<String>>,
    /// Rows of the table and chunks checked in this pass.
    pub rows: i64,
    pub chunks: i64,
    /// Differences found in this pass, and in all passes.
    pub pass_differences: i64,
    pub differences: i64,
    /// Passes completed.
    pub passes: i32,
    /// A new pass starts once the log has no row with an id up to this
    /// (the keys the last pass logged for repair have been replayed).
    pub repairs_until: Option<i64>,
}

pub(super) const COLUMNS: &str =
    "verify, verified_at IS NOT NULL, verify_after, verify_rows, verify_chunks,
    verify_pass_differences, verify_differences, verify_passes, verify_repairs_until";

/// Read the columns above, starting at ordinal `at`.
pub(super) fn from_row(r: &crate::pg::spi::Row, at: usize) -> Result<Verification> {
    use crate::pg::spi::get;
    Ok(Verification {
        wanted: get(r, at)?,
        verified: get(r, at + 1)?,
        after: r.get(at + 2)?,
        rows: get(r, at + 3)?,
        chunks: get(r, at + 4)?,
        pass_differences: get(r, at + 5)?,
        differences: get(r, at + 6)?,
        passes: get(r, at + 7)?,
        repairs_until: r.get(at + 8)?,
    })
}

/// One chunk checked: `rows` rows, `differences` keys logged for repair;
/// the pass goes on after key `upto`.
pub fn record_chunk(id: i64, rows: i64, differences: i64, upto: Vec<String>) -> Result<()> {
    update(
        id,
        "verify_rows = verify_rows + $2, verify_chunks = verify_chunks + 1,
         verify_pass_differences = verify_pass_differences + $3,
         verify_differences = verify_differences + $3, verify_after = $4",
        vec![rows.into(), differences.into(), upto.into()],
    )
}

/// The last chunk of a pass checked. A clean pass (no difference in it)
/// verifies the migration and hands it back to the replay; otherwise a new
/// pass starts once the log rows up to `repairs_until` are replayed.
pub fn record_pass(
    id: i64,
    rows: i64,
    differences: i64,
    clean: bool,
    repairs_until: Option<i64>,
) -> Result<()> {
    if clean {
        update(
            id,
            "verify_rows = verify_rows + $2, verify_chunks = verify_chunks + 1,
             verify_passes = verify_passes + 1, verified_at = pg_catalog.clock_timestamp(),
             verify_after = NULL, phase = $3",
            vec![rows.into(), Phase::Replaying.as_str().into()],
        )
    } else {
        update(
            id,
            "verify_differences = verify_differences + $2, verify_passes = verify_passes + 1,
             verify_after = NULL, verify_rows = 0, verify_chunks = 0, verify_pass_differences = 0,
             verify_repairs_until = $3",
            vec![differences.into(), repairs_until.into()],
        )
    }
}

/// The repairs of the last pass are replayed: the next pass may start.
pub fn repairs_replayed(id: i64) -> Result<()> {
    update(id, "verify_repairs_until = NULL", vec![])
}
