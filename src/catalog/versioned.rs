//! What versioned migrations read from the catalogs: a table's columns as
//! the expand phase needs them, the tables a version schema shows, and the
//! views in a schema that read a table.

use crate::error::Result;
use crate::pg::spi::{self, get};
use crate::plan::versioned::BaseColumn;
use pgrx::pg_sys::Oid;

/// The table's columns in order, with whether each is NOT NULL and whether
/// a write that omits it gets a value (default, identity, generated).
pub fn columns(oid: Oid) -> Result<Vec<BaseColumn>> {
    spi::query(
        "SELECT a.attname::text, a.attnotnull,
                a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                pg_catalog.format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END
           FROM pg_catalog.pg_attribute a
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        &[oid.into()],
        |r| {
            Ok(BaseColumn {
                name: get(r, 1)?,
                not_null: get(r, 2)?,
                has_default: get(r, 3)?,
                type_sql: get(r, 4)?,
                default_sql: r.get(5)?,
            })
        },
    )
}

/// The views in schema `schema` that read table `oid`.
pub fn views_reading(schema: &str, oid: Oid) -> Result<Vec<String>> {
    spi::query(
        "SELECT DISTINCT v.relname::text
           FROM pg_catalog.pg_depend d
           JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
           JOIN pg_catalog.pg_class v ON v.oid = w.ev_class
           JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
          WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid = $1 AND n.nspname = $2 AND v.relkind = 'v'
          ORDER BY 1",
        &[oid.into(), schema.into()],
        |r| get(r, 1),
    )
}

/// Whether a schema of this name exists.
pub fn schema_exists(name: &str) -> Result<bool> {
    spi::one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        &[name.into()],
        |r| get(r, 1),
    )
}

/// The heap blocks of the table's largest leaf (a plain table is its own
/// only leaf; a backfill batch covers the same block range in every leaf),
/// how many leaves it has, and whether their statistics are known, with
/// rows per block from them (at least 1).
pub fn extent(oid: Oid) -> Result<Extent> {
    spi::one(
        "SELECT coalesce(max(pg_catalog.pg_relation_size(c.oid)), 0)
                    / pg_catalog.current_setting('block_size')::bigint,
                count(*),
                (coalesce(sum(pg_catalog.pg_relation_size(c.oid)), 0)
                    / pg_catalog.current_setting('block_size')::bigint)::bigint,
                coalesce(bool_and(c.reltuples >= 0) AND sum(c.relpages) > 0, false),
                greatest(coalesce(sum(greatest(c.reltuples, 0)) / nullif(sum(c.relpages), 0), 1), 1)::float8
           FROM pg_catalog.pg_class c
          -- the leaves of a partitioned table, or the table itself
          WHERE c.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t WHERE t.isleaf)
             OR (c.oid = $1 AND c.relkind <> 'p')",
        &[oid.into()],
        |r| {
            Ok(Extent {
                blocks: get(r, 1)?,
                leaves: get(r, 2)?,
                pages: get(r, 3)?,
                known: get(r, 4)?,
                density: get(r, 5)?,
            })
        },
    )
}

/// See [`extent`].
pub struct Extent {
    pub blocks: i64,
    pub leaves: i64,
    /// Heap blocks of all leaves.
    pub pages: i64,
    pub known: bool,
    pub density: f64,
}

/// What, outside the version schemas `versions`, uses one of `columns` of
/// table `oid` so that dropping it would fail: views elsewhere, the
/// table's rules and policies. (column, what), the first found.
pub fn users_outside_versions(
    oid: Oid,
    columns: &[String],
    versions: &[String],
) -> Result<Option<(String, String)>> {
    if columns.is_empty() {
        return Ok(None);
    }
    spi::opt(
        "SELECT a.attname::text, x.dep FROM (
             SELECT CASE WHEN v.oid = $1 THEN 'rule ' || pg_catalog.quote_ident(r.rulename)
                         ELSE 'view ' || v.oid::pg_catalog.regclass::text END AS dep,
                    d.refobjid, d.refobjsubid, n.nspname::text AS schema
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
               JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
               JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
              WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
             UNION ALL
             SELECT 'policy ' || pg_catalog.quote_ident(p.polname), d.refobjid, d.refobjsubid, NULL
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_policy p ON p.oid = d.objid
              WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass) x
           JOIN pg_catalog.pg_attribute a ON a.attrelid = x.refobjid AND a.attnum = x.refobjsubid
          WHERE x.refobjid = $1 AND a.attname = ANY ($2)
            AND (x.schema IS NULL OR NOT x.schema = ANY ($3))
          ORDER BY 1, 2 LIMIT 1",
        &[
            oid.into(),
            columns.to_vec().into(),
            versions.to_vec().into(),
        ],
        |r| Ok((get(r, 1)?, get(r, 2)?)),
    )
}

/// What depends on column `column` of table `oid`, outside the version
/// schemas `versions`, that a type change by a second column would lose:
/// an index, a constraint, a view, a policy, a trigger, statistics, a
/// generated column, an owned sequence, identity. The first found.
pub fn column_dependents(oid: Oid, column: &str, versions: &[String]) -> Result<Option<String>> {
    spi::opt(
        "SELECT what FROM (
             SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS what,
                    CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                         THEN (SELECT n.nspname::text FROM pg_catalog.pg_rewrite w
                                 JOIN pg_catalog.pg_class v ON v.oid = w.ev_class
                                 JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
                                WHERE w.oid = d.objid) END AS schema
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                -- every member of a partitioned table's tree
                AND (d.refobjid = $1
                     OR d.refobjid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t))
                AND a.attname = $2
                AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                         AND (d.objid = $1
                              OR d.objid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t)))
                -- its default moves to the new column; a NOT NULL
                -- constraint (PostgreSQL 18) is the NOT NULL, which does too
                AND d.classid <> 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c
                                 WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
                                   AND c.oid = d.objid AND c.contype = 'n')
             UNION ALL
             SELECT 'identity or generated column', NULL
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = $1 AND a.attname = $2 AND (a.attidentity <> '' OR a.attgenerated <> '')) x
          WHERE x.schema IS NULL OR NOT x.schema = ANY ($3)
          ORDER BY 1 LIMIT 1",
        &[oid.into(), column.into(), versions.to_vec().into()],
        |r| get(r, 1),
    )
}

/// The condition that a row meets when constraint `name` of table `oid`
/// holds for it, as (the trigger's form, the backfill's form): a CHECK's
/// own expression, as PostgreSQL deparses it (column names as in the
/// table, which the trigger declares as variables); for a foreign key on
/// `column`, that its referenced row exists (the trigger reads NEW, the
/// backfill the table's row).
pub fn constraint_condition(
    oid: Oid,
    name: &str,
    column: &str,
    _table: &crate::pg::ident::QualifiedName,
) -> Result<(String, String)> {
    let (kind, check, referenced, refcol, itself, secured) = spi::one(
        "SELECT c.contype::text, pg_catalog.pg_get_expr(c.conbin, c.conrelid),
                CASE WHEN c.contype = 'f' THEN pg_catalog.format('%I.%I', rn.nspname, r.relname) END,
                (SELECT a.attname::text FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = c.confrelid AND a.attnum = c.confkey[1]),
                c.confrelid = c.conrelid, coalesce(r.relrowsecurity, false)
           FROM pg_catalog.pg_constraint c
           LEFT JOIN pg_catalog.pg_class r ON r.oid = c.confrelid
           LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
          WHERE c.conrelid = $1 AND c.conname = $2",
        &[oid.into(), name.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                get::<bool>(r, 5)?,
                get::<bool>(r, 6)?,
            ))
        },
    )?;
    if secured {
        // PostgreSQL checks a key as the referenced table's owner, with row
        // security off; the trigger's lookup would run as the writer and
        // take a row hidden from the writer for a missing one.
        return Err(crate::error::MigrateError::not_supported(
            "up for a foreign key to a table with row-level security",
            format!("The table that {name} references has row-level security enabled."),
            "Add the key without up, or map the values before the migration.",
        ));
    }
    match (kind.as_str(), check, referenced, refcol) {
        ("c", Some(expr), _, _) => Ok((expr.clone(), expr)),
        ("f", _, Some(referenced), Some(refcol)) => {
            let col = crate::pg::ident::Ident::new(column);
            let refcol = crate::pg::ident::Ident::new(refcol);
            // A key on the table itself: the row being written may be its
            // own referenced row, which the lookup cannot see yet.
            let exists = |row: &str| {
                let value = format!("{row}.{col}");
                let own = if itself {
                    format!(" OR {value} = {row}.{refcol}")
                } else {
                    String::new()
                };
                format!(
                    "{value} IS NULL{own} OR EXISTS (SELECT FROM {referenced} halo_r WHERE halo_r.{refcol} = {value})"
                )
            };
            use crate::plan::versioned_sql::{BACKFILL_ALIAS, NEW_ROW};
            Ok((exists(NEW_ROW), exists(BACKFILL_ALIAS)))
        }
        _ => Err(crate::error::MigrateError::Internal(format!(
            "constraint {name} is neither a CHECK nor a foreign key"
        ))),
    }
}

/// The mark halo_migrate puts on a version schema (its comment), so that
/// a schema of the same name made by someone else is never taken for one.
pub const VERSION_SCHEMA_MARK: &str = "halo_migrate version schema";

/// Whether `schema` exists and carries halo_migrate's mark.
pub fn is_version_schema(schema: &str) -> Result<bool> {
    spi::one(
        "SELECT coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE $2 || '%', false)
           FROM (SELECT NULL) x LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1",
        &[schema.into(), VERSION_SCHEMA_MARK.into()],
        |r| get(r, 1),
    )
}

/// Whether column `column` of table `oid` has privileges of its own.
pub fn has_column_privileges(oid: Oid, column: &str) -> Result<bool> {
    spi::one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                         WHERE attrelid = $1 AND attname = $2 AND attacl IS NOT NULL)",
        &[oid.into(), column.into()],
        |r| get(r, 1),
    )
}
