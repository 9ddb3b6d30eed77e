//! Revertible cut-over: checking at `start()` that a migration can be taken
//! back, setting up the revert, and closing the window (`forget()`, expiry).
//!
//! A revert is a rewrite like any other, run backwards over what the forward
//! swap left: its shadow is the kept table (the old rows, already in the old
//! shape, under the shadow's name), its log is the window's log (every key
//! changed since the swap), so it starts in `replaying`: the replay maps each
//! changed row back into the old shape, and the swap runs the inverse ALTER
//! (`plan::inverse`) on the table's empty storage and exchanges storage
//! again — the table keeps its OID and every dependent, as in the forward
//! swap.
//!
//! Invariants: the kept table, the log and the capture trigger exist exactly
//! while the window is open (`state::window`); a revert that fails or is
//! aborted leaves them in place (the window stays open, and the replay it
//! did only brought the kept table closer to the table).

use crate::catalog;
use crate::engine::state::window::{self, Closed};
use crate::engine::state::{self, Migration, Phase};
use crate::engine::{capture, kept, shadow};
use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::inverse::{self, Column, Constraint};
use crate::plan::model::{CmdKind, Subcommand};
use crate::plan::{parse, sqlgen};
use pgrx::pg_sys::{self, Oid};

/// The migration of `relid` whose revert window is open, if any.
pub fn open_window_of(relid: Oid) -> Result<Option<i64>> {
    Ok(spi::query(
        "SELECT id FROM migrate.migrations WHERE relid = $1 AND revertible_until IS NOT NULL
          ORDER BY id DESC LIMIT 1",
        &[relid.into()],
        |r| get::<i64>(r, 1),
    )?
    .into_iter()
    .next())
}

/// At `start(revertible => true)`, with the shadow created: refuse what
/// cannot be taken back, and check the `down` expressions.
pub fn check_revertible(
    oid: Oid,
    cmds: &[Subcommand],
    recipe: &shadow::Recipe,
    down: Option<&str>,
) -> Result<()> {
    for c in cmds {
        let CmdKind::DropColumn { column, cascade } = &c.kind else {
            continue;
        };
        if *cascade {
            return Err(MigrateError::not_supported(
                "revertible => true with DROP COLUMN … CASCADE",
                format!(
                    "\"{}\": what CASCADE drops outside the table (views, foreign keys of other \
                     tables) could not be put back by a revert.",
                    c.text
                ),
                "Drop the dependent objects first, then drop the column without CASCADE.",
            ));
        }
        let special = spi::text(
            "SELECT CASE WHEN attidentity <> '' THEN 'an identity' WHEN attgenerated <> '' THEN 'a generated' END
               FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped",
            &[oid.into(), column.clone().into()],
        )?;
        if let Some(kind) = special {
            return Err(MigrateError::not_supported(
                format!("revertible => true dropping {kind} column"),
                format!("\"{column}\" could not be restored in place with its values."),
                "Drop it in a migration of its own, without revertible.",
            ));
        }
    }
    // The kept table's twin of an invalid index would be valid, over the
    // invalid one's incomplete storage.
    let invalid = spi::text(
        "SELECT pg_catalog.string_agg(c.relname::text, ', ') FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = $1 AND NOT (i.indisvalid AND i.indisready)",
        &[oid.into()],
    )?;
    if let Some(names) = invalid {
        return Err(MigrateError::not_supported(
            "revertible => true on a table with an invalid index",
            format!("Index {names} is invalid (a CREATE INDEX CONCURRENTLY that failed, say)."),
            "Drop it, or REINDEX it, first.",
        ));
    }
    let down = down_pairs(down)?;
    for c in cmds {
        match &c.kind {
            // A column dropped and added again under its name: the revert
            // could not give the old one its name back while the new lives.
            CmdKind::AddColumn { column, .. }
                if cmds.iter().any(|d| {
                    matches!(&d.kind, CmdKind::DropColumn { column: dropped, .. } if dropped == column)
                }) =>
            {
                return Err(MigrateError::not_supported(
                    format!("revertible => true dropping and adding column \"{column}\""),
                    "A revert could not give the dropped column its name back while the new one exists.",
                    "Add the new column under another name, or make the change without revertible.",
                ));
            }
            // Rows written during the window are mapped back through the
            // cast back unless told otherwise: after a USING, that is not
            // the way back, and for a key it would find other rows.
            CmdKind::AlterColumnType { column, using: Some(_), .. } => {
                if recipe.key_columns.contains(column) {
                    return Err(MigrateError::not_supported(
                        format!("revertible => true for key column \"{column}\" changed through USING"),
                        "The revert finds the kept rows by key; a key that does not map back exactly would find other rows.",
                        "Change the key in a migration of its own, without revertible.",
                    ));
                }
                if !down.iter().any(|(d, _)| d == column) {
                    return Err(MigrateError::not_supported(
                        format!("revertible => true without a way back for column \"{column}\""),
                        "Its values are changed through USING; casting them back would not undo that.",
                        format!("Give down => '{{\"{column}\": \"<expression over the new row>\"}}' to say how."),
                    ));
                }
            }
            _ => {}
        }
    }
    for (col, _) in &down {
        if !recipe.altered_columns.contains(col) {
            return Err(MigrateError::InvalidParameter {
                name: "down",
                detail: format!("\"{col}\" is not a column whose type the ALTER changes."),
                hint: "Give down expressions only for columns whose type changes, e.g. \
                       '{\"flag\": \"flag IS NOT NULL\"}'."
                    .into(),
            });
        }
    }
    let shadow = sqlgen::shadow_table(oid.to_u32());
    let types = spi::query(
        "SELECT a.attname::text, a.atttypid, s.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod)
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_attribute s ON s.attrelid = $2::pg_catalog.regclass AND s.attname = a.attname
          WHERE a.attrelid = $1 AND a.attname = ANY ($3) AND NOT a.attisdropped",
        &[oid.into(), shadow.to_string().into(), recipe.altered_columns.clone().into()],
        |r| Ok((get::<String>(r, 1)?, get::<Oid>(r, 2)?, get::<Oid>(r, 3)?, get::<String>(r, 4)?)),
    )?;
    for (col, old, new, old_sql) in types {
        if let Some((_, expr)) = down.iter().find(|(c, _)| *c == col) {
            // Parsed and typed against the new shape now, not at revert().
            let context = format!("in the down expression for column \"{col}\"");
            crate::pg::subxact::attempt(&context, || {
                spi::exec(
                    &format!("SELECT CAST(({expr}) AS {old_sql}) FROM {shadow} LIMIT 0"),
                    &[],
                )
            })?;
        } else if !assignable(new, old) {
            return Err(MigrateError::not_supported(
                format!("revertible => true without a way back for column \"{col}\""),
                format!("No assignment cast turns the new type of \"{col}\" back into {old_sql}."),
                format!(
                    "Give down => '{{\"{col}\": \"<expression over the new row>\"}}' to say how."
                ),
            ));
        }
    }
    Ok(())
}

/// Whether PostgreSQL converts `from` to `to` in an INSERT (assignment).
fn assignable(from: Oid, to: Oid) -> bool {
    // SAFETY: two valid pointers to one Oid each, read only during the call;
    // can_coerce_type only looks types and casts up in the syscache.
    unsafe { pg_sys::can_coerce_type(1, &from, &to, pg_sys::CoercionContext::COERCION_ASSIGNMENT) }
}

/// The `down` jsonb as (column, expression) pairs.
fn down_pairs(down: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(down) = down else { return Ok(vec![]) };
    let kind = spi::text("SELECT pg_catalog.jsonb_typeof($1::jsonb)", &[down.into()])?;
    let pairs = spi::query(
        "SELECT pg_catalog.jsonb_typeof(value) FROM pg_catalog.jsonb_each($1::jsonb)
          WHERE pg_catalog.jsonb_typeof($1::jsonb) = 'object'",
        &[down.into()],
        |r| get::<String>(r, 1),
    )?;
    if kind.as_deref() != Some("object") || pairs.iter().any(|t| t != "string") {
        return Err(MigrateError::InvalidParameter {
            name: "down",
            detail: "It must be a JSON object whose values are strings.".into(),
            hint: "Give e.g. '{\"flag\": \"flag IS NOT NULL\"}': column => SQL expression over the new row."
                .into(),
        });
    }
    spi::query(
        "SELECT key, value FROM pg_catalog.jsonb_each_text($1::jsonb) ORDER BY key",
        &[down.into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )
}

/// Remove the kept table, the log and the trigger, and close the window.
/// Closes nothing while a revert of it is under way (55006), or once it is
/// closed already (the window's row is locked first, so that a revert
/// being set up in another transaction is waited for and then seen).
pub fn close_window(m: &Migration, why: Closed) -> Result<()> {
    if !lock_window(m.id)? {
        return Ok(());
    }
    if let Some(live) = revert_in_flight(m.relid)? {
        return Err(MigrateError::Busy {
            table: m.table_name.clone(),
            id: live,
            phase: "reverting",
        });
    }
    capture::remove(m.relid, m.lock_timeout_ms)?;
    drop_stash(m.relid.to_u32())?;
    window::close(m.id, why)
}

/// The worker's (and step()'s) look at a window: close it once its time is
/// up. Whether it is still open.
pub fn tend(id: i64) -> Result<bool> {
    let Some(m) = state::load(id)? else {
        return Ok(false);
    };
    if m.window.open && m.window.expired && revert_in_flight(m.relid)?.is_none() {
        return match close_window(&m, Closed::Expired) {
            // A revert was set up meanwhile: it closes the window.
            Err(MigrateError::Busy { .. }) => Ok(true),
            r => r.map(|_| false),
        };
    }
    Ok(m.window.open)
}

/// Lock the row of migration `id` (waiting for a transaction that holds
/// it, say one setting up a revert); whether its window is open.
fn lock_window(id: i64) -> Result<bool> {
    Ok(spi::query(
        "SELECT revertible_until IS NOT NULL FROM migrate.migrations WHERE id = $1 FOR NO KEY UPDATE",
        &[id.into()],
        |r| get::<bool>(r, 1),
    )?
    .into_iter()
    .next()
    .unwrap_or(false))
}

/// A revert of the table not over yet: its id.
fn revert_in_flight(relid: Oid) -> Result<Option<i64>> {
    Ok(state::latest_for_table(relid)?
        .filter(|l| !l.phase.is_terminal() && l.window.reverts.is_some())
        .map(|l| l.id))
}

/// Set up the revert of `f` (whose window is open) as a new migration in
/// `replaying`; its id. Runs in the caller's transaction.
pub fn begin(f: &Migration, table: &QualifiedName, background: bool) -> Result<i64> {
    let oid = f.relid.to_u32();
    // Held until this transaction ends: expiry and forget() wait for it.
    if !lock_window(f.id)? {
        return Err(MigrateError::NothingToRevert {
            table: f.table_name.clone(),
            why: format!("The revert window of migration {} closed meanwhile.", f.id),
        });
    }
    let shadow = sqlgen::shadow_table(oid);
    let kept_oid = catalog::relation_oid(&shadow.to_string())?;
    let inv = spi::with_search_path(CATALOG_PATH, || inverse_of(f, kept_oid))?;
    // One statement each: a DROP COLUMN is checked before an ADD COLUMN
    // of the same statement has run.
    for sub in &inv.kept_fixups {
        spi::exec(&sqlgen::alter(&shadow, sub), &[])?;
    }
    // The log holds the forward migration's key: replay by that one, not
    // by the key the table would be given now.
    let mut facts = catalog::load_table(f.relid)?;
    facts.replay_key = Some(f.key_columns.clone());
    let cmds = if inv.subcommands.is_empty() {
        vec![]
    } else {
        parse::parse_alter(&inv.subcommands.join(", "))?
    };
    let recipe = spi::with_search_path(CATALOG_PATH, || {
        shadow::mapping(&facts, &cmds, f.relid, kept_oid, shadow::Keys::Compared)
    })?;
    let id = state::create(state::New {
        relid: f.relid,
        table_name: table.to_string(),
        alter_sql: if inv.subcommands.is_empty() {
            format!("-- revert of migration {}", f.id)
        } else {
            inv.subcommands.join(", ")
        },
        strategy: crate::plan::model::Strategy::Rewrite,
        phase: Phase::Replaying,
        batch_rows: f.batch_rows,
        lock_timeout_ms: f.lock_timeout_ms,
        auto_finish: true,
        background,
        snapshot_safe: f.snapshot_safe,
        verify: false,
        revert_window_s: None,
        down: None,
    })?;
    if !inv.undrop.is_empty() {
        create_stash(f, kept_oid, &inv.undrop)?;
    }
    window::set_reverts(id, f.id, inv.undrop.clone(), inv.statements.clone())?;
    let validate = inv
        .validate
        .iter()
        .map(|c| sqlgen::validate(table, c))
        .collect();
    state::set_rewrite_recipe(
        id,
        state::RewriteRecipe {
            relfilenode: catalog::relfilenode(f.relid)?,
            copy_end: 0,
            rows_total: 0,
            shadow_sql: inv.subcommands,
            swap_sql: vec![],
            post_swap_sql: validate,
            recipe: shadow::Recipe {
                altered_columns: inv.altered,
                ..recipe
            },
        },
    )?;
    Ok(id)
}

/// The inverse ALTER for `f`, from the catalogs (under the catalog path).
fn inverse_of(f: &Migration, kept_oid: Oid) -> Result<inverse::Inverse> {
    let down = down_pairs(
        spi::text(
            "SELECT down_sql::text FROM migrate.migrations WHERE id = $1",
            &[f.id.into()],
        )?
        .as_deref(),
    )?;
    let now: Vec<Constraint> = kept::constraints_of(f.relid)?
        .into_iter()
        .map(constraint)
        .collect();
    let before: Vec<Constraint> = f
        .window
        .constraints
        .iter()
        .cloned()
        .map(constraint)
        .collect();
    let mut inv = inverse::inverse(
        &columns(f.relid)?,
        &columns(kept_oid)?,
        &down,
        &now,
        &before,
    )
    .map_err(|why| MigrateError::NothingToRevert {
        table: f.table_name.clone(),
        why,
    })?;
    let reloptions = |relid: Oid| -> Result<Vec<String>> {
        Ok(spi::query(
            "SELECT coalesce(reloptions, '{}') FROM pg_catalog.pg_class WHERE oid = $1",
            &[relid.into()],
            |r| get::<Vec<String>>(r, 1),
        )?
        .into_iter()
        .next()
        .unwrap_or_default())
    };
    inv.subcommands.extend(inverse::options(
        &reloptions(f.relid)?,
        &reloptions(kept_oid)?,
    ));
    if !inv.undrop.is_empty() {
        let settings = kept::column_settings(kept_oid, Some(&inv.undrop))?;
        inv.subcommands
            .extend(settings.into_iter().map(|(_, sub)| sub));
    }
    index_constraints(f, kept_oid, &mut inv)?;
    // Statistics objects the forward ALTER dropped with a column.
    for def in &f.window.statistics {
        let (name, sql) = def
            .split_once('\u{1f}')
            .unwrap_or((def.as_str(), def.as_str()));
        let exists = !spi::query(
                "SELECT 1 FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
                  WHERE pg_catalog.format('%I.%I', n.nspname, s.stxname) = $1",
                &[name.into()],
                |_| Ok(()),
            )?
            .is_empty();
        if !exists {
            inv.statements.push(sql.to_string());
        }
    }
    inverse::order_drops_first(&mut inv.subcommands);
    Ok(inv)
}

fn constraint(c: window::KeptConstraint) -> Constraint {
    Constraint {
        name: c.name,
        definition: c.definition,
        validated: c.validated,
    }
}

fn columns(relid: Oid) -> Result<Vec<Column>> {
    spi::query(
        "SELECT a.attnum, a.attname::text, a.attisdropped,
                CASE WHEN NOT a.attisdropped THEN pg_catalog.format_type(a.atttypid, a.atttypmod) ELSE '' END,
                CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                     THEN a.attcollation::pg_catalog.regcollation::text END,
                a.attnotnull,
                CASE WHEN a.atthasdef AND a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                NULLIF(a.attgenerated::text || a.attidentity::text, '')
           FROM pg_catalog.pg_attribute a
           LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1 AND a.attnum > 0 ORDER BY a.attnum",
        &[relid.into()],
        |r| {
            let dropped: bool = get(r, 3)?;
            Ok(Column {
                attnum: get(r, 1)?,
                name: if dropped { String::new() } else { get(r, 2)? },
                dropped,
                type_sql: get(r, 4)?,
                collation: r.get(5)?,
                not_null: get::<bool>(r, 6)? && !dropped,
                default: r.get(7)?,
                special: r.get(8)?,
            })
        },
    )
}

/// The kept table's index `name` as a CREATE INDEX on the table.
fn recreate_index(f: &Migration, kept_oid: Oid, name: &str) -> Result<String> {
    let table = catalog::qualified_name(f.relid)?.ok_or(MigrateError::TableGone {
        oid: f.relid.to_u32(),
    })?;
    let def = spi::text(
        &format!(
            "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = $1 AND {} = $2",
            kept::stands_for_sql("c")
        ),
        &[kept_oid.into(), name.into()],
    )?
    .unwrap_or_default();
    kept::on_table(&def, name, f.relid, &table)
}

/// Drop the stash of a revert that restored columns, if there is one.
pub fn drop_stash(oid: u32) -> Result<()> {
    let stash = sqlgen::stash_table(oid);
    let exists = spi::text(
        "SELECT pg_catalog.to_regclass($1)::text",
        &[stash.to_string().into()],
    )?;
    if exists.is_some() {
        spi::exec(&format!("DROP TABLE {stash}"), &[])?;
    }
    Ok(())
}

/// The stash a revert that restores columns replays through (replay.rs):
/// the table's key, typed as the table's, and the restored columns, typed
/// as the kept table's.
fn create_stash(f: &Migration, kept_oid: Oid, undrop: &[String]) -> Result<()> {
    let oid = f.relid.to_u32();
    let stash = sqlgen::stash_table(oid);
    let mut cols = Vec::new();
    for (i, k) in f.key_columns.iter().enumerate() {
        cols.push(format!("k{} {}", i + 1, column_type(f.relid, k)?));
    }
    for c in undrop {
        cols.push(format!("{} {}", Ident::new(c), column_type(kept_oid, c)?));
    }
    spi::exec(&format!("CREATE TABLE {stash} ({})", cols.join(", ")), &[])?;
    spi::exec(&sqlgen::alter(&stash, "REPLICA IDENTITY FULL"), &[])?;
    let stash_oid = catalog::relation_oid(&stash.to_string())?;
    crate::engine::storage::hide_from_decoding(stash_oid, f.relid);
    Ok(())
}

fn column_type(relid: Oid, column: &str) -> Result<String> {
    spi::text(
        "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped",
        &[relid.into(), column.into()],
    )?
    .ok_or_else(|| MigrateError::Internal(format!("column \"{column}\" vanished")))
}

/// Index-backed constraints (PRIMARY KEY, UNIQUE, EXCLUDE) the forward
/// ALTER added or removed: the kept table's indexes, under the names of the
/// table's indexes they stand for, are what the table must have again.
fn index_constraints(f: &Migration, kept_oid: Oid, inv: &mut inverse::Inverse) -> Result<()> {
    let rows = spi::query(
        &format!(
            "WITH i AS (SELECT x.indrelid, {} AS name, con.conname::text AS con,
                           pg_catalog.pg_get_constraintdef(con.oid) AS def
                      FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
                      LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = x.indexrelid
                           AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x')
                     WHERE x.indrelid IN ($1, $2))
         SELECT coalesce(t.name, k.name), t.con, k.def, t.name IS NOT NULL
           FROM (SELECT * FROM i WHERE indrelid = $1) t
           FULL JOIN (SELECT * FROM i WHERE indrelid = $2) k ON k.name = t.name
          WHERE t.name IS NULL OR k.name IS NULL",
            kept::stands_for_sql("c")
        ),
        &[f.relid.into(), kept_oid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                get::<bool>(r, 4)?,
            ))
        },
    )?;
    for (name, table_con, kept_def, on_table) in rows {
        match (on_table, table_con, kept_def) {
            (true, Some(con), _) => inv
                .subcommands
                .push(format!("DROP CONSTRAINT {}", Ident::new(con))),
            (false, _, Some(def)) => inv
                .subcommands
                .push(format!("ADD CONSTRAINT {} {def}", Ident::new(&name))),
            // A plain index of a column the migration dropped (PostgreSQL
            // dropped the index with it): built again on the empty table.
            (false, None, None) => inv.statements.push(recreate_index(f, kept_oid, &name)?),
            _ => {
                return Err(MigrateError::NothingToRevert {
                    table: f.table_name.clone(),
                    why: format!(
                        "Index \"{name}\" was created or dropped on its own since the swap; \
                         an index that is not a constraint cannot be put back by ALTER TABLE."
                    ),
                })
            }
        }
    }
    Ok(())
}

/// A revert's replay of log rows `ids` failed with `e`: if one row is the
/// cause (a value the old type cannot hold), the error names it.
pub fn name_row(
    m: &Migration,
    table: &QualifiedName,
    ids: &[i64],
    e: MigrateError,
) -> MigrateError {
    let code = e.sqlstate();
    let class = crate::error::sqlstate_text(code);
    if !(class.starts_with("22") || class.starts_with("23")) {
        return e;
    }
    let fails = |ids: &[i64]| -> Option<String> {
        match crate::pg::subxact::rolled_back(|| crate::engine::replay::apply(m, table, ids)) {
            Ok(Ok(())) => None,
            Ok(Err(cause)) => Some(cause.to_string()),
            Err(caught) => Some(MigrateError::from_caught(caught, "").to_string()),
        }
    };
    // Halve the batch while a half fails on its own: about twice the
    // batch's work, whatever its size (this may run under the swap's lock).
    let mut range = ids;
    while range.len() > 1 {
        let (left, right) = range.split_at(range.len() / 2);
        range = if fails(left).is_some() {
            left
        } else if fails(right).is_some() {
            right
        } else {
            // Only rows of both halves together fail (two rows' unique
            // values): no one row to name.
            return e;
        };
    }
    let (Some(&id), Some(cause)) = (range.first(), fails(range)) else {
        return e;
    };
    let log = sqlgen::log_table(m.relid.to_u32());
    let names: Vec<String> = m
        .key_columns
        .iter()
        .map(|k| Ident::new(k).to_string())
        .collect();
    let values: Vec<String> = (1..=names.len()).map(|i| format!("k{i}::text")).collect();
    let key = spi::text(
        &format!(
            "SELECT pg_catalog.concat_ws(', ', {}) FROM {log} WHERE id = $1",
            values.join(", ")
        ),
        &[id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    MigrateError::RevertRow {
        id: m.window.reverts.unwrap_or(m.id),
        table: m.table_name.clone(),
        key: format!("({})=({key})", names.join(", ")),
        cause,
        code,
    }
}
