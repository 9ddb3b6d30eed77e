//! The bulk copy: heap block ranges of the table into the shadow, one short
//! transaction per batch, then the shadow's indexes.
//!
//! Each batch reads `ctid` range [next, next + n) with a TID Range Scan under
//! its own snapshot. A row updated between two batches can be copied twice
//! (its old version in an earlier range, its new one in a later range) —
//! but it is then in the capture log, and before any unique index is built,
//! [`remove_logged_keys`] deletes every shadow row whose key is in the log;
//! replay puts back the current version. Rows inserted after the capture
//! trigger was installed may lie beyond the copy's end: they are in the log.
//!
//! Invariant: a batch's rows and the progress that says they were copied
//! commit in the same transaction.

use crate::catalog;
use crate::engine::state::Migration;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, CATALOG_PATH};
use crate::plan::sqlgen;

/// Heap blocks per batch so that a batch holds about `batch_rows` rows.
pub fn blocks_per_batch(batch_rows: i64, rows_total: i64, blocks_total: i64) -> i64 {
    if blocks_total <= 0 || rows_total <= 0 {
        return 64;
    }
    let rows_per_block = (rows_total as f64 / blocks_total as f64).max(1.0);
    ((batch_rows as f64 / rows_per_block).ceil() as i64).max(1)
}

/// Copy the next batch; returns (rows copied, next block).
pub fn copy_batch(m: &Migration, table: &QualifiedName) -> Result<(u64, i64)> {
    let n = blocks_per_batch(m.batch_rows as i64, m.rows_total, m.copy_end);
    let end = (m.copy_next + n).min(m.copy_end);
    let sql = format!(
        "INSERT INTO {shadow} ({targets}) OVERRIDING SYSTEM VALUE
         SELECT {exprs} FROM ONLY {table} o
          WHERE o.ctid >= pg_catalog.format('(%s,0)', $1::bigint)::pg_catalog.tid
            AND o.ctid < pg_catalog.format('(%s,0)', $2::bigint)::pg_catalog.tid",
        shadow = sqlgen::shadow_table(m.relid.to_u32()),
        targets = m.copy_targets,
        exprs = m.copy_exprs,
    );
    // The batch must see every row of its range (spi::with_all_rows).
    let rows = spi::with_all_rows(|| {
        let bulk = if crate::gucs::bulk_copy() {
            crate::engine::bulk::insert_select(&sql, &[m.copy_next, end])?
        } else {
            None
        };
        match bulk {
            Some(rows) => Ok(rows),
            None => spi::exec_count(&sql, &[m.copy_next.into(), end.into()]),
        }
    })?;
    // The INSERT holds ACCESS SHARE on the table until commit, so this check
    // covers the batch: nothing rewrote the table under the copy.
    check_not_rewritten(m)?;
    Ok((rows, end))
}

/// Fail if the table's storage changed since the migration started
/// (VACUUM FULL, CLUSTER, or a rewrite the event trigger could not stop).
pub fn check_not_rewritten(m: &Migration) -> Result<()> {
    if catalog::relfilenode(m.relid)? != m.relfilenode {
        return Err(MigrateError::Rewritten {
            table: m.table_name.clone(),
        });
    }
    Ok(())
}

/// Build the next index of the shadow (the first call first removes the
/// rows that changed during the copy). Returns true when all are built.
pub fn build_next_index(m: &Migration) -> Result<bool> {
    if m.indexes_built == 0 {
        // Rows that changed after the copy began may be stale or copied
        // twice; all are in the log. Remove them before any unique index
        // exists; replay copies them again.
        crate::engine::replay::delete_logged_keys(m, "", &[])?;
    }
    if let Some(sql) = m.index_sql.get(m.indexes_built as usize) {
        spi::with_search_path(CATALOG_PATH, || spi::exec(sql, &[]))?;
    }
    Ok(m.indexes_built as usize + 1 >= m.index_sql.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_sized_in_blocks_from_the_row_density() {
        assert_eq!(blocks_per_batch(10_000, 2_000_000, 20_000), 100);
        assert_eq!(blocks_per_batch(10, 1_000, 1_000), 10);
        assert_eq!(blocks_per_batch(1, 100, 1), 1);
        assert_eq!(blocks_per_batch(10_000, 0, 0), 64);
    }
}
