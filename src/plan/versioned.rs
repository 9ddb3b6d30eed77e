//! Versioned (expand/contract) migrations: what each subcommand becomes.
//!
//! A versioned migration (`start(…, version => 'v2')`) leaves the table in
//! its old shape for the old application and shows the new shape through
//! a view in the version's schema (`<schema>_<version>`). This module
//! decides, without a server, for each subcommand:
//! - the view's select list (a rename is an alias, a drop an omission);
//! - what the expand phase adds to the table (a column, a NOT VALID check)
//!   and what takes it back;
//! - which columns a trigger fills when a write leaves them NULL (`up`:
//!   from the old shape, for old clients; `down`: from the new shape, for
//!   new clients), and which of them a backfill must fill in existing rows;
//! - the checks validated before the contract, and the contract itself.
//!
//! Invariants: the expand phase never changes what an old client reads or
//! writes, except a column it adds; every statement of the contract is a
//! catalog-only change under the table's lock (the checks it relies on are
//! validated before it); every `up`/`down` key is used, or the plan is
//! refused.

use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::plan::model::ConstraintSpec;
use crate::plan::sqlgen::{add_not_valid, alter};
use std::collections::BTreeMap;

/// A subcommand as a versioned migration sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionedCmd {
    RenameColumn {
        from: String,
        to: String,
    },
    RenameTable {
        to: String,
    },
    DropColumn {
        column: String,
        text: String,
    },
    /// `nullable_text`: the subcommand with its `NOT NULL` taken out, when
    /// it has NOT NULL and no DEFAULT (the column is added nullable, filled,
    /// and made NOT NULL at the contract).
    AddColumn {
        column: String,
        text: String,
        nullable_text: Option<String>,
        /// It has a DEFAULT (which then fills it, never `up`).
        has_default: bool,
    },
    SetNotNull {
        column: String,
    },
    /// `ALTER COLUMN … TYPE`: the new type as written (with its COLLATE),
    /// and the USING expression, if any.
    AlterType {
        column: String,
        type_sql: String,
        using: Option<String>,
    },
    /// `ADD [CONSTRAINT name] CHECK (…)`: added NOT VALID and validated;
    /// with `up` for one of its columns, a row that fails it gets that
    /// column from `up` (old clients' writes, and the backfill).
    AddCheck {
        spec: ConstraintSpec,
        text: String,
    },
    /// `ADD [CONSTRAINT name] FOREIGN KEY (…) REFERENCES …`: added NOT VALID
    /// and validated; with `up` for its (one) column, a row whose
    /// referenced row is missing gets that column from `up`.
    AddForeignKey {
        spec: ConstraintSpec,
        text: String,
    },
    /// Anything else: refused, saying what it is.
    Unsupported {
        text: String,
    },
}

/// A column of the table as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseColumn {
    pub name: String,
    pub not_null: bool,
    /// A default, identity or generated value fills it when a write omits it.
    pub has_default: bool,
    /// Its type, as `format_type()` writes it.
    pub type_sql: String,
    /// Its default expression, if it has a plain default.
    pub default_sql: Option<String>,
}

/// Which shape a fill's expression reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `up`: the table's columns (the old shape).
    Old,
    /// `down`: the view's columns (the new shape).
    New,
}

/// A column the trigger sets when a write leaves it NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The table's name for it.
    pub column: String,
    pub expr: String,
    pub side: Side,
}

/// A column whose type changes: the table keeps the old column for old
/// clients and gets a new one for new clients; the trigger keeps the two
/// in step, whichever a write changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    /// The table's column (old type) and the new column (new type).
    pub old: String,
    pub new: String,
    /// The new value from the old row (`up`; the USING expression or a cast).
    pub up: String,
    /// The old value from the new row (`down`; a cast back by default).
    pub down: String,
}

/// A CHECK or FOREIGN KEY whose failures `up` maps: a row for which the
/// constraint's condition is false gets `column` from `up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFill {
    pub constraint: String,
    pub column: String,
    pub up: String,
    /// The condition in the trigger (over the row's columns as variables,
    /// or NEW), read once the constraint exists (filled in after the
    /// expand phase).
    pub expr: String,
    /// The same condition in the backfill's WHERE (over the table's columns).
    pub table_expr: String,
}

/// What a versioned migration does, decided up front.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionPlan {
    /// The view's name in the version schema.
    pub view_name: String,
    /// The view's columns: (the table's column, the name the view gives it).
    pub view_columns: Vec<(String, String)>,
    /// Run at start(), in order, on the table.
    pub expand_sql: Vec<String>,
    /// Subcommands run as written at start(), which must be catalog-only.
    pub must_be_instant: Vec<String>,
    /// Take the expand phase back (run in reverse order).
    pub undo_sql: Vec<String>,
    pub fills: Vec<Fill>,
    pub syncs: Vec<Sync>,
    pub checks: Vec<CheckFill>,
    /// Columns the backfill fills in existing rows (through the trigger).
    pub backfill: Vec<String>,
    /// Checks validated before the contract.
    pub validate_sql: Vec<String>,
    /// The contract, in one transaction at finish().
    pub contract_sql: Vec<String>,
}

/// What the plan is made from.
pub struct Input<'a> {
    pub table: &'a QualifiedName,
    pub columns: &'a [BaseColumn],
    pub cmds: &'a [VersionedCmd],
    pub up: &'a BTreeMap<String, String>,
    pub down: &'a BTreeMap<String, String>,
    /// A free constraint name as PostgreSQL chooses one: table, then the
    /// given part (a column), then the label.
    pub constraint_name: &'a dyn Fn(Option<&str>, &str) -> Result<String>,
    /// The name of the new column of a column whose type changes.
    pub new_column_name: &'a dyn Fn(&str) -> String,
}

/// Decide the plan, or refuse.
pub fn build(i: &Input) -> Result<VersionPlan> {
    let mut p = VersionPlan {
        view_name: i.table.name.as_str().to_string(),
        view_columns: i
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.name.clone()))
            .collect(),
        ..Default::default()
    };
    one_subcommand_per_column(i)?;
    for cmd in i.cmds {
        apply(i, &mut p, cmd)?;
    }
    check_keys_used(i, &p)?;
    Ok(p)
}

/// A column is named by at most one subcommand of a versioned migration,
/// and a constraint added in it may not use a column that it drops or
/// whose type it changes (the contract drops the old column, and with it
/// anything on it): the expand phase could not serve both.
fn one_subcommand_per_column(i: &Input) -> Result<()> {
    let mut named: Vec<&String> = Vec::new();
    let mut replaced: Vec<&String> = Vec::new();
    for cmd in i.cmds {
        let column = match cmd {
            VersionedCmd::RenameColumn { from, .. } => from,
            VersionedCmd::AddColumn { column, .. } | VersionedCmd::SetNotNull { column } => column,
            VersionedCmd::DropColumn { column, .. } | VersionedCmd::AlterType { column, .. } => {
                replaced.push(column);
                column
            }
            _ => continue,
        };
        if named.contains(&column) {
            return Err(MigrateError::not_supported(
                "two subcommands on one column in a versioned migration",
                format!("Column \"{column}\" is named by more than one subcommand."),
                "Give the column its final form in one subcommand (ADD COLUMN … NOT NULL, \
                 or the new type), or use two versioned migrations one after the other.",
            ));
        }
        named.push(column);
    }
    for cmd in i.cmds {
        if let VersionedCmd::AddCheck { spec, .. } | VersionedCmd::AddForeignKey { spec, .. } = cmd
        {
            if let Some(c) = spec.columns.iter().find(|c| replaced.contains(c)) {
                return Err(MigrateError::not_supported(
                    "a constraint on a column that the same versioned migration drops or retypes",
                    format!("Column \"{c}\" is dropped or changes type in this migration."),
                    "Add the constraint in a later migration, once the column has its new form.",
                ));
            }
        }
    }
    Ok(())
}

fn apply(i: &Input, p: &mut VersionPlan, cmd: &VersionedCmd) -> Result<()> {
    let t = i.table;
    match cmd {
        VersionedCmd::RenameColumn { from, to } => {
            let at = view_position(i, p, from)?;
            if p.view_columns.iter().any(|(_, a)| a == to) {
                return Err(duplicate_column(to, i.table));
            }
            p.view_columns[at].1 = to.clone();
            p.contract_sql.push(alter(
                t,
                &format!("RENAME COLUMN {} TO {}", Ident::new(from), Ident::new(to)),
            ));
        }
        VersionedCmd::RenameTable { to } => {
            p.view_name = to.clone();
            p.contract_sql
                .push(format!("ALTER TABLE {t} RENAME TO {}", Ident::new(to)));
        }
        VersionedCmd::DropColumn { column, text } => {
            let at = view_position(i, p, column)?;
            let (base, _) = p.view_columns.remove(at);
            let col = i.columns.iter().find(|c| c.name == base);
            if i.down.contains_key(column) && col.is_some_and(|c| c.has_default) {
                return Err(MigrateError::InvalidParameter {
                    name: "down",
                    detail: format!(
                        "Column \"{column}\" has a default, which fills it for the new version's writes: down would never apply."
                    ),
                    hint: "Leave down out for it (or drop its default in an earlier migration).".into(),
                });
            }
            match i.down.get(column) {
                Some(expr) => p.fills.push(Fill {
                    column: base,
                    expr: expr.clone(),
                    side: Side::New,
                }),
                None if col.is_some_and(|c| c.not_null && !c.has_default) => {
                    return Err(MigrateError::InvalidParameter {
                        name: "down",
                        detail: format!(
                            "Column \"{column}\" is NOT NULL without a default: the new version's inserts, which do not see it, would fail until the contract."
                        ),
                        hint: format!(
                            "Give its value for rows the new version writes, e.g. down => '{{\"{column}\": \"<expression over the new columns>\"}}'."
                        ),
                    })
                }
                None => {}
            }
            p.contract_sql.push(alter(t, text));
        }
        VersionedCmd::AddColumn {
            column,
            text,
            nullable_text,
            has_default,
        } => {
            if *has_default && i.up.contains_key(column) {
                return Err(MigrateError::InvalidParameter {
                    name: "up",
                    detail: format!(
                        "Column \"{column}\" has a DEFAULT, which fills it for every write and row that leave it out: up would never apply."
                    ),
                    hint: "Give either the DEFAULT or up.".into(),
                });
            }
            if p.view_columns.iter().any(|(_, a)| a == column) {
                return Err(duplicate_column(column, i.table));
            }
            p.view_columns.push((column.clone(), column.clone()));
            p.undo_sql.push(alter(
                t,
                &format!("DROP COLUMN IF EXISTS {}", Ident::new(column)),
            ));
            let up = i.up.get(column);
            match nullable_text {
                Some(nullable) => {
                    let Some(up) = up else {
                        return Err(MigrateError::InvalidParameter {
                            name: "up",
                            detail: format!(
                                "Column \"{column}\" is NOT NULL without a default: the old version's inserts, which do not see it, and the rows already there need a value."
                            ),
                            hint: format!(
                                "Give it, e.g. up => '{{\"{column}\": \"<expression over the old columns>\"}}'."
                            ),
                        });
                    };
                    p.expand_sql.push(alter(t, nullable));
                    not_null_check(i, p, column)?;
                    p.fills.push(old_fill(column, up));
                    p.backfill.push(column.clone());
                }
                None => {
                    p.expand_sql.push(alter(t, text));
                    p.must_be_instant.push(text.clone());
                    if let Some(up) = up {
                        p.fills.push(old_fill(column, up));
                        p.backfill.push(column.clone());
                    }
                }
            }
        }
        VersionedCmd::SetNotNull { column } => {
            let at = view_position(i, p, column)?;
            let base = p.view_columns[at].0.clone();
            let already = i.columns.iter().any(|c| c.name == base && c.not_null);
            if let Some(up) = i.up.get(column) {
                p.fills.push(old_fill(&base, up));
                p.backfill.push(base.clone());
            }
            if !already {
                not_null_check(i, p, &base)?;
            }
        }
        VersionedCmd::AlterType {
            column,
            type_sql,
            using,
        } => alter_type(i, p, column, type_sql, using.as_deref())?,
        VersionedCmd::AddCheck { spec, text } => add_constraint(i, p, spec, text, "check")?,
        VersionedCmd::AddForeignKey { spec, text } => {
            if spec.deferrable && spec.columns.iter().any(|c| i.up.contains_key(c)) {
                return Err(MigrateError::not_supported(
                    "up for a deferrable foreign key",
                    format!("\"{text}\" may be checked at commit, when a row's referenced row may exist; the trigger maps at once."),
                    "Add the key without up, or NOT DEFERRABLE.",
                ));
            }
            if spec.columns.len() > 1 && spec.columns.iter().any(|c| i.up.contains_key(c)) {
                return Err(MigrateError::not_supported(
                    "up for a foreign key of several columns",
                    format!("\"{text}\" has {} columns.", spec.columns.len()),
                    "Add the key without up (rows that break it then fail), or map each \
                     column's values before the migration.",
                ));
            }
            add_constraint(i, p, spec, text, "fkey")?
        }
        VersionedCmd::Unsupported { text } => {
            return Err(MigrateError::not_supported(
                "this subcommand in a versioned migration",
                format!("\"{text}\""),
                "A versioned migration takes RENAME COLUMN, RENAME TO, DROP COLUMN, ADD COLUMN, \
                 SET NOT NULL, ADD CHECK, ADD FOREIGN KEY and ALTER COLUMN … TYPE. Run other \
                 changes with migrate.start() without version.",
            ))
        }
    }
    Ok(())
}

/// A type change: a new column of the new type, kept in step with the old
/// one; at the contract the old column goes and the new one takes its name
/// (and default, and NOT NULL).
fn alter_type(
    i: &Input,
    p: &mut VersionPlan,
    column: &str,
    type_sql: &str,
    using: Option<&str>,
) -> Result<()> {
    let t = i.table;
    let at = view_position(i, p, column)?;
    let (base, alias) = p.view_columns[at].clone();
    let col =
        i.columns
            .iter()
            .find(|c| c.name == base)
            .ok_or_else(|| MigrateError::UndefinedColumn {
                column: column.to_string(),
                table: t.to_string(),
            })?;
    if p.syncs.iter().any(|s| s.old == base) {
        return Err(MigrateError::not_supported(
            "two type changes of one column in a versioned migration",
            format!("Column \"{column}\" changes type twice."),
            "Give the column its final type in one subcommand.",
        ));
    }
    let new = (i.new_column_name)(&base);
    let b = Ident::new(&base);
    let up =
        i.up.get(column)
            .cloned()
            .or_else(|| using.map(str::to_string))
            .unwrap_or_else(|| format!("{b}::{type_sql}"));
    let down = i
        .down
        .get(column)
        .cloned()
        .unwrap_or_else(|| format!("{}::{}", Ident::new(&alias), col.type_sql));
    p.view_columns[at].0 = new.clone();
    p.expand_sql.push(alter(
        t,
        &format!("ADD COLUMN {} {type_sql}", Ident::new(&new)),
    ));
    p.undo_sql.push(alter(
        t,
        &format!("DROP COLUMN IF EXISTS {}", Ident::new(&new)),
    ));
    p.syncs.push(Sync {
        old: base.clone(),
        new: new.clone(),
        up,
        down,
    });
    p.backfill.push(new.clone());
    if col.not_null {
        not_null_check(i, p, &new)?;
    }
    p.contract_sql.push(alter(t, &format!("DROP COLUMN {b}")));
    p.contract_sql.push(alter(
        t,
        &format!("RENAME COLUMN {} TO {b}", Ident::new(&new)),
    ));
    if let Some(default) = &col.default_sql {
        p.contract_sql.push(alter(
            t,
            &format!("ALTER COLUMN {b} SET DEFAULT ({default})::{type_sql}"),
        ));
    }
    Ok(())
}

/// ADD CHECK or FOREIGN KEY: NOT VALID at the expand, validated before the
/// contract (which has nothing left to do); `up` for its columns maps rows
/// that fail it. `label`: "check" or "fkey", as PostgreSQL names them.
fn add_constraint(
    i: &Input,
    p: &mut VersionPlan,
    spec: &ConstraintSpec,
    text: &str,
    label: &str,
) -> Result<()> {
    let t = i.table;
    if spec.not_valid {
        return Err(MigrateError::not_supported(
            "ADD CONSTRAINT … NOT VALID in a versioned migration",
            format!("\"{text}\" would not be validated at the contract."),
            "Add it with migrate.start() without version.",
        ));
    }
    let name = match &spec.name {
        Some(n) => n.clone(),
        None if label == "fkey" => (i.constraint_name)(
            Some(&crate::plan::sqlgen::columns_addition(&spec.columns)),
            label,
        )?,
        None => {
            let single = spec.columns.first().filter(|_| spec.columns.len() == 1);
            (i.constraint_name)(single.map(String::as_str), label)?
        }
    };
    for column in &spec.columns {
        if !i.columns.iter().any(|c| &c.name == column) {
            return Err(MigrateError::UndefinedColumn {
                column: column.clone(),
                table: t.to_string(),
            });
        }
    }
    p.expand_sql.push(add_not_valid(t, text, spec, &name));
    p.undo_sql.push(alter(
        t,
        &format!("DROP CONSTRAINT IF EXISTS {}", Ident::new(&name)),
    ));
    p.validate_sql.push(alter(
        t,
        &format!("VALIDATE CONSTRAINT {}", Ident::new(&name)),
    ));
    for column in spec.columns.iter().filter(|c| i.up.contains_key(*c)) {
        p.checks.push(CheckFill {
            constraint: name.clone(),
            column: column.clone(),
            up: i.up[column].clone(),
            expr: String::new(),
            table_expr: String::new(),
        });
    }
    Ok(())
}

/// The expand phase's `CHECK (col IS NOT NULL) NOT VALID`, validated before
/// the contract, which then sets NOT NULL without a scan and drops it.
fn not_null_check(i: &Input, p: &mut VersionPlan, column: &str) -> Result<()> {
    let t = i.table;
    let check = (i.constraint_name)(Some(column), "not_null_check")?;
    let c = Ident::new(&check);
    p.expand_sql.push(alter(
        t,
        &format!(
            "ADD CONSTRAINT {c} CHECK ({} IS NOT NULL) NOT VALID",
            Ident::new(column)
        ),
    ));
    p.undo_sql
        .push(alter(t, &format!("DROP CONSTRAINT IF EXISTS {c}")));
    p.validate_sql
        .push(alter(t, &format!("VALIDATE CONSTRAINT {c}")));
    p.contract_sql.push(alter(
        t,
        &format!("ALTER COLUMN {} SET NOT NULL", Ident::new(column)),
    ));
    p.contract_sql
        .push(alter(t, &format!("DROP CONSTRAINT {c}")));
    Ok(())
}

fn old_fill(column: &str, expr: &str) -> Fill {
    Fill {
        column: column.to_string(),
        expr: expr.to_string(),
        side: Side::Old,
    }
}

/// Where the column named `name` in the new shape (so far) is in the view.
fn view_position(i: &Input, p: &VersionPlan, name: &str) -> Result<usize> {
    p.view_columns
        .iter()
        .position(|(_, a)| a == name)
        .ok_or_else(|| MigrateError::UndefinedColumn {
            column: name.to_string(),
            table: i.table.to_string(),
        })
}

fn duplicate_column(name: &str, table: &QualifiedName) -> MigrateError {
    MigrateError::DuplicateColumn {
        column: name.to_string(),
        table: table.to_string(),
    }
}

/// Every `up` key must name a column an `up` fills, and every `down` key
/// one a `down` fills: a key that does nothing is a mistake.
fn check_keys_used(i: &Input, p: &VersionPlan) -> Result<()> {
    for (name, map, side) in [("up", i.up, Side::Old), ("down", i.down, Side::New)] {
        for key in map.keys() {
            let used = p.fills.iter().any(|f| {
                f.side == side
                    && (f.column == *key
                        || p.view_columns
                            .iter()
                            .any(|(b, a)| a == key && *b == f.column))
            }) || (side == Side::New
                && i.cmds.iter().any(
                    |c| matches!(c, VersionedCmd::DropColumn { column, .. } if column == key),
                ))
                || i.cmds
                    .iter()
                    .any(|c| matches!(c, VersionedCmd::AlterType { column, .. } if column == key))
                || (side == Side::Old && p.checks.iter().any(|c| c.column == *key));
            if !used {
                return Err(MigrateError::InvalidParameter {
                    name,
                    detail: format!("No subcommand uses \"{key}\"."),
                    hint: if side == Side::Old {
                        "up gives columns that ADD COLUMN, SET NOT NULL, a type change, or an ADD CHECK or FOREIGN KEY (for rows that break it) need, from the old columns.".into()
                    } else {
                        "down gives columns that DROP COLUMN removes, from the new columns.".into()
                    },
                });
            }
        }
    }
    Ok(())
}

pub use crate::plan::versioned_sql::{
    backfill_batch, create_view, fill_function, subcommand_of, version_schema,
};

#[cfg(test)]
#[path = "versioned_tests.rs"]
mod tests;
