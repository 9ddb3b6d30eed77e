//! `migrate.drop_version()`: the end of a version schema that no
//! migration needs any more (`migrate.versions()` lists them; it is SQL,
//! in schema.sql).

use super::{call, required};
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
