//! The key of a rewrite as verification compares it: per key column, the
//! table's type and the btree operators that compare the table's and the
//! shadow's values of it (`plan::verify::KeyCol`).
//!
//! Invariant: operators come from the btree operator family of the column's
//! type (the type cache), written `OPERATOR(schema.op)`, never looked up by
//! name through a search_path. Both sides must sort in the same family and
//! collation, or key ranges would not cover the same rows on both sides.

use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::verify::{KeyCol, KeyOps};
use pgrx::pg_sys::Oid;

/// A column's type, collation and `format_type` text (only pg_catalog visible).
fn column(rel: Oid, name: &str) -> Result<Option<(Oid, Oid, String)>> {
    spi::with_search_path(CATALOG_PATH, || {
        spi::opt(
            "SELECT atttypid, attcollation, pg_catalog.format_type(atttypid, atttypmod)
               FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[rel.into(), name.into()],
            |r| Ok((get::<Oid>(r, 1)?, get::<Oid>(r, 2)?, get::<String>(r, 3)?)),
        )
    })
}

/// Does changing a key column from `from` to `to` keep every value as it
/// is (so that the same key range holds the same rows on both sides)? The
/// same type with the same modifier, or an integer widened.
fn keeps_values(from: (Oid, &str), to: (Oid, &str)) -> bool {
    use pgrx::pg_sys::{INT2OID, INT4OID, INT8OID};
    let rank = |t: Oid| [INT2OID, INT4OID, INT8OID].iter().position(|&i| i == t);
    from == to || matches!((rank(from.0), rank(to.0)), (Some(a), Some(b)) if a <= b)
}

/// The btree operator family of a type's default operator class, and the
/// type that class takes (`text` for `varchar`).
fn btree_family(typid: Oid) -> (Oid, Oid) {
    // SAFETY: lookup_type_cache returns a pointer into the backend's type
    // cache, valid for the life of the backend; an unknown type raises an
    // ERROR instead (turned into a Rust panic by pg_guard). Two fields are
    // copied, no reference kept.
    unsafe {
        let t =
            pgrx::pg_sys::lookup_type_cache(typid, pgrx::pg_sys::TYPECACHE_BTREE_OPFAMILY as i32);
        ((*t).btree_opf, (*t).btree_opintype)
    }
}

/// `OPERATOR(schema.op)` for the family member (left, right, strategy).
fn member(family: Oid, left: Oid, right: Oid, strategy: u16) -> Result<Option<String>> {
    // SAFETY: a syscache lookup by value; returns InvalidOid when absent.
    let op = unsafe { pgrx::pg_sys::get_opfamily_member(family, left, right, strategy as i16) };
    if op == pgrx::pg_sys::InvalidOid {
        return Ok(None);
    }
    spi::text(
        "SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname)
           FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
          WHERE o.oid = $1",
        &[op.into()],
    )
}

/// The key columns for verification, or why this ALTER's key cannot be
/// compared range by range (a `NotSupported` error naming the column).
pub fn verify_keys(table: Oid, shadow: Oid, key: &[String]) -> Result<Vec<KeyCol>> {
    let mut out = Vec::new();
    for name in key {
        let (Some((otype, ocoll, otext)), Some((stype, scoll, stext))) =
            (column(table, name)?, column(shadow, name)?)
        else {
            return Err(MigrateError::Internal(format!(
                "key column \"{name}\" is missing from the table or its shadow"
            )));
        };
        let unsupported = |why: String| {
            MigrateError::not_supported(
                "verify => true for this ALTER",
                why,
                "Start the migration without verify, or change the key column in a migration \
                 of its own.",
            )
        };
        let (ofam, oin) = btree_family(otype);
        let (sfam, sin) = btree_family(stype);
        // A key the ALTER rounds (timestamp(6) to timestamp(0), numeric
        // scale) or reorders would put a row in another key range, or under
        // another key, on each side: only kept values can be compared.
        if ofam == pgrx::pg_sys::InvalidOid
            || ofam != sfam
            || ocoll != scoll
            || !keeps_values((otype, &otext), (stype, &stext))
        {
            return Err(unsupported(format!(
                "The ALTER changes key column \"{name}\" from {otext} to {stext}; verification \
                 compares the two tables key range by key range, so it needs the key's values \
                 kept as they are (the same type, or an integer widened)."
            )));
        }
        let mut ops = [(); 10].map(|_| String::new());
        for (i, strategy) in (1u16..=5).enumerate() {
            for (j, left) in [oin, sin].into_iter().enumerate() {
                ops[i + 5 * j] = member(ofam, left, oin, strategy)?.ok_or_else(|| {
                    unsupported(format!(
                        "The operator family of key column \"{name}\" has no operator \
                         comparing its new type with its old one."
                    ))
                })?;
            }
        }
        let [lt, le, eq, ge, gt, x_lt, x_le, x_eq, x_ge, x_gt] = ops;
        out.push(KeyCol {
            name: name.clone(),
            orig_type: otext,
            ops: KeyOps {
                eq,
                lt,
                le,
                ge,
                gt,
                x_eq,
                x_lt,
                x_le,
                x_ge,
                x_gt,
            },
        });
    }
    Ok(out)
}

/// The shadow's name and type (format_type, only pg_catalog visible) of
/// each of `names`, in that order.
pub fn column_types(rel: Oid, names: &[String]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| {
            column(rel, n)?
                .map(|(_, _, t)| t)
                .ok_or_else(|| MigrateError::Internal(format!("column \"{n}\" vanished")))
        })
        .collect()
}
