//! The copy's fast path: run a batch's `INSERT INTO shadow … SELECT …`
//! with multi-row heap inserts, as `COPY FROM` does, instead of one
//! `heap_insert` (and one WAL record) per row.
//!
//! The statement is parsed, analysed and planned exactly as SPI would plan
//! it, so the rows are computed by PostgreSQL's own INSERT target list:
//! assignment casts, USING expressions, defaults of added columns, identity
//! values and NULLs for dropped columns. Only the `ModifyTable` node is
//! replaced: its input plan runs as a query whose rows go to a receiver that
//! does what `ExecInsert` would do for the shadow — compute stored generated
//! columns, check NOT NULL and CHECK constraints (same errors, same SQLSTATEs)
//! — and hands them to the table AM's `multi_insert` a thousand at a time,
//! with a bulk-insert state and without free-space-map lookups.
//!
//! Invariant: the fast path is taken only when ExecInsert would do nothing
//! more than that — the shadow is a plain table with no index, trigger, rule,
//! row security check, RETURNING or ON CONFLICT, and the plan has no
//! init-plans. Otherwise [`insert_select`] returns `None` and the caller runs
//! the statement through SPI. Rows are never inserted frozen: a batch that
//! fails rolls back like any INSERT.

use crate::error::Result;
use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use std::ffi::CString;

/// Rows buffered before each `multi_insert` call (COPY FROM uses 1000).
const MAX_BUFFERED_ROWS: usize = 1000;
/// Bytes buffered before each call, so wide rows do not pile up in memory.
const MAX_BUFFERED_BYTES: usize = 1 << 20;

// executor/nodeModifyTable.h, which pgrx does not bind; called only
// through `pg_guard_ffi_boundary`.
unsafe extern "C-unwind" {
    fn ExecComputeStoredGenerated(
        rri: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        slot: *mut pg_sys::TupleTableSlot,
        cmdtype: pg_sys::CmdType::Type,
    );
}

/// Run `sql` — a single `INSERT INTO <table> (…) SELECT …` with bigint
/// parameters `args` — on the fast path. `None`: the path does not apply
/// (nothing was done); run it through SPI instead.
pub fn insert_select(sql: &str, args: &[i64]) -> Result<Option<u64>> {
    let csql = CString::new(sql).map_err(|_| {
        crate::error::MigrateError::Internal("statement text contains a NUL byte".into())
    })?;
    // SAFETY: called in a transaction (a migration step), on the backend's
    // main thread. Every pg_sys call below is guarded by pgrx, so an ERROR
    // unwinds through here as a panic and the transaction's abort releases
    // what the executor holds (snapshot, buffer pins, relations, memory).
    unsafe {
        pg_sys::CommandCounterIncrement();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let params = int8_params(args);
        let out = plan(&csql, args.len(), params).map(|stmt| run(stmt, &csql, params));
        pg_sys::PopActiveSnapshot();
        pg_sys::CommandCounterIncrement();
        Ok(out)
    }
}

/// A parameter list of constant bigints, in the current memory context.
///
/// # Safety
/// In a transaction, with a current memory context.
unsafe fn int8_params(args: &[i64]) -> pg_sys::ParamListInfo {
    // SAFETY: makeParamList allocates room for args.len() entries, which the
    // loop fills in full.
    unsafe {
        let params = pg_sys::makeParamList(args.len() as i32);
        let slots = (*params).params.as_mut_slice(args.len());
        for (slot, v) in slots.iter_mut().zip(args) {
            *slot = pg_sys::ParamExternData {
                value: pg_sys::Datum::from(*v),
                isnull: false,
                pflags: pg_sys::PARAM_FLAG_CONST as u16,
                ptype: pg_sys::INT8OID,
            };
        }
        params
    }
}

/// Plan `sql` and, if the fast path applies, turn the plan into the query
/// that computes the rows to insert. Returns it with the shadow's range
/// table index.
///
/// # Safety
/// In a transaction with an active snapshot.
unsafe fn plan(
    sql: &CString,
    nargs: usize,
    params: pg_sys::ParamListInfo,
) -> Option<(*mut pg_sys::PlannedStmt, pg_sys::Index)> {
    // SAFETY: the parse, analysis and plan trees are fresh nodes in the
    // current memory context; we only read them and repoint fields of the
    // PlannedStmt we own.
    unsafe {
        let raw = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(sql.as_ptr()));
        if raw.len() != 1 {
            return None;
        }
        let types = vec![pg_sys::INT8OID; nargs];
        let queries =
            pgrx::PgList::<pg_sys::Query>::from_pg(pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw.get_ptr(0)?,
                sql.as_ptr(),
                types.as_ptr(),
                nargs as i32,
                std::ptr::null_mut(),
            ));
        if queries.len() != 1 {
            return None; // a rule rewrote the INSERT
        }
        let stmt = pg_sys::pg_plan_query(queries.get_ptr(0)?, sql.as_ptr(), 0, params);
        let top = (*stmt).planTree;
        if top.is_null() || (*top).type_ != pg_sys::NodeTag::T_ModifyTable {
            return None;
        }
        let mt = top as *mut pg_sys::ModifyTable;
        if (*mt).operation != pg_sys::CmdType::CMD_INSERT
            || !(*top).initPlan.is_null()
            || (*top).lefttree.is_null()
            || !(*mt).returningLists.is_null()
            || !(*mt).withCheckOptionLists.is_null()
            || (*mt).onConflictAction != pg_sys::OnConflictAction::ONCONFLICT_NONE
            || pgrx::PgList::<std::ffi::c_void>::from_pg((*mt).resultRelations).len() != 1
        {
            return None;
        }
        let rti = (*mt).nominalRelation;
        let rte = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg((*stmt).rtable)
            .get_ptr(rti as usize - 1)?;
        if !plain_target((*rte).relid) {
            return None;
        }
        (*stmt).commandType = pg_sys::CmdType::CMD_SELECT;
        (*stmt).planTree = (*top).lefttree;
        (*stmt).resultRelations = std::ptr::null_mut();
        (*stmt).hasReturning = false;
        Some((stmt, rti))
    }
}

/// Is `relid` a plain table whose inserts need nothing but the heap: no
/// index, no trigger, no row security?
///
/// # Safety
/// In a transaction that already holds a lock on `relid`.
unsafe fn plain_target(relid: pg_sys::Oid) -> bool {
    // SAFETY: the parser locked the INSERT's target; NoLock opens it again.
    unsafe {
        let opened = crate::pg::rel::Rel::open(relid, pg_sys::NoLock);
        let rel = opened.get();
        let form = &*(*rel).rd_rel;
        form.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && !form.relrowsecurity
            && (*rel).trigdesc.is_null()
            && (*rel).rd_rules.is_null()
            && pg_sys::RelationGetIndexList(rel).is_null()
            && !(*rel).rd_tableam.is_null()
            && (*(*rel).rd_tableam).multi_insert.is_some()
    }
}

/// The receiver's state. `base` comes first, so the executor's
/// `DestReceiver *` is a pointer to the whole.
#[repr(C)]
struct Receiver {
    base: pg_sys::DestReceiver,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    rel: pg_sys::Relation,
    cid: pg_sys::CommandId,
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    buffered: usize,
    bytes: usize,
    inserted: u64,
}

/// Execute the row-computing query, inserting what it returns.
///
/// # Safety
/// `stmt` comes from [`plan`], in this transaction, with the snapshot
/// pushed by [`insert_select`] still active.
unsafe fn run(
    (stmt, rti): (*mut pg_sys::PlannedStmt, pg_sys::Index),
    sql: &CString,
    params: pg_sys::ParamListInfo,
) -> u64 {
    let mut recv = Box::new(Receiver {
        base: pg_sys::DestReceiver {
            receiveSlot: Some(receive_slot),
            rStartup: Some(startup),
            rShutdown: Some(shutdown),
            rDestroy: Some(destroy),
            mydest: pg_sys::CommandDest::DestNone,
        },
        estate: std::ptr::null_mut(),
        rri: std::ptr::null_mut(),
        rel: std::ptr::null_mut(),
        cid: 0,
        slots: Vec::new(),
        buffered: 0,
        bytes: 0,
        inserted: 0,
    });
    // SAFETY: the query descriptor, estate and result-relation info live in
    // executor memory until ExecutorEnd/FreeQueryDesc below; the receiver
    // (boxed, so it does not move) outlives them. The shadow was opened by
    // the executor (ExecGetRangeTableRelation) and is closed by ExecutorEnd,
    // after our slots on its descriptor are dropped.
    unsafe {
        let dest = &mut recv.base as *mut pg_sys::DestReceiver;
        let qd = pg_sys::CreateQueryDesc(
            stmt,
            sql.as_ptr(),
            pg_sys::GetActiveSnapshot(),
            std::ptr::null_mut(),
            dest,
            params,
            std::ptr::null_mut(),
            0,
        );
        pg_sys::ExecutorStart(qd, 0);
        let estate = (*qd).estate;
        recv.estate = estate;
        recv.rel = crate::pg::compat::result_relation(estate, rti);
        recv.rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast();
        pg_sys::InitResultRelInfo(recv.rri, recv.rel, rti, std::ptr::null_mut(), 0);
        recv.cid = pg_sys::GetCurrentCommandId(true);

        crate::pg::compat::executor_run_all(qd);
        pg_sys::ExecutorFinish(qd);

        for slot in recv.slots.drain(..) {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
        if let Some(finish) = (*(*recv.rel).rd_tableam).finish_bulk_insert {
            let rel = recv.rel;
            pg_guard_ffi_boundary(|| finish(rel, pg_sys::TABLE_INSERT_SKIP_FSM as i32));
        }
        pg_sys::ExecutorEnd(qd);
        pg_sys::FreeQueryDesc(qd);
    }
    recv.inserted
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup(
    _recv: *mut pg_sys::DestReceiver,
    _operation: std::ffi::c_int,
    _typeinfo: pg_sys::TupleDesc,
) {
}

/// One row from the plan: complete it, check it, buffer it.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn receive_slot(
    slot: *mut pg_sys::TupleTableSlot,
    recv: *mut pg_sys::DestReceiver,
) -> bool {
    // SAFETY: `recv` is the `base` of the boxed Receiver set up in `run`
    // (repr(C), base first). The executor hands us a filled slot of the
    // INSERT's target-list shape, which is the shadow's row type.
    unsafe {
        let r = &mut *(recv as *mut Receiver);
        if r.buffered == r.slots.len() {
            r.slots.push(pg_sys::MakeSingleTupleTableSlot(
                (*r.rel).rd_att,
                &pg_sys::TTSOpsHeapTuple,
            ));
        }
        let dst = r.slots[r.buffered];
        let copy = (*(*dst).tts_ops).copyslot.expect("slot ops copyslot");
        pg_guard_ffi_boundary(|| copy(dst, slot));

        let per_tuple = (*r.estate).es_per_tuple_exprcontext;
        if !per_tuple.is_null() {
            pg_sys::MemoryContextReset((*per_tuple).ecxt_per_tuple_memory);
        }
        let constr = (*(*r.rel).rd_att).constr;
        if !constr.is_null() {
            if (*constr).has_generated_stored {
                let (rri, estate) = (r.rri, r.estate);
                pg_guard_ffi_boundary(|| {
                    ExecComputeStoredGenerated(rri, estate, dst, pg_sys::CmdType::CMD_INSERT)
                });
            }
            pg_sys::ExecConstraints(r.rri, dst, r.estate);
        }
        let tuple = pg_sys::ExecFetchSlotHeapTuple(dst, true, std::ptr::null_mut());
        r.bytes += (*tuple).t_len as usize;
        r.buffered += 1;
        if r.buffered >= MAX_BUFFERED_ROWS || r.bytes >= MAX_BUFFERED_BYTES {
            flush(r);
        }
        true
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shutdown(recv: *mut pg_sys::DestReceiver) {
    // SAFETY: as in `receive_slot`.
    unsafe { flush(&mut *(recv as *mut Receiver)) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn destroy(_recv: *mut pg_sys::DestReceiver) {}

/// Insert the buffered rows with one `multi_insert` call.
///
/// # Safety
/// `r` is set up by `run` and its first `buffered` slots hold rows.
unsafe fn flush(r: &mut Receiver) {
    if r.buffered == 0 {
        return;
    }
    // SAFETY: the table AM's multi_insert takes filled slots of the
    // relation's shape; the bulk-insert state and command id are this
    // transaction's. The slots are cleared (not dropped) for reuse.
    unsafe {
        let multi_insert = (*(*r.rel).rd_tableam)
            .multi_insert
            .expect("checked by plain_target");
        let (rel, slots, n, cid) = (r.rel, r.slots.as_mut_ptr(), r.buffered as i32, r.cid);
        // No bulk-insert state: its small ring of buffers would make this
        // backend write out (and flush WAL for) every page it fills, while
        // INSERT leaves them to shared buffers and the checkpointer.
        pg_guard_ffi_boundary(|| {
            multi_insert(
                rel,
                slots,
                n,
                cid,
                pg_sys::TABLE_INSERT_SKIP_FSM as i32,
                std::ptr::null_mut(),
            )
        });
        for &slot in &r.slots[..r.buffered] {
            let clear = (*(*slot).tts_ops).clear.expect("slot ops clear");
            pg_guard_ffi_boundary(|| clear(slot));
        }
    }
    r.inserted += r.buffered as u64;
    r.buffered = 0;
    r.bytes = 0;
}
