//! Setting up a partitioned table's rewrite: the tree's row, and for every
//! partition that holds rows a part with its own shadow, capture log and
//! copy recipe, as an ordinary table's rewrite has them.
//!
//! Invariants: everything runs in `start()`'s transaction, so a refusal or
//! an error leaves nothing behind. The capture triggers go onto every
//! partition in one attempt, within one `lock_timeout` for all of them
//! (never one timeout per partition), and each partition's copy range is
//! read under those locks: every row is either in a range or logged.

use crate::catalog;
use crate::engine::setup::{changed_columns, insert, Options, Planned};
use crate::engine::shadow::{self, Recipe};
use crate::engine::state::{self, Phase};
use crate::engine::{capture, locks, views};
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::model::{LockMode, Stage, Strategy};
use pgrx::pg_sys::Oid;

/// One partition's part, set up.
struct Part {
    id: i64,
    oid: Oid,
    table: QualifiedName,
    recipe: Recipe,
    /// Its rows, as the statistics say, else as counted before the triggers
    /// go on (an estimate for the progress report; counting under their
    /// locks would hold the writers).
    rows: i64,
}

/// Set up the rewrite of the tree `planned` describes; the tree's id.
pub fn start(planned: &Planned, table: &QualifiedName, alter: &str, opts: &Options) -> Result<i64> {
    refuse_options(table, opts)?;
    let facts = &planned.facts;
    let parent = Oid::from(facts.oid);
    // plan() refused what the tree's swap cannot run (tree::refuse_in_rewrite).
    let shadow_cmds: Vec<String> = planned
        .steps
        .iter()
        .filter_map(|s| match &s.stage {
            Stage::Shadow(text) => Some(text.clone()),
            _ => None,
        })
        .collect();
    let typed = changed_columns(planned).0;
    // Views and policies on any member (a sub-partitioned partition too).
    for member in catalog::tree::members_with_kind(parent)? {
        views::check(member.oid, &typed)?;
    }
    refuse_foreign_keys(parent, table, &typed)?;
    let leaves = facts.leaves.as_deref().unwrap_or_default();
    let id = insert(
        planned,
        table,
        alter,
        Strategy::Rewrite,
        Phase::Copying,
        opts,
    )?;
    state::tree::make_tree(id, opts.jobs)?;
    let mut parts = Vec::new();
    for leaf in leaves {
        let oid = Oid::from(leaf.oid);
        let leaf_table = QualifiedName::new(&leaf.schema, &leaf.name);
        let lf = catalog::load_table(oid)?;
        if lf.replay_key.is_none() {
            return Err(MigrateError::NoKey {
                table: leaf_table.to_string(),
            });
        }
        if lf.row_security_applies {
            return Err(MigrateError::RowSecurity {
                table: leaf_table.to_string(),
            });
        }
        let part = state::create(state::New {
            relid: oid,
            table_name: leaf_table.to_string(),
            alter_sql: alter.to_string(),
            strategy: Strategy::Rewrite,
            phase: Phase::Copying,
            batch_rows: opts.batch_rows,
            lock_timeout_ms: opts.lock_timeout_ms,
            auto_finish: false,
            background: opts.background,
            snapshot_safe: opts.snapshot_safe,
            verify: false,
            revert_window_s: None,
            down: None,
        })?;
        state::tree::make_part(part, id)?;
        let recipe = shadow::create(&lf, &planned.cmds, &shadow_cmds)?;
        refuse_own_sequences(leaf.oid, &leaf_table, &recipe.added_columns)?;
        capture::create_log(
            leaf.oid,
            &leaf_table,
            &recipe.log_columns,
            &recipe.key_columns,
            capture::Guard::Migration,
        )?;
        let rows = estimated_rows(oid, &leaf_table)?;
        parts.push(Part {
            id: part,
            oid,
            table: leaf_table,
            recipe,
            rows,
        });
    }
    install_triggers(parent, &parts, opts.lock_timeout_ms)?;
    record_recipes(id, &parts, shadow_cmds, typed)?;
    Ok(id)
}

fn refuse_options(table: &QualifiedName, opts: &Options) -> Result<()> {
    let what = if opts.verify {
        "verify => true"
    } else if opts.revert_window_s.is_some() {
        "revertible => true"
    } else {
        return Ok(());
    };
    Err(MigrateError::not_supported(
        format!("{what} for a rewrite of a partitioned table"),
        format!("{table} is partitioned; its rewrite does not verify or keep the old storage yet."),
        "Start it without that option.",
    ))
}

/// A foreign key of the tree (or of a partitioned table referencing it) on
/// a column whose type changes would have to be added back NOT VALID after
/// the swap, which PostgreSQL does not allow on a partitioned table.
fn refuse_foreign_keys(parent: Oid, table: &QualifiedName, typed: &[String]) -> Result<()> {
    if typed.is_empty() {
        return Ok(());
    }
    let found = spi::text(
        "SELECT con.conname::text FROM pg_catalog.pg_constraint con
           JOIN pg_catalog.pg_class r ON r.oid = con.conrelid
          WHERE con.contype = 'f' AND con.conparentid = 0
            AND ((con.conrelid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t)
                  AND EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = con.conrelid
                                 AND a.attnum = ANY (con.conkey) AND a.attname = ANY ($2)))
              -- referencing the tree from a partitioned table, or referencing
              -- a partition of it directly: the swap cannot put it back
              OR (con.confrelid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t)
                  AND (r.relkind = 'p' OR con.confrelid <> $1)
                  AND EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = con.confrelid
                                 AND a.attnum = ANY (con.confkey) AND a.attname = ANY ($2))))
          ORDER BY con.oid LIMIT 1",
        &[parent.into(), typed.to_vec().into()],
    )?;
    match found {
        None => Ok(()),
        Some(name) => Err(MigrateError::not_supported(
            "changing the type of a column of a partitioned table's foreign key",
            format!(
                "Foreign key \"{name}\" of {table} (or of a partitioned table referencing it, or \
                 referencing one of its partitions) uses a column whose type changes: the swap \
                 would have to add it back NOT VALID, which PostgreSQL does not allow there."
            ),
            "Drop the foreign key first (and add it back after, both through migrate.start()).",
        )),
    }
}

/// A column the ALTER adds with a sequence of its own (serial, identity)
/// would get one sequence per partition's shadow, and values that repeat.
fn refuse_own_sequences(leaf: u32, table: &QualifiedName, added: &[String]) -> Result<()> {
    let shadow = crate::plan::sqlgen::shadow_table(leaf).to_string();
    for col in added {
        let seq = spi::text(
            "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
            &[shadow.clone().into(), col.clone().into()],
        )?;
        if seq.is_some() {
            return Err(MigrateError::not_supported(
                "adding a serial or identity column in a rewrite of a partitioned table",
                format!(
                    "\"{col}\" would be numbered by each partition's copy on its own (first seen on {table})."
                ),
                "Add the column without the sequence, fill it, then make it an identity column.",
            ));
        }
    }
    Ok(())
}

/// The capture triggers on every partition, in one attempt within one
/// lock timeout (retried with back-off). The partitioned members are
/// locked too (SHARE UPDATE EXCLUSIVE: writes go on; ATTACH, DETACH and
/// CREATE TABLE … PARTITION OF wait), and the partitions read again under
/// those locks: the parts are every partition that holds rows, until the
/// DDL guard takes over when `start()` commits.
fn install_triggers(parent: Oid, parts: &[Part], timeout_ms: i32) -> Result<()> {
    let members: Vec<(QualifiedName, LockMode)> = catalog::tree::members_with_kind(parent)?
        .into_iter()
        .map(|m| {
            let mode = if m.partitioned {
                LockMode::ShareUpdateExclusive
            } else {
                LockMode::ShareRowExclusive
            };
            (m.name, mode)
        })
        .collect();
    let oids: Vec<Oid> = parts.iter().map(|p| p.oid).collect();
    locks::retry("install the capture triggers", timeout_ms, 50, || {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        locks::lock_each(&members, timeout_ms)?;
        check_partitions(parent, &oids)?;
        for p in parts {
            for sql in capture::trigger_sql(p.oid.to_u32(), &p.table) {
                spi::exec(&sql, &[])?;
            }
        }
        Ok(())
    })
}

/// Each part's copy range (read under the triggers' locks) and recipe; the
/// tree's row gets the ALTER for the swap and the sums.
fn record_recipes(
    id: i64,
    parts: &[Part],
    shadow_cmds: Vec<String>,
    typed: Vec<String>,
) -> Result<()> {
    let (mut blocks_all, mut rows_all, mut indexes) = (0, 0, Vec::new());
    for p in parts {
        let rows = p.rows;
        let (relfilenode, blocks) = spi::one(
            "SELECT c.relfilenode,
                    pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint
               FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[p.oid.into()],
            |r| Ok((get::<Oid>(r, 1)?, get::<i64>(r, 2)?)),
        )?;
        blocks_all += blocks;
        rows_all += rows;
        indexes.extend(p.recipe.index_sql.iter().cloned());
        state::set_rewrite_recipe(
            p.id,
            state::RewriteRecipe {
                relfilenode,
                copy_end: blocks,
                rows_total: rows,
                shadow_sql: shadow_cmds.clone(),
                swap_sql: vec![],
                post_swap_sql: vec![],
                recipe: p.recipe.clone(),
            },
        )?;
    }
    let first = parts.first().map(|p| p.recipe.clone()).unwrap_or_default();
    // The tree's columns whose type changes, from the plan: a tree without
    // partitions has no part to take them from.
    state::set_rewrite_recipe(
        id,
        state::RewriteRecipe {
            relfilenode: Oid::INVALID,
            copy_end: blocks_all,
            rows_total: rows_all,
            shadow_sql: shadow_cmds,
            swap_sql: vec![],
            post_swap_sql: vec![],
            recipe: Recipe {
                index_sql: indexes,
                altered_columns: typed,
                added_columns: first.added_columns,
                key_columns: first.key_columns,
                ..Recipe::default()
            },
        },
    )
}

/// The partition's rows: its statistics, or a count if it has none.
fn estimated_rows(oid: Oid, table: &QualifiedName) -> Result<i64> {
    let rows = spi::one(
        "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| get::<i64>(r, 1),
    )?;
    if rows >= 0 {
        return Ok(rows);
    }
    spi::with_all_rows(|| {
        spi::one(&format!("SELECT count(*) FROM ONLY {table}"), &[], |r| {
            get::<i64>(r, 1)
        })
    })
}

/// The tree's partitions are exactly the parts' (read under locks that
/// keep them so).
pub fn check_partitions(parent: Oid, parts: &[Oid]) -> Result<()> {
    let mut have: Vec<u32> = parts.iter().map(|p| p.to_u32()).collect();
    have.sort_unstable();
    let now: Vec<u32> = spi::select(
        "SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t
           JOIN pg_catalog.pg_class c ON c.oid = t.relid
          WHERE c.relkind <> 'p' ORDER BY t.relid",
        &[parent.into()],
        |r| Ok(get::<Oid>(r, 1)?.to_u32()),
    )?;
    if now == have {
        return Ok(());
    }
    Err(MigrateError::Internal(format!(
        "the partitions of the table changed while its rewrite was set up or under way \
         (partitions {now:?}, parts {have:?})"
    )))
}
