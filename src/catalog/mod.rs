//! Reading what the system catalogs say about the table being migrated.
//!
//! Only catalog tables are read here (never the user's table), with the
//! caller's snapshot, so nothing here takes a lock on the table or waits.
//! `probe` asks PostgreSQL what a subcommand does, on an empty clone.
//!
//! Layer: uses `plan` (its model) and `pg`; used by `engine` and `api`.

pub mod keyops;
pub mod probe;
pub mod tree;
pub mod versioned;

use crate::error::{MigrateError, Result};
use crate::pg::spi::{self, get};
use crate::plan::model::{Column, TableFacts};
use pgrx::pg_sys::Oid;

/// The table's facts, after checking it is an ordinary table the caller owns.
pub fn load_table(oid: Oid) -> Result<TableFacts> {
    let rows = spi::select(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text,
                pg_has_role(c.relowner, 'USAGE'), n.oid, c.relispartition
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[oid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
                get::<String>(r, 3)?,
                get::<String>(r, 4)?,
                get::<bool>(r, 5)?,
                get::<Oid>(r, 6)?,
                get::<bool>(r, 7)?,
            ))
        },
    )?;
    let Some((schema, name, relkind, persistence, owner, nsp, is_partition)) =
        rows.into_iter().next()
    else {
        return Err(MigrateError::TableGone { oid: oid.to_u32() });
    };
    let qualified = crate::pg::ident::QualifiedName::new(&schema, &name).to_string();
    if matches!(
        schema.as_str(),
        "pg_catalog" | "information_schema" | "pg_toast"
    ) {
        return Err(MigrateError::not_supported(
            "migrating a system catalog",
            format!("{qualified} belongs to PostgreSQL itself."),
            "System catalogs are changed only by PostgreSQL.",
        ));
    }
    match relkind.as_str() {
        "r" | "p" => {}
        other => {
            let kind = match other {
                "v" => "a view",
                "m" => "a materialized view",
                "f" => "a foreign table",
                "S" => "a sequence",
                "i" | "I" => "an index",
                "c" => "a composite type",
                "t" => "a TOAST table",
                _ => "not an ordinary table",
            };
            return Err(MigrateError::WrongObjectType {
                table: qualified,
                kind: kind.into(),
            });
        }
    }
    if persistence == "t" {
        return Err(MigrateError::not_supported(
            "migrating a temporary table",
            format!("{qualified} is temporary: other sessions, including the migration worker, cannot see its rows."),
            "Run the ALTER directly: nobody else can be using a temporary table.",
        ));
    }
    if !owner {
        return Err(MigrateError::NotOwner { table: qualified });
    }
    refuse_invalid_not_null(oid, &qualified)?;

    let (parent, children, row_security_applies, schema_create) = spi::select(
        "SELECT (SELECT i.inhparent::pg_catalog.regclass::text FROM pg_catalog.pg_inherits i
                  WHERE i.inhrelid = $1 ORDER BY i.inhseqno LIMIT 1),
                (SELECT count(*) FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1),
                pg_catalog.row_security_active($1::pg_catalog.regclass),
                pg_catalog.has_schema_privilege($2, 'CREATE')",
        &[oid.into(), nsp.into()],
        |r| {
            Ok((
                r.get::<String>(1)?,
                get::<i64>(r, 2)?,
                get::<bool>(r, 3)?,
                get::<bool>(r, 4)?,
            ))
        },
    )?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal("no row from the inheritance query".into()))?;

    let columns = spi::select(
        "SELECT attname::text, attnotnull FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[oid.into()],
        |r| {
            Ok(Column {
                name: get(r, 1)?,
                not_null: get(r, 2)?,
            })
        },
    )?;
    Ok(TableFacts {
        oid: oid.to_u32(),
        namespace: nsp.to_u32(),
        schema,
        name,
        columns,
        unlogged: persistence == "u",
        replay_key: replay_key(oid)?,
        constraints: names("SELECT conname::text FROM pg_catalog.pg_constraint WHERE conrelid = $1", oid)?,
        indexes: names(
            "SELECT c.relname::text FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1",
            oid,
        )?,
        triggers: names("SELECT tgname::text FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal", oid)?,
        rules: names("SELECT rulename::text FROM pg_catalog.pg_rewrite WHERE ev_class = $1", oid)?,
        parent,
        children,
        is_partition,
        row_security_applies,
        schema_create,
        leaves: if relkind == "p" {
            Some(tree::leaves(oid, &qualified)?)
        } else {
            None
        },
        partition_keys: if relkind == "p" {
            tree::partition_keys(oid)?
        } else {
            vec![]
        },
    })
}

fn names(sql: &str, oid: Oid) -> Result<Vec<String>> {
    spi::select(sql, &[oid.into()], |r| get(r, 1))
}

/// The key that replay finds rows by: the primary key, else the unique index
/// (valid, immediate, not partial, no expressions) with the fewest NOT NULL columns.
fn replay_key(oid: Oid) -> Result<Option<Vec<String>>> {
    let keys = spi::select(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM pg_catalog.pg_index i
           CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate
            AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
          GROUP BY i.indexrelid, i.indisprimary
         HAVING bool_and(a.attnotnull)
          ORDER BY i.indisprimary DESC, count(*), i.indexrelid
          LIMIT 1",
        &[oid.into()],
        |r| get::<Vec<String>>(r, 1),
    )?;
    Ok(keys.into_iter().next())
}

/// Is this relation a partitioned table?
pub fn is_partitioned(oid: Oid) -> Result<bool> {
    let found = spi::select(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1 AND relkind = 'p')",
        &[oid.into()],
        |r| get::<bool>(r, 1),
    )?;
    Ok(found.first().copied().unwrap_or(false))
}

/// Is a constraint of this name already in the namespace?
pub fn constraint_name_taken(namespace: u32, name: &str) -> Result<bool> {
    exists(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE connamespace = $1 AND conname = $2)",
        namespace,
        name,
    )
}

/// Is a relation (table, index, sequence, …) of this name already in the namespace?
pub fn relation_name_taken(namespace: u32, name: &str) -> Result<bool> {
    exists(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = $1 AND relname = $2)",
        namespace,
        name,
    )
}

fn exists(sql: &str, namespace: u32, name: &str) -> Result<bool> {
    let found = spi::select(sql, &[Oid::from(namespace).into(), name.into()], |r| {
        get::<bool>(r, 1)
    })?;
    Ok(found.first().copied().unwrap_or(false))
}

/// The table's schema-qualified name, or `None` if it is gone.
pub fn qualified_name(oid: Oid) -> Result<Option<crate::pg::ident::QualifiedName>> {
    let rows = spi::query(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[oid.into()],
        |r| {
            Ok(crate::pg::ident::QualifiedName::new(
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
            ))
        },
    )?;
    Ok(rows.into_iter().next())
}

/// The OID of a relation, by (qualified) name.
/// The relation's name as PostgreSQL's own messages write it: quoted, and
/// schema-qualified only when the search_path would not find it.
pub fn display_name(oid: Oid) -> Result<String> {
    Ok(spi::text(
        "SELECT $1::pg_catalog.regclass::pg_catalog.text",
        &[oid.into()],
    )?
    .unwrap_or_else(|| oid.to_u32().to_string()))
}

pub fn relation_oid(name: &str) -> Result<Oid> {
    spi::query("SELECT $1::pg_catalog.regclass::oid", &[name.into()], |r| {
        get::<Oid>(r, 1)
    })?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal(format!("relation {name} vanished")))
}

/// The relation's current relfilenode (0 if it is gone).
pub fn relfilenode(oid: Oid) -> Result<Oid> {
    let rows = spi::query(
        "SELECT relfilenode FROM pg_catalog.pg_class WHERE oid = $1",
        &[oid.into()],
        |r| get::<Oid>(r, 1),
    )?;
    Ok(rows.into_iter().next().unwrap_or(Oid::INVALID))
}

/// The equality operator PostgreSQL itself uses for values of `typid` (its
/// default btree opclass's, from the type cache), spelled
/// `OPERATOR(schema.name)`. Our own key comparisons use it instead of a bare
/// `=`, which would be looked up through the caller's search_path, where a
/// planted operator with a closer match (say `public.=(varchar, varchar)`)
/// would win.
pub fn equality_operator(typid: Oid) -> Result<String> {
    // SAFETY: lookup_type_cache returns a pointer to an entry of the backend's
    // type cache, which lives for the life of the backend; on an unknown type
    // it raises an ERROR instead (pg_guard turns that into a Rust panic that
    // pgrx reports as the ERROR). We copy one field and keep no reference.
    let eq = unsafe {
        (*pgrx::pg_sys::lookup_type_cache(typid, pgrx::pg_sys::TYPECACHE_EQ_OPR as i32)).eq_opr
    };
    if eq == pgrx::pg_sys::InvalidOid {
        return Err(MigrateError::Internal(format!(
            "type {} has no default equality operator",
            typid.to_u32()
        )));
    }
    spi::text(
        "SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname)
           FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
          WHERE o.oid = $1",
        &[eq.into()],
    )?
    .ok_or_else(|| MigrateError::Internal(format!("operator {} vanished", eq.to_u32())))
}

/// `OPERATOR(schema.=)` comparing a `left` with a `right` where it belongs
/// to the left type's default btree operator family (int4 with int8, say),
/// so that an index on the left side serves it; None when there is none.
pub fn cross_type_equality(left: Oid, right: Oid) -> Result<Option<String>> {
    spi::text(
        "SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname)
           FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
          WHERE o.oprname = '=' AND o.oprleft = $1 AND o.oprright = $2
            AND EXISTS (SELECT FROM pg_catalog.pg_amop a JOIN pg_catalog.pg_opclass c
                               ON c.opcfamily = a.amopfamily AND c.opcdefault AND c.opcintype = $1
                         WHERE a.amopopr = o.oid AND a.amopmethod = 403)
          LIMIT 1",
        &[left.into(), right.into()],
    )
}

/// PostgreSQL 18 lets a NOT NULL constraint be NOT VALID: the column shows
/// `attnotnull` yet may hold NULLs, and ALTERs of it scan the table under
/// ACCESS EXCLUSIVE. Refused until it is validated (no such constraint
/// exists before 18).
fn refuse_invalid_not_null(oid: Oid, qualified: &str) -> Result<()> {
    let invalid = spi::text(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(conname), ', ' ORDER BY conname)
           FROM pg_catalog.pg_constraint
          WHERE conrelid = $1 AND contype = 'n' AND NOT convalidated",
        &[oid.into()],
    )?;
    match invalid {
        None => Ok(()),
        Some(names) => Err(MigrateError::not_supported(
            "migrating a table with a NOT VALID NOT NULL constraint",
            format!("{qualified} has NOT NULL constraint(s) {names} not validated yet."),
            format!(
                "Validate it first (ALTER TABLE {qualified} VALIDATE CONSTRAINT …; it takes SHARE \
                 UPDATE EXCLUSIVE, so reads and writes go on)."
            ),
        )),
    }
}

/// The version of this library, which the SQL objects must match.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The extension's installed version in this database (None: not installed).
pub fn installed_version() -> Result<Option<String>> {
    spi::text(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'halo_migrate'",
        &[],
    )
}

/// Refuse to act when the SQL objects are another version than the library:
/// after a package upgrade and a restart, until `ALTER EXTENSION halo_migrate
/// UPDATE`, the old declarations and tables do not match the new code.
pub fn check_version() -> Result<()> {
    match installed_version()? {
        Some(v) if v != LIBRARY_VERSION => Err(MigrateError::VersionMismatch {
            installed: v,
            library: LIBRARY_VERSION,
        }),
        _ => Ok(()),
    }
}
