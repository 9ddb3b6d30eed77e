//! The planner: decides, per subcommand, the cheapest safe way to carry it out.
//!
//! Pure: its inputs are the parsed subcommands, the table's catalog facts, what
//! the empty-clone probe observed, and two functions answering questions only
//! the server can (is a name taken? which lock does this statement take?).
//!
//! Invariants:
//! - Whether a step rewrites, scans or builds an index comes from the probe,
//!   i.e. from PostgreSQL itself, never from a list kept here.
//! - A step that would hold a write-blocking lock while reading the whole table
//!   is never planned as `instant`: it becomes two-phase, concurrent or rewrite.
//! - If any subcommand needs a rewrite, the whole ALTER is applied to the
//!   shadow table and swapped in once; foreign keys are added after the swap.

pub mod inverse;
pub mod model;
pub mod parse;
pub mod parse_versioned;
mod refuse;
pub mod split;
pub mod sqlgen;
pub mod tree;
pub mod verify;
pub mod versioned;
pub mod versioned_sql;

use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use model::*;
use refuse::{refuse_type_change_on_parent, refuse_unsafe_rewrite};
use std::cell::RefCell;
use std::collections::HashSet;

/// Questions the planner asks the server.
pub struct Oracle<'a> {
    /// Is a constraint of this name already in the table's schema?
    pub constraint_taken: &'a dyn Fn(&str) -> Result<bool>,
    /// Is a relation (index, table, …) of this name already in the table's schema?
    pub relation_taken: &'a dyn Fn(&str) -> Result<bool>,
    /// Is a relation of this name already in the schema of this OID (a
    /// partition's, which may differ from the table's)?
    pub relation_taken_in: &'a dyn Fn(u32, &str) -> Result<bool>,
    /// Is a constraint of this name already in the schema of this OID?
    pub constraint_taken_in: &'a dyn Fn(u32, &str) -> Result<bool>,
    /// The lock an ALTER TABLE statement takes, as PostgreSQL computes it.
    pub lock_of: &'a dyn Fn(&str) -> Result<LockMode>,
}

/// Picks a free name `<table>[_name2]_<label>`; `relation` for index names.
type Chooser<'a> = dyn Fn(Option<&str>, &str, bool) -> Result<String> + 'a;

const VALIDATE_REASON: &str =
    "validation reads the table under a lock that lets reads and writes continue";

/// How one subcommand will be carried out.
#[derive(Debug)]
enum Decision {
    Instant(String),
    TwoPhaseConstraint,
    TwoPhaseNotNull,
    Validate,
    ConcurrentUnique,
    Rewrite { rewrites: bool, reason: String },
}

/// The SQL statement to try on the empty clone for this subcommand, if any.
/// Foreign keys are never tried: adding one locks the referenced table.
pub fn probe_statement(cmd: &Subcommand) -> Option<String> {
    match &cmd.kind {
        CmdKind::AddColumn {
            inline_foreign_key: true,
            ..
        } => None,
        CmdKind::AddConstraint(spec) => match spec.contype {
            ConstraintType::ForeignKey => None,
            _ if spec.using_index.is_some() => None,
            ConstraintType::Check if !spec.not_valid => Some(format!("{} NOT VALID", cmd.text)),
            _ => Some(cmd.text.clone()),
        },
        CmdKind::AddColumn { .. }
        | CmdKind::AlterColumnType { .. }
        | CmdKind::DropColumn { .. }
        | CmdKind::SetNotNull { .. }
        | CmdKind::SetPersistence
        | CmdKind::Other => Some(cmd.text.clone()),
        CmdKind::Rename {
            new_table_name: None,
        } => Some(cmd.text.clone()),
        CmdKind::Rename { .. }
        | CmdKind::NamesObject { .. }
        | CmdKind::ValidateConstraint { .. }
        | CmdKind::Link
        | CmdKind::SetSchema { .. } => None,
    }
}

pub fn build_plan(
    facts: &TableFacts,
    cmds: &[Subcommand],
    probes: &[Option<ProbeOutcome>],
    oracle: &Oracle,
    revertible: Option<i64>,
) -> Result<Vec<Step>> {
    assert_eq!(cmds.len(), probes.len());
    let table = QualifiedName::new(&facts.schema, &facts.name);
    check_named_objects(facts, cmds)?;
    refuse_type_change_on_parent(facts, &table, cmds)?;

    // PostgreSQL requires CREATE on the schema of whoever creates an index
    // there; the shadow lives elsewhere, so check it here, as ALTER would.
    let new_index = probes
        .iter()
        .flatten()
        .any(|p| !p.created_indexes.is_empty());
    if new_index && !facts.schema_create {
        return Err(MigrateError::SchemaPrivilege {
            schema: facts.schema.clone(),
        });
    }
    check_privileges(facts, cmds)?;

    let mut decisions: Vec<Decision> = cmds
        .iter()
        .zip(probes)
        .map(|(c, p)| decide(facts, c, p.as_ref()))
        .collect::<Result<_>>()?;
    if facts.leaves.is_some() {
        tree::rewrite_type_changes(facts, cmds, &mut decisions)?;
    }
    if revertible.is_some() {
        // PostgreSQL only hides a dropped column, and an UPDATE then loses
        // its value; a revertible migration copies the table instead, so
        // that the kept storage has every value.
        for (c, d) in cmds.iter().zip(decisions.iter_mut()) {
            if matches!(c.kind, CmdKind::DropColumn { .. }) {
                *d = Decision::Rewrite {
                    rewrites: true,
                    reason: inverse::KEEP_DROPPED_REASON.into(),
                };
            }
        }
    }

    // Names chosen during this plan are taken too.
    let chosen = RefCell::new(HashSet::new());
    let constraint_taken =
        |n: &str| Ok(chosen.borrow().contains(n) || (oracle.constraint_taken)(n)?);
    let relation_taken = |n: &str| Ok(chosen.borrow().contains(n) || (oracle.relation_taken)(n)?);
    let choose = |name2: Option<&str>, label: &str, relation: bool| -> Result<String> {
        let taken: &dyn Fn(&str) -> Result<bool> = if relation {
            &relation_taken
        } else {
            &constraint_taken
        };
        let n = sqlgen::choose_name(&facts.name, name2, label, taken)?;
        chosen.borrow_mut().insert(n.clone());
        Ok(n)
    };

    if decisions
        .iter()
        .any(|d| matches!(d, Decision::Rewrite { .. }))
    {
        let mut steps = rewrite_plan(facts, &table, cmds, &decisions, &choose, oracle)?;
        if let Some(leaves) = &facts.leaves {
            tree::refuse_in_rewrite(&table, &steps)?;
            tree::describe_rewrite(&table, leaves, &mut steps);
        }
        if let Some(bytes) = revertible {
            steps.push(inverse::keep_step(facts.oid, bytes));
        }
        return Ok(steps);
    }

    let mut steps = Vec::new();
    for (cmd, decision) in cmds.iter().zip(&decisions) {
        let sub = Some(cmd.text.clone());
        let step = |strategy, sql: String, lock: Option<LockMode>, reason: &str| Step {
            stage: Stage::Direct,
            undo: Undo::Nothing,
            subcommand: sub.clone(),
            strategy,
            sql,
            lock,
            rewrites: false,
            reason: reason.to_string(),
        };
        match decision {
            Decision::Instant(reason) => steps.push(Step {
                // An ALTER of the user's own making: nothing says how to
                // take it back, unless it changes nothing.
                undo: match &cmd.kind {
                    CmdKind::SetNotNull { .. } => Undo::Nothing,
                    CmdKind::AddConstraint(spec) if spec.not_valid => match &spec.name {
                        Some(name) => Undo::Sql(sqlgen::drop_constraint_if_exists(&table, name)),
                        None => Undo::Irreversible,
                    },
                    _ => Undo::Irreversible,
                },
                ..step(
                    Strategy::Instant,
                    sqlgen::alter(&table, &cmd.text),
                    Some(cmd.lock),
                    reason,
                )
            }),
            Decision::Validate => steps.push(step(
                Strategy::TwoPhase,
                sqlgen::alter(&table, &cmd.text),
                Some(cmd.lock),
                VALIDATE_REASON,
            )),
            Decision::TwoPhaseConstraint => {
                let CmdKind::AddConstraint(spec) = &cmd.kind else {
                    unreachable!()
                };
                let name = constraint_name(spec, &choose)?;
                match &facts.leaves {
                    Some(_) if spec.contype == ConstraintType::ForeignKey => steps.extend(
                        tree::constraint_steps(facts, &table, cmd, spec, &name, oracle)?,
                    ),
                    _ => steps.extend(not_valid_then_validate(
                        &table, cmd, spec, &name, "", oracle,
                    )?),
                }
            }
            Decision::TwoPhaseNotNull => {
                let CmdKind::SetNotNull { column } = &cmd.kind else {
                    unreachable!()
                };
                steps.extend(not_null_steps(&table, column, &sub, &choose, oracle)?);
            }
            Decision::ConcurrentUnique => {
                let CmdKind::AddConstraint(spec) = &cmd.kind else {
                    unreachable!()
                };
                let primary = spec.contype == ConstraintType::PrimaryKey;
                if primary {
                    for col in &spec.columns {
                        if facts.column(col).is_some_and(|c| !c.not_null) {
                            steps.extend(not_null_steps(&table, col, &sub, &choose, oracle)?);
                        }
                    }
                }
                let name = constraint_name(spec, &choose)?;
                if facts.leaves.is_some() {
                    steps.extend(tree::constraint_steps(
                        facts, &table, cmd, spec, &name, oracle,
                    )?);
                    continue;
                }
                let mut build = step(
                    Strategy::Concurrent,
                    sqlgen::create_unique_index_concurrently(&table, spec, &name),
                    Some(LockMode::ShareUpdateExclusive),
                    "the index is built CONCURRENTLY: reads and writes continue",
                );
                build.stage = Stage::BuildIndex(name.clone());
                build.undo = Undo::Sql(sqlgen::drop_index_if_exists(&table, &name));
                steps.push(build);
                let attach = sqlgen::add_constraint_using_index(&table, spec, &name, primary);
                let lock = (oracle.lock_of)(&attach)?;
                steps.push(Step {
                    undo: Undo::Sql(sqlgen::drop_constraint_if_exists(&table, &name)),
                    ..step(
                        Strategy::Concurrent,
                        attach,
                        Some(lock),
                        "attaching the ready index as the constraint is catalog-only",
                    )
                });
            }
            Decision::Rewrite { .. } => unreachable!("handled above"),
        }
    }
    Ok(steps)
}

/// The decision for one subcommand, on its own.
fn decide(facts: &TableFacts, cmd: &Subcommand, probe: Option<&ProbeOutcome>) -> Result<Decision> {
    use ConstraintType::*;
    Ok(match &cmd.kind {
        CmdKind::AddColumn { inline_foreign_key: true, column } => {
            return Err(MigrateError::not_supported(
                "ADD COLUMN with an inline REFERENCES clause",
                format!("Column \"{column}\" would get its foreign key in the same step, which validates it under lock."),
                "Add the column first, then the foreign key as its own subcommand: \
                 'ADD COLUMN c int, ADD FOREIGN KEY (c) REFERENCES other (id)'.",
            ))
        }
        CmdKind::AddConstraint(spec) => match spec.contype {
            Check | ForeignKey if spec.not_valid => {
                Decision::Instant("NOT VALID: existing rows are not checked, so there is no scan".into())
            }
            Check | ForeignKey => Decision::TwoPhaseConstraint,
            PrimaryKey | Unique if spec.using_index.is_some() => {
                Decision::Instant("the index already exists: attaching it is catalog-only".into())
            }
            PrimaryKey | Unique => Decision::ConcurrentUnique,
            Exclusion => Decision::Rewrite {
                rewrites: false,
                reason: "an exclusion constraint's index cannot be built CONCURRENTLY and attached; \
                         it is built on the shadow table instead"
                    .into(),
            },
        },
        CmdKind::SetNotNull { column } => {
            if facts.column(column).is_some_and(|c| c.not_null) {
                Decision::Instant(format!("\"{column}\" is already NOT NULL"))
            } else {
                Decision::TwoPhaseNotNull
            }
        }
        CmdKind::ValidateConstraint { .. } => Decision::Validate,
        CmdKind::NamesObject { kind, .. } => {
            Decision::Instant(format!("catalog-only change to an existing {}", kind.name()))
        }
        CmdKind::Link => Decision::Instant("catalog-only change of inheritance or type link".into()),
        CmdKind::SetSchema { .. } => Decision::Instant("catalog-only: the table keeps its storage".into()),
        CmdKind::Rename { .. } => Decision::Instant("catalog-only rename".into()),
        CmdKind::AddColumn { .. }
        | CmdKind::AlterColumnType { .. }
        | CmdKind::DropColumn { .. }
        | CmdKind::SetPersistence
        | CmdKind::Other => {
            let p = probe.cloned().unwrap_or_default();
            if p.rewrote_table {
                Decision::Rewrite {
                    rewrites: true,
                    reason: "PostgreSQL rewrites the table for this (the empty clone got a new relfilenode)".into(),
                }
            } else if !p.built_indexes.is_empty() && cmd.lock.blocks_writes() {
                Decision::Rewrite {
                    rewrites: false,
                    reason: format!(
                        "PostgreSQL would build index {} under {}, blocking writes for the whole build",
                        p.built_indexes.join(", "),
                        cmd.lock
                    ),
                }
            } else if p.scanned && cmd.lock.blocks_writes() {
                Decision::Rewrite {
                    rewrites: false,
                    reason: format!("PostgreSQL would read the whole table under {}, blocking writes", cmd.lock),
                }
            } else {
                Decision::Instant("catalog-only: the empty clone kept its relfilenode and was not scanned".into())
            }
        }
    })
}

/// Every object a subcommand names must exist (or be created earlier in the same ALTER).
fn check_named_objects(facts: &TableFacts, cmds: &[Subcommand]) -> Result<()> {
    let mut added: HashSet<&str> = HashSet::new();
    for cmd in cmds {
        let (kind, name, missing_ok) = match &cmd.kind {
            CmdKind::AddConstraint(spec) => {
                if let Some(n) = &spec.name {
                    added.insert(n);
                }
                match &spec.using_index {
                    Some(idx) => (ObjectKind::Index, idx, false),
                    None => continue,
                }
            }
            CmdKind::NamesObject {
                kind,
                name,
                missing_ok,
            } => (*kind, name, *missing_ok),
            CmdKind::ValidateConstraint { name } => (ObjectKind::Constraint, name, false),
            _ => continue,
        };
        let list = match kind {
            ObjectKind::Constraint => &facts.constraints,
            ObjectKind::Index => &facts.indexes,
            ObjectKind::Trigger => &facts.triggers,
            ObjectKind::Rule => &facts.rules,
        };
        let exists = list.iter().any(|n| n == name) || added.contains(name.as_str());
        if !exists && !missing_ok {
            return Err(MigrateError::UndefinedObject {
                kind: kind.name(),
                name: name.clone(),
                table: facts.name.clone(),
            });
        }
    }
    Ok(())
}

/// The name PostgreSQL would give the constraint, or the one the user gave.
fn constraint_name(spec: &ConstraintSpec, choose: &Chooser) -> Result<String> {
    if let Some(n) = &spec.name {
        return Ok(n.clone());
    }
    match spec.contype {
        ConstraintType::Check => choose(
            spec.columns
                .first()
                .map(String::as_str)
                .filter(|_| spec.columns.len() == 1),
            "check",
            false,
        ),
        ConstraintType::ForeignKey => choose(
            Some(&sqlgen::columns_addition(&spec.columns)),
            "fkey",
            false,
        ),
        ConstraintType::PrimaryKey => choose(None, "pkey", true),
        ConstraintType::Unique => choose(Some(&sqlgen::index_columns_addition(spec)), "key", true),
        ConstraintType::Exclusion => {
            choose(Some(&sqlgen::columns_addition(&spec.columns)), "excl", true)
        }
    }
}

fn not_null_steps(
    table: &QualifiedName,
    column: &str,
    sub: &Option<String>,
    choose: &Chooser,
    oracle: &Oracle,
) -> Result<Vec<Step>> {
    // Not <table>_<column>_not_null: from PostgreSQL 18 on, that is the name
    // SET NOT NULL gives its own constraint, which would then take the next
    // one while the helper still exists.
    let check = choose(Some(column), "not_null_check", false)?;
    let sqls = sqlgen::set_not_null_steps(table, column, &check);
    let reasons = [
        "a NOT VALID check that the column is not null: no scan",
        VALIDATE_REASON,
        "SET NOT NULL uses the validated check instead of scanning",
        "the helper check is no longer needed",
    ];
    let undos = [
        Undo::Sql(sqlgen::drop_constraint_if_exists(table, &check)),
        Undo::Nothing,
        Undo::Sql(sqlgen::alter(
            table,
            &format!(
                "ALTER COLUMN {} DROP NOT NULL",
                crate::pg::ident::Ident::new(column)
            ),
        )),
        Undo::Nothing,
    ];
    sqls.into_iter()
        .zip(reasons)
        .zip(undos)
        .enumerate()
        .map(|(i, ((sql, reason), undo))| {
            Ok(Step {
                stage: if i == 1 {
                    Stage::ValidateNotNull(column.to_string())
                } else {
                    Stage::Direct
                },
                undo,
                subcommand: sub.clone(),
                strategy: Strategy::TwoPhase,
                lock: Some((oracle.lock_of)(&sql)?),
                sql,
                rewrites: false,
                reason: reason.into(),
            })
        })
        .collect()
}

/// An index-backed constraint needs CREATE on the table's schema, checked
/// by PostgreSQL before anything else about it.
pub fn check_privileges(facts: &TableFacts, cmds: &[Subcommand]) -> Result<()> {
    let adds_index = cmds.iter().any(|c| {
        matches!(&c.kind, CmdKind::AddConstraint(s)
            if s.using_index.is_none()
                && matches!(s.contype, ConstraintType::PrimaryKey | ConstraintType::Unique | ConstraintType::Exclusion))
    });
    if adds_index && !facts.schema_create {
        return Err(MigrateError::SchemaPrivilege {
            schema: facts.schema.clone(),
        });
    }
    Ok(())
}

/// One online rewrite for the whole ALTER: capture, shadow, copy, swap.
fn rewrite_plan(
    facts: &TableFacts,
    table: &QualifiedName,
    cmds: &[Subcommand],
    decisions: &[Decision],
    choose: &Chooser,
    oracle: &Oracle,
) -> Result<Vec<Step>> {
    refuse_unsafe_rewrite(facts, table)?;
    // A tree's partitions are copied and replayed each by its own key,
    // which start() checks partition by partition.
    if facts.replay_key.is_none() && facts.leaves.is_none() {
        return Err(MigrateError::NoKey {
            table: table.to_string(),
        });
    }
    if let Some(c) = cmds
        .iter()
        .find(|c| matches!(c.kind, CmdKind::Rename { .. } | CmdKind::SetSchema { .. }))
    {
        return Err(MigrateError::not_supported(
            "RENAME or SET SCHEMA together with a rewrite",
            format!("\"{}\" cannot be combined with other subcommands.", c.text),
            "Run it as a migration of its own.",
        ));
    }
    let shadow = sqlgen::shadow_table(facts.oid);
    let key = facts.replay_key.as_deref().unwrap_or_default().join(", ");
    let mut steps = vec![Step {
        stage: Stage::Capture,
        undo: Undo::Nothing,
        subcommand: None,
        strategy: Strategy::Rewrite,
        sql: format!(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {}()",
            sqlgen::capture_trigger(facts.oid),
            sqlgen::capture_function(facts.oid)
        ),
        lock: Some(LockMode::ShareRowExclusive),
        rewrites: false,
        reason: format!(
            "capture: from now on the key ({key}) of every changed row is logged to {}; \
             the lock is taken with lock_timeout and retried",
            sqlgen::log_table(facts.oid)
        ),
    }];
    let mut after_swap = Vec::new();
    for (cmd, decision) in cmds.iter().zip(decisions) {
        if let CmdKind::AddConstraint(spec) = &cmd.kind {
            if spec.contype == ConstraintType::ForeignKey && !spec.not_valid {
                let name = constraint_name(spec, choose)?;
                after_swap.push((cmd, spec, name));
                continue;
            }
        }
        let (rewrites, reason) = match decision {
            Decision::Rewrite { rewrites, reason } => (*rewrites, reason.clone()),
            _ => (
                false,
                "applied to the shadow table with the rest of the ALTER".to_string(),
            ),
        };
        // The shadow and the table must end up with the same constraint and
        // index names, so unnamed constraints get the name PostgreSQL would
        // give them on the table.
        let text = match &cmd.kind {
            CmdKind::AddConstraint(spec) if spec.name.is_none() && spec.using_index.is_none() => {
                sqlgen::name_constraint(&cmd.text, spec, &constraint_name(spec, choose)?)
            }
            _ => cmd.text.clone(),
        };
        steps.push(Step {
            stage: Stage::Shadow(text.clone()),
            undo: Undo::Nothing,
            subcommand: Some(cmd.text.clone()),
            strategy: Strategy::Rewrite,
            sql: sqlgen::alter(&shadow, &text),
            lock: None,
            rewrites,
            reason,
        });
    }
    steps.push(Step {
        stage: Stage::Copy,
        undo: Undo::Nothing,
        subcommand: None,
        strategy: Strategy::Rewrite,
        sql: format!(
            "INSERT INTO {shadow} SELECT … FROM {table} (in batches, then replay {})",
            sqlgen::log_table(facts.oid)
        ),
        lock: Some(LockMode::AccessShare),
        rewrites: true,
        reason:
            "copy in short transactions, secondary indexes built after; reads and writes continue"
                .into(),
    });
    steps.push(Step {
        stage: Stage::Swap,
        undo: Undo::Nothing,
        subcommand: None,
        strategy: Strategy::Rewrite,
        sql: format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; replay the last changes; put {shadow} in its place"),
        lock: Some(LockMode::AccessExclusive),
        rewrites: false,
        reason: "swap: bounded by lock_timeout, retried with back-off; indexes, constraints, \
                 views, triggers, grants and other dependents are kept"
            .into(),
    });
    for (cmd, spec, name) in after_swap {
        let [mut add, mut validate] =
            not_valid_then_validate(table, cmd, spec, &name, "after the swap: ", oracle)?;
        add.stage = Stage::AtSwap;
        validate.stage = Stage::AfterSwap;
        steps.extend([add, validate]);
    }
    Ok(steps)
}

/// A CHECK or FOREIGN KEY added NOT VALID (no scan), then validated under a
/// lock that lets writes through. `when` prefixes the reasons.
fn not_valid_then_validate(
    table: &QualifiedName,
    cmd: &Subcommand,
    spec: &ConstraintSpec,
    name: &str,
    when: &str,
    oracle: &Oracle,
) -> Result<[Step; 2]> {
    let add = sqlgen::add_not_valid(table, &cmd.text, spec, name);
    let add_lock = (oracle.lock_of)(&add)?;
    let also = if spec.contype == ConstraintType::ForeignKey {
        " (on the referenced table too)"
    } else {
        ""
    };
    let validate = sqlgen::validate(table, name);
    let step = |sql: String, lock: LockMode, reason: String| Step {
        stage: Stage::Direct,
        undo: Undo::Nothing,
        subcommand: Some(cmd.text.clone()),
        strategy: Strategy::TwoPhase,
        sql,
        lock: Some(lock),
        rewrites: false,
        reason,
    };
    Ok([
        Step {
            undo: Undo::Sql(sqlgen::drop_constraint_if_exists(table, name)),
            ..step(
                add,
                add_lock,
                format!("{when}added NOT VALID: only new and updated rows are checked, no scan under {add_lock}{also}"),
            )
        },
        step(validate.clone(), (oracle.lock_of)(&validate)?, format!("{when}{VALIDATE_REASON}")),
    ])
}

#[cfg(test)]
mod tests;
