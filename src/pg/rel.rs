//! Relations opened for the length of a scope: [`Rel`] closes what it
//! opened when dropped, also when an ERROR unwinds through it (pgrx turns
//! a PostgreSQL ERROR into a Rust panic, so destructors run).
//!
//! Invariant: a `Rel` never outlives the transaction it was opened in; each
//! use is a local value inside one function.

use pgrx::pg_sys;

pub struct Rel {
    rel: pg_sys::Relation,
    /// The lock released on close: `NoLock` keeps the lock taken at open
    /// until the transaction ends, as PostgreSQL's own DDL does.
    release: pg_sys::LOCKMODE,
}

impl Rel {
    /// Open `relid` under `lock`; closing it keeps the lock to the end of
    /// the transaction.
    ///
    /// # Safety
    /// Must be called inside a transaction; `relid` must exist (or an ERROR
    /// is raised), and the `Rel` must be dropped before the transaction ends.
    pub unsafe fn open(relid: pg_sys::Oid, lock: u32) -> Rel {
        // SAFETY: guaranteed by the caller.
        let rel = unsafe { pg_sys::relation_open(relid, lock as pg_sys::LOCKMODE) };
        Rel {
            rel,
            release: pg_sys::NoLock as pg_sys::LOCKMODE,
        }
    }

    /// Open a catalog (or any table) under `lock`, released again on close,
    /// as PostgreSQL's catalog code does with `table_close(rel, lock)`.
    ///
    /// # Safety
    /// As for [`Rel::open`].
    pub unsafe fn open_catalog(relid: pg_sys::Oid, lock: u32) -> Rel {
        // SAFETY: guaranteed by the caller.
        let rel = unsafe { pg_sys::table_open(relid, lock as pg_sys::LOCKMODE) };
        Rel {
            rel,
            release: lock as pg_sys::LOCKMODE,
        }
    }

    /// The relation, valid while `self` lives.
    pub fn get(&self) -> pg_sys::Relation {
        self.rel
    }
}

impl Drop for Rel {
    fn drop(&mut self) {
        // SAFETY: `rel` was opened by `open` or `open_catalog` in the
        // current transaction (the contract of both) and is closed once.
        unsafe { pg_sys::relation_close(self.rel, self.release) };
    }
}
