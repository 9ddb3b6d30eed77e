//! The DDL guard's pass: is DDL running now in this backend halo_migrate's own?
//!
//! The event triggers in schema.sql refuse DDL on a table while it is being
//! migrated, except the migration's own (installing the capture trigger, the
//! swap, a concurrent plan's statements). That exception used to be a
//! setting, which any session could set with `SET` and so slip past the
//! guard. It is now backend-local state that only this library's code can
//! change, read by the event triggers through `migrate.internal_ddl()`.
//!
//! Invariant: a pass given for a transaction ends with it. It is tied to the
//! backend's local transaction id, so a transaction that errors out before
//! [`Pass`] is dropped cannot leave it behind for the next one.

use pgrx::pg_sys;
use std::cell::Cell;

thread_local! {
    /// The local transaction id the pass was given for, if any.
    static FOR_TRANSACTION: Cell<Option<u32>> = const { Cell::new(None) };
    /// A pass for the whole session: only the worker of a concurrent plan,
    /// whose CREATE INDEX CONCURRENTLY runs as its own top-level command.
    static FOR_SESSION: Cell<bool> = const { Cell::new(false) };
}

/// This backend's current local transaction id.
pub fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's own PGPROC, set for every backend that
    // runs SQL (our callers run inside a transaction); reading its local
    // transaction id has no side effect.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            (*pg_sys::MyProc).lxid
        }
        #[cfg(not(feature = "pg15"))]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
    }
}

/// A pass for the rest of the current transaction, taken back when dropped.
pub struct Pass(());

impl Pass {
    pub fn for_this_transaction() -> Pass {
        FOR_TRANSACTION.with(|c| c.set(Some(local_xid())));
        Pass(())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        FOR_TRANSACTION.with(|c| c.set(None));
    }
}

/// Let this backend's DDL past the guard until it exits.
pub fn for_this_session() {
    FOR_SESSION.with(|c| c.set(true));
}

/// Is DDL running now in this backend the migration's own?
pub fn active() -> bool {
    FOR_SESSION.with(Cell::get) || FOR_TRANSACTION.with(Cell::get) == Some(local_xid())
}
