//! Plans run statement by statement: the concurrent strategy (ADD PRIMARY
//! KEY / ADD UNIQUE as a unique index built `CONCURRENTLY`, then attached as
//! the constraint with `USING INDEX`) and the two-phase one (a constraint
//! added `NOT VALID`, then validated).
//!
//! `start()` records the plan's statements in `index_sql`, with what takes
//! each back in `undo_sql`. The worker runs them in order:
//! `CREATE INDEX CONCURRENTLY` as a top-level command ([`crate::pg::toplevel`]),
//! every other statement in a transaction of its own under the migration's
//! lock timeout, retried with back-off. Without a worker, `step()` runs one
//! statement per call. A validation never runs in the transaction that took
//! the ACCESS EXCLUSIVE lock of the `ADD … NOT VALID` before it: that is
//! what makes it online. `indexes_built` counts the statements done; it
//! commits after each, so a failure or an abort knows where the plan stopped.
//!
//! Invariant: on failure or abort, the statements already done are taken
//! back in reverse order ([`undo`]), and an index this plan created that
//! backs no constraint is dropped: the table ends as it was, as after a
//! failed ALTER TABLE.

use crate::catalog;
use crate::engine::locks;
use crate::engine::state::Migration;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::{parse, sqlgen};
use pgrx::PgSqlErrorCode;

/// Must this statement run as a top-level command (outside any function)?
pub fn needs_top_level(sql: &str) -> bool {
    sql.starts_with(sqlgen::CREATE_UNIQUE_INDEX_CONCURRENTLY)
}

/// Statement `i` of the plan, which may run in a transaction, under the
/// migration's lock timeout with retries.
pub fn run_statement(m: &Migration, i: usize) -> Result<()> {
    let sql = m.index_sql.get(i).map(String::as_str).unwrap_or_default();
    bounded(m, "run the ALTER", sql).map_err(|e| as_set_not_null_error(m, i, e))
}

/// `sql` under the migration's lock timeout, retried with back-off. An
/// ALTER of a partitioned table first locks its whole tree within one lock
/// timeout ([`locks::lock_tree`]).
fn bounded(m: &Migration, what: &str, sql: &str) -> Result<()> {
    let tree = tree_lock(m, sql)?;
    spi::with_search_path(&m.search_path, || {
        locks::retry(what, m.lock_timeout_ms, 100, || {
            if let Some(modes) = tree {
                locks::lock_tree(m.relid, modes, m.lock_timeout_ms)?;
            }
            spi::exec(sql, &[])
        })
    })
}

/// The lock to take on the whole tree before `sql`, if it alters the
/// migration's table and that table is partitioned.
fn tree_lock(m: &Migration, sql: &str) -> Result<Option<locks::TreeLock>> {
    if !catalog::is_partitioned(m.relid)? {
        return Ok(None);
    }
    match catalog::qualified_name(m.relid)? {
        Some(table) if sqlgen::alters(&table, sql) => {
            let subcommands = parse::parse_alter(&sql[sqlgen::alter(&table, "").len()..])?;
            Ok(Some(locks::TreeLock::of(sql, &subcommands)?))
        }
        _ => Ok(None),
    }
}

/// SET NOT NULL runs as a helper CHECK validated first: when the validation
/// finds a NULL, report what SET NOT NULL itself reports (23502), as a plain
/// ALTER would.
fn as_set_not_null_error(m: &Migration, i: usize, e: MigrateError) -> MigrateError {
    let column = m.not_null_of.get(i).filter(|c| !c.is_empty());
    match column {
        Some(column) if e.sqlstate() == PgSqlErrorCode::ERRCODE_CHECK_VIOLATION => {
            let relation = spi::text(
                "SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1",
                &[m.relid.into()],
            )
            .ok()
            .flatten()
            .unwrap_or_else(|| m.table_name.clone());
            MigrateError::NullsFound {
                column: column.clone(),
                relation,
            }
        }
        _ => e,
    }
}

thread_local! {
    /// The transaction (local id) and migration of the last `step()` here.
    static LAST_STEP: std::cell::Cell<Option<(u32, i64)>> = const { std::cell::Cell::new(None) };
}

/// `step()` without a worker: run the plan's next statement in the caller's
/// transaction. Refused for an index build, which cannot run in a function.
pub fn step(m: &Migration) -> Result<crate::engine::driver::Outcome> {
    use crate::engine::driver::Outcome;
    use crate::engine::state::{self, Phase};
    let i = m.indexes_built.max(0) as usize;
    let Some(sql) = m.index_sql.get(i) else {
        state::set_phase(m.id, Phase::Done)?;
        return Ok(Outcome::Finished(Phase::Done));
    };
    // One statement per transaction: a second call in the same transaction
    // would validate under the lock the first one's ADD … NOT VALID took.
    let here = (crate::pg::ddl_pass::local_xid(), m.id);
    if LAST_STEP.with(|c| c.replace(Some(here))) == Some(here) {
        return Ok(Outcome::Idle {
            ms: 0,
            note: "one statement per transaction: commit, then call migrate.step() again".into(),
        });
    }
    if needs_top_level(sql) {
        return Err(MigrateError::Internal(format!(
            "migration {} builds an index CONCURRENTLY: only its worker runs it",
            m.id
        )));
    }
    let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
    run_statement(m, i)?;
    state::record_index_built(m.id, None)?;
    if i + 1 >= m.index_sql.len() {
        state::set_phase(m.id, Phase::Done)?;
    }
    Ok(Outcome::Progress(sql.clone()))
}

/// Take back the statements of the plan that were done, in reverse order,
/// then drop any index it created that backs no constraint.
pub fn undo(m: &Migration) -> Result<()> {
    if catalog::qualified_name(m.relid)?.is_none() {
        return Ok(());
    }
    let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
    let done = (m.indexes_built.max(0) as usize).min(m.undo_sql.len());
    for sql in m.undo_sql[..done].iter().rev().filter(|s| !s.is_empty()) {
        bounded(m, "take a statement back", sql)?;
    }
    cleanup(m)
}

/// Drop the indexes this plan created that back no constraint. An index on
/// the table itself is recorded by its bare name (in the table's schema);
/// one on a partition by its schema-qualified name, so that an index of
/// the same name on another partition, in another schema, is never taken
/// for it.
pub fn cleanup(m: &Migration) -> Result<()> {
    if m.concurrent_indexes.is_empty() || catalog::qualified_name(m.relid)?.is_none() {
        return Ok(());
    }
    let candidates = spi::query(
        "SELECT n.nspname::text, c.relname::text,
                c.relnamespace = (SELECT t.relnamespace FROM pg_catalog.pg_class t WHERE t.oid = $1)
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE (i.indrelid = $1
                 OR i.indrelid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t))
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = c.oid)",
        &[m.relid.into()],
        |r| {
            Ok((
                get::<String>(r, 1)?,
                get::<String>(r, 2)?,
                get::<bool>(r, 3)?,
            ))
        },
    )?;
    for (schema, name, in_table_schema) in candidates {
        let index = QualifiedName::new(&schema, &name);
        let ours = m
            .concurrent_indexes
            .iter()
            .any(|entry| (in_table_schema && *entry == name) || *entry == index.to_string());
        if ours {
            locks::retry("drop the unfinished index", m.lock_timeout_ms, 100, || {
                spi::exec(&format!("DROP INDEX IF EXISTS {index}"), &[])
            })?;
        }
    }
    Ok(())
}
