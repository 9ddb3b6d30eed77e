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
pub fn select<T>(
    sql: &str,
    args: &[DatumWithOid],
    mut f: impl FnMut(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    Spi::connect(|c| c.select(sql, None, args)?.map(|r| f(&r)).collect())
}

/// Read-write query that sees this transaction's earlier changes.
pub fn query<T>(
    sql: &str,
    args: &[DatumWithOid],
    mut f: impl FnMut(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    Spi::connect_mut(|c| c.update(sql, None, args)?.map(|r| f(&r)).collect())
}

/// The one row a read-write query returns, mapped by `f`: an error if it
/// returns none (never an index out of bounds).
pub fn one<T>(sql: &str, args: &[DatumWithOid], f: impl FnMut(&Row) -> Result<T>) -> Result<T> {
    opt(sql, args, f)?.ok_or_else(|| {
        crate::error::MigrateError::Internal(format!("no row from: {}", first_line(sql)))
    })
}

/// The first row a read-write query returns, if any, mapped by `f`.
pub fn opt<T>(
    sql: &str,
    args: &[DatumWithOid],
    f: impl FnMut(&Row) -> Result<T>,
) -> Result<Option<T>> {
    Ok(query(sql, args, f)?.into_iter().next())
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// Run a statement for its effect.
pub fn exec(sql: &str, args: &[DatumWithOid]) -> Result<()> {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ()))?;
    Ok(())
}

/// A required column value.
pub fn get<T: pgrx::IntoDatum + pgrx::FromDatum>(row: &Row, ordinal: usize) -> Result<T> {
    row.get::<T>(ordinal)?.ok_or_else(|| {
        crate::error::MigrateError::Internal(format!("unexpected NULL in column {ordinal}"))
    })
}

/// A single text value (NULL as None).
pub fn text(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>> {
    Ok(query(sql, args, |r| Ok(r.get::<String>(1)?))?
        .into_iter()
        .next()
        .flatten())
}

/// Run `f` with `search_path` set to `path` for this transaction, then put
/// the caller's back (also when `f` fails). Catalog text generated and run
/// under `pg_catalog, pg_temp` comes out fully schema-qualified.
pub fn with_search_path<R>(path: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    with_setting("search_path", path, f)
}

/// Run `f` with setting `name` = `value` for this transaction, then put the
/// caller's value back (also when `f` fails).
pub fn with_setting<R>(name: &str, value: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let old = text("SELECT pg_catalog.current_setting($1)", &[name.into()])?.unwrap_or_default();
    set_local(name, value)?;
    let r = f();
    set_local(name, &old)?;
    r
}

/// [`with_setting`] for several settings at once, set in order and put back
/// in reverse.
pub fn with_settings<R>(settings: &[(&str, &str)], f: impl FnOnce() -> Result<R>) -> Result<R> {
    match settings.split_first() {
        None => f(),
        Some(((name, value), rest)) => with_setting(name, value, || with_settings(rest, f)),
    }
}

/// Set `name` = `value` until the end of this transaction.
pub fn set_local(name: &str, value: &str) -> Result<()> {
    exec(
        "SELECT pg_catalog.set_config($1, $2, true)",
        &[name.into(), value.into()],
    )
}

/// Run `f` so that every read of a user's table sees all of its rows:
/// `row_security = off` makes PostgreSQL raise an error, rather than filter
/// rows silently, wherever a policy would apply to the current role. Every
/// statement that reads the user's rows on a migration's behalf runs here
/// (the copy batch, the replay's re-read, the row count at start). Our own
/// `migrate.migrations` must not: its policies apply to every role but the
/// superuser, by design.
pub fn with_all_rows<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    with_setting("row_security", "off", f)
}

/// Catalog-text search path: nothing but PostgreSQL's own schema is visible.
pub const CATALOG_PATH: &str = "pg_catalog, pg_temp";

/// Run a statement for its effect; the number of rows it processed.
pub fn exec_count(sql: &str, args: &[DatumWithOid]) -> Result<u64> {
    Ok(Spi::connect_mut(|c| {
        c.update(sql, None, args).map(|t| t.len() as u64)
    })?)
}
