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
use crate::pg::ident::{Ident, QualifiedName};
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
    if !m.window.undrop.is_empty() {
        return apply_restoring(m, table, ids);
    }
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

/// A revert that restores dropped columns: the table has no value for
/// them, the kept table has the old one. Before the kept rows of the
/// logged keys are deleted, their values of those columns go to the stash;
/// the rows inserted again take them back from it (a row with no kept row,
/// inserted since the swap or moved to a new key, gets the column's
/// default). The stash is empty again at the end of the batch.
fn apply_restoring(m: &Migration, table: &QualifiedName, ids: &[i64]) -> Result<()> {
    let oid = m.relid.to_u32();
    let (log, shadow, stash) = (
        sqlgen::log_table(oid),
        sqlgen::shadow_table(oid),
        sqlgen::stash_table(oid),
    );
    let ids = || ids.to_vec().into();
    let restored: Vec<String> = m
        .window
        .undrop
        .iter()
        .map(|c| Ident::new(c).to_string())
        .collect();
    let keys: Vec<String> = (1..=m.key_columns.len()).map(|i| format!("k{i}")).collect();
    let kept_keys: Vec<String> = m
        .key_columns
        .iter()
        .map(|k| format!("s.{}", Ident::new(k)))
        .collect();
    let kept_values: Vec<String> = restored.iter().map(|c| format!("s.{c}")).collect();
    spi::exec(
        &format!(
            "INSERT INTO {stash} ({}, {})
             SELECT {}, {} FROM {shadow} s,
                    (SELECT DISTINCT {map} FROM (SELECT {as_orig} FROM {log} l WHERE l.id = ANY($1)) o) m
              WHERE {matched}",
            keys.join(", "),
            restored.join(", "),
            kept_keys.join(", "),
            kept_values.join(", "),
            map = m.key_map,
            as_orig = m.log_as_orig,
            matched = m.shadow_match,
        ),
        &[ids()],
    )?;
    delete_logged_keys(m, "WHERE l.id = ANY($1)", &[ids()])?;
    let defaults = spi::query(
        "SELECT CASE WHEN a.atthasdef THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END
           FROM pg_catalog.unnest($2::text[]) WITH ORDINALITY c(name, n)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = $1::pg_catalog.regclass AND a.attname = c.name
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          ORDER BY c.n",
        &[shadow.to_string().into(), m.window.undrop.clone().into()],
        |r| r.get::<String>(1).map_err(Into::into),
    )?;
    let values: Vec<String> = restored
        .iter()
        .zip(&defaults)
        .map(|(c, d)| {
            format!(
                "CASE WHEN st.k1 IS NULL THEN {} ELSE st.{c} END",
                d.as_deref().unwrap_or("NULL")
            )
        })
        .collect();
    // The log's alias in orig_match is `l`; here the stash joins as `st`.
    let stash_match = m.orig_match.replace(" l.k", " st.k");
    spi::with_all_rows(|| {
        spi::exec(
            &format!(
                "INSERT INTO {shadow} ({targets}, {restored}) OVERRIDING SYSTEM VALUE
             SELECT {exprs}, {values} FROM ONLY {table} o LEFT JOIN {stash} st ON {stash_match}
              WHERE EXISTS (SELECT FROM {log} l WHERE l.id = ANY($1) AND {matched})",
                targets = m.copy_targets,
                restored = restored.join(", "),
                exprs = m.copy_exprs,
                values = values.join(", "),
                matched = m.orig_match,
            ),
            &[ids()],
        )
    })?;
    spi::exec(&format!("DELETE FROM {stash}"), &[])
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
