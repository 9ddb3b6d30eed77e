//! The promise on tables that real databases have: row-level security with
//! FORCE, legacy inheritance, a `FOR ALL TABLES` publication with a real
//! subscriber, REPEATABLE READ readers whose snapshots predate the swap, and
//! the DDL guard that no setting can switch off. Each test failed before its
//! fix (issue 15).

use crate::harness::*;
use postgres::Client;
use std::time::Duration;

const COLUMNS: &str = "id int PRIMARY KEY, v int, payload text";

/// A table `secrets` owned by `app_owner`, RLS enabled and FORCEd, with a
/// policy that lets its owner see only tenant 'a': half of its 1000 rows.
fn forced_rls_table(c: &mut Client, bypass: bool) {
    c.batch_execute(&format!(
        "CREATE ROLE app_owner LOGIN {};
         GRANT CREATE ON SCHEMA public TO app_owner;
         SET ROLE app_owner;
         CREATE TABLE secrets (id int PRIMARY KEY, tenant text NOT NULL, v int);
         INSERT INTO secrets SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 1000) g;
         ALTER TABLE secrets ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY only_a ON secrets USING (tenant = 'a');
         RESET ROLE;",
        if bypass { "BYPASSRLS" } else { "" }
    ))
    .unwrap();
}

fn all_secrets(c: &mut Client) -> i64 {
    // As the superuser, who is never subject to row-level security.
    c.query_one("SELECT count(*) FROM secrets", &[])
        .unwrap()
        .get(0)
}

#[test]
fn forced_row_security_is_refused_up_front_without_bypassrls() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    forced_rls_table(&mut c, false);
    let mut owner = cluster.client_as("app_owner");
    for sql in [
        "SELECT count(*) FROM migrate.plan('secrets', 'ALTER COLUMN v TYPE bigint')",
        "SELECT migrate.start('secrets', 'ALTER COLUMN v TYPE bigint')",
    ] {
        let e = owner.query_one(sql, &[]).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        let db = e.as_db_error().unwrap();
        assert!(db.message().contains("row-level security"), "{db:?}");
        assert!(db.hint().unwrap_or("").contains("BYPASSRLS"), "{db:?}");
    }
    assert_eq!(leftovers(&mut c), 0);
    assert_eq!(all_secrets(&mut c), 1000);
    // Changes that read no rows through SQL are not affected.
    owner
        .batch_execute("SELECT migrate.start('secrets', 'ADD COLUMN note text')")
        .unwrap();
    // A superuser sees every row, so may migrate it.
    c.batch_execute(
        "SELECT migrate.start('secrets', 'ALTER COLUMN v TYPE bigint', background => false);
         SELECT migrate.finish('secrets');",
    )
    .unwrap();
    assert_eq!(all_secrets(&mut c), 1000);
}

#[test]
fn a_policy_that_starts_to_apply_mid_copy_fails_the_migration_loudly() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    forced_rls_table(&mut c, true);
    let mut owner = cluster.client_as("app_owner");
    owner
        .batch_execute(
            "SELECT migrate.start('secrets', 'ALTER COLUMN v TYPE bigint', batch_rows => 100, background => false)",
        )
        .unwrap();
    // The owner loses BYPASSRLS mid-migration: its policies now apply to it.
    c.batch_execute("ALTER ROLE app_owner NOBYPASSRLS").unwrap();
    let said: String = owner
        .query_one("SELECT migrate.step('secrets')", &[])
        .unwrap()
        .get(0);
    assert!(said.starts_with("failed:"), "{said}");
    assert!(said.contains("row-level security"), "{said}");
    let e = owner
        .query_one("SELECT migrate.finish('secrets')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert_eq!(all_secrets(&mut c), 1000, "the table is untouched");
    assert_eq!(leftovers(&mut c), 0);

    // The same when the policies start to apply after the copy, at replay.
    c.batch_execute("ALTER ROLE app_owner BYPASSRLS").unwrap();
    owner
        .batch_execute(
            "SELECT migrate.start('secrets', 'ALTER COLUMN v TYPE bigint', background => false)",
        )
        .unwrap();
    let mut said = String::new();
    while !said.starts_with("caught up") {
        said = owner
            .query_one("SELECT migrate.step('secrets')", &[])
            .unwrap()
            .get(0);
        assert!(!said.starts_with("failed"), "{said}");
    }
    c.batch_execute(
        "ALTER ROLE app_owner NOBYPASSRLS; UPDATE secrets SET v = v + 1 WHERE id <= 10",
    )
    .unwrap();
    let said: String = owner
        .query_one("SELECT migrate.step('secrets')", &[])
        .unwrap()
        .get(0);
    assert!(said.contains("row-level security"), "{said}");
    assert_eq!(all_secrets(&mut c), 1000, "the table is untouched");
    assert_eq!(leftovers(&mut c), 0);

    // With BYPASSRLS back, the same migration keeps every row.
    c.batch_execute("ALTER ROLE app_owner BYPASSRLS").unwrap();
    owner
        .batch_execute(
            "SELECT migrate.start('secrets', 'ALTER COLUMN v TYPE bigint', background => false);
             SELECT migrate.finish('secrets');",
        )
        .unwrap();
    assert_eq!(all_secrets(&mut c), 1000);
}

#[test]
fn inheritance_trees_are_refused_for_a_rewrite_and_left_alone() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE e9 (id int PRIMARY KEY, v int);
         CREATE TABLE e9_child () INHERITS (e9);
         INSERT INTO e9 SELECT g, g FROM generate_series(1, 100) g;
         INSERT INTO e9_child SELECT g, g FROM generate_series(101, 2000) g;
         ALTER TABLE e9_child ADD PRIMARY KEY (id);",
    )
    .unwrap();
    for (table, words) in [("e9", "child table"), ("e9_child", "inherits from")] {
        for sql in [
            format!("SELECT count(*) FROM migrate.plan('{table}', 'ALTER COLUMN v TYPE bigint')"),
            format!("SELECT migrate.start('{table}', 'ALTER COLUMN v TYPE bigint')"),
        ] {
            let e = c.query_one(sql.as_str(), &[]).unwrap_err();
            assert_eq!(sqlstate(&e), "0A000", "{sql}: {e:?}");
            let db = e.as_db_error().unwrap();
            assert!(db.detail().unwrap_or("").contains(words), "{sql}: {db:?}");
        }
    }
    // Any other rewrite of the parent, too.
    let e = c
        .query_one(
            "SELECT migrate.start('e9', 'ADD COLUMN r float8 DEFAULT random()')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
    assert_eq!(leftovers(&mut c), 0);
    // Catalog-only changes recurse without touching data: still allowed.
    c.batch_execute("SELECT migrate.start('e9', 'ADD COLUMN note text')")
        .unwrap();
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM e9), (SELECT count(*) FROM e9_child),
                    (SELECT count(*) FROM pg_attribute WHERE attrelid = 'e9_child'::regclass AND attname = 'note')",
            &[],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)),
        (2000, 1900, 1)
    );
}

/// Publisher and subscriber: a `FOR ALL TABLES` publication, writers on the
/// publisher during a migration; the subscription applies without a single
/// error and ends equal to the publisher.
#[test]
fn a_for_all_tables_subscriber_keeps_working_and_ends_equal() {
    const ROWS: i64 = 20_000;
    let (publisher, subscriber) = publisher_and_subscriber(COLUMNS, ROWS);
    let mut p = publisher.client();
    let mut s = subscriber.client();

    let writers = Writers::start(&publisher, "t", 2, ROWS);
    p.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 2000);
         SELECT pg_sleep(1);
         SELECT migrate.finish('t');",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (_, committed) = writers.stop();
    assert!(committed > 0);
    // Large values stored out of line after the swap: their TOAST chunks
    // must reach the subscriber too (the swapped-in TOAST table was the
    // shadow's, hidden from decoding until the swap).
    p.batch_execute(
        "UPDATE t SET payload = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))
          WHERE id <= 5;
         UPDATE t_control c SET payload = t.payload FROM t WHERE c.id = t.id AND t.id <= 5;",
    )
    .unwrap();
    // 9600 bytes of random hex: pglz cannot shrink them, and a row must fit
    // a page, so each is stored out of line.
    let external: i64 = p
        .query_one(
            "SELECT count(*) FROM t WHERE id <= 5 AND octet_length(payload) > 8192",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(external, 5);
    assert_matches_control(&mut p, "t", "ALTER COLUMN v TYPE bigint");
    assert_eq!(leftovers(&mut p), 0);

    let want = digest(&mut p, "t");
    wait_until("the subscriber to catch up", || digest(&mut s, "t") == want);
    assert_eq!(
        subscription_errors(&mut s),
        0,
        "the subscription hit errors"
    );
    let shadows: i64 = s
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(shadows, 0, "the publisher's migration state was replicated");
}

/// A REPEATABLE READ transaction whose snapshot predates the swap reads the
/// whole old table; the swap waits for it, under writes, and completes once
/// it ends. With the opt-out, PostgreSQL's behaviour: an empty table.
#[test]
fn a_repeatable_read_reader_from_before_the_swap_sees_the_whole_table() {
    const ROWS: i64 = 20_000;
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, ROWS);
    c.batch_execute("CREATE TABLE other (x int); INSERT INTO other VALUES (1)")
        .unwrap();
    let mut reader = cluster.client();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .unwrap();
    let reader_pid: i32 = reader
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let writers = Writers::start(&cluster, "t", 2, ROWS);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 2000)",
            &[],
        )
        .unwrap()
        .get(0);
    wait_until("the copy to catch up", || phase(&mut c, id) == "ready");
    let e = c
        .query_one("SELECT migrate.finish('t', '2s')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    let waiting: String = c
        .query_one(
            "SELECT waiting_for FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(waiting.contains(&format!("pid {reader_pid} ")), "{waiting}");

    // The reader's snapshot predates the swap: it sees the old table whole.
    let seen: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert!(seen >= ROWS - 10, "the reader saw {seen} rows");
    reader.batch_execute("COMMIT").unwrap();
    c.batch_execute("SELECT migrate.finish('t', '60s')")
        .unwrap();
    let (worst, committed) = writers.stop();
    assert!(committed > 0);
    assert!(worst < Duration::from_secs(2), "a write waited {worst:?}");
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
    let waiting: Option<String> = c
        .query_one(
            "SELECT waiting_for FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, None);

    // blockers => 'terminate' ends such a reader instead of waiting for it.
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .unwrap();
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE numeric', background => false);
         SELECT migrate.finish('t', '60s', blockers => 'terminate');",
    )
    .unwrap();
    assert!(
        reader.batch_execute("SELECT 1").is_err(),
        "the reader lives on"
    );

    // Opting out: PostgreSQL's own behaviour, an old snapshot sees no rows.
    let mut reader = cluster.client();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .unwrap();
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', background => false, snapshot_safe => false);
         SELECT migrate.finish('t', '60s');",
    )
    .unwrap();
    let seen: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 0,
        "with snapshot_safe => false the old snapshot sees the new, empty-to-it storage"
    );
}

/// The DDL guard's exception for the migration's own DDL cannot be claimed
/// from SQL.
#[test]
fn no_setting_lets_ddl_past_the_guard() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 1000);
    c.batch_execute("SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', background => false)")
        .unwrap();
    let e = c
        .batch_execute("SET halo_migrate.swapping = on")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42602", "{e:?}");
    let e = c
        .batch_execute("SELECT set_config('halo_migrate.swapping', 'on', false)")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42602", "{e:?}");
    let internal: bool = c
        .query_one("SELECT migrate.internal_ddl()", &[])
        .unwrap()
        .get(0);
    assert!(!internal);
    let e = c
        .batch_execute("ALTER TABLE t ADD COLUMN sneaky int")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55006", "{e:?}");
    c.batch_execute("SELECT migrate.finish('t')").unwrap();
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
}

/// A two-phase plan validates in a transaction of its own: writes go on
/// during the scan (it used to run in start()'s transaction, under the
/// ACCESS EXCLUSIVE lock its ADD … NOT VALID had taken).
#[test]
fn validation_never_runs_under_a_write_blocking_lock() {
    const ROWS: i64 = 2_000_000;
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, v int, w int);
         INSERT INTO big SELECT g, g, CASE WHEN g % 2 = 0 THEN g END FROM generate_series(1, {ROWS}) g;
         ANALYZE big;"
    ))
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (mut w, stop) = (cluster.client(), stop.clone());
        std::thread::spawn(move || {
            let (mut worst, mut i) = (Duration::ZERO, 0i32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = std::time::Instant::now();
                w.execute("UPDATE big SET v = v + 1 WHERE id = $1", &[&(1 + i % 1000)])
                    .unwrap();
                worst = worst.max(t0.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            worst
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('big', 'ADD CONSTRAINT v_positive CHECK (length(md5(v::text)) = 32)')",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute("CALL migrate.wait('big', '120s')").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = writer.join().unwrap();
    let r = c
        .query_one(
            "SELECT (SELECT phase FROM migrate.status() WHERE id = $1),
                    (SELECT strategy FROM migrate.status() WHERE id = $1),
                    (SELECT convalidated FROM pg_constraint WHERE conname = 'v_positive')",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, bool>(2)
        ),
        ("done".into(), "two-phase".into(), true)
    );
    assert!(
        worst < Duration::from_millis(400),
        "a write waited {worst:?} while the constraint was validated"
    );

    // A plan that fails part-way is taken back whole, as a failed ALTER
    // would be: here the UNIQUE index is built, then the CHECK fails.
    let before = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT (SELECT count(*) FROM pg_constraint WHERE conrelid = 'big'::regclass)
                  + (SELECT count(*) FROM pg_index WHERE indrelid = 'big'::regclass)
                  + (SELECT count(*) FROM pg_attribute WHERE attrelid = 'big'::regclass AND attnotnull)",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let shape = before(&mut c);
    c.batch_execute("SELECT migrate.start('big', 'ADD UNIQUE (w), ADD CHECK (w IS NOT NULL)')")
        .unwrap();
    let e = c
        .batch_execute("CALL migrate.wait('big', '120s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    assert_eq!(
        before(&mut c),
        shape,
        "the failed plan left something behind"
    );
    // The same driven by step(), without a worker: SET NOT NULL on a column
    // with NULLs fails at its validation and is taken back.
    c.batch_execute(
        "SELECT migrate.start('big', 'ALTER COLUMN w SET NOT NULL', background => false)",
    )
    .unwrap();
    let e = c
        .query_one("SELECT migrate.finish('big')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "finish() without a worker: {e:?}");
    let mut said = String::new();
    for _ in 0..10 {
        said = c
            .query_one("SELECT migrate.step('big')", &[])
            .unwrap()
            .get(0);
        if said.starts_with("failed") {
            break;
        }
    }
    assert!(
        said.contains("violated") || said.contains("contains null"),
        "{said}"
    );
    assert_eq!(before(&mut c), shape);
    assert_eq!(leftovers(&mut c), 0);
    // Mixed with a change that cannot be taken back: refused up front.
    let e = c
        .batch_execute("SELECT migrate.start('big', 'DROP COLUMN w, ADD CHECK (v > 0)')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
}

/// What the differential fuzzer found (doc/fuzzing.md), kept fixed: each
/// gets PostgreSQL's own error, and the table is left as it was.
#[test]
fn fuzzer_findings_get_postgres_own_errors() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE fz_owner LOGIN;
         CREATE TABLE t (id int PRIMARY KEY, j jsonb, b bigint, s varchar(10));
         INSERT INTO t SELECT g, jsonb_build_object('g', g), CASE WHEN g % 7 = 3 THEN NULL ELSE g END, 'v' || g
           FROM generate_series(1, 500) g;
         ALTER TABLE t OWNER TO fz_owner;
         CREATE VIEW t_v AS SELECT id, j FROM t;",
    )
    .unwrap();
    for (alter, code) in [
        // A column's type changed twice: refused together only.
        (
            "ALTER COLUMN j TYPE text, ALTER COLUMN j TYPE json",
            "0A000",
        ),
        // A default on a column the same ALTER drops.
        ("ALTER COLUMN b SET DEFAULT NULL, DROP COLUMN b", "42703"),
        // A column a view uses, dropped (then changed): the view is named.
        ("DROP COLUMN j, ALTER COLUMN j TYPE text", "2BP01"),
        // ... unless a subcommand names a column that does not exist,
        // which PostgreSQL finds first.
        ("ALTER COLUMN nope TYPE int, DROP COLUMN j", "42703"),
    ] {
        for sql in [
            format!("SELECT count(*) FROM migrate.plan('t', '{alter}')"),
            format!("SELECT migrate.start('t', '{alter}')"),
        ] {
            let e = c.query_one(sql.as_str(), &[]).unwrap_err();
            assert_eq!(sqlstate(&e), code, "{sql}: {e:?}");
        }
        let plain = c
            .batch_execute(&format!("BEGIN; ALTER TABLE t {alter}"))
            .unwrap_err();
        c.batch_execute("ROLLBACK").unwrap();
        assert_eq!(sqlstate(&plain), code, "PostgreSQL's own: {plain:?}");
    }
    // Accepted together, though not one at a time in this order (the
    // default could not follow the type): migrated as ALTER does it.
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN s SET DEFAULT NULL, ALTER COLUMN s TYPE int USING substr(s, 2)::int');
         SELECT migrate.finish('t', '60s');",
    )
    .unwrap();
    let sum: i64 = c
        .query_one("SELECT sum(s)::bigint FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum, 500 * 501 / 2);
    // SET NOT NULL on a column with NULLs: SET NOT NULL's own 23502.
    c.batch_execute("SELECT migrate.start('t', 'ALTER COLUMN b SET NOT NULL')")
        .unwrap();
    let e = c
        .batch_execute("CALL migrate.wait('t', '60s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23502", "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("column \"b\" of relation \"t\" contains null values"),
        "{e:?}"
    );
    // An index in a schema the owner may not create in: refused as ALTER
    // refuses it (the shadow's schema must not lend its privileges), and
    // before anything else about the subcommands.
    let mut owner = cluster.client_as("fz_owner");
    for alter in [
        "ADD UNIQUE (id, b)",
        "ALTER COLUMN b TYPE int, ADD UNIQUE (b)",
        "DROP COLUMN b, ADD UNIQUE (b)",
    ] {
        let e = owner
            .query_one(&format!("SELECT migrate.start('t', '{alter}')"), &[])
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{alter}: {e:?}");
        assert_eq!(
            e.as_db_error().unwrap().message(),
            "permission denied for schema public"
        );
    }
    assert_eq!(leftovers(&mut c), 0);
    let n: i64 = c
        .query_one(
            // contype 'n': PostgreSQL 18's NOT NULL constraints, not counted
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 't'::regclass AND contype <> 'n'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "only the primary key");
}

/// The swap sees the snapshots of every role's sessions, also when the
/// migrating role may not read their details in pg_stat_activity.
#[test]
fn the_swap_waits_for_another_roles_old_snapshot() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE app LOGIN;
         CREATE TABLE t (id int PRIMARY KEY, v int); ALTER TABLE t OWNER TO app;
         INSERT INTO t SELECT g, g FROM generate_series(1, 5000) g;
         CREATE TABLE other (x int);",
    )
    .unwrap();
    // The superuser's REPEATABLE READ transaction, from before the swap.
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .unwrap();
    let mut app = cluster.client_as("app");
    app.batch_execute("SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint')")
        .unwrap();
    let e = app
        .query_one("SELECT migrate.finish('t', '3s')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    let waiting: String = app
        .query_one("SELECT waiting_for FROM migrate.status('t')", &[])
        .unwrap()
        .get(0);
    assert!(waiting.contains("another role"), "{waiting}");
    let seen: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(seen, 5000);
    c.batch_execute("COMMIT").unwrap();
    app.batch_execute("SELECT migrate.finish('t', '60s')")
        .unwrap();
}

/// An instant plan runs as the one ALTER the user wrote, so PostgreSQL
/// orders its subcommands (found by the fuzzer: a default set before a
/// type change was stored for the old type).
#[test]
fn an_instant_plan_is_one_alter() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE DOMAIN pos AS int CHECK (VALUE > 0);
         CREATE TABLE t (id int PRIMARY KEY, c pos);
         CREATE TABLE t_twin (id int PRIMARY KEY, c pos);
         SELECT migrate.start('t', 'ALTER COLUMN c SET DEFAULT NULL, ALTER COLUMN c TYPE int');
         ALTER TABLE t_twin ALTER COLUMN c SET DEFAULT NULL, ALTER COLUMN c TYPE int;",
    )
    .unwrap();
    let defaults: Vec<Option<String>> = c
        .query(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class t
               LEFT JOIN pg_attrdef d ON d.adrelid = t.oid
              WHERE t.relname IN ('t', 't_twin') ORDER BY t.relname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defaults[0], defaults[1], "as plain ALTER leaves it");
}
