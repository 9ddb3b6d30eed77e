//! What the catalogs say about a partitioned table's tree: its members, the
//! partitions that hold rows (with the keys and foreign keys they already
//! have) and the partition key of every partitioned table in it.
//!
//! Catalog reads only, with the caller's snapshot: no lock on the tree.

use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::model::{Leaf, LeafKey, PartitionKey};
use pgrx::pg_sys::Oid;

/// Every member of the tree under `oid`, itself first, then by depth and
/// OID: the order in which the tree is locked.
pub fn members(oid: Oid) -> Result<Vec<QualifiedName>> {
    Ok(members_with_kind(oid)?
        .into_iter()
        .map(|m| m.name)
        .collect())
}

/// A member of a tree: its OID, name, and whether it is partitioned itself.
pub struct Member {
    pub oid: Oid,
    pub name: QualifiedName,
    pub partitioned: bool,
}

/// [`members`], with their OIDs and kinds.
pub fn members_with_kind(oid: Oid) -> Result<Vec<Member>> {
    spi::select(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind = 'p'
           FROM pg_catalog.pg_partition_tree($1) t
           JOIN pg_catalog.pg_class c ON c.oid = t.relid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          ORDER BY t.level, t.relid",
        &[oid.into()],
        |r| {
            Ok(Member {
                oid: get(r, 1)?,
                name: QualifiedName::new(get::<String>(r, 2)?, get::<String>(r, 3)?),
                partitioned: get(r, 4)?,
            })
        },
    )
}

/// The partitions of a partitioned table that hold rows, in a fixed order
/// (depth, then OID). A foreign-table partition is refused: PostgreSQL can
/// neither build its indexes nor validate its constraints.
pub fn leaves(oid: Oid, qualified: &str) -> Result<Vec<Leaf>> {
    let rows = spi::select(
        "SELECT c.oid, c.relnamespace, n.nspname::text, c.relname::text, c.relkind::text,
                ARRAY(SELECT k.conname::text FROM pg_catalog.pg_constraint k
                       WHERE k.conrelid = c.oid ORDER BY k.conname)
           FROM pg_catalog.pg_partition_tree($1) t
           JOIN pg_catalog.pg_class c ON c.oid = t.relid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE t.isleaf
          ORDER BY t.level, c.oid",
        &[oid.into()],
        |r| {
            Ok((
                Leaf {
                    oid: get::<Oid>(r, 1)?.to_u32(),
                    namespace: get::<Oid>(r, 2)?.to_u32(),
                    schema: get(r, 3)?,
                    name: get(r, 4)?,
                    constraints: get(r, 6)?,
                    ..Leaf::default()
                },
                get::<String>(r, 5)?,
            ))
        },
    )?;
    if let Some((leaf, _)) = rows.iter().find(|(_, kind)| kind == "f") {
        return Err(MigrateError::not_supported(
            "migrating a partitioned table with a foreign-table partition",
            format!(
                "{qualified} has partition {}, a foreign table: its rows live on another server, where \
                 halo_migrate can neither build an index nor check a constraint.",
                QualifiedName::new(&leaf.schema, &leaf.name)
            ),
            "Detach the foreign partition first, or run the ALTER directly.",
        ));
    }
    rows.into_iter()
        .map(|(mut leaf, _)| {
            let relid = Oid::from(leaf.oid);
            leaf.keys = keys(relid)?;
            leaf.foreign_keys = foreign_keys(relid)?;
            Ok(leaf)
        })
        .collect()
}

/// A partition's PRIMARY KEY and UNIQUE constraints.
fn keys(relid: Oid) -> Result<Vec<LeafKey>> {
    spi::select(
        "SELECT k.conname::text, k.contype = 'p',
                ARRAY(SELECT a.attname::text
                        FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS x(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
                       WHERE x.ord <= i.indnkeyatts ORDER BY x.ord),
                ARRAY(SELECT a.attname::text
                        FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS x(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
                       WHERE x.ord > i.indnkeyatts ORDER BY x.ord),
                i.indnullsnotdistinct, k.condeferrable, k.condeferred,
                i.indisvalid AND i.indexprs IS NULL AND i.indpred IS NULL AND k.conparentid = 0
                AND (SELECT c.relam FROM pg_catalog.pg_class c WHERE c.oid = i.indexrelid)
                    = (SELECT a.oid FROM pg_catalog.pg_am a WHERE a.amname = 'btree')
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
                AND NOT EXISTS (SELECT 1 FROM unnest(i.indclass::oid[]) AS o(opc)
                                  JOIN pg_catalog.pg_opclass oc ON oc.oid = o.opc
                                 WHERE NOT oc.opcdefault)
                AND NOT EXISTS (SELECT 1
                                  FROM unnest(i.indcollation::oid[]) WITH ORDINALITY AS l(coll, ord)
                                  JOIN unnest(i.indkey::int2[]) WITH ORDINALITY AS x(attnum, ord) USING (ord)
                                  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
                                 WHERE l.coll <> a.attcollation)
           FROM pg_catalog.pg_constraint k
           JOIN pg_catalog.pg_index i ON i.indexrelid = k.conindid
          WHERE k.conrelid = $1 AND k.contype IN ('p', 'u')
          ORDER BY k.conname",
        &[relid.into()],
        |r| {
            Ok(LeafKey {
                name: get(r, 1)?,
                primary: get(r, 2)?,
                columns: get(r, 3)?,
                including: get(r, 4)?,
                nulls_not_distinct: get(r, 5)?,
                deferrable: get(r, 6)?,
                initially_deferred: get(r, 7)?,
                attachable: get(r, 8)?,
            })
        },
    )
}

/// A partition's foreign keys that are not attached to a parent's.
fn foreign_keys(relid: Oid) -> Result<Vec<(String, Vec<String>)>> {
    spi::select(
        "SELECT k.conname::text,
                ARRAY(SELECT a.attname::text
                        FROM unnest(k.conkey) WITH ORDINALITY AS x(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum
                       ORDER BY x.ord)
           FROM pg_catalog.pg_constraint k
          WHERE k.conrelid = $1 AND k.contype = 'f' AND k.conparentid = 0
          ORDER BY k.conname",
        &[relid.into()],
        |r| Ok((get(r, 1)?, get(r, 2)?)),
    )
}

/// The partition key of every partitioned table in the tree, the root first.
pub fn partition_keys(oid: Oid) -> Result<Vec<PartitionKey>> {
    spi::select(
        "SELECT c.relname::text,
                ARRAY(SELECT a.attname::text
                        FROM unnest(p.partattrs::int2[]) WITH ORDINALITY AS x(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = x.attnum
                       ORDER BY x.ord),
                p.partexprs IS NOT NULL
           FROM pg_catalog.pg_partition_tree($1) t
           JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = t.relid
           JOIN pg_catalog.pg_class c ON c.oid = t.relid
          ORDER BY t.level, t.relid",
        &[oid.into()],
        |r| {
            Ok(PartitionKey {
                table: get(r, 1)?,
                columns: get(r, 2)?,
                expressions: get(r, 3)?,
            })
        },
    )
}
