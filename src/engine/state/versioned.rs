//! The rows of versioned (expand/contract) migrations: their version, the
//! statements that take the expand phase back, the contract, and the move
//! to *expanded* (phase `ready`), where no worker is needed any more.
//!
//! Invariant: a versioned migration in phase `ready` has no worker and is
//! not `background`: `finish()` contracts it in its own transaction, and
//! the resumer leaves it alone.

use super::update;
use crate::error::Result;
use crate::pg::spi::{self, get};

/// What a versioned migration's row holds beyond an ordinary one's.
#[derive(Clone, Debug)]
pub struct Versioned {
    pub version: String,
    pub version_schema: String,
    pub expand_undo: Vec<String>,
    pub contract_sql: Vec<String>,
    /// One batch of the backfill (`$1`, `$2`: the heap block range as tids).
    pub backfill_sql: Option<String>,
}

/// Record the versioned parts of new migration `id`: its version, `up`,
/// the expand phase's undo, the validations (`index_sql`), the contract,
/// and the backfill's extent (heap blocks, estimated rows).
#[allow(clippy::too_many_arguments)]
pub fn record(
    id: i64,
    v: &Versioned,
    up: Option<String>,
    validate_sql: &[String],
    blocks: i64,
    rows: i64,
) -> Result<()> {
    update(
        id,
        "version = $2, version_schema = $3, up_sql = $4::jsonb, expand_undo = $5, contract_sql = $6,
         index_sql = $7, copy_end = $8, rows_total = $9, backfill_sql = $10",
        vec![
            v.version.clone().into(),
            v.version_schema.clone().into(),
            up.into(),
            v.expand_undo.clone().into(),
            v.contract_sql.clone().into(),
            validate_sql.to_vec().into(),
            blocks.into(),
            rows.into(),
            v.backfill_sql.clone().into(),
        ],
    )
}

pub fn load(id: i64) -> Result<Option<Versioned>> {
    spi::opt(
        "SELECT version, version_schema, expand_undo, contract_sql, backfill_sql
           FROM migrate.migrations WHERE id = $1 AND version IS NOT NULL",
        &[id.into()],
        |r| {
            Ok(Versioned {
                version: get(r, 1)?,
                version_schema: get(r, 2)?,
                expand_undo: get(r, 3)?,
                contract_sql: get(r, 4)?,
                backfill_sql: r.get(5)?,
            })
        },
    )
}

/// Expanded: phase `ready`, driven by nobody until `finish()` or `abort()`.
pub fn set_expanded(id: i64) -> Result<()> {
    update(
        id,
        "phase = 'ready', background = false, worker_pid = NULL",
        vec![],
    )
}

/// Another migration (not failed or aborted) whose version schema is
/// `schema`: (id, table, live) — live: not ended yet.
pub fn other_user_of_schema(schema: &str, id: i64) -> Result<Option<(i64, String, bool)>> {
    spi::opt(
        "SELECT id, table_name, phase NOT IN ('done', 'failed', 'aborted')
           FROM migrate.migrations
          WHERE version_schema = $1 AND id <> $2 AND phase NOT IN ('failed', 'aborted')
          ORDER BY phase NOT IN ('done', 'failed', 'aborted') DESC, id DESC LIMIT 1",
        &[schema.into(), id.into()],
        |r| Ok((get(r, 1)?, get(r, 2)?, get(r, 3)?)),
    )
}

/// The version schemas of this table's earlier, contracted migrations.
pub fn earlier_schemas_of_table(relid: pgrx::pg_sys::Oid, id: i64) -> Result<Vec<String>> {
    spi::query(
        "SELECT DISTINCT version_schema FROM migrate.migrations
          WHERE relid = $1 AND id < $2 AND version_schema IS NOT NULL AND phase = 'done'",
        &[relid.into(), id.into()],
        |r| get(r, 1),
    )
}

/// A live migration other than `id` whose version schema is `schema`.
pub fn other_user_live(schema: &str, id: i64) -> Result<Option<(i64, String)>> {
    spi::opt(
        "SELECT id, table_name FROM migrate.migrations
          WHERE version_schema = $1 AND id <> $2 AND phase NOT IN ('done', 'failed', 'aborted')
          ORDER BY id LIMIT 1",
        &[schema.into(), id.into()],
        |r| Ok((get(r, 1)?, get(r, 2)?)),
    )
}

/// Every version schema of a migration the caller may see (not failed or
/// aborted).
pub fn all_schemas() -> Result<Vec<String>> {
    spi::query(
        "SELECT DISTINCT version_schema FROM migrate.migrations
          WHERE version_schema IS NOT NULL AND phase NOT IN ('failed', 'aborted')",
        &[],
        |r| get(r, 1),
    )
}
