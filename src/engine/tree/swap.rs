//! The cut-over of a partitioned table's rewrite: one transaction for the
//! whole tree.
//!
//! 1. Lock the partitioned table and every partition under it in ACCESS
//!    EXCLUSIVE, parent first, then by depth and OID, all within one
//!    `lock_timeout` (never one timeout per partition); then the shadows.
//! 2. Check no partition was rewritten, and drain every partition's log.
//! 3. Take off the foreign keys that reference a changing column, the
//!    capture triggers, and the views and policies on changing columns.
//! 4. Give every partition empty storage and run the user's ALTER on the
//!    partitioned table: PostgreSQL applies it to the whole tree as a plain
//!    ALTER would — partitioned indexes and their attachments, constraints,
//!    names, grants, OIDs all as it leaves them — with no rows to rewrite.
//! 5. For each partition: check its new row layout and index set are its
//!    shadow's, exchange their storage, drop the shadow and the log.
//!
//! Any error rolls all of it back; the caller retries a lock timeout.

use crate::engine::state::{self, Migration, Phase};
use crate::engine::swap::{
    check_same_layout, index_pairs, put_back_foreign_keys, take_off_foreign_keys,
};
use crate::engine::{capture, copy, locks, replay, storage, views};
use crate::error::{MigrateError, Result};
use crate::pg::ident::QualifiedName;
use crate::pg::spi;
use crate::plan::model::LockMode;
use crate::plan::sqlgen;

/// A part and its partition's name.
pub struct Leaf<'a> {
    pub part: &'a Migration,
    pub table: QualifiedName,
}

/// Swap the whole tree. Returns the statements to run after it (VALIDATE).
pub fn swap(m: &Migration, table: &QualifiedName, leaves: &[Leaf]) -> Result<Vec<String>> {
    let all = locks::TreeLock {
        parent: LockMode::AccessExclusive,
        partitions: LockMode::AccessExclusive,
    };
    locks::lock_tree(m.relid, all, m.lock_timeout_ms)?;
    let parts: Vec<_> = leaves.iter().map(|l| l.part.relid).collect();
    super::setup::check_partitions(m.relid, &parts)?;
    for l in leaves {
        let shadow = sqlgen::shadow_table(l.part.relid.to_u32());
        spi::exec(
            &format!("LOCK TABLE {shadow} IN ACCESS EXCLUSIVE MODE"),
            &[],
        )?;
    }
    // Sessions whose transactions began before this point hold snapshots
    // that predate the swap (snapshots.rs).
    let locked_at =
        spi::text("SELECT pg_catalog.clock_timestamp()::text", &[])?.unwrap_or_default();
    for l in leaves {
        if l.part.phase.is_terminal() {
            return Err(MigrateError::Internal(format!(
                "partition {} of migration {} is {}",
                l.table,
                m.id,
                l.part.phase.as_str()
            )));
        }
        copy::check_not_rewritten(l.part)?;
        while replay::replay_batch(l.part, &l.table, 100_000)? > 0 {}
    }

    let _pass = crate::pg::ddl_pass::Pass::for_this_transaction();
    let fks = take_off_foreign_keys(m)?;
    for l in leaves {
        for sql in capture::drop_trigger_sql(l.part.relid.to_u32(), &l.table) {
            spi::exec(&sql, &[])?;
        }
    }
    // The views and policies on every member; a view on several members
    // comes off (and back) once.
    let mut saved = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for member in crate::catalog::tree::members_with_kind(m.relid)? {
        let mut s = views::save(member.oid, &m.altered_columns)?;
        s.views.retain(|v| seen.insert(v.name.to_string()));
        saved.push((member.name, s));
    }
    for (t, s) in &saved {
        views::drop_saved(t, s)?;
    }
    for l in leaves {
        storage::empty_storage(l.part.relid);
    }
    if !m.shadow_sql.is_empty() {
        spi::exec(&sqlgen::alter(table, &m.shadow_sql.join(", ")), &[])?;
    }
    for (t, s) in &saved {
        views::recreate(t, s)?;
    }
    for l in leaves {
        exchange(l)?;
    }

    let after = put_back_foreign_keys(&fks)?;
    state::tree::end_parts(m.id, Phase::Done)?;
    if m.snapshot_safe {
        // Writers queue behind the locks meanwhile: wait at most half the
        // lock timeout, then roll back and let them through.
        crate::engine::snapshots::wait_in_lock(
            m.relid,
            &locked_at,
            (m.lock_timeout_ms / 2).max(1),
            crate::engine::locks::CUTOVER_LOCK_KEY,
        )?;
    }
    Ok(after)
}

/// One partition takes its shadow's storage (rows, TOAST, indexes).
fn exchange(l: &Leaf) -> Result<()> {
    let oid = l.part.relid.to_u32();
    let shadow = sqlgen::shadow_table(oid);
    let shadow_oid = crate::catalog::relation_oid(&shadow.to_string())?;
    check_same_layout(l.part.relid, shadow_oid)?;
    let pairs = index_pairs(l.part.relid, shadow_oid)?;
    storage::swap_storage(l.part.relid, shadow_oid, true);
    storage::show_toast_to_decoding(l.part.relid);
    for (a, b) in pairs {
        storage::swap_storage(a, b, false);
    }
    spi::exec(&format!("DROP TABLE {shadow}"), &[])?;
    capture::drop_log(oid)?;
    storage::rename_toast(l.part.relid, None)
}
