//! Planning for a partitioned table: the whole tree, as `ALTER TABLE` on the
//! parent would change it, without a statement that reads a partition under
//! a lock that blocks writes.
//!
//! PostgreSQL 15 recurses most subcommands from the parent to every
//! partition, and for those the plain plan holds: a catalog-only change or a
//! CHECK added NOT VALID and validated (validation recurses, partition by
//! partition, under SHARE UPDATE EXCLUSIVE). Two things it cannot do on the
//! parent, so they are done partition by partition first:
//! - a UNIQUE or PRIMARY KEY constraint: no `CREATE INDEX CONCURRENTLY` on a
//!   partitioned table. Each leaf gets its index built concurrently and
//!   attached as its own constraint; the parent's ADD then finds them and
//!   attaches them instead of building (`DefineIndex`), in one short lock.
//! - a FOREIGN KEY: no `NOT VALID` foreign key on a partitioned table. Each
//!   leaf gets it NOT VALID, then validated; the parent's ADD then attaches
//!   the validated ones without checking a row.
//!
//! Invariants: a leaf's index is attached right after it is built (the worker
//! drops an index of the plan that backs no constraint before each build);
//! the parent's statement comes last, so undoing it first takes every leaf's
//! constraint with it. A rewrite of a tree is planned as an ordinary
//! table's (`rewrite_plan`), and carried out partition by partition.

use super::model::*;
use super::{sqlgen, Oracle};
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use std::collections::HashSet;

/// A type change on a tree is always a rewrite: partitions may have indexes
/// of their own on the column, which the empty-clone probe does not see and
/// a plain ALTER could rebuild under ACCESS EXCLUSIVE on the whole tree.
/// The rewrite builds every index on the partitions' shadows instead.
/// PostgreSQL refuses a type change of a partition key column at any level
/// (the empty clone carries only the root's key): refused the same way.
pub(super) fn rewrite_type_changes(
    facts: &TableFacts,
    cmds: &[Subcommand],
    decisions: &mut [super::Decision],
) -> Result<()> {
    for (c, d) in cmds.iter().zip(decisions.iter_mut()) {
        if let CmdKind::AlterColumnType { column, .. } = &c.kind {
            if let Some(k) = facts
                .partition_keys
                .iter()
                .find(|k| k.columns.contains(column))
            {
                return Err(MigrateError::PartitionKeyType {
                    column: column.clone(),
                    table: k.table.clone(),
                });
            }
            // Which columns a key expression uses is not read here; the
            // root's is met on the empty clone, the others' are refused.
            // The root's key comes first.
            if let Some(k) = facts.partition_keys.iter().skip(1).find(|k| k.expressions) {
                return Err(MigrateError::not_supported(
                    "changing a column's type in a tree partitioned by an expression below its root",
                    format!(
                        "{} is partitioned by an expression, which may use \"{column}\"; PostgreSQL \
                         would refuse the ALTER at the swap if it does.",
                        k.table
                    ),
                    "Run the ALTER directly in a maintenance window.",
                ));
            }
            if !matches!(d, super::Decision::Rewrite { .. }) {
                *d = super::Decision::Rewrite {
                    rewrites: false,
                    reason: format!(
                        "\"{column}\" changes type in every partition, where indexes the probe cannot \
                         see may be rebuilt: every partition is copied online instead"
                    ),
                };
            }
        }
    }
    Ok(())
}

/// What the tree's one swap cannot run: a foreign key the ALTER adds would
/// go onto the partitioned table at the swap, and PostgreSQL checks it
/// there, on every partition, under the swap's lock.
pub(super) fn refuse_in_rewrite(table: &QualifiedName, steps: &[Step]) -> Result<()> {
    if steps.iter().any(|s| s.stage == Stage::AtSwap) {
        return Err(MigrateError::not_supported(
            "adding a foreign key together with a rewrite of a partitioned table",
            format!(
                "The foreign key would be added to {table} at the swap, and PostgreSQL checks it \
                 there on every partition under the swap's lock."
            ),
            "Run the ADD FOREIGN KEY as a migration of its own (partitioned tables get it without a long lock).",
        ));
    }
    Ok(())
}

/// A tree's rewrite is carried out partition by partition: say so in the
/// steps `rewrite_plan` wrote as for one table.
pub(super) fn describe_rewrite(table: &QualifiedName, leaves: &[Leaf], steps: &mut [Step]) {
    let n = leaves.len();
    let names: Vec<String> = leaves.iter().map(|l| leaf_table(l).to_string()).collect();
    for s in steps.iter_mut() {
        match &s.stage {
            Stage::Capture => {
                s.sql = format!(
                    "CREATE TRIGGER halo_capture_<oid> AFTER INSERT OR UPDATE OR DELETE ON each of {n} partitions ({}) FOR EACH ROW EXECUTE FUNCTION migrate.capture_<oid>()",
                    names.join(", ")
                );
                s.reason =
                    "capture: from now on the key of every row changed in a partition is logged \
                    to migrate.log_<partition oid>; the triggers go onto all partitions within one \
                    lock_timeout, retried"
                        .into();
            }
            Stage::Shadow(text) => {
                s.sql = format!(
                    "ALTER TABLE migrate.shadow_<partition oid> {text} (each of {n} shadows)"
                );
            }
            Stage::Copy => {
                s.sql = format!(
                    "INSERT INTO migrate.shadow_<partition oid> SELECT … FROM ONLY <partition> (each of {n}, \
                     in batches, then replay migrate.log_<partition oid>)"
                );
                s.reason = "copy in short transactions, up to halo_migrate.jobs partitions at once, \
                    largest first; each partition's indexes built after its copy; reads and writes continue"
                    .into();
            }
            Stage::Swap => {
                s.sql = format!(
                    "LOCK TABLE {table} and its partitions IN ACCESS EXCLUSIVE MODE; replay the last changes; \
                     ALTER TABLE {table} on empty partitions; put each shadow in its partition's place"
                );
                s.reason = "one swap for the whole tree: every member locked within one lock_timeout, \
                    retried with back-off; OIDs, partitioned indexes and their attachments, constraints, \
                    views, triggers, grants and other dependents are kept"
                    .into();
            }
            _ => {}
        }
    }
}

fn leaf_table(leaf: &Leaf) -> QualifiedName {
    QualifiedName::new(&leaf.schema, &leaf.name)
}

fn step(cmd: &Subcommand, strategy: Strategy, sql: String, lock: LockMode, reason: String) -> Step {
    Step {
        stage: Stage::Direct,
        undo: Undo::Nothing,
        subcommand: Some(cmd.text.clone()),
        strategy,
        sql,
        lock: Some(lock),
        rewrites: false,
        reason,
    }
}

/// The steps adding a FOREIGN KEY, UNIQUE or PRIMARY KEY constraint named
/// `name` (the user's, or PostgreSQL's choice) to the partitioned `table`.
pub fn constraint_steps(
    facts: &TableFacts,
    table: &QualifiedName,
    cmd: &Subcommand,
    spec: &ConstraintSpec,
    name: &str,
    oracle: &Oracle,
) -> Result<Vec<Step>> {
    let c = TreeConstraint {
        leaves: facts.leaves.as_deref().unwrap_or_default(),
        partition_keys: &facts.partition_keys,
        table,
        cmd,
        spec,
        name,
    };
    match spec.contype {
        ConstraintType::ForeignKey => foreign_key_steps(&c, oracle),
        ConstraintType::PrimaryKey | ConstraintType::Unique => unique_steps(&c, oracle),
        other => Err(MigrateError::Internal(format!(
            "no per-partition plan for a {other:?} constraint"
        ))),
    }
}

/// PostgreSQL's rule, at every level of the tree (the probe's clone only
/// has the root's key): a unique key holds every partition key column, and
/// no partition key has expressions.
fn holds_partition_keys(keys: &[PartitionKey], spec: &ConstraintSpec) -> Result<()> {
    let kind = match spec.contype {
        ConstraintType::PrimaryKey => "PRIMARY KEY",
        _ => "UNIQUE",
    };
    for key in keys {
        if key.expressions {
            return Err(MigrateError::UniqueOnPartitionExpression {
                kind,
                table: key.table.clone(),
            });
        }
        if let Some(column) = key.columns.iter().find(|c| !spec.columns.contains(c)) {
            return Err(MigrateError::UniqueWithoutPartitionKey {
                detail: format!(
                    "{kind} constraint on table \"{}\" lacks column \"{column}\" which is part of the partition key.",
                    key.table
                ),
            });
        }
    }
    Ok(())
}

/// Would the parent's ADD of `spec` attach this existing partition key
/// (rather than build an index on the partition)? PostgreSQL attaches an
/// unattached constraint index of the same columns, INCLUDE columns and
/// NULLS treatment, with default operator classes and collations.
fn attaches(k: &LeafKey, spec: &ConstraintSpec) -> bool {
    same_but_deferrability(k, spec)
        && k.deferrable == spec.deferrable
        && k.initially_deferred == spec.initially_deferred
}

/// An attachable key like `spec` in all that the index is.
fn same_but_deferrability(k: &LeafKey, spec: &ConstraintSpec) -> bool {
    k.attachable
        && k.columns == spec.columns
        && k.including == spec.including
        && k.nulls_not_distinct == spec.nulls_not_distinct
}

/// A constraint the user's subcommand adds to a partitioned table.
struct TreeConstraint<'a> {
    leaves: &'a [Leaf],
    partition_keys: &'a [PartitionKey],
    table: &'a QualifiedName,
    cmd: &'a Subcommand,
    spec: &'a ConstraintSpec,
    name: &'a str,
}

impl TreeConstraint<'_> {
    /// The last step: the user's subcommand on the parent, named.
    fn on_parent(&self, strategy: Strategy, reason: &str, oracle: &Oracle) -> Result<Step> {
        let add = sqlgen::alter(
            self.table,
            &sqlgen::name_constraint(&self.cmd.text, self.spec, self.name),
        );
        let lock = (oracle.lock_of)(&add)?;
        Ok(Step {
            undo: Undo::Sql(sqlgen::drop_constraint_if_exists(self.table, self.name)),
            ..step(self.cmd, strategy, add, lock, reason.into())
        })
    }
}

/// FOREIGN KEY on a tree: NOT VALID and validated on each leaf (under the
/// parent's constraint name, as PostgreSQL names the partitions' copies),
/// then added to the parent, which attaches them.
fn foreign_key_steps(c: &TreeConstraint, oracle: &Oracle) -> Result<Vec<Step>> {
    let (cmd, spec) = (c.cmd, c.spec);
    let mut chosen: HashSet<(u32, String)> = HashSet::new();
    let mut steps = Vec::new();
    for leaf in c.leaves {
        let t = leaf_table(leaf);
        if let Some((existing, _)) = leaf
            .foreign_keys
            .iter()
            .find(|(_, cols)| *cols == spec.columns)
        {
            return Err(MigrateError::not_supported(
                "a foreign key on a partitioned table whose partition already has one on the same columns",
                format!(
                    "Partition {t} already has foreign key \"{existing}\" on ({}). PostgreSQL attaches \
                     it if it is equivalent, and adds a second one otherwise; halo_migrate does not \
                     judge which.",
                    spec.columns.join(", ")
                ),
                "Drop that foreign key first, or run the ALTER directly.",
            ));
        }
        // PostgreSQL gives the partition's copy the parent's name, unless
        // the partition has a constraint of that name already.
        let name = if leaf.constraints.iter().any(|n| n == c.name) {
            let taken = |n: &str| -> Result<bool> {
                Ok(chosen.contains(&(leaf.namespace, n.to_string()))
                    || (oracle.constraint_taken_in)(leaf.namespace, n)?)
            };
            let chose = sqlgen::choose_name(
                &leaf.name,
                Some(&sqlgen::columns_addition(&spec.columns)),
                "fkey",
                &taken,
            )?;
            chosen.insert((leaf.namespace, chose.clone()));
            chose
        } else {
            c.name.to_string()
        };
        let name = name.as_str();
        let add = sqlgen::add_not_valid(&t, &cmd.text, spec, name);
        let lock = (oracle.lock_of)(&add)?;
        steps.push(Step {
            undo: Undo::Sql(sqlgen::drop_constraint_if_table_exists(&t, name)),
            ..step(
                cmd,
                Strategy::TwoPhase,
                add,
                lock,
                format!("partition {t}: added NOT VALID, no scan (a partitioned table cannot take a NOT VALID foreign key itself)"),
            )
        });
        let validate = sqlgen::validate(&t, name);
        let lock = (oracle.lock_of)(&validate)?;
        steps.push(step(
            cmd,
            Strategy::TwoPhase,
            validate,
            lock,
            format!("partition {t}: {}", super::VALIDATE_REASON),
        ));
    }
    steps.push(c.on_parent(
        Strategy::TwoPhase,
        "the parent's key attaches every partition's validated one: no scan",
        oracle,
    )?);
    Ok(steps)
}

/// UNIQUE or PRIMARY KEY on a tree: per leaf, the index built CONCURRENTLY
/// and attached as the leaf's constraint; then the parent's constraint,
/// which attaches them (and creates the partitioned indexes in between).
fn unique_steps(c: &TreeConstraint, oracle: &Oracle) -> Result<Vec<Step>> {
    let (cmd, spec) = (c.cmd, c.spec);
    let primary = spec.contype == ConstraintType::PrimaryKey;
    holds_partition_keys(c.partition_keys, spec)?;
    let mut chosen: HashSet<(u32, String)> = HashSet::new();
    let mut steps = Vec::new();
    for leaf in c.leaves {
        let t = leaf_table(leaf);
        if leaf.keys.iter().any(|k| attaches(k, spec)) {
            // The parent's ADD attaches it, as it would in a plain ALTER.
            continue;
        }
        if let Some(k) = leaf.keys.iter().find(|k| same_but_deferrability(k, spec)) {
            return Err(MigrateError::not_supported(
                "adding a key to a partitioned table whose partition has one that differs only in deferrability",
                format!(
                    "Partition {t} has key \"{}\" on the same columns, {}deferrable. Whether \
                     PostgreSQL attaches it to the new key is not settled here, and guessing wrong \
                     would either leave a second key behind or build an index under lock.",
                    k.name,
                    if k.deferrable { "" } else { "not " }
                ),
                "Drop or change that key first, or run the ALTER directly.",
            ));
        }
        if let Some(k) = leaf.keys.iter().find(|k| primary && k.primary) {
            return Err(MigrateError::PartitionPrimaryKey {
                partition: t.to_string(),
                existing: k.name.clone(),
                columns: k.columns.join(", "),
            });
        }
        let index = {
            let taken = |n: &str| -> Result<bool> {
                Ok(chosen.contains(&(leaf.namespace, n.to_string()))
                    || (oracle.relation_taken_in)(leaf.namespace, n)?)
            };
            let addition = sqlgen::index_columns_addition(spec);
            if primary {
                sqlgen::choose_name(&leaf.name, None, "pkey", &taken)?
            } else {
                sqlgen::choose_name(&leaf.name, Some(&addition), "key", &taken)?
            }
        };
        chosen.insert((leaf.namespace, index.clone()));
        let mut build = step(
            cmd,
            Strategy::Concurrent,
            sqlgen::create_unique_index_concurrently(&t, spec, &index),
            LockMode::ShareUpdateExclusive,
            format!("partition {t}: the index is built CONCURRENTLY, reads and writes continue"),
        );
        // Qualified: cleanup() must not take an index of this name on
        // another partition, in another schema, for it.
        build.stage = Stage::BuildIndex(QualifiedName::new(&leaf.schema, &index).to_string());
        build.undo = Undo::Sql(sqlgen::drop_index_if_exists(&t, &index));
        steps.push(build);
        let attach = sqlgen::add_constraint_using_index(&t, spec, &index, primary);
        let lock = (oracle.lock_of)(&attach)?;
        steps.push(Step {
            undo: Undo::Sql(sqlgen::drop_constraint_if_table_exists(&t, &index)),
            ..step(
                cmd,
                Strategy::Concurrent,
                attach,
                lock,
                format!(
                    "partition {t}: attaching the ready index as its constraint is catalog-only"
                ),
            )
        });
    }
    steps.push(c.on_parent(
        Strategy::Concurrent,
        "the parent's constraint attaches every partition's: no index is built",
        oracle,
    )?);
    Ok(steps)
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
