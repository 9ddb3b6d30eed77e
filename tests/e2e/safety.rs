//! Bad input, hostile names and hostile neighbours: every refusal has its
//! SQLSTATE and leaves nothing behind; other roles cannot write what the
//! extension creates; our SQL is not steered by a planted operator; names
//! made of quotes, semicolons and newlines are only ever identifiers.

use crate::harness::*;
use postgres::Client;

fn shape(c: &mut Client, table: &str) -> String {
    c.query_one(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull, ', ' ORDER BY attnum)
              || ' / ' || (SELECT count(*) FROM pg_constraint WHERE conrelid = $1::text::regclass)
              || ' / ' || (SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass)
           FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
        &[&table],
    )
    .unwrap()
    .get(0)
}

#[test]
fn bad_input_gets_its_sqlstate_and_changes_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int, note text);
         INSERT INTO t SELECT g, g, g::text FROM generate_series(1, 1000) g;
         CREATE VIEW tv AS SELECT * FROM t;
         CREATE MATERIALIZED VIEW tm AS SELECT * FROM t;
         CREATE FOREIGN DATA WRAPPER dummy; CREATE SERVER s FOREIGN DATA WRAPPER dummy;
         CREATE FOREIGN TABLE ft (a int) SERVER s;
         CREATE TABLE pt (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE nopk (id int);
         CREATE SEQUENCE sq;
         CREATE TEMP TABLE tt (id int PRIMARY KEY);",
    )
    .unwrap();
    let before = shape(&mut c, "t");
    // A schema that does not exist is the regclass cast's own error, before
    // our function runs: 3F000 up to PostgreSQL 16, 42P01 from 17.
    let no_schema = c
        .batch_execute("SELECT 'nosuchschema.t'::regclass")
        .expect_err("the cast fails")
        .as_db_error()
        .expect("a server error")
        .code()
        .code()
        .to_string();
    let cases: &[(&str, &str)] = &[
        // what is migrated
        ("SELECT migrate.start('nope', 'DROP COLUMN v')", "42P01"),
        (
            "SELECT migrate.start('nosuchschema.t', 'DROP COLUMN v')",
            &no_schema,
        ),
        ("SELECT migrate.start(NULL, 'DROP COLUMN v')", "22004"),
        ("SELECT migrate.start('tv', 'DROP COLUMN v')", "42809"),
        ("SELECT migrate.start('tm', 'DROP COLUMN v')", "42809"),
        ("SELECT migrate.start('ft', 'DROP COLUMN a')", "42809"),
        ("SELECT migrate.start('sq', 'OWNER TO postgres')", "42809"),
        // PostgreSQL's own rule for a partitioned table.
        (
            "SELECT migrate.start('pt', 'ALTER COLUMN id TYPE bigint')",
            "42P16",
        ),
        ("SELECT migrate.start('tt', 'ADD COLUMN x int')", "0A000"),
        (
            "SELECT migrate.start('pg_class', 'ADD COLUMN x int')",
            "0A000",
        ),
        (
            "SELECT migrate.start('nopk', 'ALTER COLUMN id TYPE bigint')",
            "55000",
        ),
        // the ALTER text
        ("SELECT migrate.start('t', NULL)", "22004"),
        ("SELECT migrate.start('t', '')", "42601"),
        ("SELECT migrate.start('t', 'ALTER COLUMN')", "42601"),
        ("SELECT migrate.start('t', 'FROBNICATE v')", "42601"),
        (
            "SELECT migrate.start('t', 'DROP COLUMN v; DROP TABLE t')",
            "42601",
        ),
        (
            "SELECT migrate.start('t', 'ADD COLUMN x int); DROP TABLE t; --')",
            "42601",
        ),
        (
            "SELECT migrate.plan('t', 'ADD COLUMN x int; SELECT 1')",
            "42601",
        ),
        (
            "SELECT migrate.start('t', 'ATTACH PARTITION nopk FOR VALUES IN (1)')",
            "0A000",
        ),
        ("SELECT migrate.start('t', 'ADD COLUMN v int')", "42701"),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN nosuch TYPE int')",
            "42703",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN note TYPE int')",
            "42804",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE nosuchtype')",
            "42704",
        ),
        ("SELECT migrate.start('t', 'INHERIT pg_class')", "42501"),
        // settings
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => -1)",
            "22023",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 0)",
            "22023",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => '0')",
            "22023",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => '-1s')",
            "22023",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => '1 day')",
            "22023",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => NULL)",
            "22004",
        ),
        (
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', background => NULL)",
            "22004",
        ),
        ("SET halo_migrate.batch_rows = -5", "22023"),
        ("SET halo_migrate.lock_timeout = 0", "22023"),
        ("SET halo_migrate.batch_pause = -1", "22023"),
        // acting on a migration that is not there
        ("SELECT migrate.finish('t')", "55000"),
        ("SELECT migrate.abort('t')", "55000"),
        ("SELECT migrate.pause('t')", "55000"),
        ("SELECT migrate.resume('t')", "55000"),
        ("SELECT migrate.step('t')", "55000"),
        ("SELECT migrate.throttle('t', batch_rows => 0)", "22023"),
        ("SELECT migrate.finish('t', timeout => '-1s')", "22023"),
        ("CALL migrate.wait(NULL)", "22004"),
    ];
    let mut wrong = Vec::new();
    for (sql, want) in cases {
        let got = match c.batch_execute(sql) {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                let db = e.as_db_error().expect("a server error");
                assert!(!db.message().is_empty());
                db.code().code().to_string()
            }
        };
        if got != *want {
            wrong.push(format!("{sql}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "wrong SQLSTATEs:\n{}", wrong.join("\n"));
    assert_eq!(shape(&mut c, "t"), before, "refusals change nothing");
    assert_eq!(leftovers(&mut c), 0, "refusals leave nothing behind");
    let n: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Refusals say what to do.
    let e = c
        .batch_execute("SELECT migrate.start('nopk', 'ALTER COLUMN id TYPE bigint')")
        .unwrap_err();
    assert!(e.as_db_error().unwrap().hint().is_some(), "{e:?}");
}

#[test]
fn other_roles_cannot_write_what_a_migration_creates() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE owner_role LOGIN; CREATE ROLE stranger LOGIN;
         CREATE TABLE t (id int PRIMARY KEY, v int); ALTER TABLE t OWNER TO owner_role;
         INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
         CREATE TABLE victim (id int PRIMARY KEY); ALTER TABLE victim OWNER TO owner_role;",
    )
    .unwrap();
    let mut owner = cluster.client_as("owner_role");
    // Left at its start (no worker): capture trigger, log and shadow exist.
    owner
        .batch_execute(
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', background => false)",
        )
        .unwrap();
    let oid: u32 = c
        .query_one("SELECT 't'::regclass::oid", &[])
        .unwrap()
        .get(0);
    let mut stranger = cluster.client_as("stranger");
    let denied = |s: &mut Client, sql: &str| match s.batch_execute(sql) {
        Ok(()) => panic!("a stranger could run: {sql}"),
        Err(e) => sqlstate(&e),
    };
    for sql in [
        format!("INSERT INTO migrate.log_{oid} VALUES (DEFAULT, 1)"),
        format!("DELETE FROM migrate.log_{oid}"),
        format!("INSERT INTO migrate.shadow_{oid} VALUES (1, 1)"),
        format!("TRUNCATE migrate.shadow_{oid}"),
        format!("DROP TABLE migrate.shadow_{oid}"),
        format!("DROP FUNCTION migrate.capture_{oid}()"),
        "SELECT migrate.abort('t')".to_string(),
        "SELECT migrate.finish('t')".to_string(),
        "SELECT migrate.pause('t')".to_string(),
        "SELECT migrate.throttle('t', batch_rows => 1)".to_string(),
        "SELECT migrate.step('t')".to_string(),
        // A forged migration of someone else's table would block their DDL.
        "INSERT INTO migrate.migrations (relid, table_name, alter_sql, strategy, phase, batch_rows,
                                         lock_timeout_ms, auto_finish, background, role_oid, search_path)
         VALUES ('victim'::regclass, 'victim', 'x', 'rewrite', 'copying', 1, 100, false, false,
                 current_user::regrole, '')"
            .to_string(),
        "DROP EVENT TRIGGER halo_migrate_refuse_ddl".to_string(),
        "ALTER TABLE migrate.migrations DISABLE ROW LEVEL SECURITY".to_string(),
    ] {
        let code = denied(&mut stranger, &sql);
        assert!(
            ["42501", "55000", "42P01"].contains(&code.as_str()),
            "{sql}: {code}"
        );
    }
    // The stranger sees no rows of the owner's migrations, and changes none.
    let seen: i64 = stranger
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let changed = stranger
        .execute("UPDATE migrate.migrations SET phase = 'done'", &[])
        .unwrap();
    assert_eq!(changed, 0);
    let changed = stranger
        .execute("DELETE FROM migrate.migrations", &[])
        .unwrap();
    assert_eq!(changed, 0);
    // The owner's migration is untouched and completes.
    let done: String = owner
        .query_one("SELECT migrate.finish('t')", &[])
        .unwrap()
        .get(0);
    assert!(done.contains("done"), "{done}");
    owner
        .batch_execute("ALTER TABLE victim ADD COLUMN x int")
        .unwrap();
}

#[test]
fn the_worker_runs_as_the_role_that_started_the_migration() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE app LOGIN;
         CREATE TABLE t (id int PRIMARY KEY, v int); ALTER TABLE t OWNER TO app;
         INSERT INTO t SELECT g, g FROM generate_series(1, 50000) g;",
    )
    .unwrap();
    let mut app = cluster.client_as("app");
    app.batch_execute(
        "SET halo_migrate.batch_pause = '200ms';
         SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 1000);",
    )
    .unwrap();
    let worker = |c: &mut Client| -> Option<(String, bool)> {
        c.query_opt(
            "SELECT a.usename::text, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
              WHERE a.backend_type = 'halo_migrate worker'",
            &[],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
    };
    wait_until("the worker", || worker(&mut c).is_some());
    assert_eq!(worker(&mut c), Some(("app".into(), false)));
    // Resumed by a superuser, the new worker is still only app.
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
    )
    .unwrap();
    wait_until("the worker to go", || worker(&mut c).is_none());
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    wait_until("the new worker", || worker(&mut c).is_some());
    assert_eq!(worker(&mut c), Some(("app".into(), false)));
    // throttle() and finish() in one transaction: the worker cannot take
    // the migration's row until it commits, so finish() carries the
    // migration on itself (this used to wait forever).
    app.batch_execute(
        "SELECT migrate.throttle('t', batch_pause => '0'); SELECT migrate.finish('t', '60s');",
    )
    .unwrap();
    let n: i64 = app
        .query_one(
            "SELECT count(*) FROM t WHERE pg_typeof(v) = 'bigint'::regtype",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 50_000);
}

#[test]
fn a_planted_operator_is_not_used_by_our_sql() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    // The attack of CVE-2018-1058: an operator with an exact match for
    // varchar, where pg_catalog has only text = text, wins over it through
    // the default search_path ("$user", public). Each call is counted by a
    // sequence (nextval is not rolled back).
    c.batch_execute(
        "CREATE ROLE attacker; GRANT CREATE ON SCHEMA public TO attacker;
         SET ROLE attacker;
         CREATE SEQUENCE public.hits;
         GRANT USAGE ON SEQUENCE public.hits TO PUBLIC;
         CREATE FUNCTION public.evil_eq(varchar, varchar) RETURNS boolean LANGUAGE sql
             AS $$ SELECT nextval('public.hits') > 0 AND $1::text = $2::text $$;
         CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.evil_eq);
         RESET ROLE;
         CREATE TABLE acc (id varchar(20) PRIMARY KEY, v int, payload text);
         CREATE TABLE acc_control (id varchar(20) PRIMARY KEY, v int, payload text);
         INSERT INTO acc SELECT 'k' || g, g, md5(g::text) FROM generate_series(1, 20000) g;
         INSERT INTO acc_control SELECT * FROM acc;",
    )
    .unwrap();
    let hits = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT last_value + (CASE WHEN is_called THEN 0 ELSE -1 END) FROM public.hits",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(hits(&mut c), 0);
    // Writers keep changing rows (by key, and keys themselves) during the copy.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut w = cluster.client();
        std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = format!("k{}", 1 + (i * 7919) % 20000);
                let mut tx = w.transaction().unwrap();
                for t in ["acc", "acc_control"] {
                    // text parameters: the writers' own SQL never hits the varchar operator
                    match i % 3 {
                        0 => tx.execute(
                            &format!("UPDATE {t} SET v = v + 1 WHERE id::text = $1"),
                            &[&k],
                        ),
                        1 => tx.execute(
                            &format!("UPDATE {t} SET id = id || 'x' WHERE id::text = $1"),
                            &[&k],
                        ),
                        _ => tx.execute(&format!("DELETE FROM {t} WHERE id::text = $1"), &[&k]),
                    }
                    .unwrap();
                }
                tx.commit().unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    c.batch_execute("SELECT migrate.start('acc', 'ALTER COLUMN v TYPE bigint', batch_rows => 500)")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let summary: String = c
        .query_one("SELECT migrate.finish('acc')", &[])
        .unwrap()
        .get(0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(summary.contains("done"), "{summary}");
    let replayed: i64 = c
        .query_one("SELECT rows_replayed FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert!(replayed > 0, "the replay ran");
    assert_eq!(
        hits(&mut c),
        0,
        "the planted operator was called by our SQL"
    );
    assert_same_rows(&mut c, "acc");
}

#[test]
fn hostile_names_are_only_ever_identifiers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    // Quotes, semicolons, newlines, comment markers and a dollar quote in
    // table, column, constraint, index and schema names.
    c.batch_execute(
        r#"CREATE TABLE canary (x int);
           CREATE SCHEMA "s'; DROP TABLE canary; --";
           CREATE TABLE "s'; DROP TABLE canary; --"."t"";
DROP TABLE canary; --" (
               "id"";drop table canary;--" int PRIMARY KEY,
               "v'); DROP TABLE canary; --" int,
               "$$x$$" text,
               CONSTRAINT "c"";
DROP TABLE canary;" CHECK ("v'); DROP TABLE canary; --" > 0));
           CREATE INDEX "i'; DROP TABLE canary; --" ON "s'; DROP TABLE canary; --"."t"";
DROP TABLE canary; --" ("$$x$$");
           INSERT INTO "s'; DROP TABLE canary; --"."t"";
DROP TABLE canary; --" SELECT g, g, md5(g::text) FROM generate_series(1, 5000) g;"#,
    )
    .unwrap();
    let table: String = c
        .query_one(
            "SELECT oid::regclass::text FROM pg_class WHERE relname LIKE 't\"%' AND relkind = 'r'",
            &[],
        )
        .unwrap()
        .get(0);
    let alter = r#"ALTER COLUMN "v'); DROP TABLE canary; --" TYPE bigint, ADD CONSTRAINT "n'; DROP TABLE canary; --" CHECK ("id"";drop table canary;--" > 0), ADD COLUMN "new
line;" text DEFAULT 'a''b'"#;
    let plan: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate.plan($1::text::regclass, $2)",
            &[&table, &alter],
        )
        .unwrap()
        .get(0);
    assert!(plan > 0);
    c.execute(
        "SELECT migrate.start($1::text::regclass, $2)",
        &[&table, &alter],
    )
    .unwrap();
    let summary: String = c
        .query_one("SELECT migrate.finish($1::text::regclass)", &[&table])
        .unwrap()
        .get(0);
    assert!(summary.contains("done"), "{summary}");
    // Everything is still there, under its name. (From PostgreSQL 18, NOT
    // NULL is a constraint too, contype 'n'; attnotnull says the same.)
    c.batch_execute("SELECT * FROM canary").unwrap();
    let facts: String = c
        .query_one(
            r#"SELECT format_type(a.atttypid, a.atttypmod)
                   || (SELECT string_agg(conname, '|' ORDER BY conname) FROM pg_constraint
                        WHERE conrelid = a.attrelid AND contype <> 'n')
                   || (SELECT string_agg(relname, '|' ORDER BY relname) FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid WHERE indrelid = a.attrelid)
                   || (SELECT count(*) FROM pg_attribute WHERE attrelid = a.attrelid AND attname = E'new\nline;')
                 FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attname = 'v''); DROP TABLE canary; --'"#,
            &[&table],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        facts,
        "bigintc\";\nDROP TABLE canary;|n'; DROP TABLE canary; --|t\";\nDROP TABLE canary; --_pkeyi'; DROP TABLE canary; --|t\";\nDROP TABLE canary; --_pkey1"
    );
    let n: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE \"new\nline;\" = 'a''b'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 5000);
}

/// A rule of the table on a column whose type changes: PostgreSQL refuses
/// the ALTER, so start() refuses it with the same error before creating
/// anything (found by the differential fuzzer: the swap used to fail on it,
/// leaving the migration's shadow, log and triggers behind).
#[test]
fn a_rule_on_a_changed_column_is_refused_as_alter_refuses_it() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int, w int);
         INSERT INTO t SELECT g, g, g FROM generate_series(1, 500) g;
         CREATE RULE t_rule AS ON DELETE TO t WHERE old.id < 0 DO ALSO NOTHING;
         CREATE RULE t_rule_w AS ON UPDATE TO t WHERE new.w < 0 DO ALSO NOTHING;",
    )
    .unwrap();
    let plain = c
        .batch_execute("BEGIN; ALTER TABLE t ALTER COLUMN id TYPE bigint")
        .unwrap_err();
    c.batch_execute("ROLLBACK").unwrap();
    let ours = c
        .query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN id TYPE bigint')",
            &[],
        )
        .unwrap_err();
    let (p, o) = (plain.as_db_error().unwrap(), ours.as_db_error().unwrap());
    assert_eq!(
        (p.code(), p.message(), p.detail()),
        (o.code(), o.message(), o.detail())
    );
    let planned = c
        .query_one(
            "SELECT count(*) FROM migrate.plan('t', 'ALTER COLUMN id TYPE bigint')",
            &[],
        )
        .unwrap_err();
    let pl = planned.as_db_error().unwrap();
    assert_eq!(
        (p.code(), p.message(), p.detail()),
        (pl.code(), pl.message(), pl.detail()),
        "plan() refuses it too"
    );
    assert_eq!(leftovers(&mut c), 0);
    // Dropping a column a rule uses, next to a rewrite: refused up front
    // with PostgreSQL's SQLSTATE (it used to fail at the swap, after the copy).
    let plain = c
        .batch_execute("BEGIN; ALTER TABLE t DROP COLUMN w, ALTER COLUMN v TYPE bigint")
        .unwrap_err();
    c.batch_execute("ROLLBACK").unwrap();
    let ours = c
        .query_one(
            "SELECT migrate.start('t', 'DROP COLUMN w, ALTER COLUMN v TYPE bigint')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&plain), "2BP01", "{plain}");
    assert_eq!(sqlstate(&ours), "2BP01", "{ours}");
    assert_eq!(
        plain.as_db_error().unwrap().message(),
        ours.as_db_error().unwrap().message()
    );
    assert!(
        ours.as_db_error()
            .unwrap()
            .detail()
            .is_some_and(|d| d.contains("rule t_rule_w")),
        "{ours:?}"
    );
    assert_eq!(leftovers(&mut c), 0);
    // A column the rules do not use changes as usual.
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint');
         SELECT migrate.finish('t', '60s');",
    )
    .unwrap();
}
