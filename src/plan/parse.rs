//! Parsing the `alter` argument with PostgreSQL's own raw parser.
//!
//! `alter` is what follows `ALTER TABLE <name>`. We parse
//! `ALTER TABLE <placeholder> <alter>` with `raw_parser()` and accept exactly one
//! statement that is an ALTER TABLE subcommand list (or one RENAME / SET SCHEMA).
//! To show and run each subcommand on its own, the text is split at top-level
//! commas (`split.rs`) and every piece is parsed again; the pieces must give
//! back exactly the subcommands of the whole.
//!
//! Invariants: nothing here executes anything or looks at any table; the
//! parse trees live in the current memory context and never escape this module
//! (callers get plain Rust `Subcommand`s).

use crate::error::{MigrateError, Result};
use crate::plan::model::*;
use crate::plan::split::split_top_level;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::{CStr, CString};

/// The statement prefix the user's text is parsed behind. The name is never resolved.
pub(super) const PREFIX: &str = "ALTER TABLE halo_migrate_parse_target ";

/// Parse the user's subcommand list.
pub fn parse_alter(alter: &str) -> Result<Vec<Subcommand>> {
    if alter.trim().is_empty() {
        return Err(MigrateError::syntax(
            "empty ALTER",
            "No subcommand was given.",
        ));
    }
    let whole = parse_statement(alter)?;
    let pieces = split_top_level(alter).ok_or_else(|| {
        MigrateError::Internal("the parser accepted text the splitter could not split".into())
    })?;
    if pieces.len() != whole {
        return Err(MigrateError::Internal(format!(
            "split into {} pieces but the parser found {whole} subcommands",
            pieces.len()
        )));
    }
    pieces.into_iter().map(|r| parse_one(&alter[r])).collect()
}

/// The lock PostgreSQL takes for one ALTER TABLE statement (our generated SQL).
pub fn lock_of_statement(sql: &str) -> Result<LockMode> {
    with_raw_parse(sql, |stmts| {
        // SAFETY: `stmts` is the List of RawStmt that raw_parser() just returned.
        unsafe { lock_of_node(first_stmt(stmts)?) }
    })
}

/// Parse `PREFIX + text` and return how many subcommands it holds.
fn parse_statement(text: &str) -> Result<usize> {
    with_raw_parse(&format!("{PREFIX}{text}"), |stmts| {
        // SAFETY: `stmts` is the List of RawStmt that raw_parser() just returned.
        unsafe {
            let node = first_stmt(stmts)?;
            Ok(if is_a(node, pg_sys::NodeTag::T_AlterTableStmt) {
                PgList::<pg_sys::Node>::from_pg((*(node as *mut pg_sys::AlterTableStmt)).cmds).len()
            } else {
                1
            })
        }
    })
}

/// Parse one subcommand's text into the planner's model.
fn parse_one(text: &str) -> Result<Subcommand> {
    let full = format!("{PREFIX}{text}");
    with_raw_parse(&full, |stmts| {
        // SAFETY: `stmts` is the List of RawStmt that raw_parser() just returned;
        // every node is read according to its tag.
        unsafe {
            let node = first_stmt(stmts)?;
            let kind = cmd_kind(node, text)?;
            Ok(Subcommand {
                text: text.to_string(),
                kind,
                lock: lock_of_node(node)?,
            })
        }
    })
}

/// Run the raw parser on `sql` and hand its statement list to `f`. Syntax
/// errors come back as PostgreSQL reported them (SQLSTATE 42601).
pub(super) fn with_raw_parse<R>(
    sql: &str,
    f: impl FnOnce(*mut pg_sys::List) -> Result<R>,
) -> Result<R> {
    let c = CString::new(sql)
        .map_err(|_| MigrateError::syntax("ALTER contains a NUL byte", "Remove it."))?;
    let parsed = PgTryBuilder::new(|| {
        // SAFETY: raw_parser only reads the NUL-terminated string and allocates
        // its result in CurrentMemoryContext; errors are caught below.
        Ok::<_, CaughtError>(unsafe {
            pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT)
        })
    })
    .catch_others(Err)
    .execute();
    match parsed {
        Ok(list) => f(list),
        Err(e) => Err(MigrateError::from_caught(
            e,
            format!(
                "While parsing: {}",
                sql.strip_prefix(PREFIX)
                    .map_or_else(|| sql.to_string(), |t| format!("ALTER TABLE <table> {t}"))
            ),
        )),
    }
}

/// The single statement of a parse, or a syntax error if there are several.
///
/// # Safety
/// `stmts` must be a List of RawStmt.
pub(super) unsafe fn first_stmt(stmts: *mut pg_sys::List) -> Result<*mut pg_sys::Node> {
    // SAFETY: guaranteed by the caller (# Safety above).
    let list = unsafe { PgList::<pg_sys::RawStmt>::from_pg(stmts) };
    if list.len() != 1 {
        return Err(MigrateError::syntax(
            "only one ALTER TABLE subcommand list is accepted",
            format!("The text holds {} statements.", list.len()),
        ));
    }
    // SAFETY: a one-element List of RawStmt; `stmt` is never NULL in a RawStmt.
    Ok(unsafe { (*list.get_ptr(0).unwrap()).stmt })
}

/// # Safety
/// `node` must be a valid parse node.
unsafe fn lock_of_node(node: *mut pg_sys::Node) -> Result<LockMode> {
    // SAFETY: guaranteed by the caller (# Safety above).
    let mode = unsafe {
        if is_a(node, pg_sys::NodeTag::T_AlterTableStmt) {
            pg_sys::AlterTableGetLockLevel((*(node as *mut pg_sys::AlterTableStmt)).cmds)
        } else {
            // RENAME and SET SCHEMA of a table take ACCESS EXCLUSIVE (RenameRelation, AlterTableNamespace).
            pg_sys::AccessExclusiveLock as i32
        }
    };
    LockMode::from_pg(mode)
        .ok_or_else(|| MigrateError::Internal(format!("unknown lock mode {mode}")))
}

/// # Safety
/// `node` must be NULL or a valid Node.
pub(super) unsafe fn is_a(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    // SAFETY: guaranteed by the caller (# Safety above).
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// # Safety
/// `p` must be NULL or a NUL-terminated string from the parse tree.
pub(super) unsafe fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: guaranteed by the caller (# Safety above).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Names in a List of String nodes (column lists of constraints).
///
/// # Safety
/// `list` must be NIL or a List of String nodes.
unsafe fn string_list(list: *mut pg_sys::List) -> Vec<String> {
    // SAFETY: guaranteed by the caller (# Safety above).
    unsafe { PgList::<pg_sys::String>::from_pg(list) }
        .iter_ptr()
        .filter_map(|s| unsafe { cstr((*s).sval) })
        .collect()
}

/// # Safety
/// `node` must be the statement node of a fresh raw parse.
#[allow(non_upper_case_globals)] // pg_sys::AlterTableType::AT_* are C enum constants
unsafe fn cmd_kind(node: *mut pg_sys::Node, text: &str) -> Result<CmdKind> {
    // SAFETY: guaranteed by the caller (# Safety above).
    unsafe {
        if is_a(node, pg_sys::NodeTag::T_RenameStmt) {
            let r = &*(node as *mut pg_sys::RenameStmt);
            return Ok(match r.renameType {
                pg_sys::ObjectType::OBJECT_TABCONSTRAINT => CmdKind::NamesObject {
                    kind: ObjectKind::Constraint,
                    name: cstr(r.subname).unwrap_or_default(),
                    missing_ok: false,
                },
                pg_sys::ObjectType::OBJECT_TABLE => CmdKind::Rename {
                    new_table_name: cstr(r.newname),
                },
                _ => CmdKind::Rename {
                    new_table_name: None,
                },
            });
        }
        if is_a(node, pg_sys::NodeTag::T_AlterObjectSchemaStmt) {
            let s = &*(node as *mut pg_sys::AlterObjectSchemaStmt);
            return Ok(CmdKind::SetSchema {
                schema: cstr(s.newschema).unwrap_or_default(),
            });
        }
        if !is_a(node, pg_sys::NodeTag::T_AlterTableStmt) {
            return Err(MigrateError::syntax(
                "not an ALTER TABLE subcommand list",
                format!("\"{text}\" does not continue ALTER TABLE <name>."),
            ));
        }
        let stmt = &*(node as *mut pg_sys::AlterTableStmt);
        let cmds = PgList::<pg_sys::AlterTableCmd>::from_pg(stmt.cmds);
        let cmd = &*cmds
            .get_ptr(0)
            .ok_or_else(|| MigrateError::syntax("empty ALTER", "No subcommand."))?;
        let name = cstr(cmd.name);
        use pg_sys::AlterTableType::*;
        let named = |kind| CmdKind::NamesObject {
            kind,
            name: name.clone().unwrap_or_default(),
            missing_ok: cmd.missing_ok,
        };
        Ok(match cmd.subtype {
            AT_AddColumn => {
                let def = &*(cmd.def as *mut pg_sys::ColumnDef);
                let inline_foreign_key = PgList::<pg_sys::Constraint>::from_pg(def.constraints)
                    .iter_ptr()
                    .any(|c| (*c).contype == pg_sys::ConstrType::CONSTR_FOREIGN);
                CmdKind::AddColumn { column: cstr(def.colname).unwrap_or_default(), inline_foreign_key }
            }
            AT_AlterColumnType => {
                let def = &*(cmd.def as *mut pg_sys::ColumnDef);
                let (using, using_columns) = if def.raw_default.is_null() {
                    (None, vec![])
                } else {
                    let at = crate::plan::split::find_top_level_word(text, "using").ok_or_else(|| {
                        MigrateError::Internal(format!("USING clause not found in \"{text}\""))
                    })?;
                    (Some(text[at + "using".len()..].trim().to_string()), check_columns(def.raw_default))
                };
                CmdKind::AlterColumnType { column: name.unwrap_or_default(), using, using_columns }
            }
            AT_DropColumn => CmdKind::DropColumn {
                column: name.unwrap_or_default(),
                cascade: cmd.behavior == pg_sys::DropBehavior::DROP_CASCADE,
            },
            AT_SetNotNull => CmdKind::SetNotNull { column: name.unwrap_or_default() },
            AT_AddConstraint => CmdKind::AddConstraint(constraint_spec(cmd.def as *mut pg_sys::Constraint, text)?),
            AT_ValidateConstraint => CmdKind::ValidateConstraint { name: name.unwrap_or_default() },
            AT_DropConstraint => named(ObjectKind::Constraint),
            AT_AlterConstraint => {
                let (name, enforces) = crate::pg::compat::altered_constraint(cmd.def);
                if enforces {
                    return Err(MigrateError::not_supported(
                        "ALTER CONSTRAINT … ENFORCED",
                        "Making a constraint ENFORCED validates it by scanning the table under \
                         ACCESS EXCLUSIVE, which blocks reads and writes for the whole scan.",
                        "Drop the NOT ENFORCED constraint and add it again with migrate.start(): \
                         halo_migrate adds it NOT VALID and validates it without blocking writes.",
                    ));
                }
                CmdKind::NamesObject { kind: ObjectKind::Constraint, name: cstr(name).unwrap_or_default(), missing_ok: false }
            }
            AT_ClusterOn => named(ObjectKind::Index),
            AT_ReplicaIdentity => {
                let ri = &*(cmd.def as *mut pg_sys::ReplicaIdentityStmt);
                match cstr(ri.name) {
                    Some(index) => CmdKind::NamesObject { kind: ObjectKind::Index, name: index, missing_ok: false },
                    None => CmdKind::Other,
                }
            }
            AT_EnableTrig | AT_EnableAlwaysTrig | AT_EnableReplicaTrig | AT_DisableTrig => named(ObjectKind::Trigger),
            AT_EnableRule | AT_EnableAlwaysRule | AT_EnableReplicaRule | AT_DisableRule => named(ObjectKind::Rule),
            AT_SetLogged | AT_SetUnLogged => CmdKind::SetPersistence,
            AT_AddInherit | AT_DropInherit | AT_AddOf | AT_DropOf => CmdKind::Link,
            AT_AttachPartition | AT_DetachPartition | AT_DetachPartitionFinalize => {
                return Err(MigrateError::not_supported(
                    "ATTACH/DETACH PARTITION",
                    "halo_migrate alters ordinary tables; partitioning subcommands apply to partitioned tables.",
                    "Run ATTACH PARTITION or DETACH PARTITION … CONCURRENTLY directly.",
                ))
            }
            _ => CmdKind::Other,
        })
    }
}

/// # Safety
/// `c` must be the Constraint of an ADD CONSTRAINT subcommand.
pub(super) unsafe fn constraint_spec(
    c: *mut pg_sys::Constraint,
    text: &str,
) -> Result<ConstraintSpec> {
    // SAFETY: guaranteed by the caller (# Safety above).
    unsafe {
        let c = &*c;
        use pg_sys::ConstrType::*;
        let contype = match c.contype {
            CONSTR_CHECK => ConstraintType::Check,
            CONSTR_FOREIGN => ConstraintType::ForeignKey,
            CONSTR_PRIMARY => ConstraintType::PrimaryKey,
            CONSTR_UNIQUE => ConstraintType::Unique,
            CONSTR_EXCLUSION => ConstraintType::Exclusion,
            _ => {
                return Err(MigrateError::not_supported(
                    "this kind of table constraint",
                    format!("\"{text}\""),
                    "Use CHECK, FOREIGN KEY, PRIMARY KEY, UNIQUE or EXCLUDE.",
                ))
            }
        };
        let columns = match contype {
            ConstraintType::Check => check_columns(c.raw_expr),
            ConstraintType::ForeignKey => string_list(c.fk_attrs),
            ConstraintType::Exclusion => PgList::<pg_sys::List>::from_pg(c.exclusions)
                .iter_ptr()
                .filter_map(|pair| {
                    let elem = PgList::<pg_sys::IndexElem>::from_pg(pair).get_ptr(0)?;
                    cstr((*elem).name)
                })
                .collect(),
            _ => string_list(c.keys),
        };
        let index_options = PgList::<pg_sys::DefElem>::from_pg(c.options)
            .iter_ptr()
            .map(|d| {
                (
                    cstr((*d).defname).unwrap_or_default(),
                    cstr(pg_sys::defGetString(d)).unwrap_or_default(),
                )
            })
            .collect();
        // The grammar sets a table constraint's location to its first token.
        let clause_offset = usize::try_from(c.location)
            .ok()
            .and_then(|l| l.checked_sub(PREFIX.len()))
            .filter(|&o| o <= text.len())
            .ok_or_else(|| {
                MigrateError::Internal(format!(
                    "no source location for the constraint in \"{text}\""
                ))
            })?;
        Ok(ConstraintSpec {
            contype,
            name: cstr(c.conname),
            not_valid: c.skip_validation,
            using_index: cstr(c.indexname),
            columns,
            including: string_list(c.including),
            index_options,
            index_tablespace: cstr(c.indexspace),
            nulls_not_distinct: c.nulls_not_distinct,
            deferrable: c.deferrable,
            initially_deferred: c.initdeferred,
            clause_offset,
        })
    }
}

/// The distinct columns an expression refers to (for a CHECK: PostgreSQL names
/// an unnamed CHECK after its column when there is exactly one).
unsafe fn check_columns(expr: *mut pg_sys::Node) -> Vec<String> {
    #[pg_guard]
    unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, ctx: *mut std::ffi::c_void) -> bool {
        if node.is_null() {
            return false;
        }
        // SAFETY: called by raw_expression_tree_walker with a valid node, and
        // `ctx` is the `Vec<String>` passed in below.
        unsafe {
            if (*node).type_ == pg_sys::NodeTag::T_ColumnRef {
                let fields =
                    PgList::<pg_sys::Node>::from_pg((*(node as *mut pg_sys::ColumnRef)).fields);
                if let Some(last) = fields.get_ptr(fields.len().saturating_sub(1)) {
                    if (*last).type_ == pg_sys::NodeTag::T_String {
                        let out = &mut *(ctx as *mut Vec<String>);
                        if let Some(n) = cstr((*(last as *mut pg_sys::String)).sval) {
                            if !out.contains(&n) {
                                out.push(n);
                            }
                        }
                    }
                }
                return false;
            }
            pg_sys::raw_expression_tree_walker(node, Some(walk), ctx)
        }
    }
    let mut out: Vec<String> = Vec::new();
    // SAFETY: expr is a raw expression tree; the walker only reads it and
    // writes into `out`, which outlives the call.
    unsafe { walk(expr, &mut out as *mut Vec<String> as *mut std::ffi::c_void) };
    out
}
