//! The one small SPI helper layer. Every statement halo_migrate runs goes
//! through here, with values as `$n` parameters (identifiers are quoted by
//! `ident.rs` before the text gets here).
//!
//! `select` runs read-only against the caller's snapshot; `query` and `exec`
//! run read-write and see the effects of earlier statements in the same
//! transaction (needed while probing the clone).

use crate::error::Result;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiHeapTupleData;
use pgrx::Spi;

pub type Row<'a> = SpiHeapTupleData<'a>;

/// Read-only query; `f` maps each row.
pub fn select<T>(sql: &str, args: &[DatumWithOid], mut f: impl FnMut(&Row) -> Result<T>) -> Result<Vec<T>> {
    Spi::connect(|c| c.select(sql, None, args)?.map(|r| f(&r)).collect())
}

/// Read-write query that sees this transaction's earlier changes.
pub fn query<T>(sql: &str, args: &[DatumWithOid], mut f: impl FnMut(&Row) -> Result<T>) -> Result<Vec<T>> {
    Spi::connect_mut(|c| c.update(sql, None, args)?.map(|r| f(&r)).collect())
}

/// Run a statement for its effect.
pub fn exec(sql: &str, args: &[DatumWithOid]) -> Result<()> {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ()))?;
    Ok(())
}

/// A required column value.
pub fn get<T: pgrx::IntoDatum + pgrx::FromDatum>(row: &Row, ordinal: usize) -> Result<T> {
    row.get::<T>(ordinal)?
        .ok_or_else(|| crate::error::MigrateError::Internal(format!("unexpected NULL in column {ordinal}")))
}
