//! What a versioned migration refuses before anything is created, and the
//! checks of its options (`up`, `down`, `version`).

use crate::catalog::{self, versioned as cat};
use crate::engine::state::versioned as vstate;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::model::TableFacts;
use crate::plan::parse_versioned::check_expression;
use crate::plan::versioned::{self as vplan, VersionedCmd};
use pgrx::pg_sys::Oid;
use std::collections::BTreeMap;

/// Ordinary and partitioned tables (the whole tree, through its root);
/// not one partition, nor a legacy inheritance tree.
pub fn table_kind(facts: &TableFacts, table: &QualifiedName) -> Result<()> {
    if facts.leaves.is_none() && (facts.parent.is_some() || facts.children > 0) {
        return Err(MigrateError::not_supported(
            "a versioned migration of a partition or of an inheritance tree",
            format!("{table} is a partition, or part of an inheritance tree."),
            "Migrate a partitioned table through its root; run other changes with \
             migrate.start() without version.",
        ));
    }
    Ok(())
}

/// PostgreSQL 15 to 17 cannot add a foreign key NOT VALID on a
/// partitioned table, which the expand phase needs.
pub fn foreign_key_on_tree(facts: &TableFacts, cmds: &[VersionedCmd]) -> Result<()> {
    if facts.leaves.is_some()
        && cmds
            .iter()
            .any(|c| matches!(c, VersionedCmd::AddForeignKey { .. }))
    {
        return Err(MigrateError::not_supported(
            "ADD FOREIGN KEY on a partitioned table in a versioned migration",
            "The expand phase adds the key NOT VALID, which PostgreSQL refuses on a partitioned table.",
            "Add the key with migrate.start() without version: it validates each partition online.",
        ));
    }
    Ok(())
}

/// A partition key's column cannot be dropped, nor change type by a second
/// column: PostgreSQL refuses to drop it.
pub fn partition_key(facts: &TableFacts, cmds: &[VersionedCmd]) -> Result<()> {
    for c in cmds {
        let column = match c {
            VersionedCmd::DropColumn { column, .. } | VersionedCmd::AlterType { column, .. } => {
                column
            }
            _ => continue,
        };
        if facts
            .partition_keys
            .iter()
            .any(|k| k.columns.contains(column) || k.expressions)
        {
            return Err(MigrateError::not_supported(
                "dropping or retyping a partition key's column in a versioned migration",
                format!(
                    "Column \"{column}\" is in a partition key of the tree (or a key has expressions)."
                ),
                "PostgreSQL cannot drop a partition key's column; change its type with \
                 migrate.start() without version.",
            ));
        }
    }
    Ok(())
}

/// The trigger may not set a partition key's column (PostgreSQL refuses a
/// BEFORE trigger that moves a row to another partition), and no column
/// may take the names the trigger gives NEW and OLD.
pub fn trigger_targets(facts: &TableFacts, plan: &vplan::VersionPlan) -> Result<()> {
    use crate::plan::versioned_sql::{NEW_ROW, OLD_ROW};
    let names = facts
        .columns
        .iter()
        .map(|c| &c.name)
        .chain(plan.view_columns.iter().flat_map(|(b, a)| [b, a]));
    if let Some(c) = names.into_iter().find(|c| *c == NEW_ROW || *c == OLD_ROW) {
        return Err(MigrateError::not_supported(
            "a versioned migration with this column name",
            format!("Column \"{c}\" has a name the migration's trigger uses."),
            "Choose another name.",
        ));
    }
    let set = plan
        .fills
        .iter()
        .map(|f| &f.column)
        .chain(plan.checks.iter().map(|c| &c.column))
        .chain(plan.syncs.iter().map(|s| &s.old));
    for column in set {
        if facts
            .partition_keys
            .iter()
            .any(|k| k.columns.contains(column))
        {
            return Err(MigrateError::not_supported(
                "up or down for a partition key's column in a versioned migration",
                format!("Column \"{column}\" is in a partition key of the tree."),
                "A trigger cannot move a row to another partition: map the key's values \
                 before the migration.",
            ));
        }
    }
    Ok(())
}

/// A column whose type changes by a second column must have nothing that
/// depends on it (an index, a constraint, a view, …) and no privileges of
/// its own: the contract drops the old column, and with it all of that.
pub fn type_change_dependents(oid: Oid, cmds: &[VersionedCmd]) -> Result<()> {
    let versions = vstate::all_schemas()?;
    for c in cmds {
        let VersionedCmd::AlterType { column, .. } = c else {
            continue;
        };
        let what = match cat::column_dependents(oid, column, &versions)? {
            Some(what) => what,
            None if cat::has_column_privileges(oid, column)? => "a column privilege".into(),
            None => continue,
        };
        return Err(MigrateError::not_supported(
            "a type change in a versioned migration of a column that other objects use",
            format!("{what} depends on column \"{column}\"."),
            "A versioned type change gives the column a new, second column and drops the \
             old one at the contract, with what depends on it. Change the type with \
             migrate.start() without version, or drop the dependent object first.",
        ));
    }
    Ok(())
}

/// A column the contract drops must not be used outside the version
/// schemas (whose views the contract drops or makes again): PostgreSQL
/// would refuse the DROP COLUMN at the contract.
pub fn dropped_in_use(oid: Oid, cmds: &[VersionedCmd]) -> Result<()> {
    let dropped: Vec<String> = cmds
        .iter()
        .filter_map(|c| match c {
            VersionedCmd::DropColumn { column, text }
                if !text.to_ascii_lowercase().contains("cascade") =>
            {
                Some(column.clone())
            }
            _ => None,
        })
        .collect();
    match cat::users_outside_versions(oid, &dropped, &vstate::all_schemas()?)? {
        None => Ok(()),
        Some((column, users)) => Err(MigrateError::DependentObjects {
            column,
            table: catalog::display_name(oid)?,
            users,
        }),
    }
}

/// `up`/`down` as column => expression, each checked to be one expression.
pub fn expressions(json: Option<&str>, option: &'static str) -> Result<BTreeMap<String, String>> {
    let Some(json) = json else {
        return Ok(BTreeMap::new());
    };
    let bad = |detail: String| MigrateError::InvalidParameter {
        name: option,
        detail,
        hint: format!(
            "Give an object of column => SQL expression, e.g. {option} => '{{\"score\": \"0\"}}'."
        ),
    };
    let kind = spi::text("SELECT pg_catalog.jsonb_typeof($1::jsonb)", &[json.into()])?;
    if kind.as_deref() != Some("object") {
        return Err(bad("It is not a JSON object.".into()));
    }
    let pairs = spi::query(
        "SELECT key, pg_catalog.jsonb_typeof(value), value #>> '{}' FROM pg_catalog.jsonb_each($1::jsonb)",
        &[json.into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?, r.get::<String>(3)?)),
    )?;
    let mut out = BTreeMap::new();
    for (k, kind, v) in pairs {
        let expr = match (kind.as_str(), v) {
            ("string", Some(v)) => v,
            _ => return Err(bad(format!("The value for \"{k}\" is not a string."))),
        };
        check_expression(&k, &expr, option)?;
        out.insert(k, expr);
    }
    Ok(out)
}

/// `<schema>_<version>`, checked to be a usable name.
pub fn version_schema(schema: &str, version: &str) -> Result<String> {
    let name = vplan::version_schema(schema, version);
    if version.is_empty() || name.len() > 63 || version.contains('\0') {
        return Err(MigrateError::InvalidParameter {
            name: "version",
            detail: format!("The version schema would be \"{name}\"."),
            hint: "Give a short, non-empty version name, e.g. 'v2'.".into(),
        });
    }
    Ok(name)
}

/// May this migration use `schema`? It must not exist, or be a version
/// schema halo_migrate made (marked so), which the version then shares.
/// Whether it exists already.
pub fn claim_schema(schema: &str) -> Result<bool> {
    if !cat::schema_exists(schema)? {
        return Ok(false);
    }
    if cat::is_version_schema(schema)? {
        return Ok(true);
    }
    Err(MigrateError::VersionSchemaTaken {
        schema: schema.to_string(),
    })
}
