//! The swap: one transaction, under ACCESS EXCLUSIVE taken with lock_timeout.
//!
//! 1. Lock the table and the shadow; check nothing rewrote the table.
//! 2. Drain the capture log into the shadow: now shadow = ALTER(table).
//! 3. Foreign keys (either direction) on columns whose type changes are
//!    dropped here and re-added NOT VALID afterwards, to be validated after
//!    the swap without blocking writes.
//! 4. Give the table empty storage and run the user's ALTER on it: the
//!    catalogs change exactly as a plain ALTER would change them — names,
//!    grants, comments, triggers, policies, views, publications, sequences,
//!    replica identity, statistics targets all stay — but there is no data to
//!    rewrite. Views and policies on columns whose type changes, which
//!    PostgreSQL would refuse, are dropped first and created again after
//!    (`views.rs`).
//! 5. Check the table's new row layout and index set are the shadow's, then
//!    exchange their storage (`storage.rs`), and drop the shadow, the log and
//!    the capture function.
//!
//! A revertible migration keeps the old storage in step 4 instead of
//! dropping it, and goes on capturing after step 5 (`kept.rs`); a revert's
//! swap closes the window of the migration it takes back.
//!
//! Any error rolls all of it back; the caller decides whether to retry (lock
//! timeout) or to fail the migration.

use crate::engine::capture;
use crate::engine::copy;
use crate::engine::replay;
use crate::engine::state::Migration;
use crate::engine::storage;
use crate::engine::views;
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::sqlgen;
use pgrx::pg_sys::Oid;

/// A foreign key taken off for the swap.
pub(crate) struct ForeignKey {
    pub table: QualifiedName,
    pub name: String,
    pub definition: String,
    pub validated: bool,
}

/// Perform the swap. Returns the statements to run after it (VALIDATE).
pub fn swap(m: &Migration, table: &QualifiedName) -> Result<Vec<String>> {
    let oid = m.relid.to_u32();
    let shadow = sqlgen::shadow_table(oid);
    spi::exec(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"), &[])?;
    spi::exec(
        &format!("LOCK TABLE {shadow} IN ACCESS EXCLUSIVE MODE"),
        &[],
    )?;
    // Sessions whose transactions began before this point hold snapshots
    // that predate the swap (snapshots.rs).
    let locked_at =
        spi::text("SELECT pg_catalog.clock_timestamp()::text", &[])?.unwrap_or_default();
    copy::check_not_rewritten(m)?;
    while replay::replay_batch(m, table, 100_000)? > 0 {}

    let shadow_oid = crate::catalog::relation_oid(&shadow.to_string())?;
    // From here on, DDL on the table is the migration's own (the event
    // trigger lets it through), including dropping its foreign keys.
    let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
    let fks = take_off_foreign_keys(m)?;
    for sql in capture::drop_trigger_sql(oid, table) {
        spi::exec(&sql, &[])?;
    }
    let saved = views::save(m.relid, &m.altered_columns)?;
    views::drop_saved(table, &saved)?;
    // A revertible migration keeps the old storage (kept.rs); a revert is
    // never itself revertible.
    let kept = if m.window.wanted && m.window.reverts.is_none() {
        // The table's own foreign keys taken off above were its
        // constraints before the ALTER too.
        let taken_off = fks
            .iter()
            .filter(|fk| fk.table == *table)
            .map(|fk| crate::engine::state::window::KeptConstraint {
                name: fk.name.clone(),
                definition: fk.definition.clone(),
                validated: fk.validated,
            })
            .collect();
        Some(crate::engine::kept::keep_storage(m.relid, taken_off)?)
    } else {
        storage::empty_storage(m.relid);
        None
    };
    if !m.window.undrop.is_empty() {
        // A revert of a DROP COLUMN: the column comes back at its attnum.
        crate::engine::kept::undrop(m.relid, shadow_oid, &m.window.undrop, table)?;
    }
    if !m.shadow_sql.is_empty() {
        spi::exec(&sqlgen::alter(table, &m.shadow_sql.join(", ")), &[])?;
    }
    for sql in &m.window.revert_sql {
        spi::exec(sql, &[])?;
    }
    if m.window.reverts.is_some() {
        spi::with_search_path(CATALOG_PATH, || {
            crate::engine::kept::restore_index_definitions(m.relid, shadow_oid, table)
        })?;
        // The kept rows written before a column was added with a default
        // read its "missing" value, which the ALTER on empty storage cleared.
        crate::engine::kept::copy_missing_values(shadow_oid, m.relid)?;
    }
    views::recreate(table, &saved)?;
    check_same_layout(m.relid, shadow_oid)?;
    let pairs = index_pairs(m.relid, shadow_oid)?;
    storage::swap_storage(m.relid, shadow_oid, true);
    storage::show_toast_to_decoding(m.relid);
    for (a, b) in pairs {
        storage::swap_storage(a, b, false);
    }
    carry_sequences(m, table, &shadow)?;
    spi::exec(&format!("DROP TABLE {shadow}"), &[])?;
    capture::drop_log(oid)?;
    storage::rename_toast(m.relid, None)?;
    if let Some(before) = kept {
        crate::engine::kept::settle(m, table, before)?;
    }
    if let Some(forward) = m.window.reverts {
        crate::engine::revert::drop_stash(oid)?;
        crate::engine::state::window::close(
            forward,
            crate::engine::state::window::Closed::Reverted,
        )?;
    }

    let after = put_back_foreign_keys(&fks)?;
    for sql in &m.swap_sql {
        spi::exec(sql, &[])?;
    }
    if m.snapshot_safe {
        // Writers queue behind the lock meanwhile: wait at most half the
        // lock timeout, then roll back and let them through.
        crate::engine::snapshots::wait_in_lock(
            m.relid,
            &locked_at,
            (m.lock_timeout_ms / 2).max(1),
            crate::engine::locks::CUTOVER_LOCK_KEY,
        )?;
    }
    Ok(after)
}

/// Drop the foreign keys (either direction) on columns whose type the
/// migration changes; they come back after the ALTER ([`put_back_foreign_keys`]).
pub(crate) fn take_off_foreign_keys(m: &Migration) -> Result<Vec<ForeignKey>> {
    let fks = spi::with_search_path(CATALOG_PATH, || {
        foreign_keys_on(m.relid, &m.altered_columns)
    })?;
    for fk in &fks {
        let drop = format!("DROP CONSTRAINT {}", Ident::new(&fk.name));
        spi::exec(&sqlgen::alter(&fk.table, &drop), &[])?;
    }
    Ok(fks)
}

/// Add the foreign keys back, those that were validated NOT VALID (no
/// scan under the swap's lock); the VALIDATE statements to run after.
pub(crate) fn put_back_foreign_keys(fks: &[ForeignKey]) -> Result<Vec<String>> {
    let mut after = Vec::new();
    for fk in fks {
        let def = if fk.validated {
            format!("{} NOT VALID", fk.definition)
        } else {
            fk.definition.clone()
        };
        let add = format!("ADD CONSTRAINT {} {def}", Ident::new(&fk.name));
        spi::exec(&sqlgen::alter(&fk.table, &add), &[])?;
        if fk.validated {
            after.push(sqlgen::validate(&fk.table, &fk.name));
        }
    }
    Ok(after)
}

/// Foreign keys from or to the table that involve a column whose type changes.
fn foreign_keys_on(relid: Oid, altered: &[String]) -> Result<Vec<ForeignKey>> {
    if altered.is_empty() {
        return Ok(vec![]);
    }
    spi::query(
        "SELECT n.nspname::text, c.relname::text, con.conname::text,
                pg_catalog.pg_get_constraintdef(con.oid), con.convalidated
           FROM pg_catalog.pg_constraint con
           JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE con.contype = 'f' AND con.conrelid <> con.confrelid
            -- a partition's copy of a partitioned table's key goes with it
            AND con.conparentid = 0
            AND ((con.confrelid = $1 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = $1 AND a.attnum = ANY (con.confkey) AND a.attname = ANY ($2)))
              OR (con.conrelid = $1 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = $1 AND a.attnum = ANY (con.conkey) AND a.attname = ANY ($2))))
          ORDER BY con.oid",
        &[relid.into(), altered.to_vec().into()],
        |r| {
            Ok(ForeignKey {
                table: QualifiedName::new(get::<String>(r, 1)?, get::<String>(r, 2)?),
                name: get(r, 3)?,
                definition: get(r, 4)?,
                validated: get(r, 5)?,
            })
        },
    )
}

/// The table (after the ALTER on its empty storage) and the shadow must have
/// the same physical rows: same attributes in the same positions, same types.
pub(crate) fn check_same_layout(relid: Oid, shadow: Oid) -> Result<()> {
    let diff = spi::query(
        "WITH a AS (
            SELECT attrelid, attnum, attisdropped,
                   CASE WHEN attisdropped THEN '' ELSE attname::text END AS name,
                   CASE WHEN attisdropped THEN 0 ELSE atttypid END AS typid,
                   CASE WHEN attisdropped THEN 0 ELSE atttypmod END AS typmod,
                   CASE WHEN attisdropped THEN 0 ELSE attcollation END AS coll,
                   attisdropped OR attnotnull AS not_null,
                   CASE WHEN attisdropped THEN '' ELSE attgenerated::text END AS gen
              FROM pg_catalog.pg_attribute WHERE attrelid IN ($1, $2) AND attnum > 0),
         t AS (SELECT attnum, attisdropped, name, typid, typmod, coll, not_null, gen FROM a WHERE attrelid = $1),
         s AS (SELECT attnum, attisdropped, name, typid, typmod, coll, not_null, gen FROM a WHERE attrelid = $2)
         SELECT pg_catalog.string_agg(attnum::text, ', ') FROM ((TABLE t EXCEPT TABLE s) UNION (TABLE s EXCEPT TABLE t)) d",
        &[relid.into(), shadow.into()],
        |r| r.get::<String>(1).map_err(Into::into),
    )?;
    match diff.into_iter().next().flatten() {
        None => Ok(()),
        Some(cols) => Err(MigrateError::Internal(format!(
            "after the ALTER the table and the shadow differ in columns {cols}; the swap was not done"
        ))),
    }
}

/// Pairs (table index, shadow index) by definition: every index of the
/// table must have a shadow index of the same definition (access method,
/// columns, expressions, predicate, operator classes, collations, options,
/// uniqueness), and the other way round. Names play no part: the shadow's
/// indexes have names of their own (sqlgen::shadow_index), and indexes of
/// one definition have interchangeable storage, so duplicates pair in any
/// order.
pub(crate) fn index_pairs(relid: Oid, shadow: Oid) -> Result<Vec<(Oid, Oid)>> {
    let rows = spi::query(
        "WITH i AS (
            SELECT x.indrelid, x.indexrelid, c.relname::text AS name, d.def,
                   pg_catalog.row_number() OVER (PARTITION BY x.indrelid, d.def ORDER BY x.indexrelid) AS n
              FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid,
                   LATERAL (SELECT ROW(c.relam, x.indisunique, x.indisprimary, x.indisexclusion,
                                       x.indnullsnotdistinct, x.indnatts, x.indnkeyatts, x.indkey::text,
                                       x.indclass::text, x.indcollation::text, x.indoption::text,
                                       pg_catalog.pg_get_expr(x.indexprs, x.indrelid),
                                       pg_catalog.pg_get_expr(x.indpred, x.indrelid))::text AS def) d
             WHERE x.indrelid IN ($1, $2))
         SELECT coalesce(t.name, s.name), t.indexrelid, s.indexrelid
           FROM (SELECT * FROM i WHERE indrelid = $1) t
           FULL JOIN (SELECT * FROM i WHERE indrelid = $2) s ON s.def = t.def AND s.n = t.n",
        &[relid.into(), shadow.into()],
        |r| Ok((get::<String>(r, 1)?, r.get::<Oid>(2)?, r.get::<Oid>(3)?)),
    )?;
    rows.into_iter()
        .map(|(name, t, s)| match (t, s) {
            (Some(t), Some(s)) => Ok((t, s)),
            _ => Err(MigrateError::Internal(format!(
                "index \"{name}\" differs between the table and the shadow after the ALTER; the swap was not done"
            ))),
        })
        .collect()
}

/// A column the ALTER adds with its own sequence (serial, identity) got
/// values from the shadow's sequence during the copy: carry its position
/// over to the table's new sequence.
fn carry_sequences(m: &Migration, table: &QualifiedName, shadow: &QualifiedName) -> Result<()> {
    for col in &m.added_columns {
        let seqs = spi::query(
            "SELECT pg_catalog.pg_get_serial_sequence($1, $3), pg_catalog.pg_get_serial_sequence($2, $3)",
            &[table.to_string().into(), shadow.to_string().into(), col.clone().into()],
            |r| Ok((r.get::<String>(1)?, r.get::<String>(2)?)),
        )?;
        if let Some((Some(to), Some(from))) = seqs.into_iter().next() {
            spi::exec(
                &format!("SELECT pg_catalog.setval($1::pg_catalog.regclass, last_value, is_called) FROM {from}"),
                &[to.into()],
            )?;
        }
    }
    Ok(())
}
