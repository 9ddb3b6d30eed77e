//! Versioned (expand/contract) migrations: an old and a new application
//! version writing at once, each through its own schema, with a control
//! table written in the same transactions; then the contract (or the
//! rollback) while clients go on.

use crate::harness::*;
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `acc` and its control `acc_control`, same rows.
fn make(c: &mut Client, rows: i64) {
    for t in ["acc", "acc_control"] {
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name text, legacy int NOT NULL, note text);
             INSERT INTO {t} SELECT g, CASE WHEN g % 9 = 0 THEN NULL ELSE 'n' || g END, g, NULL
               FROM generate_series(1, {rows}) g;"
        ))
        .unwrap();
    }
}

/// A client loop until stopped: `write(client, i)` is one transaction;
/// returns (committed, failed).
fn client_loop(
    cluster: &Cluster,
    search_path: &str,
    stop: &Arc<AtomicBool>,
    write: impl Fn(&mut Client, i64) -> Result<(), postgres::Error> + Send + 'static,
) -> JoinHandle<(u64, u64, Vec<String>)> {
    let mut c = cluster.client();
    c.batch_execute(&format!("SET search_path = {search_path}"))
        .unwrap();
    let stop = stop.clone();
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut errors) = (0, 0, Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            match write(&mut c, i) {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if errors.len() < 3 {
                        errors.push(format!("{} {e}", sqlstate(&e)));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        (ok, failed, errors)
    })
}

/// An old client: the base shape (`name`), control alike.
fn old_write(c: &mut Client, i: i64, base: i64) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    let (id, k) = ((base + i) as i32, ((i * 37) % 1000 + 1) as i32);
    for t in ["acc", "acc_control"] {
        match i % 4 {
            0 => tx.execute(&format!("UPDATE {t} SET name = NULL WHERE id = $1"), &[&k])?,
            1 => tx.execute(&format!("DELETE FROM {t} WHERE id = $1"), &[&k])?,
            _ => tx.execute(
                &format!("INSERT INTO {t} (id, name, legacy) VALUES ($1, 'old' || $1::int, $1)"),
                &[&id],
            )?,
        };
    }
    tx.commit()
}

#[test]
fn a_rename_served_to_two_versions_then_contracted() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 1000);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('acc', 'RENAME COLUMN name TO full_name', version => 'v2')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(phase(&mut c, id), "expanded", "a rename needs no backfill");
    // Each version sees the other's writes in its own shape.
    c.batch_execute(
        "INSERT INTO public_v2.acc (id, full_name, legacy) VALUES (900001, 'from v2', 1);
         INSERT INTO acc_control (id, name, legacy) VALUES (900001, 'from v2', 1);",
    )
    .unwrap();
    let seen: String = c
        .query_one("SELECT name FROM public.acc WHERE id = 900001", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, "from v2");
    // Through the view: RETURNING, ON CONFLICT, and the table's own checks.
    let r = c
        .query_one(
            "INSERT INTO public_v2.acc (id, full_name, legacy) VALUES (900001, 'again', 2)
             ON CONFLICT (id) DO UPDATE SET full_name = excluded.full_name RETURNING full_name, legacy",
            &[],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, i32>(1)),
        ("again".into(), 1)
    );
    c.batch_execute("UPDATE acc_control SET name = 'again' WHERE id = 900001")
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO public_v2.acc (id, full_name) VALUES (900002, 'no legacy')")
        .unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "23502",
        "NOT NULL holds through the view: {e}"
    );
    let stop_old = Arc::new(AtomicBool::new(false));
    let stop_new = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop_old, |c, i| {
        old_write(c, i, 100_000)
    });
    let new = client_loop(&cluster, "public_v2, public", &stop_new, |c, i| {
        let mut tx = c.transaction()?;
        let id = (200_000 + i) as i32;
        // RETURNING through the view; the control gets the same row.
        let r = tx.query_one(
            "INSERT INTO acc (id, full_name, legacy) VALUES ($1, CASE WHEN $1::int % 5 = 0 THEN NULL ELSE 'new' || $1::int END, $1) RETURNING full_name",
            &[&id],
        )?;
        let name: Option<String> = r.get(0);
        tx.execute(
            "INSERT INTO acc_control (id, name, legacy) VALUES ($1, $2, $1)",
            &[&id, &name],
        )?;
        let k = ((i * 71) % 1000 + 1) as i32;
        tx.execute(
            "UPDATE acc SET full_name = 'upd' || $1::int WHERE id = $1",
            &[&k],
        )?;
        tx.execute(
            "UPDATE public.acc_control SET name = 'upd' || $1::int WHERE id = $1",
            &[&k],
        )?;
        tx.commit()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // The old version is retired first; the new one goes on through the contract.
    stop_old.store(true, Ordering::Relaxed);
    let (old_ok, old_failed, old_errors) = old.join().unwrap();
    assert!(
        old_ok > 20 && old_failed == 0,
        "old clients: {old_ok} ok, {old_errors:?}"
    );
    let done: String = c
        .query_one("SELECT migrate.finish('acc')", &[])
        .unwrap()
        .get(0);
    assert!(done.contains("done"), "{done}");
    std::thread::sleep(Duration::from_millis(500));
    stop_new.store(true, Ordering::Relaxed);
    let (new_ok, new_failed, new_errors) = new.join().unwrap();
    assert!(new_ok > 20, "new clients: {new_ok} ok");
    assert_eq!(
        new_failed, 0,
        "new clients broke at the contract: {new_errors:?}"
    );
    assert_matches_control(&mut c, "acc", "RENAME COLUMN name TO full_name");
    // The version schema stays for the new clients, now a plain view.
    let n: i64 = c
        .query_one("SELECT count(*) FROM public_v2.acc", &[])
        .unwrap()
        .get(0);
    assert!(n > 1000);
    assert_eq!(leftover_triggers(&mut c), 0);
    let v: String = c
        .query_one("SELECT phase FROM migrate.versions()", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "contracted");
    c.batch_execute("SELECT migrate.drop_version('public_v2')")
        .unwrap();
    assert!(!schema_exists(&mut c, "public_v2"));
}

fn leftover_triggers(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'halo_version_%'",
        &[],
    )
    .unwrap()
    .get(0)
}

fn schema_exists(c: &mut Client, s: &str) -> bool {
    c.query_one(
        "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
        &[&s],
    )
    .unwrap()
    .get(0)
}

const DROP_ADD: &str = "DROP COLUMN legacy, ADD COLUMN score int NOT NULL";
const UP: &str = r#"{"score": "coalesce(length(name), 0)"}"#;
const DOWN: &str = r#"{"legacy": "id * 10"}"#;

/// Old clients write `legacy`, new ones `score`; the control holds both,
/// computed as the triggers compute them.
fn drop_add_clients(
    cluster: &Cluster,
    stop: &Arc<AtomicBool>,
    round: i64,
) -> (
    JoinHandle<(u64, u64, Vec<String>)>,
    JoinHandle<(u64, u64, Vec<String>)>,
) {
    let old = client_loop(cluster, "public", stop, move |c, i| {
        let mut tx = c.transaction()?;
        let id = (300_000 + round * 40_000 + i) as i32;
        tx.execute(
            "INSERT INTO acc (id, name, legacy) VALUES ($1, 'o' || $1::int, $1)",
            &[&id],
        )?;
        tx.execute(
            "INSERT INTO acc_control (id, name, legacy, score) VALUES ($1, 'o' || $1::int, $1, length('o' || $1::int))",
            &[&id],
        )?;
        let k = ((i * 37) % 1000 + 1) as i32;
        // Not a column up reads: a row's score then does not depend on
        // whether the backfill or this update filled it first.
        tx.execute("UPDATE acc SET note = 'o' WHERE id = $1", &[&k])?;
        tx.execute("UPDATE acc_control SET note = 'o' WHERE id = $1", &[&k])?;
        tx.commit()
    });
    let new = client_loop(cluster, "public_v2, public", stop, move |c, i| {
        let mut tx = c.transaction()?;
        let id = (400_000 + round * 40_000 + i) as i32;
        tx.execute(
            "INSERT INTO acc (id, name, score) VALUES ($1, NULL, $1::int % 7)",
            &[&id],
        )?;
        tx.execute(
            "INSERT INTO public.acc_control (id, name, legacy, score) VALUES ($1, NULL, $1::int * 10, $1::int % 7)",
            &[&id],
        )?;
        let k = ((i * 53) % 1000 + 1) as i32;
        tx.execute("DELETE FROM acc WHERE id = $1", &[&k])?;
        tx.execute("DELETE FROM public.acc_control WHERE id = $1", &[&k])?;
        tx.commit()
    });
    (old, new)
}

#[test]
fn drop_and_add_backfilled_through_a_crash_then_contracted() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 60_000);
    c.batch_execute(
        "ALTER TABLE acc_control ADD COLUMN score int;
         UPDATE acc_control SET score = coalesce(length(name), 0);",
    )
    .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('acc', $1, version => 'v2', up => $2::text::jsonb, down => $3::text::jsonb, batch_rows => 500)",
            &[&DROP_ADD, &UP, &DOWN],
        )
        .unwrap()
        .get(0);
    c.batch_execute("SELECT migrate.throttle('acc', batch_pause => '20ms')")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (old, new) = drop_add_clients(&cluster, &stop, 0);
    wait_until("the backfill to start", || {
        c.query_one(
            "SELECT rows_copied FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get::<_, i64>(0)
            > 2000
    });
    // A crash mid-backfill: clients lose their connections; resume()
    // takes the backfill up where it committed.
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    stop.store(true, Ordering::Relaxed);
    let _ = old.join();
    let _ = new.join();
    let mut c = cluster.crash_by_killing(pid);
    let stored: String = c
        .query_one("SELECT phase FROM migrate.migrations WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(stored, "copying", "the backfill was mid-way");
    let stop = Arc::new(AtomicBool::new(false));
    let (old, new) = drop_add_clients(&cluster, &stop, 1);
    c.batch_execute(
        "SELECT migrate.throttle('acc', batch_pause => '0'); SELECT migrate.resume('acc');",
    )
    .unwrap();
    wait_expanded(&mut c, "acc");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (o, n) = (old.join().unwrap(), new.join().unwrap());
    assert!(o.0 > 10 && o.1 == 0, "old clients: {o:?}");
    assert!(n.0 > 10 && n.1 == 0, "new clients: {n:?}");
    let nulls: i64 = c
        .query_one("SELECT count(*) FROM acc WHERE score IS NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
    c.batch_execute("SELECT migrate.finish('acc')").unwrap();
    // The version's view of acc_control holds its columns: the version goes
    // before the control is altered.
    c.batch_execute("SELECT migrate.drop_version('public_v2')")
        .unwrap();
    c.batch_execute("ALTER TABLE acc_control DROP COLUMN legacy, ALTER COLUMN score SET NOT NULL")
        .unwrap();
    assert_same_rows(&mut c, "acc");
    let notnull: bool = c
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'score'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(notnull);
    let checks: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'acc'::regclass AND contype = 'c'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!((checks, leftover_triggers(&mut c)), (0, 0));
}

/// Columns, constraints, triggers and indexes of `acc`.
fn facts(c: &mut Client) -> String {
    c.query_one(
        "SELECT concat_ws(' | ',
           (SELECT string_agg(attname || ':' || atttypid::regtype || ':' || attnotnull, ',' ORDER BY attnum)
              FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attnum > 0 AND NOT attisdropped),
           (SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'acc'::regclass),
           (SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'acc'::regclass),
           (SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index WHERE indrelid = 'acc'::regclass))",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_rollback_leaves_the_table_as_it_was_and_old_clients_go_on() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 5000);
    let before = facts(&mut c);
    c.query_one(
        "SELECT migrate.start('acc', $1, version => 'v2', up => $2::text::jsonb, down => $3::text::jsonb, background => false)",
        &[&DROP_ADD, &UP, &DOWN],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| old_write(c, i, 500_000));
    let mut v2 = cluster.client();
    v2.batch_execute("SET search_path = public_v2, public")
        .unwrap();
    v2.batch_execute("INSERT INTO acc (id, name, score) VALUES (7000001, 'v2', 3)")
        .unwrap();
    // step() drives the backfill without a worker.
    for _ in 0..3 {
        c.batch_execute("SELECT migrate.step('acc')").unwrap();
    }
    c.batch_execute("SELECT migrate.abort('acc')").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = old.join().unwrap();
    assert!(ok > 10 && failed == 0, "old clients: {ok} ok, {errors:?}");
    assert_eq!(facts(&mut c), before);
    assert!(!schema_exists(&mut c, "public_v2"));
    // The row the new version wrote stays, in the old shape (legacy from down).
    let legacy: i32 = c
        .query_one("SELECT legacy FROM acc WHERE id = 7000001", &[])
        .unwrap()
        .get(0);
    assert_eq!(legacy, 70000010);
    // The new version's clients get an error, not the old shape silently.
    let e = v2
        .batch_execute("INSERT INTO acc (id, name, score) VALUES (7000002, 'v2', 3)")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42703", "{e}");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn two_tables_share_a_version_and_other_versions_follow_a_contract() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, x text, gone int);
         CREATE TABLE b (id int PRIMARY KEY, y text);
         INSERT INTO a SELECT g, 'x', g FROM generate_series(1, 100) g;
         INSERT INTO b SELECT g, 'y' FROM generate_series(1, 100) g;
         SELECT migrate.start('a', 'RENAME COLUMN x TO x2', version => 'v2');
         SELECT migrate.start('b', 'RENAME COLUMN y TO y2', version => 'v2');",
    )
    .unwrap();
    // One version, both new shapes.
    c.batch_execute(
        "SELECT x2 FROM public_v2.a LIMIT 1; SELECT y2 FROM public_v2.b LIMIT 1;
         INSERT INTO public_v2.b (id, y2) VALUES (1000, 'y');",
    )
    .unwrap();
    assert_eq!(
        c.query_one("SELECT count(*) FROM migrate.versions()", &[])
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    // Only one migration per table at a time.
    let e = c
        .batch_execute("SELECT migrate.start('a', 'DROP COLUMN gone', version => 'v3')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55006", "{e}");
    c.batch_execute("SELECT migrate.finish('a')").unwrap();
    // v2 still serves b's new shape; a's view there follows its contract.
    c.batch_execute("SELECT x2, y2 FROM public_v2.a, public_v2.b LIMIT 1")
        .unwrap();
    let e = c
        .batch_execute("SELECT migrate.drop_version('public_v2')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55006", "{e}");
    // A new version of a: v3 holds only a's view; with search_path
    // public_v3, public, b is the table as it is (y, not renamed yet).
    c.batch_execute("SELECT migrate.start('a', 'DROP COLUMN gone', version => 'v3')")
        .unwrap();
    let mut v3 = cluster.client();
    v3.batch_execute("SET search_path = public_v3, public")
        .unwrap();
    let e = v3.batch_execute("SELECT y2 FROM b").unwrap_err();
    assert_eq!(sqlstate(&e), "42703", "{e}");
    // a's v3 contracts while b's migration still uses v2, whose view of a
    // reads "gone": the contract drops that view and makes it again
    // without the column; v2 stays.
    c.batch_execute("SELECT migrate.finish('a')").unwrap();
    assert!(schema_exists(&mut c, "public_v2"));
    c.batch_execute("SELECT x2 FROM public_v2.a LIMIT 1")
        .unwrap();
    let e = c.batch_execute("SELECT gone FROM public_v2.a").unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "42703",
        "v2's view of a follows a's contract: {e}"
    );
    let e = v3.batch_execute("SELECT gone FROM a").unwrap_err();
    assert_eq!(sqlstate(&e), "42703", "{e}");
    c.batch_execute("SELECT migrate.finish('b')").unwrap();
    v3.batch_execute("SELECT y2 FROM b LIMIT 1; SELECT x2 FROM a LIMIT 1")
        .unwrap();
    assert!(schema_exists(&mut c, "public_v3"));
    c.batch_execute("SELECT gone FROM a").unwrap_err();
    // A later versioned migration of a drops a's earlier versions no live
    // migration uses: v2 (b's is done) and v3.
    c.batch_execute(
        "SELECT migrate.start('a', 'RENAME COLUMN x2 TO x3', version => 'v4');
         SELECT migrate.finish('a');",
    )
    .unwrap();
    assert!(!schema_exists(&mut c, "public_v2"));
    assert!(!schema_exists(&mut c, "public_v3"));
    assert!(schema_exists(&mut c, "public_v4"));
}

#[test]
fn the_dry_run_shows_every_phase_and_changes_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 100);
    let before = facts(&mut c);
    let rows = c
        .query(
            "SELECT phase, sql FROM migrate.plan_version('acc',
                 'DROP COLUMN legacy, ADD COLUMN score int NOT NULL, ALTER COLUMN note TYPE varchar(20)',
                 'v2', up => '{\"score\": \"length(name)\"}', down => '{\"legacy\": \"0\"}') ORDER BY step",
            &[],
        )
        .unwrap();
    let steps: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let text = format!("{steps:#?}");
    let phases: Vec<&str> = steps.iter().map(|(p, _)| p.as_str()).collect();
    for p in ["expand", "backfill", "validate", "expanded", "contract"] {
        assert!(phases.contains(&p), "no {p} step: {text}");
    }
    for needle in [
        "ADD COLUMN score int",
        "CREATE SCHEMA public_v2",
        "CREATE VIEW public_v2.acc",
        "_halo_v2_note AS note",
        "score := length(name)",
        "legacy := 0",
        "VALIDATE CONSTRAINT",
        "DROP COLUMN legacy",
        "RENAME COLUMN _halo_v2_note TO note",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    assert_eq!(facts(&mut c), before);
    assert!(!schema_exists(&mut c, "public_v2"));
    let n: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The dry run refuses what start() refuses.
    let e = c
        .batch_execute(
            "SELECT * FROM migrate.plan_version('acc', 'ADD COLUMN s int NOT NULL', 'v2')",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023", "{e}");
}

#[test]
fn refusals_change_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 100);
    c.batch_execute(
        "CREATE TABLE pt (id int) PARTITION BY RANGE (id);
         CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (10);
         CREATE SCHEMA public_taken;
         CREATE TABLE secured (id int PRIMARY KEY);
         ALTER TABLE secured ENABLE ROW LEVEL SECURITY;",
    )
    .unwrap();
    let before = facts(&mut c);
    for (sql, code) in [
        ("SELECT migrate.start('acc', 'ALTER COLUMN id TYPE bigint', version => 'v2')", "0A000"),
        ("SELECT migrate.start('acc', 'ADD COLUMN s int NOT NULL', version => 'v2')", "22023"),
        ("SELECT migrate.start('acc', 'DROP COLUMN legacy', version => 'v2')", "22023"),
        (r#"SELECT migrate.start('acc', 'ADD COLUMN s int NOT NULL', version => 'v2', up => '{"s": "1); DROP TABLE acc; SELECT (1"}')"#, "22023"),
        (r#"SELECT migrate.start('acc', 'ADD COLUMN s int NOT NULL', version => 'v2', up => '{"s": "no_such_column + 1"}')"#, "42703"),
        (r#"SELECT migrate.start('acc', 'RENAME COLUMN name TO n', version => 'v2', up => '{"n": "1"}')"#, "22023"),
        ("SELECT migrate.start('acc', 'ADD COLUMN s int DEFAULT random()', version => 'v2')", "0A000"),
        ("SELECT migrate.start('acc', 'RENAME COLUMN name TO n', version => 'taken')", "42P06"),
        ("SELECT migrate.start('acc', 'RENAME COLUMN name TO n', version => 'v2', verify => true)", "22023"),
        ("SELECT migrate.start('acc', 'RENAME COLUMN nope TO n', version => 'v2')", "42703"),
        ("SELECT migrate.start('pt1', 'RENAME COLUMN id TO k', version => 'v2')", "0A000"),
        ("SELECT migrate.start('pt', 'DROP COLUMN id', version => 'v2')", "0A000"),
        ("SELECT migrate.start('acc', 'RENAME COLUMN name TO n', version => 'v2', auto_finish => true)", "22023"),
        ("SELECT migrate.start('acc', 'RENAME COLUMN name TO n', up => '{}')", "22023"),
        ("SELECT migrate.drop_version('public')", "3F000"),
        (r#"SELECT migrate.start('acc', 'ADD FOREIGN KEY (legacy) REFERENCES acc (id) DEFERRABLE', version => 'v2', up => '{"legacy": "0"}')"#, "0A000"),
        (r#"SELECT migrate.start('acc', 'ADD FOREIGN KEY (legacy) REFERENCES secured (id)', version => 'v2', up => '{"legacy": "0"}')"#, "0A000"),
        ("SELECT migrate.start('acc', 'ADD COLUMN halo_migrate_new_row int', version => 'v2')", "0A000"),
    ] {
        let e = c.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
    assert_eq!(facts(&mut c), before);
    let live: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        live,
        0,
        "{:?}",
        c.query("SELECT id, phase, alter_sql FROM migrate.migrations", &[])
            .unwrap()
            .iter()
            .map(|r| (
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            ))
            .collect::<Vec<_>>()
    );
    assert!(!schema_exists(&mut c, "public_v2"));
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn type_changes_kept_in_step_both_ways_then_contracted() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    for t in ["acc", "acc_control"] {
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, flag text, amount int NOT NULL DEFAULT 7);
             INSERT INTO {t} SELECT g, (ARRAY['yes', 'no', NULL, 'maybe'])[1 + g % 4], g
               FROM generate_series(1, 20000) g;"
        ))
        .unwrap();
    }
    // USING maps NULL to a value: the backfill must fill those rows too.
    let alter =
        "ALTER COLUMN flag TYPE boolean USING coalesce(flag = 'yes', false), ALTER COLUMN amount TYPE bigint";
    let down = r#"{"flag": "CASE WHEN flag THEN 'yes' WHEN NOT flag THEN 'no' END"}"#;
    // A column an index uses cannot change type this way.
    let e = c
        .batch_execute(
            "SELECT migrate.start('acc', 'ALTER COLUMN id TYPE bigint', version => 'v2')",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    c.query_one(
        "SELECT migrate.start('acc', $1, version => 'v2', down => $2::text::jsonb, batch_rows => 1000)",
        &[&alter, &down],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let (id, k) = ((100_000 + i) as i32, ((i * 37) % 20_000 + 1) as i32);
        let flag = ["yes", "no", "maybe"][(i % 3) as usize];
        for t in ["acc", "acc_control"] {
            tx.execute(
                &format!("INSERT INTO {t} (id, flag) VALUES ($1, $2)"),
                &[&id, &flag],
            )?;
            tx.execute(
                &format!("UPDATE {t} SET flag = NULL, amount = amount + 1 WHERE id = $1"),
                &[&k],
            )?;
        }
        tx.commit()
    });
    let new = client_loop(&cluster, "public_v2, public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let (id, k) = ((200_000 + i) as i32, ((i * 53) % 20_000 + 1) as i32);
        // Never NULL: the plain ALTER of the control would map its NULL to
        // false, where a new client's NULL stays NULL.
        let flag = Some(i % 2 == 0);
        let amount: i64 = 1_000_000 + i;
        tx.execute(
            "INSERT INTO acc (id, flag, amount) VALUES ($1, $2, $3)",
            &[&id, &flag, &amount],
        )?;
        tx.execute(
            "INSERT INTO public.acc_control (id, flag, amount)
             VALUES ($1, CASE WHEN $2::bool THEN 'yes' WHEN NOT $2::bool THEN 'no' END, $3::bigint)",
            &[&id, &flag, &amount],
        )?;
        tx.execute(
            "UPDATE acc SET flag = NOT coalesce(flag, false) WHERE id = $1",
            &[&k],
        )?;
        tx.execute(
            "UPDATE public.acc_control SET flag = CASE WHEN coalesce(flag = 'yes', false) THEN 'no' ELSE 'yes' END WHERE id = $1",
            &[&k],
        )?;
        tx.commit()
    });
    wait_expanded(&mut c, "acc");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (o, n) = (old.join().unwrap(), new.join().unwrap());
    assert!(o.0 > 10 && o.1 == 0, "old clients: {o:?}");
    assert!(n.0 > 10 && n.1 == 0, "new clients: {n:?}");
    // Each version reads the other's writes in its own shape.
    let row = c
        .query_one(
            "SELECT count(*) FROM acc a JOIN public_v2.acc v USING (id)
              WHERE v.flag IS DISTINCT FROM coalesce(a.flag = 'yes', false) OR a.amount <> v.amount",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the two shapes differ");
    c.batch_execute("SELECT migrate.finish('acc'); SELECT migrate.drop_version('public_v2');")
        .unwrap();
    c.batch_execute(&format!("ALTER TABLE acc_control {alter}"))
        .unwrap();
    let diff: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT id, flag, amount FROM acc
                                           EXCEPT ALL SELECT id, flag, amount FROM acc_control) a)
                  + (SELECT count(*) FROM (SELECT id, flag, amount FROM acc_control
                                           EXCEPT ALL SELECT id, flag, amount FROM acc) b)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(diff, 0, "acc differs from its control after the contract");
    let shape: String = c
        .query_one(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull, ', ' ORDER BY attname)
               FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        shape,
        "amount bigint true, flag boolean false, id integer true"
    );
    // The default moved to the new column.
    let amount: i64 = c
        .query_one(
            "INSERT INTO acc (id, flag) VALUES (999999, true) RETURNING amount",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(amount, 7);
    let nulls: i64 = c
        .query_one("SELECT count(*) FROM acc WHERE flag IS NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0, "USING gave NULLs a value, in the backfill too");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_check_whose_failures_up_maps_under_old_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    for t in ["acc", "acc_control"] {
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, amount int);
             INSERT INTO {t} SELECT g, CASE WHEN g % 5 = 0 THEN -g WHEN g % 7 = 0 THEN NULL ELSE g END
               FROM generate_series(1, 30000) g;"
        ))
        .unwrap();
    }
    // The control gets what the check's mapping gives: 0 for a negative amount.
    c.batch_execute("UPDATE acc_control SET amount = 0 WHERE amount < 0")
        .unwrap();
    c.query_one(
        "SELECT migrate.start('acc', 'ADD CONSTRAINT amount_nonneg CHECK (amount >= 0)', version => 'v2',
                              up => '{\"amount\": \"0\"}', batch_rows => 2000)",
        &[],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let (id, amount) = (
            (100_000 + i) as i32,
            if i % 2 == 0 { -(i as i32) } else { i as i32 },
        );
        tx.execute(
            "INSERT INTO acc (id, amount) VALUES ($1, $2)",
            &[&id, &amount],
        )?;
        tx.execute(
            "INSERT INTO acc_control (id, amount) VALUES ($1, greatest($2, 0))",
            &[&id, &amount],
        )?;
        let k = ((i * 37) % 30_000 + 1) as i32;
        tx.execute("UPDATE acc SET amount = -1 WHERE id = $1", &[&k])?;
        tx.execute("UPDATE acc_control SET amount = 0 WHERE id = $1", &[&k])?;
        tx.commit()
    });
    contract_a_mapped_constraint(&mut c, stop, old, "amount_nonneg");
    let e = c
        .batch_execute("INSERT INTO acc (id, amount) VALUES (1, -5) ON CONFLICT (id) DO UPDATE SET amount = -5")
        .unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "23514",
        "the check holds after the contract: {e}"
    );
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_partitioned_table_expanded_backfilled_and_contracted_under_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE pt (id int PRIMARY KEY, name text) PARTITION BY RANGE (id);
         CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (MINVALUE) TO (10000);
         CREATE TABLE pt_2 PARTITION OF pt FOR VALUES FROM (10000) TO (20000);
         CREATE TABLE pt_d PARTITION OF pt DEFAULT;
         CREATE TABLE pt_control (id int PRIMARY KEY, name text);
         INSERT INTO pt SELECT g, 'n' || g FROM generate_series(1, 30000) g;
         INSERT INTO pt_control SELECT * FROM pt;",
    )
    .unwrap();
    c.batch_execute(
        "ALTER TABLE pt_control ADD COLUMN score int; UPDATE pt_control SET score = length(name);",
    )
    .unwrap();
    c.query_one(
        "SELECT migrate.start('pt', 'ADD COLUMN score int NOT NULL', version => 'v2',
                              up => '{\"score\": \"length(name)\"}', batch_rows => 1500)",
        &[],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        // New rows land in every partition, the default one too.
        let id = (40_000 + i * 7 % 30_000 + i * 30_000) as i32;
        tx.execute(
            "INSERT INTO pt (id, name) VALUES ($1, 'o' || $1::int)",
            &[&id],
        )?;
        tx.execute(
            "INSERT INTO pt_control (id, name, score) VALUES ($1, 'o' || $1::int, length('o' || $1::int))",
            &[&id],
        )?;
        tx.commit()
    });
    let new = client_loop(&cluster, "public_v2, public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let (id, k) = ((-(i as i32)), ((i * 37) % 30_000 + 1) as i32);
        tx.execute(
            "INSERT INTO pt (id, name, score) VALUES ($1, NULL, 5)",
            &[&id],
        )?;
        tx.execute(
            "INSERT INTO public.pt_control (id, name, score) VALUES ($1, NULL, 5)",
            &[&id],
        )?;
        // A key update that moves the row to another partition.
        tx.execute(
            "UPDATE pt SET id = id + 1000000000 WHERE id = $1 AND id < 5000",
            &[&k],
        )?;
        tx.execute(
            "UPDATE public.pt_control SET id = id + 1000000000 WHERE id = $1 AND id < 5000",
            &[&k],
        )?;
        tx.commit()
    });
    wait_expanded(&mut c, "pt");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (o, n) = (old.join().unwrap(), new.join().unwrap());
    assert!(o.0 > 10 && o.1 == 0, "old clients: {o:?}");
    assert!(n.0 > 10 && n.1 == 0, "new clients: {n:?}");
    c.batch_execute("SELECT migrate.finish('pt'); SELECT migrate.drop_version('public_v2');")
        .unwrap();
    c.batch_execute("ALTER TABLE pt_control ALTER COLUMN score SET NOT NULL")
        .unwrap();
    assert_same_rows(&mut c, "pt");
    let not_null: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attname = 'score' AND attnotnull
                AND attrelid IN ('pt'::regclass, 'pt_1'::regclass, 'pt_2'::regclass, 'pt_d'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(not_null, 4, "the parent and every partition");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn awkward_types_names_and_expressions_and_a_held_contract() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        r#"CREATE TABLE countries (id int PRIMARY KEY, name text);
           INSERT INTO countries VALUES (1, 'France'), (2, 'Peru');
           CREATE TABLE acc (id int PRIMARY KEY, name text, "loop" int, data json, country_id int,
                             "new" int, "old" int, tg_op text);
           INSERT INTO acc SELECT g, 'n' || g, g, json_build_object('g', g), 1 + g % 2, g, -g, 'x'
             FROM generate_series(1, 2000) g;"#,
    )
    .unwrap();
    // json has no equality operator; "loop" is reserved in PL/pgSQL; up reads
    // another table with a column of the same name as acc's.
    c.batch_execute(
        r#"SELECT migrate.start('acc', 'ALTER COLUMN data TYPE jsonb, ADD COLUMN country text, ADD COLUMN sum int',
                                version => 'v2', background => false,
                                up => '{"country": "(SELECT name FROM countries c WHERE c.id = country_id)",
                                        "sum": "\"new\" + \"old\" + length(tg_op)"}')"#,
    )
    .unwrap();
    // finish() does not backfill in its own transaction.
    let e = c.batch_execute("SELECT migrate.finish('acc')").unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e}");
    for _ in 0..20 {
        c.batch_execute("SELECT migrate.step('acc')").unwrap();
    }
    assert_eq!(
        c.query_one("SELECT phase FROM migrate.status('acc')", &[])
            .unwrap()
            .get::<_, String>(0),
        "expanded"
    );
    // Columns named new, old and tg_op are plain variables in up.
    let sums: i64 = c
        .query_one("SELECT count(*) FROM acc WHERE sum IS DISTINCT FROM 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(sums, 0, "every row's sum is new + old + length(tg_op) = 1");
    c.batch_execute(
        r#"UPDATE acc SET "new" = "new" + 1 WHERE id = 5;
           UPDATE public_v2.acc SET "old" = 0 WHERE id = 6;
           UPDATE acc SET "loop" = -1 WHERE id = 1;
           UPDATE public_v2.acc SET data = '{"v": 2}' WHERE id = 2;
           INSERT INTO acc (id, name, data, country_id) VALUES (3000, 'x', '{"o": 1}', 2);"#,
    )
    .unwrap();
    let rows = c
        .query(
            "SELECT id, data::text, country FROM public_v2.acc WHERE id IN (1, 2, 3, 3000) ORDER BY id",
            &[],
        )
        .unwrap();
    let got: Vec<(i32, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, r#"{"g": 1}"#.into(), Some("Peru".into())),
            (2, r#"{"v": 2}"#.into(), Some("France".into())),
            (3, r#"{"g": 3}"#.into(), Some("Peru".into())),
            (3000, r#"{"o": 1}"#.into(), Some("Peru".into())),
        ]
    );
    let old: String = c
        .query_one("SELECT data::text FROM acc WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        old, r#"{"v": 2}"#,
        "a new client's write reaches the old column"
    );
    // A reader holds the table: the contract waits, finish() times out, and
    // the migration stays expanded; once the reader is gone it contracts.
    let mut reader = cluster.client();
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM acc;")
        .unwrap();
    let e = c
        .batch_execute("SELECT migrate.finish('acc', timeout => '1s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert_eq!(
        c.query_one("SELECT phase FROM migrate.status('acc')", &[])
            .unwrap()
            .get::<_, String>(0),
        "expanded"
    );
    reader.batch_execute("COMMIT").unwrap();
    c.batch_execute("SELECT migrate.finish('acc')").unwrap();
    let t: String = c
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'data'", &[])
        .unwrap()
        .get(0);
    assert_eq!(t, "jsonb");
}

#[test]
fn a_foreign_key_whose_missing_rows_up_maps_under_old_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE owners (id int PRIMARY KEY);
         INSERT INTO owners SELECT generate_series(1, 50);
         CREATE TABLE acc (id int PRIMARY KEY, owner int);
         INSERT INTO acc SELECT g, g % 80 FROM generate_series(1, 20000) g;
         CREATE TABLE acc_control AS SELECT * FROM acc;
         ALTER TABLE acc_control ADD PRIMARY KEY (id);
         -- the mapping: an owner that does not exist becomes NULL
         UPDATE acc_control SET owner = NULL WHERE owner NOT IN (SELECT id FROM owners);",
    )
    .unwrap();
    c.batch_execute(
        "SELECT migrate.start('acc', 'ADD FOREIGN KEY (owner) REFERENCES owners (id)', version => 'v2',
                              up => '{\"owner\": \"NULL\"}', batch_rows => 1000)",
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let (id, owner) = ((100_000 + i) as i32, (i % 90) as i32);
        tx.execute(
            "INSERT INTO acc (id, owner) VALUES ($1, $2)",
            &[&id, &owner],
        )?;
        tx.execute(
            "INSERT INTO acc_control (id, owner)
             VALUES ($1, CASE WHEN $2 IN (SELECT id FROM owners) THEN $2 END)",
            &[&id, &owner],
        )?;
        tx.commit()
    });
    contract_a_mapped_constraint(&mut c, stop, old, "acc_owner_fkey");
    let e = c
        .batch_execute("DELETE FROM owners WHERE id = 1")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23503", "the key holds: {e}");
    assert_eq!(leftovers(&mut c), 0);
}

/// The end of a mapped constraint's test: once expanded, stop the old
/// clients (none failed), check the constraint was validated before the
/// contract, contract, and compare with the control.
fn contract_a_mapped_constraint(
    c: &mut Client,
    stop: Arc<AtomicBool>,
    old: JoinHandle<(u64, u64, Vec<String>)>,
    constraint: &str,
) {
    wait_expanded(c, "acc");
    // Old clients write on once expanded too.
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let o = old.join().unwrap();
    assert!(o.0 > 10 && o.1 == 0, "old clients: {o:?}");
    let valid: bool = c
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = $1",
            &[&constraint],
        )
        .unwrap()
        .get(0);
    assert!(valid, "validated before the contract");
    c.batch_execute("SELECT migrate.finish('acc'); SELECT migrate.drop_version('public_v2');")
        .unwrap();
    assert_same_rows(c, "acc");
}

#[test]
fn set_not_null_with_up_and_a_table_rename_under_two_versions() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make(&mut c, 20_000);
    // SET NOT NULL: old clients' NULLs become up's value, as do the rows
    // that hold one; the control gets the same.
    c.batch_execute(
        r#"SELECT migrate.start('acc', 'ALTER COLUMN name SET NOT NULL', version => 'v2',
                                up => '{"name": "''anon'' || id"}', batch_rows => 2000);
           UPDATE acc_control SET name = 'anon' || id WHERE name IS NULL;"#,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let old = client_loop(&cluster, "public", &stop, |c, i| {
        let mut tx = c.transaction()?;
        let id = (100_000 + i) as i32;
        tx.execute(
            "INSERT INTO acc (id, name, legacy) VALUES ($1, NULL, 1)",
            &[&id],
        )?;
        tx.execute(
            "INSERT INTO acc_control (id, name, legacy) VALUES ($1, 'anon' || $1::int, 1)",
            &[&id],
        )?;
        tx.commit()
    });
    wait_expanded(&mut c, "acc");
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let o = old.join().unwrap();
    assert!(o.0 > 10 && o.1 == 0, "old clients: {o:?}");
    c.batch_execute("SELECT migrate.finish('acc'); SELECT migrate.drop_version('public_v2');")
        .unwrap();
    assert_same_rows(&mut c, "acc");
    let (not_null, checks): (bool, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'name'),
                        (SELECT count(*) FROM pg_constraint WHERE conrelid = 'acc'::regclass AND contype = 'c')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(not_null);
    assert_eq!(checks, 0, "the helper check is gone");

    // RENAME TO: new clients see the table as people, old ones as acc;
    // after the contract the table is people and the version's view too.
    c.batch_execute("SELECT migrate.start('acc', 'RENAME TO people', version => 'v3')")
        .unwrap();
    let mut v3 = cluster.client();
    v3.batch_execute(
        "SET search_path = public_v3, public;
         INSERT INTO people (id, name, legacy) VALUES (900001, 'via v3', 1);",
    )
    .unwrap();
    c.batch_execute("UPDATE acc SET name = 'via base' WHERE id = 900001")
        .unwrap();
    let seen: String = v3
        .query_one("SELECT name FROM people WHERE id = 900001", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, "via base");
    c.batch_execute("SELECT migrate.finish('acc')").unwrap();
    v3.batch_execute("INSERT INTO people (id, name, legacy) VALUES (900002, 'after', 1)")
        .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM public.people WHERE id IN (900001, 900002)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let e = c.batch_execute("SELECT 1 FROM public.acc").unwrap_err();
    assert_eq!(sqlstate(&e), "42P01", "{e}");
}

/// Wait until the table's migration is expanded; a failure says why at once.
fn wait_expanded(c: &mut Client, table: &str) {
    wait_until("the expansion", || {
        let r = c
            .query_one(
                "SELECT phase, error FROM migrate.status($1::text::regclass)",
                &[&table],
            )
            .unwrap();
        let (phase, error): (String, Option<String>) = (r.get(0), r.get(1));
        assert!(phase != "failed", "the migration failed: {error:?}");
        phase == "expanded"
    });
}

#[test]
fn a_self_referencing_key_keeps_rows_that_reference_themselves() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE node (id int PRIMARY KEY, parent int);
         INSERT INTO node SELECT g, CASE WHEN g % 10 = 0 THEN g + 100000 ELSE g / 2 END
           FROM generate_series(1, 3000) g;
         SELECT migrate.start('node', 'ADD FOREIGN KEY (parent) REFERENCES node (id)', version => 'v2',
                              up => '{\"parent\": \"NULL\"}', background => false);",
    )
    .unwrap();
    // A row that references itself is valid: its parent stays.
    c.batch_execute("INSERT INTO node VALUES (5000, 5000), (5001, 999999)")
        .unwrap();
    for _ in 0..20 {
        c.batch_execute("SELECT migrate.step('node')").unwrap();
    }
    c.batch_execute("SELECT migrate.finish('node')").unwrap();
    let r = c
        .query_one(
            "SELECT (SELECT parent FROM node WHERE id = 5000),
                    (SELECT parent FROM node WHERE id = 5001),
                    (SELECT count(*) FROM node WHERE id % 10 = 0 AND id <= 3000 AND parent IS NOT NULL),
                    (SELECT count(*) FROM node WHERE id % 10 <> 0 AND id <= 3000 AND parent IS DISTINCT FROM id / 2)",
            &[],
        )
        .unwrap();
    let got: (Option<i32>, Option<i32>, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(
        got,
        (Some(5000), None, 0, 1),
        "row 1's parent 0 does not exist: mapped to NULL"
    );
}

#[test]
fn a_backfill_under_forced_row_security_is_refused() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE rls_owner LOGIN;
         GRANT CREATE ON DATABASE postgres TO rls_owner;
         CREATE TABLE acc (id int PRIMARY KEY, v int);
         INSERT INTO acc SELECT g, g FROM generate_series(1, 100) g;
         ALTER TABLE acc OWNER TO rls_owner;
         ALTER TABLE acc ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY low_ids ON acc USING (id <= 50);",
    )
    .unwrap();
    let mut owner = cluster.client_as("rls_owner");
    // A backfill would see only the rows the policy shows the owner.
    let e = owner
        .batch_execute("SELECT migrate.start('acc', 'ALTER COLUMN v TYPE bigint', version => 'v2')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(!schema_exists(&mut c, "public_v2"));
    // A rename needs no backfill: served as usual.
    owner
        .batch_execute(
            "SELECT migrate.start('acc', 'RENAME COLUMN v TO w', version => 'v2');
             SELECT migrate.finish('acc');",
        )
        .unwrap();
    let n: i64 = c.query_one("SELECT count(w) FROM acc", &[]).unwrap().get(0);
    assert_eq!(n, 100);
}
