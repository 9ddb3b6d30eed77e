//! `migrate.start(...)`: check the arguments, plan, have the engine set the
//! migration up (`engine::setup`), and hand it to a background worker when
//! it wants one.

use super::plan::plan_steps;
use super::{call, required, Regclass};
use crate::bgw::worker;
use crate::engine::setup::{self, Options};
use crate::error::{MigrateError, Result};
use crate::gucs;
use pgrx::datetime::Interval;
use pgrx::prelude::*;

/// Start an online migration; returns its id at once. (`migrate.start` in
/// SQL; the Rust name gives its C symbol, `start_with_version_wrapper`, a
/// name of its own: the 0.1.0 function, without `jobs`, `version` and `up`,
/// calls `start_wrapper`.)
#[pg_extern(name = "start", volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn start_with_version(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    batch_rows: default!(Option<i32>, "NULL"),
    lock_timeout: default!(Option<Interval>, "'100ms'"),
    auto_finish: default!(Option<bool>, "false"),
    background: default!(Option<bool>, "true"),
    snapshot_safe: default!(Option<bool>, "NULL"),
    verify: default!(Option<bool>, "NULL"),
    revertible: default!(Option<bool>, "NULL"),
    revert_window: default!(Option<Interval>, "NULL"),
    down: default!(Option<pgrx::JsonB>, "NULL"),
    jobs: default!(Option<i32>, "NULL"),
    version: default!(Option<&str>, "NULL"),
    up: default!(Option<pgrx::JsonB>, "NULL"),
) -> i64 {
    let opts = Requested {
        batch_rows,
        lock_timeout,
        auto_finish,
        background,
        snapshot_safe,
        verify,
        revertible,
        revert_window,
        down,
        jobs,
        version: version.map(str::to_string),
        up,
    };
    call(|| start_migration(tbl, alter, opts))
}

/// `migrate.start` as 0.1.0 defined it (no `jobs`). Only the SQL objects of
/// 0.1.0 call it, between a package upgrade and `ALTER EXTENSION … UPDATE`,
/// where every function refuses until the update (55000); no SQL of this
/// version does.
#[pg_extern(sql = false)]
#[allow(clippy::too_many_arguments)]
fn start(
    tbl: Option<Regclass>,
    alter: Option<&str>,
    batch_rows: Option<i32>,
    lock_timeout: Option<Interval>,
    auto_finish: Option<bool>,
    background: Option<bool>,
    snapshot_safe: Option<bool>,
    verify: Option<bool>,
    revertible: Option<bool>,
    revert_window: Option<Interval>,
    down: Option<pgrx::JsonB>,
) -> i64 {
    start_with_version(
        tbl,
        alter,
        batch_rows,
        lock_timeout,
        auto_finish,
        background,
        snapshot_safe,
        verify,
        revertible,
        revert_window,
        down,
        None,
        None,
        None,
    )
}

/// start()'s options as given (NULL where the caller left them out).
struct Requested {
    batch_rows: Option<i32>,
    lock_timeout: Option<Interval>,
    auto_finish: Option<bool>,
    background: Option<bool>,
    snapshot_safe: Option<bool>,
    verify: Option<bool>,
    revertible: Option<bool>,
    revert_window: Option<Interval>,
    down: Option<pgrx::JsonB>,
    jobs: Option<i32>,
    /// A versioned (expand/contract) migration: its version and `up`.
    version: Option<String>,
    up: Option<pgrx::JsonB>,
}

/// Milliseconds of a positive interval of at most a minute.
pub(crate) fn lock_timeout_ms(i: Interval) -> Result<i32> {
    let us = i.as_micros();
    if i.months() != 0 || i.days() != 0 || !(1_000..=60_000_000).contains(&us) {
        return Err(MigrateError::InvalidParameter {
            name: "lock_timeout",
            detail: format!("It is {} ms.", us / 1000),
            hint: "Give a lock timeout between 1 ms and 1 minute, e.g. '100ms'.".into(),
        });
    }
    Ok((us / 1000) as i32)
}

/// Seconds a revertible migration stays revertible; None: not revertible.
fn revert_window_s(req: &Requested) -> Result<Option<i32>> {
    if req.version.is_some() {
        return Ok(None);
    }
    if !req.revertible.unwrap_or_else(gucs::revertible) {
        if req.revert_window.is_some() || req.down.is_some() {
            return Err(MigrateError::InvalidParameter {
                name: if req.down.is_some() {
                    "down"
                } else {
                    "revert_window"
                },
                detail: "The migration is not revertible.".into(),
                hint: "Add revertible => true.".into(),
            });
        }
        return Ok(None);
    }
    match req.revert_window {
        None => Ok(Some(gucs::revert_window_s())),
        Some(i) if i.as_micros() >= 1_000_000 && i.as_micros() <= 31_536_000_000_000 => {
            Ok(Some((i.as_micros() / 1_000_000) as i32))
        }
        Some(i) => Err(MigrateError::InvalidParameter {
            name: "revert_window",
            detail: format!("It is {} s.", i.as_micros() / 1_000_000),
            hint: "Give a window between 1 second and 365 days, e.g. '1 day'.".into(),
        }),
    }
}

fn start_migration(tbl: Option<Regclass>, alter: Option<&str>, req: Requested) -> Result<i64> {
    let opts = Options {
        batch_rows: match req.batch_rows {
            None => gucs::batch_rows(),
            Some(n) if n > 0 => n,
            Some(n) => {
                return Err(MigrateError::InvalidParameter {
                    name: "batch_rows",
                    detail: format!("It is {n}."),
                    hint: "Give a positive number of rows, or NULL for halo_migrate.batch_rows."
                        .into(),
                })
            }
        },
        lock_timeout_ms: lock_timeout_ms(required(req.lock_timeout, "lock_timeout")?)?,
        auto_finish: required(req.auto_finish, "auto_finish")?,
        background: required(req.background, "background")?,
        snapshot_safe: req.snapshot_safe.unwrap_or_else(gucs::snapshot_safe_swap),
        verify: req.verify.unwrap_or_else(gucs::verify),
        revert_window_s: revert_window_s(&req)?,
        down: req.down.as_ref().map(|j| j.0.to_string()),
        jobs: match req.jobs {
            None => gucs::jobs(),
            Some(n) if (1..=64).contains(&n) => n,
            Some(n) => {
                return Err(MigrateError::InvalidParameter {
                    name: "jobs",
                    detail: format!("It is {n}."),
                    hint: "Give between 1 and 64 workers, or NULL for halo_migrate.jobs.".into(),
                })
            }
        },
    };
    let alter_text = required(alter, "alter")?;
    if let Some(version) = req.version.clone() {
        return start_versioned(tbl, alter_text, &opts, &req, version);
    }
    if req.up.is_some() {
        return Err(MigrateError::InvalidParameter {
            name: "up",
            detail: "The migration is not versioned.".into(),
            hint: "Add version => '<name>' for an expand/contract migration.".into(),
        });
    }
    let planned = plan_steps(tbl, alter, opts.revert_window_s.is_some())?;
    let (id, wants_worker) = setup::start(&planned, alter_text, &opts)?;
    if wants_worker {
        launch_worker(id)?;
    }
    Ok(id)
}

/// Hand migration `id` to a background worker, which starts once this
/// transaction commits.
fn launch_worker(id: i64) -> Result<()> {
    // SAFETY: reading the current user's OID.
    let role = unsafe { pgrx::pg_sys::GetUserId() };
    worker::launch_after_commit(id, role)
}

/// A versioned (expand/contract) migration: `verify`, `revertible` and
/// `jobs` do not apply to it.
fn start_versioned(
    tbl: Option<Regclass>,
    alter: &str,
    opts: &Options,
    req: &Requested,
    version: String,
) -> Result<i64> {
    for (name, given) in [
        ("auto_finish", req.auto_finish == Some(true)),
        ("verify", req.verify == Some(true)),
        ("revertible", req.revertible == Some(true)),
        ("jobs", req.jobs.is_some()),
    ] {
        if given {
            return Err(MigrateError::InvalidParameter {
                name,
                detail: "A versioned migration contracts only when finish() is called, once the application has moved over; it changes the table in place, with no copy to verify, keep or share out.".into(),
                hint: format!("Leave {name} out, or start the migration without version."),
            });
        }
    }
    let oid = required(tbl, "tbl")?.0;
    let request = crate::engine::versioned::Request {
        version,
        up: req.up.as_ref().map(|j| j.0.to_string()),
        down: req.down.as_ref().map(|j| j.0.to_string()),
    };
    let (id, wants_worker) = crate::engine::versioned::start(oid, alter, opts, &request)?;
    if wants_worker {
        launch_worker(id)?;
    }
    Ok(id)
}
