//! The revertible swap: keep the table's old storage instead of dropping it.
//!
//! A plain swap gives the table empty storage before running the ALTER on
//! it (`storage::empty_storage`), which drops the old rows at commit. A
//! revertible swap first creates the kept table, an exact twin of the table
//! as it is (same attributes, indexes under names of its own, each
//! commented with the name of the index it keeps), and exchanges storage
//! with it: the table gets the twin's empty storage, and the kept table the
//! old rows, TOAST and indexes. After the forward swap the kept table takes
//! the shadow's name, the capture log is recreated for the table's new key,
//! and the trigger goes on logging every changed key until the window
//! closes (`revert.rs`).
//!
//! Invariant: everything here runs inside the swap's transaction, under its
//! ACCESS EXCLUSIVE lock, so the window opens exactly when the swap commits.

use crate::catalog;
use crate::engine::state::window::{self, KeptConstraint};
use crate::engine::state::Migration;
use crate::engine::{capture, shadow, storage};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::sqlgen;
use pgrx::pg_sys::Oid;

/// The comment that ties a kept index to the table's index of that name.
const KEPT_PREFIX: &str = "halo_migrate kept index of ";

/// SQL: the name of the table's index that the index `pg_class` row `c`
/// stands for: a kept index's comment names it (kept indexes have names of
/// their own, `halo_kept_<oid>_<n>`, so that they never collide in the
/// schema `migrate`); any other index stands for itself.
pub fn stands_for_sql(c: &str) -> String {
    let prefix = sqlgen::literal(KEPT_PREFIX);
    format!(
        "coalesce((SELECT substr(d.description, length({prefix}) + 1)
                     FROM pg_catalog.pg_description d
                    WHERE d.objoid = {c}.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objsubid = 0 AND pg_catalog.starts_with(d.description, {prefix})),
                  {c}.relname::text)"
    )
}

/// What a revert needs to know of the table as it was, besides the kept
/// table itself.
pub struct Before {
    /// Its CHECK and FOREIGN KEY constraints (the kept table has only the
    /// validated CHECKs).
    pub constraints: Vec<KeptConstraint>,
    /// Its statistics objects (a dropped column takes its own with it).
    pub statistics: Vec<String>,
}

/// Move the table's storage into a new kept table and give the table empty
/// storage, as `storage::empty_storage` would. Returns what the kept table
/// does not hold of the table as it is, for the inverse ALTER.
///
/// `taken_off`: the table's constraints the swap has dropped already (its
/// foreign keys on columns whose type changes), to be counted among them.
pub fn keep_storage(relid: Oid, taken_off: Vec<KeptConstraint>) -> Result<Before> {
    let oid = relid.to_u32();
    let kept = sqlgen::kept_table(oid);
    let before = spi::with_search_path(CATALOG_PATH, || {
        let names = spi::query(
            "SELECT relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
              WHERE i.indrelid = $1 ORDER BY i.indisprimary DESC, i.indexrelid",
            &[relid.into()],
            |r| get::<String>(r, 1),
        )?;
        let rename = |n: &str| {
            let i = names.iter().position(|x| x == n).unwrap_or(names.len());
            sqlgen::kept_index(oid, i + 1)
        };
        shadow::create_twin(relid, &kept, &rename)?;
        for (i, name) in names.iter().enumerate() {
            spi::exec(
                &format!(
                    "COMMENT ON INDEX {} IS {}",
                    QualifiedName::new("migrate", sqlgen::kept_index(oid, i + 1)),
                    sqlgen::literal(&format!("{KEPT_PREFIX}{name}"))
                ),
                &[],
            )?;
        }
        Ok(Before {
            constraints: {
                let mut all = constraints_of(relid)?;
                all.extend(taken_off);
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            },
            statistics: spi::query(
                "SELECT pg_catalog.format('%I.%I', n.nspname, s.stxname) || chr(31)
                        || pg_catalog.pg_get_statisticsobjdef(s.oid)
                   FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
                  WHERE s.stxrelid = $1 ORDER BY s.oid",
                &[relid.into()],
                |r| get::<String>(r, 1),
            )?,
        })
    })?;
    let kept_oid = catalog::relation_oid(&kept.to_string())?;
    same_row_layout(relid, kept_oid)?;
    // Comments and column privileges the ALTER may drop with a column:
    // kept with the kept table, for a revert to restore.
    copy_column_extras(relid, &kept, None, true)?;
    let pairs = kept_index_pairs(relid, kept_oid)?;
    storage::swap_storage(relid, kept_oid, true);
    for (t, k) in pairs {
        storage::swap_storage(t, k, false);
    }
    // The TOAST tables changed hands: each takes its owner's name.
    storage::rename_toast(kept_oid, Some(&format!("halo_toast_{oid}")))?;
    storage::rename_toast(relid, None)?;
    storage::rename_toast(kept_oid, None)?;
    Ok(before)
}

/// The table's CHECK and FOREIGN KEY constraints (not those of a parent).
pub fn constraints_of(relid: Oid) -> Result<Vec<KeptConstraint>> {
    spi::query(
        "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid), convalidated
           FROM pg_catalog.pg_constraint
          WHERE conrelid = $1 AND contype IN ('c', 'f') ORDER BY conname",
        &[relid.into()],
        |r| {
            Ok(KeptConstraint {
                name: get(r, 1)?,
                definition: get(r, 2)?,
                validated: get(r, 3)?,
            })
        },
    )
}

/// Pairs (table's index, kept index), matched by the kept index's comment;
/// every index of either side must have its pair.
pub fn kept_index_pairs(relid: Oid, kept: Oid) -> Result<Vec<(Oid, Oid)>> {
    let rows = spi::query(
        &format!(
            "WITH i AS (SELECT x.indrelid, x.indexrelid, {} AS name FROM pg_catalog.pg_index x
                          JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
                         WHERE x.indrelid IN ($1, $2))
             SELECT coalesce(t.name, k.name), t.indexrelid, k.indexrelid
               FROM (SELECT * FROM i WHERE indrelid = $1) t
               FULL JOIN (SELECT * FROM i WHERE indrelid = $2) k ON k.name = t.name",
            stands_for_sql("c")
        ),
        &[relid.into(), kept.into()],
        |r| Ok((get::<String>(r, 1)?, r.get::<Oid>(2)?, r.get::<Oid>(3)?)),
    )?;
    rows.into_iter()
        .map(|(name, t, k)| match (t, k) {
            (Some(t), Some(k)) => Ok((t, k)),
            _ => Err(MigrateError::Internal(format!(
                "index \"{name}\" has no twin in the kept table"
            ))),
        })
        .collect()
}

/// After the forward swap dropped the shadow: the kept table takes its
/// name, stays out of publications, and the capture goes on with a log
/// keyed by the table's new key; the window opens.
pub fn settle(m: &Migration, table: &QualifiedName, before: Before) -> Result<()> {
    let oid = m.relid.to_u32();
    let kept = sqlgen::kept_table(oid);
    let kept_oid = catalog::relation_oid(&kept.to_string())?;
    spi::exec(
        &sqlgen::alter(
            &kept,
            &format!("RENAME TO {}", Ident::new(format!("shadow_{oid}"))),
        ),
        &[],
    )?;
    // As for a shadow (shadow.rs): the replay deletes from it under a FOR
    // ALL TABLES publication, and decoding must skip it and its TOAST.
    spi::exec(
        &sqlgen::alter(&sqlgen::shadow_table(oid), "REPLICA IDENTITY FULL"),
        &[],
    )?;
    // The column grants copied onto it (for a revert to give back) must not
    // let anyone read the old rows past the table's own row security: with
    // row security on and no policy, only its owner reads it.
    spi::exec(
        &sqlgen::alter(&sqlgen::shadow_table(oid), "ENABLE ROW LEVEL SECURITY"),
        &[],
    )?;
    storage::hide_from_decoding(kept_oid, m.relid);
    let log_columns = spi::query(
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
           FROM pg_catalog.unnest($2::text[]) WITH ORDINALITY k(name, n)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attname = k.name AND NOT a.attisdropped
          ORDER BY k.n",
        &[m.relid.into(), m.key_columns.clone().into()],
        |r| get::<String>(r, 1),
    )?;
    if log_columns.len() != m.key_columns.len() {
        return Err(MigrateError::Internal(
            "the key columns did not survive the ALTER".into(),
        ));
    }
    let log_columns: Vec<String> = log_columns
        .iter()
        .enumerate()
        .map(|(i, t)| format!("k{} {t}", i + 1))
        .collect();
    capture::create_log(
        oid,
        table,
        &log_columns.join(", "),
        &m.key_columns,
        capture::Guard::Window,
    )?;
    for sql in capture::trigger_sql(oid, table) {
        spi::exec(&sql, &[])?;
    }
    window::open(m.id, &before.constraints, before.statistics)
}

/// Copy the comments, privileges, statistics targets and options of
/// `from`'s columns (all, or those named) onto the same columns of `to`.
fn copy_column_extras(
    from: Oid,
    to: &QualifiedName,
    columns: Option<&[String]>,
    settings: bool,
) -> Result<()> {
    let only = columns.map(<[String]>::to_vec);
    let comments = spi::query(
        "SELECT a.attname::text, d.description FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid
                AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = a.attnum
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
            AND ($2::text[] IS NULL OR a.attname = ANY ($2))",
        &[from.into(), only.clone().into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )?;
    for (col, text) in comments {
        spi::exec(
            &format!(
                "COMMENT ON COLUMN {to}.{} IS {}",
                Ident::new(col),
                sqlgen::literal(&text)
            ),
            &[],
        )?;
    }
    let grants = spi::query(
        "SELECT a.attname::text, x.privilege_type,
                CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END,
                x.is_grantable
           FROM pg_catalog.pg_attribute a
           CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
            AND ($2::text[] IS NULL OR a.attname = ANY ($2))",
        &[from.into(), only.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
                get::<String>(r, 3)?,
                get::<bool>(r, 4)?,
            ))
        },
    )?;
    for (col, privilege, grantee, grantable) in grants {
        spi::exec(
            &format!(
                "GRANT {privilege} ({}) ON TABLE {to} TO {grantee}{}",
                Ident::new(col),
                if grantable { " WITH GRANT OPTION" } else { "" }
            ),
            &[],
        )?;
    }
    if settings {
        let subcommands: Vec<String> = column_settings(from, columns)?
            .into_iter()
            .map(|(_, sub)| sub)
            .collect();
        if !subcommands.is_empty() {
            spi::exec(&sqlgen::alter(to, &subcommands.join(", ")), &[])?;
        }
    }
    Ok(())
}

/// The statistics target and the planner's options (`n_distinct`,
/// `n_distinct_inherited`) of `relid`'s columns (all, or those named) that
/// are not the defaults, as (column, ALTER TABLE subcommand).
pub fn column_settings(relid: Oid, columns: Option<&[String]>) -> Result<Vec<(String, String)>> {
    let rows = spi::query(
        "SELECT a.attname::text, CASE WHEN a.attstattarget >= 0 THEN a.attstattarget END,
                (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(split_part(o, '=', 1)) || ' = ' ||
                        pg_catalog.quote_literal(substr(o, strpos(o, '=') + 1)), ', ')
                   FROM pg_catalog.unnest(a.attoptions) o
                  WHERE split_part(o, '=', 1) IN ('n_distinct', 'n_distinct_inherited'))
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
            AND ($2::text[] IS NULL OR a.attname = ANY ($2))",
        &[relid.into(), columns.map(<[String]>::to_vec).into()],
        |r| Ok((get::<String>(r, 1)?, r.get::<i32>(2)?, r.get::<String>(3)?)),
    )?;
    let mut out = Vec::new();
    for (col, target, options) in rows {
        let id = Ident::new(&col);
        if let Some(t) = target {
            out.push((col.clone(), format!("ALTER COLUMN {id} SET STATISTICS {t}")));
        }
        if let Some(o) = options {
            out.push((col.clone(), format!("ALTER COLUMN {id} SET ({o})")));
        }
    }
    Ok(out)
}

/// A revert of a DROP COLUMN, on the table's empty storage: each column
/// `columns` names is marked as not dropped again at its attribute number,
/// with the kept table's name, type, modifier and collation (its default
/// and NOT NULL are set by the inverse ALTER that follows), its type
/// dependency recorded, and its comment and privileges restored (its
/// statistics target and options are subcommands of the inverse ALTER).
pub fn undrop(relid: Oid, kept: Oid, columns: &[String], table: &QualifiedName) -> Result<()> {
    for col in columns {
        let rows = spi::query(
            "SELECT k.attnum, k.atttypid, k.atttypmod, k.attcollation, k.attndims,
                    t.attisdropped AND t.attlen = k.attlen AND t.attalign = k.attalign AND t.attbyval = k.attbyval
               FROM pg_catalog.pg_attribute k
               JOIN pg_catalog.pg_attribute t ON t.attrelid = $1 AND t.attnum = k.attnum
              WHERE k.attrelid = $2 AND k.attname = $3 AND NOT k.attisdropped",
            &[relid.into(), kept.into(), col.clone().into()],
            |r| {
                Ok((
                    get::<i16>(r, 1)?,
                    get::<Oid>(r, 2)?,
                    get::<i32>(r, 3)?,
                    get::<Oid>(r, 4)?,
                    get::<i32>(r, 5)?,
                    get::<bool>(r, 6)?,
                ))
            },
        )?;
        let Some(&(attnum, typid, typmod, collation, ndims, fits)) = rows.first() else {
            return Err(MigrateError::Internal(format!(
                "kept column \"{col}\" vanished"
            )));
        };
        if !fits {
            return Err(MigrateError::Internal(format!(
                "attribute {attnum} of the table cannot hold column \"{col}\" again"
            )));
        }
        set_attribute(relid, attnum, col, typid, typmod, collation, ndims);
    }
    // Statistics targets and options come with the inverse ALTER: a
    // statement of its own would take a weaker lock, and PostgreSQL adds
    // the TOAST table a restored column may need only under ACCESS
    // EXCLUSIVE.
    copy_column_extras(kept, table, Some(columns), false)
}

/// Mark attribute `attnum` of `relid` as the live column `name`.
fn set_attribute(
    relid: Oid,
    attnum: i16,
    name: &str,
    typid: Oid,
    typmod: i32,
    collation: Oid,
    ndims: i32,
) {
    use pgrx::pg_sys;
    let cname = std::ffi::CString::new(name).expect("column names have no NUL");
    // SAFETY: inside the swap's transaction, with ACCESS EXCLUSIVE held on
    // `relid`, whose storage is empty. The tuple is a palloc'd syscache copy
    // of an attribute the caller checked to be dropped and to have the
    // kept column's length and alignment; it is written back with
    // CatalogTupleUpdate (which registers the relcache invalidation) on
    // pg_attribute opened here with RowExclusiveLock, as ALTER TABLE does.
    // The dependency records are those heap_create_with_catalog makes for a
    // column (pinned types and collations are skipped by PostgreSQL).
    unsafe {
        let attrs = crate::pg::rel::Rel::open_catalog(
            pg_sys::AttributeRelationId,
            pg_sys::RowExclusiveLock,
        );
        let tuple = attribute_tuple(relid, attnum);
        let a = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_attribute>(tuple);
        (*a).attisdropped = false;
        (*a).atttypid = typid;
        (*a).atttypmod = typmod;
        (*a).attcollation = collation;
        (*a).attndims = ndims as _;
        crate::pg::compat::reset_statistics_target(a);
        (*a).attnotnull = false;
        (*a).atthasdef = false;
        pg_sys::namestrcpy(&mut (*a).attname, cname.as_ptr());
        pg_sys::CatalogTupleUpdate(attrs.get(), &mut (*tuple).t_self, tuple);
        pg_sys::heap_freetuple(tuple);
        let column = pg_sys::ObjectAddress {
            classId: pg_sys::RelationRelationId,
            objectId: relid,
            objectSubId: attnum as i32,
        };
        let ty = pg_sys::ObjectAddress {
            classId: pg_sys::TypeRelationId,
            objectId: typid,
            objectSubId: 0,
        };
        pg_sys::recordDependencyOn(&column, &ty, pg_sys::DependencyType::DEPENDENCY_NORMAL);
        if collation != pg_sys::InvalidOid && collation != pg_sys::DEFAULT_COLLATION_OID {
            let coll = pg_sys::ObjectAddress {
                classId: pg_sys::CollationRelationId,
                objectId: collation,
                objectSubId: 0,
            };
            pg_sys::recordDependencyOn(&column, &coll, pg_sys::DependencyType::DEPENDENCY_NORMAL);
        }
        pg_sys::CommandCounterIncrement();
    }
}

/// A revert's swap, after the inverse ALTER: an index whose definition
/// PostgreSQL's own round trip did not give back exactly (an ALTER TYPE
/// rebuilds an expression index from its text, and `(c::text)` on a text
/// column comes back as `c`) is made again from the kept table's, so that
/// the kept index's storage fits it. Indexes of constraints are left to the
/// swap's own check.
pub fn restore_index_definitions(relid: Oid, kept: Oid, table: &QualifiedName) -> Result<()> {
    let differing = spi::query(
        &format!(
        "WITH i AS (
            SELECT x.indrelid, x.indexrelid, {} AS name,
                   pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(x.indexrelid), ' ON .*? USING ', ' USING ') AS def,
                   EXISTS (SELECT FROM pg_catalog.pg_constraint con WHERE con.conindid = x.indexrelid
                              AND con.conrelid = x.indrelid) AS constraint_index
              FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
             WHERE x.indrelid IN ($1, $2))
         SELECT t.name, pg_catalog.pg_get_indexdef(k.indexrelid)
           FROM (SELECT * FROM i WHERE indrelid = $1) t
           JOIN (SELECT * FROM i WHERE indrelid = $2) k ON k.name = t.name
          WHERE t.def <> k.def AND NOT t.constraint_index AND NOT k.constraint_index",
            stands_for_sql("c")
        ),
        &[relid.into(), kept.into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )?;
    for (name, kept_def) in differing {
        // The table's indexes live in its schema.
        let index = QualifiedName {
            schema: table.schema.clone(),
            name: Ident::new(&name),
        };
        spi::exec(&format!("DROP INDEX {index}"), &[])?;
        spi::exec(&on_table(&kept_def, &name, relid, table)?, &[])?;
    }
    Ok(())
}

/// A kept index's definition (`pg_get_indexdef`, naming the kept table
/// under the shadow's name) as a CREATE INDEX `name` on the table.
pub fn on_table(kept_def: &str, name: &str, relid: Oid, table: &QualifiedName) -> Result<String> {
    let on = format!(" ON {} USING ", sqlgen::shadow_table(relid.to_u32()));
    let unexpected = || MigrateError::Internal(format!("unexpected index definition: {kept_def}"));
    let (head, tail) = kept_def.split_once(&on).ok_or_else(unexpected)?;
    // "CREATE [UNIQUE] INDEX halo_kept_<oid>_<n>": the kept index's own name.
    let (create, _) = head.rsplit_once(' ').ok_or_else(unexpected)?;
    Ok(format!(
        "{create} {} ON {table} USING {tail}",
        Ident::new(name)
    ))
}

/// The kept table must read the old rows exactly as the table does: a
/// dropped slot with the dropped attribute's length and alignment (old
/// rows may still hold a value there; the twin's placeholder is an
/// integer), and a column added with a default after rows were written
/// with its "missing" value (PostgreSQL never wrote it into those rows).
fn same_row_layout(relid: Oid, kept: Oid) -> Result<()> {
    let dropped = spi::query(
        "SELECT attnum, attlen, attbyval, ascii(attalign::text), ascii(attstorage::text)
           FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND attisdropped",
        &[relid.into()],
        |r| {
            Ok((
                get::<i16>(r, 1)?,
                get::<i16>(r, 2)?,
                get::<bool>(r, 3)?,
                get::<i32>(r, 4)?,
                get::<i32>(r, 5)?,
            ))
        },
    )?;
    for (attnum, len, byval, align, storage) in dropped {
        // SAFETY: inside the swap's transaction; `kept` was created in it,
        // its attribute `attnum` is a dropped placeholder no row uses yet.
        unsafe {
            set_dropped_layout(
                kept,
                attnum,
                len,
                byval,
                align as u8 as i8,
                storage as u8 as i8,
            )
        };
    }
    copy_missing_values(relid, kept)
}

/// Give `to`'s attributes the "missing" values (`atthasmissing`,
/// `attmissingval`) of `from`'s attributes at the same numbers: the kept
/// table when it gets the old rows, and the table when a revert gives them
/// back (its inverse ALTER rewrote its empty storage, which clears them).
pub fn copy_missing_values(from: Oid, to: Oid) -> Result<()> {
    let attnums = spi::query(
        "SELECT f.attnum FROM pg_catalog.pg_attribute f
           JOIN pg_catalog.pg_attribute t ON t.attrelid = $2 AND t.attnum = f.attnum
          WHERE f.attrelid = $1 AND f.attnum > 0 AND NOT f.attisdropped AND f.atthasmissing
            AND NOT t.attisdropped AND t.atttypid = f.atttypid",
        &[from.into(), to.into()],
        |r| get::<i16>(r, 1),
    )?;
    for attnum in attnums {
        // SAFETY: inside the swap's transaction, ACCESS EXCLUSIVE held on
        // both relations; the two attributes have the same type (checked
        // above), so the missing value's array fits the target as is.
        unsafe { copy_missing(from, to, attnum) };
    }
    Ok(())
}

/// # Safety
/// Inside a transaction, with ACCESS EXCLUSIVE on `relid`, whose attribute
/// `attnum` is dropped and not used by any row.
unsafe fn set_dropped_layout(
    relid: Oid,
    attnum: i16,
    len: i16,
    byval: bool,
    align: i8,
    storage: i8,
) {
    use pgrx::pg_sys;
    // SAFETY: as the caller guarantees; a syscache copy is modified and
    // written back with CatalogTupleUpdate on pg_attribute opened here.
    unsafe {
        let attrs = crate::pg::rel::Rel::open_catalog(
            pg_sys::AttributeRelationId,
            pg_sys::RowExclusiveLock,
        );
        let tuple = attribute_tuple(relid, attnum);
        let a = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_attribute>(tuple);
        (*a).attlen = len;
        (*a).attbyval = byval;
        (*a).attalign = align as _;
        (*a).attstorage = storage as _;
        pg_sys::CatalogTupleUpdate(attrs.get(), &mut (*tuple).t_self, tuple);
        pg_sys::heap_freetuple(tuple);
        pg_sys::CommandCounterIncrement();
    }
}

/// # Safety
/// Inside a transaction, with ACCESS EXCLUSIVE on both relations, whose
/// attributes `attnum` exist, are live and have the same type.
unsafe fn copy_missing(from: Oid, to: Oid, attnum: i16) {
    use pgrx::pg_sys;
    // SAFETY: as the caller guarantees. The source value is read from a
    // syscache copy (kept until the end), the target tuple is rebuilt with
    // heap_modify_tuple over pg_attribute's own descriptor and written back
    // with CatalogTupleUpdate, as ALTER TABLE ADD COLUMN stores it.
    unsafe {
        let attrs = crate::pg::rel::Rel::open_catalog(
            pg_sys::AttributeRelationId,
            pg_sys::RowExclusiveLock,
        );
        let src = attribute_tuple(from, attnum);
        let mut isnull = false;
        let value = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::ATTNUM as _,
            src,
            pg_sys::Anum_pg_attribute_attmissingval as _,
            &mut isnull,
        );
        let dst = attribute_tuple(to, attnum);
        const N: usize = pg_sys::Natts_pg_attribute as usize;
        let mut values = [pg_sys::Datum::from(0usize); N];
        let mut nulls = [false; N];
        let mut replace = [false; N];
        let has = pg_sys::Anum_pg_attribute_atthasmissing as usize - 1;
        let val = pg_sys::Anum_pg_attribute_attmissingval as usize - 1;
        values[has] = pg_sys::Datum::from(!isnull);
        replace[has] = true;
        values[val] = value;
        nulls[val] = isnull;
        replace[val] = true;
        let desc = (*attrs.get()).rd_att;
        let new = pg_sys::heap_modify_tuple(
            dst,
            desc,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            replace.as_mut_ptr(),
        );
        pg_sys::CatalogTupleUpdate(attrs.get(), &mut (*new).t_self, new);
        pg_sys::heap_freetuple(new);
        pg_sys::heap_freetuple(dst);
        pg_sys::heap_freetuple(src);
        pg_sys::CommandCounterIncrement();
    }
}

/// A palloc'd copy of attribute `attnum` of `relid`.
///
/// # Safety
/// Inside a transaction; the attribute exists.
unsafe fn attribute_tuple(relid: Oid, attnum: i16) -> pgrx::pg_sys::HeapTuple {
    use pgrx::pg_sys;
    use pgrx::IntoDatum;
    let zero = pg_sys::Datum::from(0usize);
    // SAFETY: guaranteed by the caller (# Safety above).
    let tuple = unsafe {
        pg_sys::SearchSysCacheCopy(
            pg_sys::SysCacheIdentifier::ATTNUM as _,
            relid.into_datum().expect("an Oid is never NULL"),
            pg_sys::Datum::from(attnum as usize),
            zero,
            zero,
        )
    };
    assert!(
        !tuple.is_null(),
        "cache lookup failed for attribute {attnum} of relation {}",
        relid.to_u32()
    );
    tuple
}
