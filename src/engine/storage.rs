//! Storage-level operations of the swap: what SQL cannot express.
//!
//! The swap keeps the original table's OID, and so every catalog entry that
//! points at it (grants, comments, triggers, policies, foreign keys, views,
//! publications, sequences, replica identity, …). Only its storage changes:
//!
//! 1. [`empty_storage`] gives the table new empty files, the way TRUNCATE
//!    does inside a transaction, but fires no trigger and logs no TRUNCATE for
//!    logical decoding. The user's ALTER then runs on the empty table (cheap).
//! 2. [`swap_storage`] exchanges the files of the table and the shadow (and of
//!    each pair of indexes) in `pg_class`, as pg_repack and CLUSTER do.
//!
//! Invariants: callers hold ACCESS EXCLUSIVE on every relation passed here;
//! everything is transactional (new files are dropped at abort, old ones at
//! commit); the caller has checked that the two relations have the same
//! physical row layout before swapping.

use crate::pg::compat;
use crate::pg::rel::Rel;
use pgrx::pg_sys;
use pgrx::pg_sys::Oid;
use pgrx::IntoDatum;

/// New, empty storage for `relid`, its TOAST table and all their indexes.
pub fn empty_storage(relid: Oid) {
    // SAFETY: called inside a transaction; relation_open takes (or re-takes)
    // ACCESS EXCLUSIVE, so no other backend uses the relation; the Relation
    // pointers are used only while open. This is TRUNCATE's transactional
    // path (ExecuteTruncateGuts) without triggers and logical-decoding records.
    unsafe {
        let toast = {
            let rel = Rel::open(relid, pg_sys::AccessExclusiveLock);
            let r = rel.get();
            compat::set_new_storage(r);
            (*(*r).rd_rel).reltoastrelid
        };
        if toast != pg_sys::InvalidOid {
            let t = Rel::open(toast, pg_sys::AccessExclusiveLock);
            compat::set_new_storage(t.get());
        }
        compat::reindex_with_toast(relid);
        pg_sys::CommandCounterIncrement();
    }
}

/// Exchange the storage of two relations of the same kind in `pg_class`:
/// files, tablespace, size statistics and freeze horizons. With `toast_links`
/// (heaps), the TOAST tables change owner too: TOAST pointers inside the rows
/// name their TOAST table by OID, so the TOAST table must follow the rows.
pub fn swap_storage(r1: Oid, r2: Oid, toast_links: bool) {
    // SAFETY: inside a transaction, with ACCESS EXCLUSIVE held on both
    // relations by the caller. The tuples are palloc'd copies from the
    // syscache, modified and written back with CatalogTupleUpdate (which
    // registers the relcache invalidations); pg_class is opened and closed
    // here with RowExclusiveLock, as cluster.c's swap_relation_files does.
    unsafe {
        let class = Rel::open_catalog(pg_sys::RelationRelationId, pg_sys::RowExclusiveLock);
        let t1 = class_tuple(r1);
        let t2 = class_tuple(r2);
        let f1 = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(t1);
        let f2 = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(t2);
        assert_eq!(
            (*f1).relkind,
            (*f2).relkind,
            "swap_storage: relations of different kinds"
        );
        std::mem::swap(&mut (*f1).relfilenode, &mut (*f2).relfilenode);
        std::mem::swap(&mut (*f1).reltablespace, &mut (*f2).reltablespace);
        std::mem::swap(&mut (*f1).relpages, &mut (*f2).relpages);
        std::mem::swap(&mut (*f1).reltuples, &mut (*f2).reltuples);
        std::mem::swap(&mut (*f1).relallvisible, &mut (*f2).relallvisible);
        compat::swap_all_frozen(f1, f2);
        std::mem::swap(&mut (*f1).relfrozenxid, &mut (*f2).relfrozenxid);
        std::mem::swap(&mut (*f1).relminmxid, &mut (*f2).relminmxid);
        if toast_links {
            std::mem::swap(&mut (*f1).reltoastrelid, &mut (*f2).reltoastrelid);
        }
        pg_sys::CatalogTupleUpdate(class.get(), &mut (*t1).t_self, t1);
        pg_sys::CatalogTupleUpdate(class.get(), &mut (*t2).t_self, t2);
        if toast_links {
            let pairs = [((*f1).reltoastrelid, r1), ((*f2).reltoastrelid, r2)];
            for (toast, _) in pairs {
                if toast != pg_sys::InvalidOid {
                    pg_sys::deleteDependencyRecordsFor(pg_sys::RelationRelationId, toast, false);
                }
            }
            for (toast, owner) in pairs {
                if toast != pg_sys::InvalidOid {
                    let toast_obj = address(toast);
                    let owner_obj = address(owner);
                    pg_sys::recordDependencyOn(
                        &toast_obj,
                        &owner_obj,
                        pg_sys::DependencyType::DEPENDENCY_INTERNAL,
                    );
                }
            }
        }
        pg_sys::heap_freetuple(t1);
        pg_sys::heap_freetuple(t2);
        pg_sys::CommandCounterIncrement();
    }
}

/// Mark `relid` and its TOAST table as a transient heap of a rewrite of
/// `of` (`pg_class.relrewrite`), as PostgreSQL marks the new heap of its own
/// rewriting ALTER TABLE: logical decoding then skips every change to them,
/// so a publication (even `FOR ALL TABLES`) never sends them to a
/// subscriber. Nothing else in PostgreSQL reads the column. The swap moves
/// only the storage, so the table itself keeps `relrewrite = 0`.
pub fn hide_from_decoding(relid: Oid, of: Oid) {
    set_relrewrite(relid, of, true);
}

/// After the swap the table owns the shadow's TOAST table, which was hidden
/// from decoding: show it again, or the chunks of every large value written
/// from now on would be skipped, and subscribers would get NULLs.
pub fn show_toast_to_decoding(relid: Oid) {
    // SAFETY: inside a transaction, ACCESS EXCLUSIVE held on `relid` by the
    // swap; a syscache copy is read and freed.
    let toast = unsafe {
        let t = class_tuple(relid);
        let toast = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(t)).reltoastrelid;
        pg_sys::heap_freetuple(t);
        toast
    };
    if toast != pg_sys::InvalidOid {
        set_relrewrite(toast, pg_sys::InvalidOid, false);
    }
}

/// Set `relrewrite` of `relid` (and, with `with_toast`, of its TOAST table).
fn set_relrewrite(relid: Oid, of: Oid, with_toast: bool) {
    // SAFETY: inside a transaction; the caller created `relid` in it (or
    // holds a lock on it that excludes concurrent DDL). The pg_class tuples
    // are palloc'd copies written back with CatalogTupleUpdate, which
    // registers the relcache invalidations; pg_class is opened and closed
    // here with RowExclusiveLock.
    unsafe {
        let class = Rel::open_catalog(pg_sys::RelationRelationId, pg_sys::RowExclusiveLock);
        let mut next = Some(relid);
        while let Some(r) = next.take() {
            let t = class_tuple(r);
            let f = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(t);
            (*f).relrewrite = of;
            if with_toast && (*f).reltoastrelid != pg_sys::InvalidOid && r == relid {
                next = Some((*f).reltoastrelid);
            }
            pg_sys::CatalogTupleUpdate(class.get(), &mut (*t).t_self, t);
            pg_sys::heap_freetuple(t);
        }
        pg_sys::CommandCounterIncrement();
    }
}

/// Rename a relation without permission checks (TOAST tables and their
/// indexes, which SQL cannot rename): used to give the swapped-in TOAST table
/// the name PostgreSQL expects, `pg_toast_<table oid>`.
pub fn rename_internal(relid: Oid, name: &str, is_index: bool) {
    let cname = std::ffi::CString::new(name).expect("relation names have no NUL");
    // SAFETY: inside a transaction; the relation exists and the caller holds
    // ACCESS EXCLUSIVE on its owning table; `cname` outlives the call.
    unsafe {
        pg_sys::RenameRelationInternal(relid, cname.as_ptr(), true, is_index);
        pg_sys::CommandCounterIncrement();
    }
}

/// A palloc'd copy of the relation's pg_class tuple.
///
/// # Safety
/// Must be called inside a transaction (the syscache lookup needs one).
unsafe fn class_tuple(relid: Oid) -> pg_sys::HeapTuple {
    let key = relid.into_datum().expect("an Oid is never NULL");
    let zero = pg_sys::Datum::from(0usize);
    // SAFETY: guaranteed by the caller (# Safety above).
    let tuple = unsafe {
        pg_sys::SearchSysCacheCopy(
            pg_sys::SysCacheIdentifier::RELOID as _,
            key,
            zero,
            zero,
            zero,
        )
    };
    assert!(
        !tuple.is_null(),
        "cache lookup failed for relation {}",
        relid.to_u32()
    );
    tuple
}

fn address(relid: Oid) -> pg_sys::ObjectAddress {
    pg_sys::ObjectAddress {
        classId: pg_sys::RelationRelationId,
        objectId: relid,
        objectSubId: 0,
    }
}

/// The TOAST table that came with the shadow's rows gets the name
/// PostgreSQL gives the table's TOAST table (or `temporary`, to free that
/// name for a moment).
pub fn rename_toast(relid: Oid, temporary: Option<&str>) -> crate::error::Result<()> {
    let toast = crate::pg::spi::query(
        "SELECT c.reltoastrelid, (SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = c.reltoastrelid LIMIT 1)
           FROM pg_catalog.pg_class c WHERE c.oid = $1 AND c.reltoastrelid <> 0",
        &[relid.into()],
        |r| Ok((crate::pg::spi::get::<Oid>(r, 1)?, r.get::<Oid>(2)?)),
    )?;
    if let Some((t, idx)) = toast.into_iter().next() {
        let name = temporary.map_or_else(|| format!("pg_toast_{}", relid.to_u32()), str::to_string);
        rename_internal(t, &name, false);
        if let Some(i) = idx {
            rename_internal(i, &format!("{name}_index"), true);
        }
    }
    Ok(())
}
