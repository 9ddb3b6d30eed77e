//! The SQL surface: thin `#[pg_extern]` functions over the internal modules.
//!
//! Each function validates its arguments, calls into the mechanism, and turns
//! a `MigrateError` into a PostgreSQL ERROR — the only place that happens.
//! Every function takes NULL-able arguments and refuses a NULL explicitly, so
//! a NULL never silently yields an empty result.

pub mod control;
pub mod plan;
pub mod revert;
pub mod runtime;
pub mod start;
pub mod versions;

use crate::error::{MigrateError, Result};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable,
};
use pgrx::{FromDatum, IntoDatum};

/// A `regclass` argument, kept as a bare OID: unlike `PgRelation`, it opens
/// nothing and takes no lock, so a call never queues behind a lock on the table.
#[derive(Clone, Copy, Debug)]
pub struct Regclass(pub pg_sys::Oid);

impl FromDatum for Regclass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regclass Datum is an Oid passed by value.
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, pg_sys::OIDOID) }.map(Regclass)
    }
}

impl IntoDatum for Regclass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

// SAFETY: the argument's datum is a regclass, i.e. an Oid by value; NULL is
// reported as Nullable::Null by the FromDatum path, never dereferenced.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Regclass {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null regclass argument.
        unsafe { arg.unbox_arg_using_from_datum() }.expect("regclass argument must not be null")
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above; from_datum handles the NULL flag.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: Regclass is exactly the SQL type regclass (an Oid by value).
unsafe impl SqlTranslatable for Regclass {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Regclass);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: std::result::Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: std::result::Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}

/// Refuse a NULL argument with SQLSTATE 22004.
pub(crate) fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
    value.ok_or(MigrateError::NullArgument { name })
}

/// Run an API function's body once the SQL objects are known to match this
/// library (see `catalog::check_version`); its error becomes an ERROR.
pub(crate) fn call<T>(body: impl FnOnce() -> Result<T>) -> T {
    or_report(crate::catalog::check_version().and_then(|()| body()))
}

/// Unwrap at the API edge: an error becomes a PostgreSQL ERROR.
pub(crate) fn or_report<T>(result: Result<T>) -> T {
    result.unwrap_or_else(|e| e.report())
}
