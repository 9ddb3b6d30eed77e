//! Tables and changes a plan refuses before choosing steps: a rewrite the
//! online copy cannot do safely (inheritance, partitions, row security), a
//! type change on a parent whose children the probe cannot see.
//!
//! Pure, like the rest of the planner.

use super::model::*;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;

/// The probe's empty clone has the parent's indexes but not the children's:
/// a type change it finds catalog-only could still rebuild an index that
/// only a child has, under ACCESS EXCLUSIVE on the whole tree.
pub(super) fn refuse_type_change_on_parent(
    facts: &TableFacts,
    table: &QualifiedName,
    cmds: &[Subcommand],
) -> Result<()> {
    let typed = cmds.iter().find_map(|c| match &c.kind {
        CmdKind::AlterColumnType { column, .. } => Some(column),
        _ => None,
    });
    match typed {
        Some(column) if facts.children > 0 && facts.leaves.is_none() => Err(MigrateError::not_supported(
            "changing a column's type on a table that other tables inherit from",
            format!(
                "{table} has {} child table(s) (INHERITS). PostgreSQL changes \"{column}\" in every child \
                 too, rewriting them or rebuilding their indexes under ACCESS EXCLUSIVE on the whole tree, \
                 which halo_migrate cannot bound.",
                facts.children
            ),
            "halo_migrate does not migrate legacy inheritance trees online. Run the ALTER directly in a \
             maintenance window, or move the tree to declarative partitioning.",
        )),
        _ => Ok(()),
    }
}

/// A rewrite is online only if the copy sees every row and the swap's own
/// ALTER touches no data: refuse tables where either would not hold.
pub(super) fn refuse_unsafe_rewrite(facts: &TableFacts, table: &QualifiedName) -> Result<()> {
    // A partitioned table's children are its partitions, rewritten each.
    if facts.children > 0 && facts.leaves.is_none() {
        return Err(MigrateError::not_supported(
            "rewriting a table that other tables inherit from",
            format!(
                "{table} has {} child table(s) (INHERITS). PostgreSQL applies the ALTER to every child \
                 too, so at the swap it would rewrite the children under ACCESS EXCLUSIVE, blocking \
                 writes to the whole tree for as long as that takes.",
                facts.children
            ),
            "halo_migrate does not migrate legacy inheritance trees online. Run the ALTER directly in a \
             maintenance window, or move the tree to declarative partitioning.",
        ));
    }
    match &facts.parent {
        Some(parent) if facts.is_partition => {
            return Err(MigrateError::not_supported(
                "rewriting one partition of a partitioned table",
                format!(
                    "{table} is a partition of {parent}: its columns are the partitioned table's, \
                 which a shadow table cannot keep."
                ),
                format!(
                    "A partition's columns change with the whole tree: run the ALTER on {parent} \
                 (through migrate.start() if it needs no rewrite; see doc/limitations.md)."
                ),
            ))
        }
        _ => {}
    }
    if let Some(parent) = &facts.parent {
        return Err(MigrateError::not_supported(
            "rewriting a table that inherits from another",
            format!(
                "{table} inherits from {parent} (INHERITS or PARTITION OF): its columns are tied to \
                 the parent's, which a shadow table cannot keep."
            ),
            "Run the ALTER on the parent table directly, or detach the table first.",
        ));
    }
    if facts.row_security_applies {
        return Err(MigrateError::RowSecurity {
            table: table.to_string(),
        });
    }
    Ok(())
}
