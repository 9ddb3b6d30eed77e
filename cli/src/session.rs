//! The extension's SQL API, called from the client: every call the tool
//! makes is here, each one statement with its values as `$n` parameters.

use crate::args::Settings;
use crate::exit::{code, Failure, Result};
use crate::render::{PlanStep, Status};
use postgres::Client;

/// Refuse early, with the fix, when the extension is missing.
pub fn check_extension(c: &mut Client) -> Result<()> {
    let row = c
        .query_one(
            "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'halo_migrate'),
                    EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'halo_migrate'),
                    pg_catalog.current_database()::text",
            &[],
        )
        .map_err(|e| Failure::from_db("checking for the extension", &e))?;
    let installed: Option<String> = row.get(0);
    if installed.is_some() {
        return Ok(());
    }
    let available: bool = row.get(1);
    let db: String = row.get(2);
    let f = Failure::new(
        code::NO_EXTENSION,
        format!("the halo_migrate extension is not installed in database \"{db}\""),
    );
    Err(if available {
        f.hint(
            "Run CREATE EXTENSION halo_migrate; in that database (as a role that may create it).",
        )
    } else {
        f.hint("The server does not have the extension's files either: install them (cargo pgrx install --release), then run CREATE EXTENSION halo_migrate;.")
    })
}

/// The table's name as the server prints it; a clear error if it is missing.
pub fn check_table(c: &mut Client, table: &str) -> Result<String> {
    let row = c
        .query_one("SELECT pg_catalog.to_regclass($1)::text", &[&table])
        .map_err(|e| Failure::from_db("looking up the table", &e))?;
    row.get::<_, Option<String>>(0).ok_or_else(|| {
        Failure::new(code::NO_TABLE, format!("table \"{table}\" does not exist"))
            .hint("Check the name and the schema (give it as schema.table); names are case-sensitive inside double quotes.")
    })
}

pub fn plan(c: &mut Client, table: &str, alter: &str, revertible: bool) -> Result<Vec<PlanStep>> {
    let rows = c
        .query(
            "SELECT step, subcommand, strategy, sql, lock, rewrites, reason
               FROM migrate.plan($1::text::regclass, $2, revertible => $3)",
            &[&table, &alter, &revertible],
        )
        .map_err(|e| Failure::from_db("planning", &e))?;
    Ok(rows
        .iter()
        .map(|r| PlanStep {
            step: r.get(0),
            subcommand: r.get(1),
            strategy: r.get(2),
            sql: r.get(3),
            lock: r.get(4),
            rewrites: r.get(5),
            reason: r.get(6),
        })
        .collect())
}

/// `migrate.plan_version()`: a versioned migration's dry run, as (phase, what).
pub fn plan_version(
    c: &mut Client,
    table: &str,
    alter: &str,
    s: &Settings,
) -> Result<Vec<(String, String)>> {
    let rows = c
        .query(
            "SELECT phase, sql FROM migrate.plan_version($1::text::regclass, $2, $3::text,
                                                       up => $4::text::jsonb, down => $5::text::jsonb)",
            &[&table, &alter, &s.version, &s.up, &s.down],
        )
        .map_err(|e| Failure::from_db("planning", &e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `migrate.start()`; the migration's id.
pub fn start(c: &mut Client, table: &str, alter: &str, s: &Settings) -> Result<i64> {
    // lock_timeout is named only when given, so the server's default holds;
    // a NULL verify means halo_migrate.verify.
    // (as are revertible and revert_window: NULL means the setting).
    let sql = if s.lock_timeout.is_some() {
        "SELECT migrate.start($1::text::regclass, $2, batch_rows => $3::int4, verify => $4::bool,
                              revertible => $5::bool, revert_window => $6::text::interval,
                              version => $7::text, up => $8::text::jsonb, down => $9::text::jsonb,
                              lock_timeout => $10::text::interval)"
    } else {
        "SELECT migrate.start($1::text::regclass, $2, batch_rows => $3::int4, verify => $4::bool,
                              revertible => $5::bool, revert_window => $6::text::interval,
                              version => $7::text, up => $8::text::jsonb, down => $9::text::jsonb)"
    };
    let (rev, window) = (&s.revertible, &s.revert_window);
    let (version, up, down) = (&s.version, &s.up, &s.down);
    let row = if let Some(lt) = &s.lock_timeout {
        c.query_one(
            sql,
            &[
                &table,
                &alter,
                &s.batch_rows,
                &s.verify,
                rev,
                window,
                version,
                up,
                down,
                lt,
            ],
        )
    } else {
        c.query_one(
            sql,
            &[
                &table,
                &alter,
                &s.batch_rows,
                &s.verify,
                rev,
                window,
                version,
                up,
                down,
            ],
        )
    }
    .map_err(|e| Failure::from_db("starting the migration", &e))?;
    Ok(row.get(0))
}

/// `migrate.throttle()`: NULLs leave a setting as it is.
pub fn throttle(c: &mut Client, table: &str, s: &Settings) -> Result<String> {
    text(
        c,
        "SELECT migrate.throttle($1::text::regclass, $2::int4, $3::text::interval,
                                 $4::text::interval, $5::text::interval)",
        &[
            &table,
            &s.batch_rows,
            &s.batch_pause,
            &s.target_batch_time,
            &s.max_replica_lag,
        ],
        "throttling",
    )
}

/// A `migrate.*` call that returns a line of text.
pub fn text(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    what: &str,
) -> Result<String> {
    let row = c
        .query_one(sql, params)
        .map_err(|e| Failure::from_db(what, &e))?;
    Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
}

const STATUS_SQL: &str = "
    SELECT id, table_name, strategy, phase, rows_copied, rows_total, percent::float8,
           backlog, rate_rows_s::float8, eta::text, worker_pid, error, verify_rows,
           verified_at IS NOT NULL, to_char(revertible_until, 'YYYY-MM-DD HH24:MI TZ'), reverts
      FROM migrate.status($1::text::regclass)";

fn status_row(r: &postgres::Row) -> Status {
    Status {
        id: r.get(0),
        table_name: r.get(1),
        strategy: r.get(2),
        phase: r.get(3),
        rows_copied: r.get::<_, Option<i64>>(4).unwrap_or(0),
        rows_total: r.get::<_, Option<i64>>(5).unwrap_or(0),
        percent: r.get(6),
        backlog: r.get::<_, Option<i64>>(7).unwrap_or(0),
        rate: r.get(8),
        eta: r.get(9),
        worker_pid: r.get(10),
        error: r.get(11),
        verify_rows: r.get(12),
        verified: r.get(13),
        revertible_until: r.get(14),
        reverts: r.get(15),
    }
}

/// Every migration (of one table, if given), newest first.
pub fn status(c: &mut Client, table: Option<&str>) -> Result<Vec<Status>> {
    let rows = c
        .query(STATUS_SQL, &[&table])
        .map_err(|e| Failure::from_db("reading migrate.status()", &e))?;
    Ok(rows.iter().map(status_row).collect())
}

/// The table's newest migration.
pub fn latest(c: &mut Client, table: &str) -> Result<Status> {
    status(c, Some(table))?.into_iter().next().ok_or_else(|| {
        Failure::new(code::FAILED, format!("table {table} has no migration"))
            .hint("Start one with --alter ... --execute.")
    })
}
