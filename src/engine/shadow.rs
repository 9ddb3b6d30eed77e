//! The shadow table and the recipe for filling it.
//!
//! The shadow `migrate.shadow_<oid>` is built from the catalogs as an exact
//! twin of the table — same columns in the same positions (a dropped column
//! becomes a placeholder that is dropped again, so attribute numbers match),
//! same defaults, generated expressions, identity, collations, NOT NULL,
//! validated CHECKs, storage, options, and every index and index-backed
//! constraint under the same name (the shadow lives in the schema `migrate`;
//! these names exist only inside `start()`'s transaction). Then the user's
//! subcommands are applied to it. What comes
//! out is, by construction, `ALTER(table)` on an empty table: the swap checks
//! that again before it exchanges storage.
//!
//! Indexes are then dropped from the shadow and their (post-ALTER)
//! definitions kept, to be rebuilt after the bulk copy under names of their
//! own (`halo_index_<oid>_<n>`), so that shadows of tables with the same
//! index names in different schemas never collide. No trigger and no
//! foreign key is ever put on the shadow.

use crate::catalog;
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::model::{CmdKind, Subcommand, TableFacts};
use crate::plan::sqlgen;
use pgrx::pg_sys::Oid;

/// Everything the copy, replay and swap need, generated once.
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    pub index_sql: Vec<String>,
    pub copy_targets: String,
    pub copy_exprs: String,
    /// `k1 <type>, …`: the key columns of the capture log, typed as in the table.
    pub log_columns: String,
    pub log_as_orig: String,
    pub key_map: String,
    /// `s.k1 OPERATOR(…) m.k1 AND …`: a shadow row (s) has a mapped logged key (m).
    pub shadow_match: String,
    /// `o.k1 OPERATOR(…) l.k1 AND …`: an original row (o) has a logged key (l).
    pub orig_match: String,
    /// The key columns of the table, for the capture trigger.
    pub key_columns: Vec<String>,
    pub altered_columns: Vec<String>,
    pub added_columns: Vec<String>,
}

struct Attr {
    name: String,
    dropped: bool,
    type_sql: String,
    collation: Option<String>,
    not_null: bool,
    default: Option<String>,
    /// 's' stored, 'v' virtual (PostgreSQL 18), None for neither.
    generated: Option<char>,
    identity: Option<char>,
    storage: Option<String>,
    compression: Option<String>,
}

/// Create the shadow of `facts`' table and apply `subcommands` to it.
/// Runs in the caller's transaction, as the caller.
pub fn create(facts: &TableFacts, cmds: &[Subcommand], subcommands: &[String]) -> Result<Recipe> {
    let oid = Oid::from(facts.oid);
    let shadow = sqlgen::shadow_table(facts.oid);
    spi::with_search_path(CATALOG_PATH, || {
        create_twin(oid, &shadow, &|n| n.to_string())
    })?;
    if !subcommands.is_empty() {
        // The user's own text runs under the user's search_path, as a plain ALTER would.
        spi::exec(&sqlgen::alter(&shadow, &subcommands.join(", ")), &[])?;
    }
    keep_out_of_publications(oid, &shadow)?;
    spi::with_search_path(CATALOG_PATH, || recipe(facts, cmds, oid, &shadow))
}

/// The shadow is never published, yet must accept the replay's deletes
/// under a `FOR ALL TABLES` publication: PostgreSQL refuses UPDATE and
/// DELETE on a published table without a replica identity, and the shadow
/// has no index until the copy is over. REPLICA IDENTITY FULL satisfies
/// that check (its extra WAL is written only at wal_level = logical), and
/// marking it as a rewrite's transient heap keeps its rows out of logical
/// decoding, as PostgreSQL's own rewrites do.
fn keep_out_of_publications(table: Oid, shadow: &QualifiedName) -> Result<()> {
    spi::exec(&sqlgen::alter(shadow, "REPLICA IDENTITY FULL"), &[])?;
    let shadow_oid = catalog::relation_oid(&shadow.to_string())?;
    crate::engine::storage::hide_from_decoding(shadow_oid, table);
    Ok(())
}

fn attributes(oid: Oid) -> Result<Vec<Attr>> {
    spi::query(
        "SELECT a.attname::text, a.attisdropped, pg_catalog.format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                     THEN a.attcollation::pg_catalog.regcollation::text END,
                a.attnotnull,
                CASE WHEN a.atthasdef THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                NULLIF(a.attgenerated::text, ''), a.attidentity::text,
                CASE WHEN a.attstorage <> t.typstorage THEN
                     CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL'
                                       WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END END,
                CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END
           FROM pg_catalog.pg_attribute a
           LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1 AND a.attnum > 0
          ORDER BY a.attnum",
        &[oid.into()],
        |r| {
            let identity: String = r.get(8)?.unwrap_or_default();
            Ok(Attr {
                name: get(r, 1)?,
                dropped: get(r, 2)?,
                type_sql: get(r, 3)?,
                collation: r.get(4)?,
                not_null: get(r, 5)?,
                default: r.get(6)?,
                generated: r.get::<String>(7)?.and_then(|g| g.chars().next()),
                identity: identity.chars().next(),
                storage: r.get(9)?,
                compression: r.get(10)?,
            })
        },
    )
}

/// Create `shadow` as an exact twin of table `oid` (see the module header),
/// its indexes and index-backed constraints named by `index_name` from the
/// table's own names. Run under the catalog search_path.
pub fn create_twin(
    oid: Oid,
    shadow: &QualifiedName,
    index_name: &dyn Fn(&str) -> String,
) -> Result<()> {
    let attrs = attributes(oid)?;
    let mut cols = Vec::new();
    let mut placeholders = Vec::new();
    for (i, a) in attrs.iter().enumerate() {
        if a.dropped {
            let p = Ident::new(format!("halo_dropped_{}", i + 1));
            cols.push(format!("{p} integer"));
            placeholders.push(p);
            continue;
        }
        let mut def = format!("{} {}", Ident::new(&a.name), a.type_sql);
        if let Some(c) = &a.collation {
            def.push_str(&format!(" COLLATE {c}"));
        }
        if a.not_null {
            def.push_str(" NOT NULL");
        }
        match (a.generated, a.identity, &a.default) {
            (Some('v'), _, Some(expr)) => {
                def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) VIRTUAL"))
            }
            (Some(_), _, Some(expr)) => {
                def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"))
            }
            (_, Some('a'), _) => def.push_str(" GENERATED ALWAYS AS IDENTITY"),
            (_, Some('d'), _) => def.push_str(" GENERATED BY DEFAULT AS IDENTITY"),
            (_, _, Some(expr)) => def.push_str(&format!(" DEFAULT {expr}")),
            _ => {}
        }
        cols.push(def);
    }
    let table = spi::query(
        "SELECT c.relpersistence = 'u',
                (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(split_part(o, '=', 1)) || ' = ' ||
                        pg_catalog.quote_literal(substr(o, strpos(o, '=') + 1)), ', ')
                   FROM pg_catalog.unnest(c.reloptions) o),
                (SELECT pg_catalog.quote_ident(spcname) FROM pg_catalog.pg_tablespace WHERE oid = c.reltablespace)
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| Ok((get::<bool>(r, 1)?, r.get::<String>(2)?, r.get::<String>(3)?)),
    )?;
    let (unlogged, options, tablespace) = table
        .into_iter()
        .next()
        .ok_or_else(|| MigrateError::Internal("table vanished".into()))?;
    let mut sql = format!(
        "CREATE {}TABLE {shadow} ({})",
        if unlogged { "UNLOGGED " } else { "" },
        cols.join(", ")
    );
    if let Some(o) = options {
        sql.push_str(&format!(" WITH ({o})"));
    }
    if let Some(ts) = tablespace {
        sql.push_str(&format!(" TABLESPACE {ts}"));
    }
    spi::exec(&sql, &[])?;
    let mut alter = Vec::new();
    for p in placeholders {
        alter.push(format!("DROP COLUMN {p}"));
    }
    for a in attrs.iter().filter(|a| !a.dropped) {
        if let Some(s) = &a.storage {
            alter.push(format!(
                "ALTER COLUMN {} SET STORAGE {s}",
                Ident::new(&a.name)
            ));
        }
        if let Some(c) = &a.compression {
            alter.push(format!(
                "ALTER COLUMN {} SET COMPRESSION {c}",
                Ident::new(&a.name)
            ));
        }
    }
    // Validated CHECKs only: a NOT VALID one may be violated by existing rows,
    // which PostgreSQL's own rewrite would not check either.
    let checks = spi::query(
        "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
          WHERE conrelid = $1 AND contype = 'c' AND convalidated ORDER BY oid",
        &[oid.into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )?;
    for (name, def) in checks {
        alter.push(format!("ADD CONSTRAINT {} {def}", Ident::new(name)));
    }
    if !alter.is_empty() {
        spi::exec(&sqlgen::alter(shadow, &alter.join(", ")), &[])?;
    }
    for sql in index_definitions(oid, shadow, index_name)? {
        spi::exec(&sql, &[])?;
    }
    Ok(())
}

/// The statements that create `relid`'s indexes and index-backed constraints
/// (primary key first) on `target`, each named `index_name(its name)`.
fn index_definitions(
    relid: Oid,
    target: &QualifiedName,
    index_name: &dyn Fn(&str) -> String,
) -> Result<Vec<String>> {
    let rows = spi::query(
        "SELECT ic.relname::text, n.nspname::text, c.relname::text, con.conname::text,
                CASE WHEN con.oid IS NOT NULL THEN pg_catalog.pg_get_constraintdef(con.oid) END,
                pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_catalog.pg_constraint con
                  ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
          WHERE i.indrelid = $1
          ORDER BY i.indisprimary DESC, i.indexrelid",
        &[relid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
                get::<String>(r, 3)?,
                r.get::<String>(4)?,
                r.get::<String>(5)?,
                get::<String>(r, 6)?,
                get::<bool>(r, 7)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for (index, schema, table, con, condef, indexdef, unique) in rows {
        match (con, condef) {
            (Some(con), Some(def)) => out.push(sqlgen::alter(
                target,
                &format!("ADD CONSTRAINT {} {def}", Ident::new(index_name(&con))),
            )),
            _ => {
                // pg_get_indexdef names the table schema-qualified under the
                // catalog search_path; put the target in its place.
                let from = QualifiedName::new(&schema, &table);
                let unique = if unique { "UNIQUE " } else { "" };
                let prefix = format!(
                    "CREATE {unique}INDEX {} ON {from} USING ",
                    Ident::new(&index)
                );
                let rest = indexdef.strip_prefix(&prefix).ok_or_else(|| {
                    MigrateError::Internal(format!("unexpected index definition: {indexdef}"))
                })?;
                out.push(format!(
                    "CREATE {unique}INDEX {} ON {target} USING {rest}",
                    Ident::new(index_name(&index))
                ));
            }
        }
    }
    Ok(out)
}

fn recipe(
    facts: &TableFacts,
    cmds: &[Subcommand],
    oid: Oid,
    shadow: &QualifiedName,
) -> Result<Recipe> {
    let shadow_oid = crate::catalog::relation_oid(&shadow.to_string())?;
    // Indexes are built after the copy: keep their post-ALTER definitions,
    // under names of their own (sqlgen::shadow_index), and drop them now.
    let built = std::cell::Cell::new(0);
    let index_sql = index_definitions(shadow_oid, shadow, &|_| {
        built.set(built.get() + 1);
        sqlgen::shadow_index(oid.to_u32(), built.get())
    })?;
    let drops = spi::query(
        "SELECT con.conname::text, ic.relname::text
           FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
           LEFT JOIN pg_catalog.pg_constraint con
                  ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
          WHERE i.indrelid = $1",
        &[shadow_oid.into()],
        |r| Ok((r.get::<String>(1)?, get::<String>(r, 2)?)),
    )?;
    for (con, index) in drops {
        match con {
            Some(c) => spi::exec(
                &sqlgen::alter(shadow, &format!("DROP CONSTRAINT {}", Ident::new(c))),
                &[],
            )?,
            None => spi::exec(
                &format!("DROP INDEX {}", QualifiedName::new("migrate", index)),
                &[],
            )?,
        }
    }
    Ok(Recipe {
        index_sql,
        ..mapping(facts, cmds, oid, shadow_oid, Keys::Cast)?
    })
}

/// How a logged key meets the shadow's key when their types differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Cast into the shadow's type (the ALTER's own cast, as the copy does).
    Cast,
    /// Compared across the two types where PostgreSQL has an equality
    /// operator for the pair (a revert: a key the old type cannot hold may
    /// be logged for a row already gone, and must not fail the cast), else
    /// cast.
    Compared,
}

/// How rows and logged keys of table `oid` map into `shadow` (which has
/// the table's shape after `cmds`): the copy's column list and expressions,
/// the log's columns and the key matches. Run under the catalog search_path.
pub fn mapping(
    facts: &TableFacts,
    cmds: &[Subcommand],
    oid: Oid,
    shadow_oid: Oid,
    keys: Keys,
) -> Result<Recipe> {
    let mut added = Vec::new();
    let mut altered = Vec::new();
    let mut using = std::collections::HashMap::new();
    for c in cmds {
        match &c.kind {
            CmdKind::AddColumn { column, .. } => added.push(column.clone()),
            CmdKind::AlterColumnType {
                column,
                using: u,
                using_columns,
            } => {
                altered.push(column.clone());
                if let Some(u) = u {
                    using.insert(column.clone(), (u.clone(), using_columns.clone()));
                }
            }
            _ => {}
        }
    }
    let shadow_cols = spi::query(
        "SELECT attname::text, attgenerated <> '', pg_catalog.format_type(atttypid, atttypmod), atttypid
           FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[shadow_oid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<bool>(r, 2)?,
                get::<String>(r, 3)?,
                get::<Oid>(r, 4)?,
            ))
        },
    )?;
    let orig_types = spi::query(
        "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod), atttypid
           FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
        &[oid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
                get::<Oid>(r, 3)?,
            ))
        },
    )?;
    let orig_type = |c: &str| {
        orig_types
            .iter()
            .find(|(n, _, _)| n == c)
            .map(|(_, t, id)| (t.clone(), *id))
    };

    let mut targets = Vec::new();
    let mut exprs = Vec::new();
    for (name, generated, _, _) in &shadow_cols {
        if *generated || added.contains(name) || orig_type(name).is_none() {
            continue;
        }
        targets.push(Ident::new(name).to_string());
        exprs.push(match using.get(name) {
            Some((u, _)) => format!("({u})"),
            None => format!("o.{}", Ident::new(name)),
        });
    }

    let key = facts
        .replay_key
        .clone()
        .ok_or_else(|| MigrateError::NoKey {
            table: facts.name.clone(),
        })?;
    let mut r = Recipe {
        copy_targets: targets.join(", "),
        copy_exprs: exprs.join(", "),
        key_columns: key.clone(),
        altered_columns: altered,
        added_columns: added,
        ..Recipe::default()
    };
    let (mut log_cols, mut as_orig, mut map, mut skeys, mut okeys) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, k) in key.iter().enumerate() {
        let kid = Ident::new(k);
        let Some((_, _, stype, stypid)) = shadow_cols.iter().find(|(n, g, _, _)| n == k && !g)
        else {
            return Err(MigrateError::not_supported(
                format!("an ALTER that removes key column \"{k}\""),
                "Concurrent changes are replayed by key, so the key must survive the ALTER.",
                "Change the key in a migration of its own, after adding the new key.",
            ));
        };
        let source = match using.get(k) {
            Some((u, cols)) if cols.iter().all(|c| c == k) => format!("({u})"),
            Some(_) => {
                return Err(MigrateError::not_supported(
                    format!("a USING expression for key column \"{k}\" that reads other columns"),
                    "Replay maps each logged key through the USING expression, so it may read only that key column.",
                    "Add a new column, fill it, and switch the key in separate migrations.",
                ))
            }
            None => format!("o.{kid}"),
        };
        let (otype, otypid) = orig_type(k).unwrap_or_default();
        log_cols.push(format!("k{} {otype}", i + 1));
        as_orig.push(format!("l.k{} AS {kid}", i + 1));
        let cross = match keys {
            Keys::Compared if *stypid != otypid && source == format!("o.{kid}") => {
                catalog::cross_type_equality(*stypid, otypid)?
            }
            _ => None,
        };
        map.push(match cross {
            Some(_) => format!("{source} AS k{}", i + 1),
            None => format!("CAST({source} AS {stype}) AS k{}", i + 1),
        });
        let s_eq = match cross {
            Some(op) => op,
            None => catalog::equality_operator(*stypid)?,
        };
        let o_eq = catalog::equality_operator(otypid)?;
        skeys.push(format!("s.{kid} {s_eq} m.k{}", i + 1));
        okeys.push(format!("o.{kid} {o_eq} l.k{}", i + 1));
    }
    r.log_columns = log_cols.join(", ");
    r.log_as_orig = as_orig.join(", ");
    r.key_map = map.join(", ");
    r.shadow_match = skeys.join(" AND ");
    r.orig_match = okeys.join(" AND ");
    Ok(r)
}
