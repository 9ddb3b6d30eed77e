//! The internal functions whose signature or name differs between the
//! PostgreSQL versions we build for (15 to 18), behind one name each, so
//! that the callers read the same on every version.
//!
//! Invariant: each function here does on every version what the PostgreSQL
//! 15 call it wraps does; the `cfg`s choose only the spelling.

use pgrx::pg_sys;

/// New, empty storage for an open relation (what TRUNCATE does inside a
/// transaction): `RelationSetNewRelfilenode`, renamed `…Relfilenumber` in
/// PostgreSQL 16.
///
/// # Safety
/// `rel` is a relation opened by the caller with ACCESS EXCLUSIVE, inside a
/// transaction.
pub unsafe fn set_new_storage(rel: pg_sys::Relation) {
    // SAFETY: the caller's contract; rd_rel is valid while rel is open.
    unsafe {
        let persistence = (*(*rel).rd_rel).relpersistence;
        #[cfg(feature = "pg15")]
        pg_sys::RelationSetNewRelfilenode(rel, persistence);
        #[cfg(not(feature = "pg15"))]
        pg_sys::RelationSetNewRelfilenumber(rel, persistence);
    }
}

/// Rebuild every index of `relid` (and of its TOAST table): PostgreSQL 17
/// added a leading `ReindexStmt` argument, NULL when not from a statement.
///
/// # Safety
/// Inside a transaction, with ACCESS EXCLUSIVE held on `relid`.
pub unsafe fn reindex_with_toast(relid: pg_sys::Oid) {
    let mut params = pg_sys::ReindexParams {
        options: 0,
        tablespaceOid: pg_sys::InvalidOid,
    };
    let flags = pg_sys::REINDEX_REL_PROCESS_TOAST as _;
    // SAFETY: the caller's contract; params lives across the call.
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        pg_sys::reindex_relation(relid, flags, &mut params);
        #[cfg(not(any(feature = "pg15", feature = "pg16")))]
        pg_sys::reindex_relation(std::ptr::null(), relid, flags, &mut params);
    }
}

/// Give a `pg_attribute` row the default statistics target. Up to
/// PostgreSQL 16 it is a field of the fixed part (-1: default); from 17 it
/// is a nullable field outside it, which a dropped column already has NULL.
///
/// # Safety
/// `att` points at a modifiable copy of a `pg_attribute` tuple's fixed part.
pub unsafe fn reset_statistics_target(att: *mut pg_sys::FormData_pg_attribute) {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    // SAFETY: the caller's contract.
    unsafe {
        (*att).attstattarget = -1
    };
    #[cfg(not(any(feature = "pg15", feature = "pg16")))]
    let _ = att;
}

/// Run a started query to its end: PostgreSQL 18 dropped `execute_once`.
///
/// # Safety
/// `qd` is a query descriptor after `ExecutorStart`.
pub unsafe fn executor_run_all(qd: *mut pg_sys::QueryDesc) {
    let forward = pg_sys::ScanDirection::ForwardScanDirection;
    // SAFETY: the caller's contract.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::ExecutorRun(qd, forward, 0, true);
        #[cfg(feature = "pg18")]
        pg_sys::ExecutorRun(qd, forward, 0);
    }
}

/// The executor's open relation for a range-table entry that is the
/// statement's result relation (PostgreSQL 18 asks which kind it is: result
/// relations are never pruned).
///
/// # Safety
/// `estate` is a started executor state and `rti` a result relation's index.
pub unsafe fn result_relation(estate: *mut pg_sys::EState, rti: pg_sys::Index) -> pg_sys::Relation {
    // SAFETY: the caller's contract.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        return pg_sys::ExecGetRangeTableRelation(estate, rti);
        #[cfg(feature = "pg18")]
        return pg_sys::ExecGetRangeTableRelation(estate, rti, true);
    }
}

/// Run a started portal to its end, as a top-level statement
/// (PostgreSQL 18 dropped `run_once`).
///
/// # Safety
/// `portal` is started; `dest` and `qc` are valid for the call.
pub unsafe fn portal_run_all(
    portal: pg_sys::Portal,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let all = std::ffi::c_long::MAX;
    // SAFETY: the caller's contract.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::PortalRun(portal, all, true, true, dest, dest, qc);
        #[cfg(feature = "pg18")]
        pg_sys::PortalRun(portal, all, true, dest, dest, qc);
    }
}

/// Exchange the count of all-frozen pages of two `pg_class` rows, a field
/// PostgreSQL 18 added (as its own `swap_relation_files` does); nothing
/// before 18.
///
/// # Safety
/// Both point at modifiable copies of `pg_class` tuples' fixed parts.
pub unsafe fn swap_all_frozen(
    a: *mut pg_sys::FormData_pg_class,
    b: *mut pg_sys::FormData_pg_class,
) {
    #[cfg(feature = "pg18")]
    // SAFETY: the caller's contract.
    unsafe {
        std::mem::swap(&mut (*a).relallfrozen, &mut (*b).relallfrozen)
    };
    #[cfg(not(feature = "pg18"))]
    let _ = (a, b);
}

/// What an `ALTER CONSTRAINT` subcommand's node says: the constraint it
/// names, and whether it makes the constraint ENFORCED. PostgreSQL 18 gave
/// the subcommand a node of its own (`ATAlterConstraint`) and the
/// ENFORCED clause, which validates the constraint by scanning the table
/// under ACCESS EXCLUSIVE; before 18 the node is a `Constraint`.
///
/// # Safety
/// `def` is the `def` of an `AT_AlterConstraint` `AlterTableCmd` from the
/// parser.
pub unsafe fn altered_constraint(def: *mut pg_sys::Node) -> (*const std::ffi::c_char, bool) {
    // SAFETY: the caller's contract: the node is of the type the cfg names.
    unsafe {
        #[cfg(feature = "pg18")]
        {
            let a = def as *mut pg_sys::ATAlterConstraint;
            ((*a).conname, (*a).alterEnforceability && (*a).is_enforced)
        }
        #[cfg(not(feature = "pg18"))]
        {
            ((*(def as *mut pg_sys::Constraint)).conname, false)
        }
    }
}
