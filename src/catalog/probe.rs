//! The empty-clone probe: asks PostgreSQL itself what a subcommand would do.
//!
//! Inside a subtransaction that is always rolled back, we create an empty
//! temporary clone of the table (`LIKE … INCLUDING ALL`, under the table's own
//! name in `pg_temp`, so PostgreSQL's error messages name the user's table) and
//! apply the subcommands to it in order. PostgreSQL refuses SET LOGGED /
//! UNLOGGED on a temporary table, so when the ALTER holds one of those the
//! clone is instead a permanent (or unlogged, like the original) table
//! `halo_probe_<oid>` in the table's schema — rolled back just the same. After each we compare:
//! - the clone's relfilenode: a new one means PostgreSQL rewrote the table;
//! - its indexes' relfilenodes: new ones mean an index was built or rebuilt;
//! - the transaction's sequential-scan counter of the clone: it grows when
//!   PostgreSQL reads the whole table (verification scans, index builds).
//! These do not depend on the table's size, so an empty clone answers for a
//! table of any size. Errors PostgreSQL raises (unknown column, bad type,
//! conflicting constraint) are reported as its own, naming the subcommand.
//! Before that, all of them are tried in one ALTER, so that an ALTER that
//! PostgreSQL refuses gets PostgreSQL's own first error, including those it
//! raises only for a combination (a column's type changed twice).
//!
//! A partitioned table's subcommands are tried together on a clone
//! partitioned by the same key (without partitions), then one at a time on
//! an ordinary clone, which is what each partition is.
//!
//! Invariants: the real table is only ever read-locked (ACCESS SHARE, by
//! LIKE), with lock_timeout, and nothing survives the probe.

use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get};
use crate::pg::subxact;
use crate::plan::model::{CmdKind, ProbeOutcome, Subcommand, TableFacts};
use crate::plan::probe_statement;
use pgrx::pg_sys::Oid;
use std::cell::Cell;

struct Snapshot {
    relfilenode: Oid,
    scans: i64,
    indexes: Vec<(String, Oid)>,
}

/// Probe every subcommand; `None` for those that are not tried on the clone.
/// `guarded` are the columns the ALTER drops that views or policies of the
/// real table use (with the names of those users): the clone gets a view on
/// each, so that PostgreSQL refuses their DROP exactly where it would.
pub fn probe(
    facts: &TableFacts,
    cmds: &[Subcommand],
    guarded: &[(String, String)],
    lock_timeout_ms: i32,
) -> Result<Vec<Option<ProbeOutcome>>> {
    let statements: Vec<Option<String>> = cmds.iter().map(probe_statement).collect();
    if statements.iter().all(Option::is_none) {
        return Ok(vec![None; cmds.len()]);
    }
    let original = QualifiedName::new(&facts.schema, &facts.name);
    let permanent = cmds
        .iter()
        .any(|c| matches!(c.kind, CmdKind::SetPersistence));
    let (clone, create) = if permanent {
        let persistence = if facts.unlogged {
            "CREATE UNLOGGED TABLE"
        } else {
            "CREATE TABLE"
        };
        (
            QualifiedName::new(&facts.schema, format!("halo_probe_{}", facts.oid)).to_string(),
            persistence,
        )
    } else {
        (
            format!("pg_temp.{}", Ident::new(&facts.name)),
            "CREATE TEMP TABLE",
        )
    };
    // A partitioned table's clone is first made partitioned the same way,
    // so that the subcommands tried together meet PostgreSQL's own rules
    // for partitioned tables (a unique key must hold the partition key).
    let partition_by = match facts.leaves {
        Some(_) => spi::text(
            "SELECT pg_catalog.pg_get_partkeydef($1)",
            &[Oid::from(facts.oid).into()],
        )?,
        None => None,
    };
    let current = Cell::new(None::<usize>);
    let together = Cell::new(false);

    let outcome = subxact::rolled_back(|| -> Result<Vec<Option<ProbeOutcome>>> {
        spi::exec(
            "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
            &[format!("{lock_timeout_ms}ms").into()],
        )?;
        let make_clone = || {
            spi::exec(
                &format!("{create} {clone} (LIKE {original} INCLUDING ALL)"),
                &[],
            )
        };
        match &partition_by {
            Some(key) => spi::exec(
                &format!("{create} {clone} (LIKE {original} INCLUDING ALL) PARTITION BY {key}"),
                &[],
            )?,
            None => make_clone()?,
        }
        // First all of them in one ALTER, as PostgreSQL would run it: an
        // ALTER it refuses gets its own first error (some are refused only
        // in company, such as a column's type changed twice, or a default
        // set on a column dropped in the same ALTER). Then one at a time,
        // on a fresh clone, to see what each does.
        let tried: Vec<&str> = statements.iter().flatten().map(String::as_str).collect();
        let in_company = tried.len() > 1;
        if in_company || !guarded.is_empty() || partition_by.is_some() {
            for (n, (column, _)) in guarded.iter().enumerate() {
                spi::exec(
                    &format!(
                        "CREATE TEMP VIEW halo_probe_user_{n} AS SELECT {} FROM {clone}",
                        Ident::new(column)
                    ),
                    &[],
                )?;
            }
            together.set(true);
            spi::exec(&format!("ALTER TABLE {clone} {}", tried.join(", ")), &[])?;
            together.set(false);
            spi::exec(&format!("DROP TABLE {clone} CASCADE"), &[])?;
            make_clone()?;
        }
        let clone_oid = crate::catalog::relation_oid(&clone)?;

        let mut out = Vec::with_capacity(cmds.len());
        for (i, stmt) in statements.iter().enumerate() {
            let Some(stmt) = stmt else {
                out.push(None);
                continue;
            };
            current.set(Some(i));
            let before = snapshot(clone_oid)?;
            let alter = format!("ALTER TABLE {clone} {stmt}");
            if in_company {
                // PostgreSQL accepted them together, in the order of its own
                // passes; one at a time in the user's order, one may fail
                // (a default set, then the type changed). Such a subcommand
                // is taken for one that rewrites: the rewrite applies the
                // whole ALTER at once, as PostgreSQL does.
                if subxact::attempt("probe a subcommand", || spi::exec(&alter, &[])).is_err() {
                    out.push(Some(ProbeOutcome {
                        rewrote_table: true,
                        built_indexes: vec![],
                        scanned: true,
                        created_indexes: vec![],
                    }));
                    continue;
                }
            } else {
                spi::exec(&alter, &[])?;
            }
            let after = snapshot(clone_oid)?;
            out.push(Some(ProbeOutcome {
                rewrote_table: after.relfilenode != before.relfilenode,
                built_indexes: after
                    .indexes
                    .iter()
                    .filter(|(_, node)| !before.indexes.iter().any(|(_, b)| b == node))
                    .map(|(name, _)| name.clone())
                    .collect(),
                scanned: after.scans > before.scans,
                created_indexes: after
                    .indexes
                    .iter()
                    .filter(|(name, _)| !before.indexes.iter().any(|(b, _)| b == name))
                    .map(|(name, _)| name.clone())
                    .collect(),
            }));
        }
        current.set(None);
        Ok(out)
    });
    match outcome {
        Ok(result) => result,
        Err(caught) if together.get() => {
            let e = MigrateError::from_caught(
                caught,
                format!("While trying the subcommands together on an empty copy of {original}."),
            );
            // The clone's stand-in views refused a DROP COLUMN: name the
            // real users, as PostgreSQL would on the table itself.
            match guarded.first() {
                Some((column, users))
                    if e.sqlstate()
                        == pgrx::PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST =>
                {
                    Err(MigrateError::DependentObjects {
                        column: column.clone(),
                        table: super::display_name(pgrx::pg_sys::Oid::from(facts.oid))?,
                        users: users.clone(),
                    })
                }
                _ => Err(e),
            }
        }
        Err(caught) => {
            let context = match current.get() {
                Some(i) => format!(
                    "While trying subcommand {} (\"{}\") on an empty copy of {original}.",
                    i + 1,
                    cmds[i].text
                ),
                None => format!("While making an empty copy of {original} to try the ALTER on."),
            };
            Err(MigrateError::from_caught(caught, context))
        }
    }
}

fn snapshot(clone: Oid) -> Result<Snapshot> {
    let (relfilenode, scans) = spi::query(
        "SELECT relfilenode, pg_catalog.pg_stat_get_xact_numscans(oid) FROM pg_catalog.pg_class WHERE oid = $1",
        &[clone.into()],
        |r| Ok((get::<Oid>(r, 1)?, get::<i64>(r, 2)?)),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| MigrateError::Internal("the probe clone vanished".into()))?;
    let indexes = spi::query(
        "SELECT c.relname::text, c.relfilenode FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1",
        &[clone.into()],
        |r| Ok((get::<String>(r, 1)?, get::<Oid>(r, 2)?)),
    )?;
    Ok(Snapshot {
        relfilenode,
        scans,
        indexes,
    })
}
