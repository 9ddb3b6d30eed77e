//! Running one case on twin databases and judging the outcome.
//!
//! `fz_o` gets the shape and a plain `ALTER TABLE` (the oracle). `fz_h` gets
//! the same shape, a control twin `t_control`, writers that apply the same
//! transactions to both `t` and `t_control`, and the migration. Then:
//! - both succeeded: `t` must equal `ALTER(t_control)` row by row, and its
//!   normalized catalog entry must equal the oracle's;
//! - both failed: with the same SQLSTATE, and `t` untouched;
//! - halo_migrate refused (0A000, 55000, 42501) where the ALTER succeeded:
//!   allowed, if `t` is untouched and nothing is left behind;
//! - the ALTER was refused by PostgreSQL (0A000) where halo_migrate
//!   succeeded: allowed (it recreates views PostgreSQL would refuse to
//!   alter under), but nothing can be compared; where halo_migrate then
//!   failed on the data, its error may differ, and `t` must be untouched;
//! - anything else, a lost or changed row, a write that waited longer than
//!   the lock timeout plus a margin, or a leftover object, is a finding.

use crate::gen::{Case, PRELUDE};
use crate::harness::{leftovers, sqlstate, Cluster};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REFUSALS: &[&str] = &["0A000", "55000", "42501"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The shape itself could not be built (say, UNIQUE on repeated values).
    Skipped,
    Same,
    /// Same, then taken back by revert() to the same as before the ALTER.
    Reverted,
    /// Same; its revert stopped at a row the old shape cannot hold.
    RevertRefused(String),
    BothFailed(String),
    Refused(String),
    HaloDidMore(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub detail: String,
}

fn finding(kind: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        kind,
        detail: detail.into(),
    }
}

/// Run `case`; the writers' worst latency may exceed the lock timeout by
/// at most `margin`.
pub fn run(cluster: &Cluster, case: &Case, margin: Duration) -> Result<Verdict, Finding> {
    let mut admin = cluster.client();
    for db in ["fz_h", "fz_o"] {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
    }
    let mut h = cluster.client_db("fz_h");
    let mut o = cluster.client_db("fz_o");
    h.batch_execute("CREATE EXTENSION halo_migrate").unwrap();
    for (c, control) in [(&mut h, true), (&mut o, false)] {
        c.batch_execute(PRELUDE).unwrap();
        for stmt in case.setup(control) {
            if c.batch_execute(&stmt).is_err() {
                return Ok(Verdict::Skipped);
            }
        }
    }
    let before = catalog(&mut h);
    let alter = case.alter_text();
    let role = if case.as_owner {
        "SET ROLE fz_owner"
    } else {
        "RESET ROLE"
    };

    o.batch_execute(role).unwrap();
    let oracle = o
        .batch_execute(&format!("ALTER TABLE t {alter}"))
        .map_err(|e| sqlstate(&e));
    o.batch_execute("RESET ROLE").unwrap();

    let writers = Writers::start(cluster, case.writers, case.rows);
    h.batch_execute(role).unwrap();
    let halo = migrate(&mut h, &alter, case);
    h.batch_execute("RESET ROLE").unwrap();
    let (worst, _) = writers.stop();

    let limit = Duration::from_millis(100) + margin;
    if worst > limit {
        return Err(finding(
            "slow write",
            format!("a write waited {worst:?} (lock timeout 100 ms)"),
        ));
    }
    let verdict = match (&oracle, &halo) {
        (Ok(()), Ok(())) => {
            // The control before the ALTER: what a revert must give back.
            h.batch_execute("CREATE TABLE t_before AS SELECT * FROM t_control")
                .unwrap();
            h.batch_execute(&format!("ALTER TABLE t_control {alter}"))
                .map_err(|e| finding("control ALTER failed", sqlstate(&e)))?;
            same_rows(&mut h)?;
            let (mine, theirs) = (catalog(&mut h), catalog(&mut o));
            if mine != theirs {
                return Err(finding("catalog differs", diff(&theirs, &mine)));
            }
            revert(&mut h, case, &before, &mine)?
        }
        (Err(a), Err(b)) if a == b => Verdict::BothFailed(a.clone()),
        // PostgreSQL refuses what halo_migrate may go on to do (a type
        // change under a view); it may then fail on the data instead.
        (Err(a), Err(b)) if a == "0A000" => Verdict::BothFailed(format!("{a} (halo_migrate: {b})")),
        (_, Err(b)) if REFUSALS.contains(&b.as_str()) => Verdict::Refused(b.clone()),
        (Err(a), Ok(())) if a == "0A000" => return Ok(Verdict::HaloDidMore(a.clone())),
        (Err(a), Err(b)) => {
            return Err(finding(
                "different errors",
                format!("ALTER: {a}, halo_migrate: {b}"),
            ))
        }
        (Ok(()), Err(b)) => {
            return Err(finding(
                "halo_migrate failed where ALTER succeeded",
                b.clone(),
            ))
        }
        (Err(a), Ok(())) => {
            return Err(finding(
                "halo_migrate succeeded where ALTER failed",
                a.clone(),
            ))
        }
    };
    if leftovers(&mut h) != 0 {
        return Err(finding("objects left behind", format!("{verdict:?}")));
    }
    if !matches!(
        verdict,
        Verdict::Same | Verdict::Reverted | Verdict::RevertRefused(_)
    ) {
        // Nothing may have changed: the shape, and the rows (the control
        // got the same writes and no ALTER).
        let now = catalog(&mut h);
        if now != before {
            return Err(finding(
                "changed by a failed migration",
                diff(&before, &now),
            ));
        }
        same_rows(&mut h)?;
    }
    Ok(verdict)
}

/// Take a revertible migration back, if its window is open (a
/// revertible start that was refused ran without it), and judge it: the
/// table's catalog entry must be `before` again, and every row not written
/// since the swap exactly the control's before the ALTER (`t_before`);
/// a row written since exists if and only if the control has its key (its
/// values went through the new shape and back, which may lose what the
/// ALTER lost). A revert refused for a row the old shape cannot hold
/// (SQLSTATE class 22 or 23) must leave the table as the ALTER left it
/// (`after`); the window is then forgotten.
fn revert(h: &mut Client, case: &Case, before: &str, after: &str) -> Result<Verdict, Finding> {
    let open: bool = h
        .query_one(
            "SELECT count(*) > 0 FROM migrate.migrations WHERE revertible_until IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    if !case.revert || !open {
        return Ok(Verdict::Same);
    }
    h.batch_execute(
        "DO $fz$ BEGIN
           EXECUTE format('CREATE TABLE t_logged AS SELECT DISTINCT k1::bigint AS id FROM migrate.log_%s',
                          't'::regclass::oid);
         END $fz$",
    )
    .unwrap();
    if let Err(e) = h.batch_execute("SELECT migrate.revert('t', '120s')") {
        let code = sqlstate(&e);
        if !(code.starts_with("22") || code.starts_with("23")) {
            return Err(finding("revert failed", format!("{code}: {e:?}")));
        }
        let now = catalog(h);
        if now != after {
            return Err(finding("changed by a refused revert", diff(after, &now)));
        }
        h.batch_execute("SELECT migrate.forget('t')")
            .map_err(|e| finding("forget failed", format!("{e:?}")))?;
        return Ok(Verdict::RevertRefused(code));
    }
    // Constraints put back NOT VALID are validated after the swap, by step().
    for _ in 0..100 {
        let said: String = h
            .query_one("SELECT migrate.step('t')", &[])
            .map_err(|e| finding("revert's validation failed", format!("{e:?}")))?
            .get(0);
        if said.contains("reverted") || said.contains(" done") || said == "done" {
            break;
        }
    }
    let now = catalog(h);
    if now != before {
        return Err(finding("catalog differs after revert", diff(before, &now)));
    }
    let digest = |h: &mut Client, t: &str| -> (i64, String) {
        let r = h
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x.id)), '') FROM {t} x
                      WHERE x.id NOT IN (SELECT id FROM t_logged)"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (a, b) = (digest(h, "t"), digest(h, "t_before"));
    if a != b {
        return Err(finding(
            "rows differ after revert",
            format!(
                "{} rows not written since the swap, {} in the control",
                a.0, b.0
            ),
        ));
    }
    let existence: i64 = h
        .query_one(
            "SELECT count(*) FROM t_logged l
              WHERE EXISTS (SELECT FROM t WHERE t.id = l.id) <> EXISTS (SELECT FROM t_before b WHERE b.id = l.id)",
            &[],
        )
        .unwrap()
        .get(0);
    if existence != 0 {
        return Err(finding(
            "rows differ after revert",
            format!("{existence} keys written since the swap exist on one side only"),
        ));
    }
    Ok(Verdict::Reverted)
}

/// Start, wait and finish; the SQLSTATE of the first error. With
/// `verify`, a verification that found a difference is an error
/// ("VERIFY n"): the copy and replay are exact, so a difference means a
/// bug in one of them or in the verification. A `verify` or `revertible`
/// refused (0A000: a key that cannot be compared by range, an ALTER that
/// cannot be taken back) is dropped, and the case runs without it.
fn migrate(h: &mut Client, alter: &str, case: &Case) -> Result<(), String> {
    let background = case.background;
    let start = |h: &mut Client, verify: bool, revertible: bool| {
        h.query_one(
            "SELECT migrate.start('t', $1, batch_rows => 500, background => $2, verify => $3,
                                  revertible => $4)",
            &[&alter, &background, &verify, &revertible],
        )
        .map_err(|e| sqlstate(&e))
    };
    let mut r = start(h, case.verify, case.revert);
    if case.revert && matches!(&r, Err(c) if c == "0A000") {
        r = start(h, case.verify, false);
    }
    match r {
        Err(code) if case.verify && code == "0A000" => start(h, false, false).map(|_| ())?,
        r => r.map(|_| ())?,
    }
    if background {
        h.batch_execute("CALL migrate.wait('t', '120s')")
            .map_err(|e| sqlstate(&e))?;
    } else {
        // Driven from this session, one unit per call (as from pg_cron),
        // up to the cut-over.
        for _ in 0..100_000 {
            h.batch_execute("SELECT migrate.step('t')")
                .map_err(|e| sqlstate(&e))?;
            let (phase, code): (String, Option<String>) = h
                .query_one(
                    "SELECT phase, error_sqlstate FROM migrate.migrations ORDER BY id DESC LIMIT 1",
                    &[],
                )
                .map(|r| (r.get(0), r.get(1)))
                .map_err(|e| sqlstate(&e))?;
            match phase.as_str() {
                "failed" => return Err(code.unwrap_or_default()),
                "done" | "ready" => break,
                _ => {}
            }
        }
    }
    h.batch_execute("SELECT migrate.finish('t', '120s')")
        .map_err(|e| sqlstate(&e))?;
    if !background {
        // finish() swapped in its own transaction, and left the foreign
        // keys to validate to step() (its own lock would block writes).
        for _ in 0..100 {
            let said: String = h
                .query_one("SELECT migrate.step('t')", &[])
                .map_err(|e| sqlstate(&e))?
                .get(0);
            if said == "done" || said.contains(" done") {
                break;
            }
        }
    }
    let found: i64 = h
        .query_one(
            "SELECT coalesce(verify_differences, 0) FROM migrate.migrations ORDER BY id DESC LIMIT 1",
            &[],
        )
        .map_err(|e| sqlstate(&e))?
        .get(0);
    if found != 0 {
        return Err(format!("VERIFY {found}"));
    }
    Ok(())
}

fn same_rows(h: &mut Client) -> Result<(), Finding> {
    let digest = |h: &mut Client, t: &str| -> (i64, String) {
        let r = h
            .query_one(
                &format!("SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x.id)), '') FROM {t} x"),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (a, b) = (digest(h, "t"), digest(h, "t_control"));
    if a != b {
        return Err(finding(
            "rows differ",
            format!("t has {} rows, its control {}", a.0, b.0),
        ));
    }
    Ok(())
}

/// The table's catalog entry, normalized: everything a plain ALTER decides,
/// nothing that differs between two databases (OIDs, relfilenodes).
pub fn catalog(c: &mut Client) -> String {
    c.query_one(
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
           SELECT format('col %s %s %s notnull=%s default=%s gen=%s id=%s coll=%s stat=%s storage=%s',
                         a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                         pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity,
                         a.attcollation::regcollation, a.attstattarget, a.attstorage) AS x
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = 't'::regclass AND a.attnum > 0 AND NOT a.attisdropped
           UNION ALL
           SELECT format('con %s on %s: %s valid=%s deferrable=%s', conname, conrelid::regclass,
                         pg_get_constraintdef(oid), convalidated, condeferrable)
             FROM pg_constraint WHERE conrelid = 't'::regclass OR confrelid = 't'::regclass
           UNION ALL
           SELECT 'idx ' || pg_get_indexdef(indexrelid) || ' replident=' || indisreplident
             FROM pg_index WHERE indrelid = 't'::regclass
           UNION ALL
           SELECT format('trg %s %s', pg_get_triggerdef(oid), tgenabled)
             FROM pg_trigger WHERE tgrelid = 't'::regclass AND NOT tgisinternal
              -- a revert window's capture triggers are halo_migrate's own
              AND tgname NOT LIKE 'halo\\_%'
           UNION ALL
           SELECT format('pol %s %s %s', polname, polcmd, pg_get_expr(polqual, polrelid))
             FROM pg_policy WHERE polrelid = 't'::regclass
           UNION ALL
           SELECT format('rel %s%s replident=%s rls=%s,%s options=%s acl=%s owner=%s tablespace=%s', relkind,
                         relpersistence, relreplident, relrowsecurity, relforcerowsecurity,
                         reloptions, relacl, relowner::regrole,
                         (SELECT spcname FROM pg_tablespace WHERE oid = reltablespace))
             FROM pg_class WHERE oid = 't'::regclass
           UNION ALL
           SELECT format('rule %s', pg_get_ruledef(oid)) FROM pg_rewrite
            WHERE ev_class = 't'::regclass
           UNION ALL
           SELECT format('stat %s %s', stxname, pg_get_statisticsobjdef_columns(oid))
             FROM pg_statistic_ext WHERE stxrelid = 't'::regclass
           UNION ALL
           SELECT format('comment %s %s', objsubid, description)
             FROM pg_description WHERE objoid = 't'::regclass AND classoid = 'pg_class'::regclass
           UNION ALL
           SELECT format('pub %s', p.pubname)
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
            WHERE r.prrelid = 't'::regclass
           UNION ALL
           SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
             FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
         ) s",
        &[],
    )
    .unwrap()
    .get::<_, Option<String>>(0)
    .unwrap_or_default()
}

/// The lines of `b` not in `a` (+) and of `a` not in `b` (-).
fn diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out: Vec<String> = la
        .iter()
        .filter(|l| !lb.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        lb.iter()
            .filter(|l| !la.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out.join("\n")
}

/// Writers applying one generic transaction at a time to `t` and
/// `t_control` in `fz_h`: copy a row under a new key, move a row's key,
/// delete a row, touch a row, or overwrite a row with another's values.
/// Whatever the shape, before and after the swap.
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(Duration, u64)>>,
}

impl Writers {
    fn start(cluster: &Cluster, n: usize, rows: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|w| {
                let mut c = cluster.client_db("fz_h");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut worst, mut ok) = (Duration::ZERO, 0);
                    let mut i = w as i64;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        if write(&mut c, i, rows).is_ok() {
                            ok += 1;
                        }
                        worst = worst.max(t0.elapsed());
                        i += n as i64;
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    (worst, ok)
                })
            })
            .collect();
        Writers { stop, handles }
    }

    fn stop(self) -> (Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((Duration::ZERO, 0), |a, b| (a.0.max(b.0), a.1 + b.1))
    }
}

fn write(c: &mut Client, i: i64, rows: i64) -> Result<(), postgres::Error> {
    let k = 1 + (i * 7919) % rows;
    let k2 = 1 + (i * 104_729) % rows;
    let fresh = 10_000_000 + i;
    let mut tx = c.transaction()?;
    for t in ["t", "t_control"] {
        let others: String = tx
            .query_one(
                "SELECT coalesce(string_agg(', ' || quote_ident(attname), '' ORDER BY attnum), '')
                   FROM pg_attribute
                  WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
                    AND attgenerated = '' AND attname <> 'id'",
                &[&t],
            )?
            .get(0);
        let copy = |new: &str, from: &str| {
            format!("INSERT INTO {t} (id{others}) OVERRIDING SYSTEM VALUE SELECT {new}{others} FROM {t} WHERE id = {from}")
        };
        let sql = match i % 5 {
            0 => copy("$2::bigint", "$1::bigint"),
            1 => format!(
                "UPDATE {t} SET id = id + 1000000 WHERE id = $1::bigint AND $2::bigint IS NOT NULL"
            ),
            2 => format!("DELETE FROM {t} WHERE id = $1::bigint AND $2::bigint IS NOT NULL"),
            3 => format!("UPDATE {t} SET id = id WHERE id = $1::bigint AND $2::bigint IS NOT NULL"),
            _ => {
                tx.execute(&format!("DELETE FROM {t} WHERE id = $1::bigint"), &[&k])?;
                copy("$1::bigint", "$2::bigint")
            }
        };
        let second = if i % 5 == 4 { k2 } else { fresh };
        tx.execute(sql.as_str(), &[&k, &second])?;
    }
    tx.commit()
}
