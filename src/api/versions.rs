//! `migrate.plan_version()`: the dry run of a versioned migration, and
//! `migrate.drop_version()`: the end of a version schema that no migration
//! needs any more (`migrate.versions()` lists them; it is SQL, in
//! schema.sql).

use super::{call, required, Regclass};
use pgrx::prelude::*;

/// Drop a version schema (and every view in it) that no live migration
/// uses: the new version's schema after its clients have moved to the base
/// schema, or an older version's.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_version(version_schema: Option<&str>) {
    call(|| {
        crate::engine::versioned::contract::drop_version(required(
            version_schema,
            "version_schema",
        )?)
    })
}

/// Dry run of a versioned migration: what `start(…, version => …)` and
/// `finish()` would do, phase by phase. Changes nothing.
#[pg_extern(volatile, parallel_unsafe)]
fn plan_version(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    version: Option<&str>,
    up: default!(Option<pgrx::JsonB>, "NULL"),
    down: default!(Option<pgrx::JsonB>, "NULL"),
) -> TableIterator<'static, (name!(step, i32), name!(phase, String), name!(sql, String))> {
    let rows = call(|| {
        let request = crate::engine::versioned::Request {
            version: required(version, "version")?.to_string(),
            up: up.map(|j| j.0.to_string()),
            down: down.map(|j| j.0.to_string()),
        };
        crate::engine::versioned::describe(
            required(tbl, "tbl")?.0,
            required(alter, "alter")?,
            &request,
        )
    });
    TableIterator::new(
        rows.into_iter()
            .enumerate()
            .map(|(i, (phase, sql))| (i as i32 + 1, phase.to_string(), sql)),
    )
}
