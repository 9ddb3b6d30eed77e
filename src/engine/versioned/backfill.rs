//! The expand phase's long work, one unit per call: backfill batches, then
//! the validations; then the contract when `finish()` asks for it.
//!
//! Invariants: each unit is one short transaction whose lock waits (the
//! table's, and its rows') are bounded by the migration's lock timeout; a
//! unit that does not get its locks in time, or meets a deadlock, is tried
//! again later, not failed. Progress (`copy_next`) commits with the batch,
//! so a crash resumes where the last batch committed.

use super::contract;
use crate::catalog::{self, versioned as cat};
use crate::engine::driver::{Cutover, Outcome};
use crate::engine::locks;
use crate::engine::state::{self, versioned as vstate, Migration, Phase};
use crate::engine::throttle;
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi::{self, get};
use crate::plan::sqlgen;
use pgrx::pg_sys::Oid;

/// One unit of a versioned migration's work: a backfill batch, a
/// validation, or (when wanted) the contract.
pub fn step(m: &Migration, cutover: Cutover) -> Result<Outcome> {
    let table = catalog::qualified_name(m.relid)?.ok_or_else(|| {
        MigrateError::Internal(format!("table of migration {} no longer exists", m.id))
    })?;
    if cutover == Cutover::Now && m.phase != Phase::Ready {
        // finish() would otherwise backfill in its own transaction, holding
        // every filled row's lock until it commits.
        return Err(MigrateError::NotExpanded {
            id: m.id,
            table: table.to_string(),
        });
    }
    spi::with_search_path(&m.search_path.clone(), || match m.phase {
        Phase::Copying => backfill_step(m, &table),
        Phase::Indexing => validate_step(m, &table),
        Phase::Ready => contract::contract_or_rest(m, &table, cutover),
        p => Ok(Outcome::Finished(p)),
    })
}

/// Touch the rows of the next heap blocks (of every leaf) that need a
/// value; the trigger computes it. Rows written since start() were filled
/// by the trigger already.
fn backfill_step(m: &Migration, table: &QualifiedName) -> Result<Outcome> {
    if let Some(note) = throttle::hold(m)? {
        return Ok(Outcome::Idle { ms: 1000, note });
    }
    let leaves = cat::extent(m.relid)?.leaves.max(1) as f64;
    let density = rows_per_block(m.relid, table)?;
    let blocks = ((m.batch_rows as f64 / (density * leaves)).ceil() as i64).max(1);
    let from = m.copy_next;
    let to = (from + blocks).min(m.copy_end);
    let rest = vstate::load(m.id)?
        .and_then(|v| v.backfill_sql)
        .ok_or_else(|| MigrateError::Internal(format!("migration {} has no backfill", m.id)))?;
    let sql = format!("UPDATE {table} {rest}");
    let t0 = std::time::Instant::now();
    let range = [format!("({from},0)"), format!("({to},0)")];
    let rows = match locks::once("backfill", m.lock_timeout_ms, || {
        spi::exec_count(&sql, &[range[0].as_str().into(), range[1].as_str().into()])
    }) {
        Ok(rows) => rows,
        Err(e) if retried_later(&e) => {
            return Ok(Outcome::Idle {
                ms: 200,
                note: format!("backfill of blocks {from} to {to} waits: {e}"),
            })
        }
        Err(e) => return Err(e),
    };
    let took_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let done = to >= m.copy_end;
    let phase = match (done, m.index_sql.is_empty()) {
        (false, _) => Phase::Copying,
        (true, false) => Phase::Indexing,
        (true, true) => Phase::Ready,
    };
    let batch_rows = throttle::adapt_batch_rows(m.batch_rows, took_ms, m.target_batch_ms);
    state::record_copy_batch(m.id, rows, to, phase, batch_rows)?;
    if phase == Phase::Ready {
        vstate::set_expanded(m.id)?;
    }
    let note = format!(
        "filled {rows} rows (heap blocks {from} to {to} of {})",
        m.copy_end
    );
    Ok(if m.batch_pause_ms > 0 {
        Outcome::Idle {
            ms: m.batch_pause_ms as u64,
            note,
        }
    } else {
        Outcome::Progress(note)
    })
}

/// A lock not had within the lock timeout, a deadlock with the
/// application, or a row that a concurrent update moved to another
/// partition (40001): the unit rolled back and is tried again.
fn retried_later(e: &MigrateError) -> bool {
    use pgrx::PgSqlErrorCode::*;
    locks::is_lock_timeout(e)
        || matches!(
            e.sqlstate(),
            ERRCODE_T_R_DEADLOCK_DETECTED | ERRCODE_T_R_SERIALIZATION_FAILURE
        )
}

/// Validate the next check (SHARE UPDATE EXCLUSIVE: writes go on).
fn validate_step(m: &Migration, table: &QualifiedName) -> Result<Outcome> {
    let i = m.indexes_built.max(0) as usize;
    let Some(sub) = m.index_sql.get(i) else {
        vstate::set_expanded(m.id)?;
        return Ok(Outcome::Progress("expanded".into()));
    };
    let sql = sqlgen::alter(table, sub);
    crate::pg::activity::announce(&format!("validating: {sql}"));
    let done = {
        let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
        locks::once("validate a check", m.lock_timeout_ms, || {
            spi::exec(&sql, &[])
        })
    };
    match done {
        Ok(()) => {}
        Err(e) if retried_later(&e) => {
            return Ok(Outcome::Idle {
                ms: 200,
                note: format!("{sql} waits: {e}"),
            })
        }
        Err(e) => return Err(e),
    }
    let last = i + 1 >= m.index_sql.len();
    state::record_index_built(m.id, last.then_some(Phase::Ready))?;
    if last {
        vstate::set_expanded(m.id)?;
    }
    Ok(Outcome::Progress(sql))
}

/// Rows per heap block of a leaf: from the statistics, or (never analyzed)
/// counted in the leaves' first blocks, which costs a few block reads.
pub fn rows_per_block(oid: Oid, table: &QualifiedName) -> Result<f64> {
    let extent = cat::extent(oid)?;
    if extent.known {
        return Ok(extent.density);
    }
    let sampled = spi::one(
        &format!("SELECT count(*) FROM {table} WHERE ctid < '(16,0)'::tid"),
        &[],
        |r| get::<i64>(r, 1),
    )?;
    let read = (extent.blocks.clamp(1, 16) * extent.leaves.max(1)) as f64;
    Ok((sampled as f64 / read).max(1.0))
}
