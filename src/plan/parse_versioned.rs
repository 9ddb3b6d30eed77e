//! Parsing for versioned migrations: the user's subcommands as
//! [`VersionedCmd`]s, and the check that an `up`/`down` value is one SQL
//! expression.
//!
//! Invariants: as in `parse.rs`, nothing here executes anything or looks at
//! a table; parse trees never leave this module.

use crate::error::{MigrateError, Result};
use crate::plan::parse::{constraint_spec, cstr, first_stmt, is_a, with_raw_parse, PREFIX};
use crate::plan::split::split_top_level;
use crate::plan::versioned::VersionedCmd;
use pgrx::pg_sys;
use pgrx::PgList;

/// The subcommands of `alter` (already accepted by `parse::parse_alter`).
pub fn versioned_cmds(alter: &str) -> Result<Vec<VersionedCmd>> {
    let pieces = split_top_level(alter).ok_or_else(|| {
        MigrateError::Internal("the parser accepted text the splitter could not split".into())
    })?;
    pieces.into_iter().map(|r| one(alter[r].trim())).collect()
}

fn one(text: &str) -> Result<VersionedCmd> {
    with_raw_parse(&format!("{PREFIX}{text}"), |stmts| {
        // SAFETY: `stmts` is the List of RawStmt that raw_parser() just
        // returned; every node is read according to its tag.
        unsafe { cmd(first_stmt(stmts)?, text) }
    })
}

/// # Safety
/// `node` must be the statement node of a fresh raw parse of `PREFIX + text`.
#[allow(non_upper_case_globals)] // pg_sys::AlterTableType::AT_* are C enum constants
unsafe fn cmd(node: *mut pg_sys::Node, text: &str) -> Result<VersionedCmd> {
    let unsupported = || VersionedCmd::Unsupported {
        text: text.to_string(),
    };
    // SAFETY: guaranteed by the caller (# Safety above).
    unsafe {
        if is_a(node, pg_sys::NodeTag::T_RenameStmt) {
            let r = &*(node as *mut pg_sys::RenameStmt);
            let to = cstr(r.newname).unwrap_or_default();
            return Ok(match r.renameType {
                pg_sys::ObjectType::OBJECT_COLUMN => VersionedCmd::RenameColumn {
                    from: cstr(r.subname).unwrap_or_default(),
                    to,
                },
                pg_sys::ObjectType::OBJECT_TABLE => VersionedCmd::RenameTable { to },
                _ => unsupported(),
            });
        }
        if !is_a(node, pg_sys::NodeTag::T_AlterTableStmt) {
            return Ok(unsupported());
        }
        let stmt = &*(node as *mut pg_sys::AlterTableStmt);
        let cmds = PgList::<pg_sys::AlterTableCmd>::from_pg(stmt.cmds);
        let Some(c) = cmds.get_ptr(0) else {
            return Ok(unsupported());
        };
        let c = &*c;
        let name = cstr(c.name).unwrap_or_default();
        use pg_sys::AlterTableType::*;
        Ok(match c.subtype {
            AT_DropColumn => VersionedCmd::DropColumn {
                column: name,
                text: text.to_string(),
            },
            AT_SetNotNull => VersionedCmd::SetNotNull { column: name },
            AT_AddConstraint => {
                let def = c.def as *mut pg_sys::Constraint;
                match (*def).contype {
                    pg_sys::ConstrType::CONSTR_CHECK => VersionedCmd::AddCheck {
                        spec: constraint_spec(def, text)?,
                        text: text.to_string(),
                    },
                    pg_sys::ConstrType::CONSTR_FOREIGN => VersionedCmd::AddForeignKey {
                        spec: constraint_spec(def, text)?,
                        text: text.to_string(),
                    },
                    _ => unsupported(),
                }
            }
            AT_AlterColumnType => alter_type(&*(c.def as *mut pg_sys::ColumnDef), name, text)?,
            AT_AddColumn => {
                add_column(&*(c.def as *mut pg_sys::ColumnDef), text)?.unwrap_or_else(unsupported)
            }
            _ => unsupported(),
        })
    }
}

/// `ALTER COLUMN … TYPE t [COLLATE c] [USING e]`: the type's text runs
/// from the type name to USING (or the end).
///
/// # Safety
/// `def` must be the ColumnDef of an ALTER COLUMN TYPE parsed from `PREFIX + text`.
unsafe fn alter_type(def: &pg_sys::ColumnDef, column: String, text: &str) -> Result<VersionedCmd> {
    // SAFETY: guaranteed by the caller: typeName is the TypeName of the def.
    let location = unsafe { (*def.typeName).location };
    let start = usize::try_from(location)
        .ok()
        .and_then(|l| l.checked_sub(PREFIX.len()))
        .filter(|&o| o <= text.len())
        .ok_or_else(|| MigrateError::Internal(format!("no type location in \"{text}\"")))?;
    let using_at = crate::plan::split::find_top_level_word(text, "using");
    let end = using_at.unwrap_or(text.len());
    Ok(VersionedCmd::AlterType {
        column,
        type_sql: text[start..end].trim().to_string(),
        using: using_at.map(|u| text[u + "using".len()..].trim().to_string()),
    })
}

/// ADD COLUMN with at most DEFAULT, NULL and an unnamed NOT NULL; `None`
/// for anything else (identity, generated, inline keys and checks).
///
/// # Safety
/// `def` must be the ColumnDef of an ADD COLUMN parsed from `PREFIX + text`.
unsafe fn add_column(def: &pg_sys::ColumnDef, text: &str) -> Result<Option<VersionedCmd>> {
    let mut not_null_at = None;
    let mut has_default = false;
    // SAFETY: guaranteed by the caller (# Safety above): `constraints` is a
    // List of Constraint nodes.
    for c in unsafe { PgList::<pg_sys::Constraint>::from_pg(def.constraints) }.iter_ptr() {
        // SAFETY: each element is a Constraint node of the same parse.
        let c = unsafe { &*c };
        use pg_sys::ConstrType::*;
        match c.contype {
            CONSTR_NULL => {}
            CONSTR_DEFAULT => has_default = true,
            CONSTR_NOTNULL if c.conname.is_null() => not_null_at = Some(c.location),
            _ => return Ok(None),
        }
    }
    // SAFETY: colname is NULL or a string of the same parse.
    let column = unsafe { cstr(def.colname) }.unwrap_or_default();
    let nullable_text = match not_null_at {
        Some(at) if !has_default => Some(without_not_null(text, at)?),
        _ => None,
    };
    Ok(Some(VersionedCmd::AddColumn {
        column,
        text: text.to_string(),
        nullable_text,
        has_default,
    }))
}

/// `text` without the `NOT NULL` whose first token the parser located at
/// `location` (in `PREFIX + text`).
fn without_not_null(text: &str, location: i32) -> Result<String> {
    let at = usize::try_from(location)
        .ok()
        .and_then(|l| l.checked_sub(PREFIX.len()))
        .filter(|&o| o <= text.len());
    let cut = at.and_then(|o| {
        let rest = &text[o..];
        if !rest.get(..3)?.eq_ignore_ascii_case("not") {
            return None;
        }
        let trimmed = rest[3..].trim_start();
        if !trimmed.get(..4)?.eq_ignore_ascii_case("null") {
            return None;
        }
        let end = text.len() - trimmed.len() + 4;
        Some(format!("{}{}", text[..o].trim_end(), &text[end..]))
    });
    cut.ok_or_else(|| {
        MigrateError::Internal(format!(
            "NOT NULL not found where the parser put it in \"{text}\""
        ))
    })
}

/// Refuse an `up`/`down` value that is not exactly one SQL expression.
pub fn check_expression(key: &str, expr: &str, option: &'static str) -> Result<()> {
    let bad = |why: &str| MigrateError::InvalidParameter {
        name: option,
        detail: format!("The value for \"{key}\" is not one SQL expression: {why}."),
        hint: "Give one expression over the columns, e.g. \"coalesce(name, '')\".".into(),
    };
    let select = format!("SELECT ({expr})");
    let shape_ok = with_raw_parse(&select, |stmts| {
        // SAFETY: `stmts` is the List of RawStmt that raw_parser() just returned.
        unsafe {
            let node = first_stmt(stmts)?;
            if !is_a(node, pg_sys::NodeTag::T_SelectStmt) {
                return Ok(false);
            }
            let s = &*(node as *mut pg_sys::SelectStmt);
            Ok(s.op == pg_sys::SetOperation::SETOP_NONE
                && PgList::<pg_sys::Node>::from_pg(s.targetList).len() == 1
                && s.fromClause.is_null()
                && s.whereClause.is_null()
                && s.groupClause.is_null()
                && s.havingClause.is_null()
                && s.windowClause.is_null()
                && s.sortClause.is_null()
                && s.limitCount.is_null()
                && s.limitOffset.is_null()
                && s.lockingClause.is_null()
                && s.withClause.is_null()
                && s.distinctClause.is_null()
                && s.intoClause.is_null()
                && s.valuesLists.is_null())
        }
    })
    .map_err(|e| bad(&e.to_string()))?;
    if shape_ok {
        Ok(())
    } else {
        Err(bad("it reads as more than an expression"))
    }
}
