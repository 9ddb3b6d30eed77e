//! Verification before the swap (`start(verify => true)`): prove, key range
//! by key range, that the shadow equals the ALTER applied to the table.
//!
//! Once the replay has caught up, the migration enters `verifying`. Each
//! unit of work replays a batch of the log (so the backlog stays small),
//! then checks one chunk of about `batch_rows` keys in one statement, that
//! is in one snapshot: the table's rows mapped through the copy's
//! expressions and cast to the shadow's types, against the shadow's rows,
//! full-joined on the key (`plan::verify`). Keys still in the capture log
//! are skipped: in any snapshot, every key with no log row is equal on both
//! sides (the replay rewrites a key and deletes its log rows in one
//! transaction), so a difference there is a real one. A key that differs
//! is logged again by the same statement, and the replay copies it afresh.
//!
//! A pass ends after the last key range. A pass that found no difference
//! verifies the migration (`verified_at`) and hands it back to the replay
//! and the swap. After a pass with differences, the next pass waits until
//! the repairs are replayed, then starts over; after [`MAX_PASSES`] passes
//! with differences the migration fails, naming keys that differ (a USING
//! expression that is not deterministic, for instance, never verifies).
//!
//! Invariant: progress (the last key checked) commits with each chunk, so
//! a restarted worker resumes the pass; only a clean pass sets `verified_at`.

use crate::catalog;
use crate::engine::replay;
use crate::engine::state::{self, verification, Migration};
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::{sqlgen, verify as sql};

/// Passes with differences before the migration fails.
pub const MAX_PASSES: i32 = 3;

/// What one unit of verification did.
pub enum Checked {
    /// A chunk; the pass goes on.
    Chunk { rows: i64, differences: i64 },
    /// The last chunk of a pass.
    Pass { clean: bool, rows: i64 },
    /// Waiting for the last pass's repairs to be replayed.
    Waiting,
}

/// Check that the key can be compared range by range (`key_using`: a key
/// column the ALTER maps through a USING expression, which may reorder it);
/// `start()` calls this so that `verify => true` is refused before
/// anything is created.
pub fn check_supported(
    table: pgrx::pg_sys::Oid,
    shadow: pgrx::pg_sys::Oid,
    key: &[String],
    key_using: Option<&str>,
) -> Result<()> {
    if let Some(column) = key_using {
        return Err(MigrateError::not_supported(
            "verify => true for this ALTER",
            format!(
                "Key column \"{column}\" is changed through a USING expression, which may order \
                 its values differently; verification compares the two tables key range by key range."
            ),
            "Start the migration without verify.",
        ));
    }
    catalog::keyops::verify_keys(table, shadow, key).map(|_| ())
}

/// One unit of work in `verifying`: replay a batch, then check a chunk.
pub fn step(m: &Migration, table: &QualifiedName) -> Result<(Checked, u64)> {
    let replayed = replay::replay_batch(m, table, m.batch_rows as i64)?;
    let backlog = replay::backlog(m)?;
    state::record_replay(m.id, replayed, backlog, state::Phase::Verifying)?;
    let v = &m.verification;
    let log = sqlgen::log_table(m.relid.to_u32());
    if let Some(until) = v.repairs_until {
        let pending = spi::one(
            &format!("SELECT EXISTS (SELECT FROM {log} WHERE id <= $1)"),
            &[until.into()],
            |r| get::<bool>(r, 1),
        )?;
        if pending {
            return Ok((Checked::Waiting, replayed));
        }
        verification::repairs_replayed(m.id)?;
    }
    let shadow = sqlgen::shadow_table(m.relid.to_u32());
    let shadow_oid = catalog::relation_oid(&shadow.to_string())?;
    let keys = catalog::keyops::verify_keys(m.relid, shadow_oid, &m.key_columns)?;
    let names = sql::split_idents(&m.copy_targets);
    let types = catalog::keyops::column_types(shadow_oid, &names)?;
    let after = v.after.clone();
    let (upto, rows, differences, sample) = spi::with_all_rows(|| {
        spi::with_settings(CHUNK_SETTINGS, || {
            // The chunk's upper bound: the key batch_rows keys on (None: the rest).
            let upto: Option<Vec<String>> = spi::opt(
                &sql::next_bound_sql(table, &keys, after.is_some()),
                &[
                    after.clone().unwrap_or_default().into(),
                    (m.batch_rows.max(1) as i64 - 1).into(),
                ],
                |r| get::<Vec<String>>(r, 1),
            )?;
            let chunk = sql::chunk_sql(&sql::Chunk {
                table,
                shadow: &shadow,
                log: &log,
                keys: &keys,
                copy_targets: &m.copy_targets,
                copy_exprs: &m.copy_exprs,
                target_types: &types,
                target_names: &names,
                has_after: after.is_some(),
                has_upto: upto.is_some(),
            });
            let (rows, differences, sample) = spi::one(
                &chunk,
                &[
                    after.clone().unwrap_or_default().into(),
                    upto.clone().unwrap_or_default().into(),
                ],
                |r| Ok((get::<i64>(r, 1)?, get::<i64>(r, 2)?, r.get::<String>(3)?)),
            )?;
            Ok((upto, rows, differences, sample))
        })
    })?;
    if differences > 0 {
        pgrx::warning!(
            "halo_migrate: verification of {} found {differences} row(s) of the new table that differ from the table (repaired: copied again): {}",
            m.table_name,
            sample.as_deref().unwrap_or("")
        );
    }
    let checked = match upto {
        Some(upto) => {
            verification::record_chunk(m.id, rows, differences, upto)?;
            Checked::Chunk { rows, differences }
        }
        None => end_pass(m, rows, differences, sample, &log)?,
    };
    Ok((checked, replayed))
}

/// The settings a chunk's statements run under.
/// - Bounds are stored as text and read back by whichever session drives
///   the next chunk: dates, intervals and floats are written in one style.
/// (And every row in view, `spi::with_all_rows`: row-level security must
/// not hide rows from either side.)
/// - The log is never analyzed, so the planner's guesses for the subplans
///   that skip keys in flight are wild: they priced a 30 ms chunk high
///   enough for JIT, which then spent 370 ms compiling it, every chunk
///   (5M rows verified in 17 s without, 104 s with); and a nested loop over
///   the log for each of a chunk's rows would be as bad: hash it.
const CHUNK_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("jit", "off"),
    ("enable_nestloop", "off"),
];

/// Record the last chunk of a pass; fail after too many passes with
/// differences.
fn end_pass(
    m: &Migration,
    rows: i64,
    differences: i64,
    sample: Option<String>,
    log: &QualifiedName,
) -> Result<Checked> {
    let v = &m.verification;
    let clean = v.pass_differences + differences == 0;
    if !clean && v.passes + 1 >= MAX_PASSES {
        return Err(MigrateError::VerificationFailed {
            table: m.table_name.clone(),
            passes: v.passes + 1,
            sample: sample.unwrap_or_else(|| "(see the warnings of earlier passes)".into()),
        });
    }
    let repairs_until = if clean {
        None
    } else {
        spi::one(&format!("SELECT max(id) FROM {log}"), &[], |r| {
            r.get::<i64>(1).map_err(Into::into)
        })?
    };
    verification::record_pass(m.id, rows, differences, clean, repairs_until)?;
    Ok(Checked::Pass {
        clean,
        rows: v.rows + rows,
    })
}

/// What `finish()` says of a verified migration.
pub fn summary(v: &state::Verification) -> Option<String> {
    if !v.wanted {
        return None;
    }
    let found = match v.differences {
        0 => "0 differences".to_string(),
        n => format!("{n} differences found and repaired, then a pass with none"),
    };
    Some(format!(
        "verified {} rows in {} chunks: {found}",
        v.rows, v.chunks
    ))
}

/// A note for the driver's log of one unit of verification.
pub fn note(c: &Checked, replayed: u64) -> String {
    match c {
        Checked::Chunk { rows, differences } => format!(
            "verified {rows} rows ({differences} differences), replayed {replayed} changes"
        ),
        Checked::Pass { clean: true, rows } => {
            format!("verification pass done: {rows} rows, no difference")
        }
        Checked::Pass { clean: false, rows } => format!(
            "verification pass done over {rows} rows with differences (repaired); another pass follows"
        ),
        Checked::Waiting => format!(
            "replayed {replayed} changes; the next verification pass waits for the repairs to be replayed"
        ),
    }
}
