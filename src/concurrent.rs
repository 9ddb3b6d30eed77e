//! The concurrent strategy: ADD PRIMARY KEY / ADD UNIQUE without blocking
//! writes, as a unique index built `CONCURRENTLY` and then attached as the
//! constraint (`USING INDEX`, catalog-only).
//!
//! `start()` records the plan's statements in `index_sql` and launches the
//! worker, which runs them in order: `CREATE INDEX CONCURRENTLY` as a
//! top-level command ([`crate::toplevel`]), every other statement in a
//! transaction of its own under the migration's lock timeout, retried with
//! back-off. `indexes_built` counts the statements done; it commits after
//! each, so a failure or an abort knows where the plan stopped.
//!
//! Invariant: on failure or abort, an index this plan created that backs no
//! constraint yet (an invalid leftover of a failed build, or a ready index
//! not yet attached) is dropped. Statements already done that stand on their
//! own (a NOT NULL the plan set before a primary key) stay, and the error
//! says so.

use crate::catalog;
use crate::error::Result;
use crate::ident::QualifiedName;
use crate::locks;
use crate::plan::sqlgen;
use crate::spi::{self, get};
use crate::state::Migration;

/// Must this statement run as a top-level command (outside any function)?
pub fn needs_top_level(sql: &str) -> bool {
    sql.starts_with(sqlgen::CREATE_UNIQUE_INDEX_CONCURRENTLY)
}

/// One statement of the plan that may run in a transaction, under the
/// migration's lock timeout with retries.
pub fn run_statement(m: &Migration, sql: &str) -> Result<()> {
    spi::with_search_path(&m.search_path, || {
        locks::retry("run the ALTER", m.lock_timeout_ms, 100, || {
            spi::exec(sql, &[])
        })
    })
}

/// Drop the indexes this plan created that back no constraint.
pub fn cleanup(m: &Migration) -> Result<()> {
    let Some(table) = catalog::qualified_name(m.relid)? else {
        return Ok(());
    };
    for name in &m.concurrent_indexes {
        let orphan = spi::query(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                              JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                             WHERE i.indrelid = $1 AND c.relname = $2
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                                                WHERE k.conindid = c.oid))",
            &[m.relid.into(), name.clone().into()],
            |r| get::<bool>(r, 1),
        )?;
        if orphan.first().copied().unwrap_or(false) {
            let index = QualifiedName {
                schema: table.schema.clone(),
                name: crate::ident::Ident::new(name),
            };
            locks::retry("drop the unfinished index", m.lock_timeout_ms, 100, || {
                spi::exec(&format!("DROP INDEX IF EXISTS {index}"), &[])
            })?;
        }
    }
    Ok(())
}
