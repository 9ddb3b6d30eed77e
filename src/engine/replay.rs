//! Replay: make the shadow match the table for every logged key.
//!
//! For a batch of log rows: delete the shadow rows of those keys (mapped
//! through the ALTER), insert the table's current rows for those keys
//! (transformed like the copy), and delete exactly the log rows read. This is
//! idempotent and needs no ordering to be correct — a key logged again later
//! is simply replayed again — and it never skips a row of a transaction that
//! commits late, because nothing is consumed by a high-water mark. Batches go
//! in log order all the same, so that a later change of a unique value never
//! meets a stale earlier one in the shadow.

use crate::engine::state::Migration;
use crate::error::Result;
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::sqlgen;

/// Replay up to `limit` log rows; returns how many were consumed.
pub fn replay_batch(m: &Migration, table: &QualifiedName, limit: i64) -> Result<u64> {
    let oid = m.relid.to_u32();
    let log = sqlgen::log_table(oid);
    let ids: Vec<i64> = spi::query(
        &format!("SELECT id FROM {log} ORDER BY id LIMIT $1"),
        &[limit.into()],
        |r| get(r, 1),
    )?;
    if ids.is_empty() {
        return Ok(0);
    }
    let n = ids.len() as u64;
    if m.window.reverts.is_some() {
        // A revert maps rows written since the swap into the old shape,
        // which may not hold them: name the first row that does not fit.
        crate::pg::subxact::attempt("while mapping changed rows back", || apply(m, table, &ids))
            .map_err(|e| crate::engine::revert::name_row(m, table, &ids, e))?;
    } else {
        apply(m, table, &ids)?;
    }
    spi::exec(
        &format!("DELETE FROM {log} WHERE id = ANY($1)"),
        &[ids.into()],
    )?;
    Ok(n)
}

/// Make the shadow match the table for the keys of log rows `ids`.
pub fn apply(m: &Migration, table: &QualifiedName, ids: &[i64]) -> Result<()> {
    let oid = m.relid.to_u32();
    let log = sqlgen::log_table(oid);
    let shadow = sqlgen::shadow_table(oid);
    let ids = || ids.to_vec().into();
    delete_logged_keys(m, "WHERE l.id = ANY($1)", &[ids()])?;
    // The current rows of the logged keys, all of them (spi::with_all_rows).
    spi::with_all_rows(|| {
        spi::exec(
            &format!(
                "INSERT INTO {shadow} ({targets}) OVERRIDING SYSTEM VALUE
             SELECT {exprs} FROM ONLY {table} o
              WHERE EXISTS (SELECT FROM {log} l WHERE l.id = ANY($1) AND {matched})",
                targets = m.copy_targets,
                exprs = m.copy_exprs,
                matched = m.orig_match,
            ),
            &[ids()],
        )
    })
}

/// Delete the shadow rows whose keys are in the log rows `filter` selects
/// (alias `l`), mapped into the shadow's key values. One pass over the
/// shadow hashed against the keys, or index probes for a small batch.
pub fn delete_logged_keys(
    m: &Migration,
    filter: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<u64> {
    let oid = m.relid.to_u32();
    spi::exec_count(
        &format!(
            "DELETE FROM {shadow} s
              USING (SELECT DISTINCT {map} FROM (SELECT {as_orig} FROM {log} l {filter}) o) m
              WHERE {matched}",
            shadow = sqlgen::shadow_table(oid),
            log = sqlgen::log_table(oid),
            map = m.key_map,
            as_orig = m.log_as_orig,
            matched = m.shadow_match,
        ),
        args,
    )
}

/// Log rows waiting (an estimate from the id range: two index probes).
pub fn backlog(m: &Migration) -> Result<i64> {
    let log = sqlgen::log_table(m.relid.to_u32());
    spi::one(
        &format!("SELECT coalesce(max(id) - min(id) + 1, 0) FROM {log}"),
        &[],
        |r| get::<i64>(r, 1),
    )
}
