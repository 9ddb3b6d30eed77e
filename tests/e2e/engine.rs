//! The online ALTER engine on a live cluster: start, the background worker,
//! step(), finish() and abort(), under concurrent writers, checked against an
//! oracle: a control table written in the same transactions and ALTERed the
//! plain way afterwards.

use crate::harness::*;
use postgres::Client;
use std::time::{Duration, Instant};

const COLUMNS: &str = "id int PRIMARY KEY, v int NOT NULL, payload text";
const ROWS: i64 = 20_000;

fn start(c: &mut Client, table: &str, alter: &str, extra: &str) -> i64 {
    c.query_one(
        &format!("SELECT migrate.start('{table}', $1, batch_rows => 2000{extra})"),
        &[&alter],
    )
    .unwrap_or_else(|e| panic!("start {alter}: {e:?}"))
    .get(0)
}

fn finish(c: &mut Client, table: &str) -> String {
    c.query_one(&format!("SELECT migrate.finish('{table}', '120s')"), &[])
        .unwrap_or_else(|e| panic!("finish {table}: {e:?}"))
        .get(0)
}

#[test]
fn oracle_under_concurrent_writes_for_several_alters() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    for (n, alter) in [
        "ALTER COLUMN id TYPE bigint",
        "ALTER COLUMN v TYPE bigint USING v::bigint, ADD COLUMN note text DEFAULT 'n'",
        "ALTER COLUMN payload TYPE varchar(100000), ALTER COLUMN v TYPE numeric(20,0)",
        "ALTER COLUMN id TYPE numeric(12,0) USING id::numeric(12,0), ADD CONSTRAINT v_positive CHECK (v > 0)",
    ]
    .iter()
    .enumerate()
    {
        let t = format!("t{n}");
        create_with_control(&mut c, &t, COLUMNS, ROWS);
        c.batch_execute(&format!("CREATE INDEX {t}_v ON {t} (v)")).unwrap();
        let writers = Writers::start(&cluster, &t, 3, ROWS);
        std::thread::sleep(Duration::from_millis(300));
        let id = start(&mut c, &t, alter, "");
        std::thread::sleep(Duration::from_millis(500));
        let summary = finish(&mut c, &t);
        std::thread::sleep(Duration::from_millis(300));
        let (worst, committed) = writers.stop();
        assert!(committed > 50, "{alter}: the writers barely ran ({committed} transactions)");
        assert!(worst < Duration::from_secs(2), "{alter}: a write waited {worst:?}");
        assert_eq!(phase(&mut c, id), "done", "{alter}: {summary}");
        // The oracle: the same ALTER, done the blocking way on the control.
        assert_matches_control(&mut c, &t, alter);
        let types: Vec<(String, String)> = c
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&t],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let control: Vec<(String, String)> = c
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&format!("{t}_control")],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(types, control, "{alter}: column types differ from a plain ALTER's");
        // Indexes are usable and the table takes writes.
        let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t} WHERE v > 0"), &[]).unwrap().get(0);
        assert!(n > 0);
    }
    assert_eq!(
        leftovers(&mut c),
        0,
        "objects of finished migrations were left behind"
    );
}

#[test]
fn dependent_objects_survive_the_swap() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE app LOGIN; CREATE ROLE owner_role LOGIN;
         CREATE TABLE parent (pid int PRIMARY KEY);
         INSERT INTO parent SELECT g FROM generate_series(1, 10) g;
         CREATE TABLE acc (
             id serial PRIMARY KEY,
             ident bigint GENERATED ALWAYS AS IDENTITY,
             code text NOT NULL,
             amount int CHECK (amount >= 0),
             pid int REFERENCES parent ON DELETE CASCADE,
             doubled int GENERATED ALWAYS AS (pid * 2) STORED,
             doomed text,
             CONSTRAINT acc_code_key UNIQUE (code),
             CONSTRAINT acc_code_excl EXCLUDE USING btree (code WITH =)
         ) WITH (fillfactor = 80);
         ALTER TABLE acc DROP COLUMN doomed;
         CREATE INDEX acc_lower ON acc (lower(code)) WHERE amount > 5;
         CREATE INDEX an_index_whose_name_is_exactly_sixty_three_bytes_long_abcdefghij ON acc (amount, id);
         INSERT INTO acc (code, amount, pid) SELECT 'c' || g, g % 100, 1 + g % 10 FROM generate_series(1, 5000) g;
         CREATE TABLE child (cid int PRIMARY KEY, acc_id int REFERENCES acc (id) ON DELETE CASCADE);
         INSERT INTO child SELECT g, g FROM generate_series(1, 100) g;
         CREATE VIEW acc_codes WITH (security_barrier) AS SELECT id, code FROM acc;
         CREATE VIEW acc_codes2 AS SELECT code FROM acc_codes;
         COMMENT ON VIEW acc_codes IS 'codes';
         GRANT SELECT ON acc_codes TO app;
         CREATE TABLE audit (n int);
         CREATE FUNCTION audit_f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END$$;
         CREATE TRIGGER acc_audit AFTER INSERT ON acc FOR EACH ROW EXECUTE FUNCTION audit_f();
         CREATE TRIGGER acc_off AFTER UPDATE ON acc FOR EACH ROW EXECUTE FUNCTION audit_f();
         ALTER TABLE acc DISABLE TRIGGER acc_off;
         COMMENT ON TABLE acc IS 'accounts'; COMMENT ON COLUMN acc.code IS 'the code';
         GRANT SELECT, INSERT ON acc TO app; GRANT UPDATE (amount) ON acc TO app;
         ALTER TABLE acc ENABLE ROW LEVEL SECURITY;
         CREATE POLICY acc_mine ON acc FOR SELECT TO app USING (pid < 5);
         ALTER TABLE acc REPLICA IDENTITY USING INDEX acc_code_key;
         CREATE PUBLICATION acc_pub FOR TABLE acc;
         ALTER TABLE acc ALTER COLUMN code SET STATISTICS 500, ALTER COLUMN code SET STORAGE EXTERNAL;
         ALTER TABLE acc OWNER TO owner_role;
         TRUNCATE audit;",
    )
    .unwrap();
    let describe = |c: &mut Client| -> Vec<String> {
        let q = [
            "SELECT string_agg(conname || ':' || pg_get_constraintdef(oid), ' | ' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'acc'::regclass OR confrelid = 'acc'::regclass",
            "SELECT string_agg(pg_get_indexdef(indexrelid), ' | ' ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = 'acc'::regclass",
            "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'acc'::regclass AND NOT tgisinternal",
            "SELECT relacl::text || relowner::regrole::text || relrowsecurity::text || relreplident::text || coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE oid = 'acc'::regclass",
            "SELECT string_agg(attname || ':' || coalesce(attacl::text, '') || coalesce(attstattarget, -1) || attstorage::text || attidentity::text || attgenerated::text, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attnum > 0",
            "SELECT obj_description('acc'::regclass) || col_description('acc'::regclass, 3) || obj_description('acc_codes'::regclass)",
            "SELECT string_agg(polname || pg_get_expr(polqual, polrelid), ',') FROM pg_policy WHERE polrelid = 'acc'::regclass",
            "SELECT string_agg(pubname, ',') FROM pg_publication_tables WHERE tablename = 'acc'",
            "SELECT pg_get_viewdef('acc_codes'::regclass) || pg_get_viewdef('acc_codes2'::regclass) || (SELECT relacl::text || array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'acc_codes'::regclass)",
            "SELECT pg_get_serial_sequence('acc', 'id') || pg_get_serial_sequence('acc', 'ident') || (SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'acc'::regclass AND indisreplident)",
        ];
        q.iter()
            .map(|q| {
                c.query_one(*q, &[])
                    .unwrap()
                    .get::<_, Option<String>>(0)
                    .unwrap_or_default()
            })
            .collect()
    };
    let before = describe(&mut c);
    let oid: u32 = c
        .query_one("SELECT 'acc'::regclass::oid", &[])
        .unwrap()
        .get(0);

    let mut owner = cluster.client_as("owner_role");
    let id = start(&mut owner, "acc", "ALTER COLUMN amount TYPE bigint", "");
    // Writes during the copy fire the user's triggers on the table only.
    c.batch_execute("INSERT INTO acc (code, amount, pid) VALUES ('during', 7, 2)")
        .unwrap();
    let summary = finish(&mut owner, "acc");
    assert_eq!(phase(&mut c, id), "done", "{summary}");

    let after = describe(&mut c);
    // None of these descriptions prints the altered column's type, so all
    // must be exactly as before.
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "a dependent object changed");
    }
    let same_oid: u32 = c
        .query_one("SELECT 'acc'::regclass::oid", &[])
        .unwrap()
        .get(0);
    assert_eq!(oid, same_oid, "the table keeps its OID");
    let typ: String = c.query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'amount'", &[]).unwrap().get(0);
    assert_eq!(typ, "bigint");
    // The user's trigger fired once, for the one insert, not for the copy.
    let audited: i64 = c
        .query_one("SELECT count(*) FROM audit", &[])
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    // Sequences continue, identity keeps its position, generated columns hold.
    let row = c
        .query_one("INSERT INTO acc (code, amount, pid) VALUES ('next', 21, 3) RETURNING id, ident, doubled", &[])
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, i64>(1),
            row.get::<_, i32>(2)
        ),
        (5002, 5002, 6)
    );
    // Foreign keys still act, in both directions.
    c.batch_execute("DELETE FROM acc WHERE id = 1").unwrap();
    let children: i64 = c
        .query_one("SELECT count(*) FROM child WHERE acc_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(children, 0, "ON DELETE CASCADE from acc to child");
    let bad = c
        .execute(
            "INSERT INTO acc (code, amount, pid) VALUES ('orphan', 1, 999)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&bad), "23503");
    let dup = c
        .execute(
            "INSERT INTO acc (code, amount, pid) VALUES ('c5', 1, 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&dup), "23505");
    // RLS and grants act for the application role.
    let mut app = cluster.client_as("app");
    let visible: i64 = app
        .query_one("SELECT count(*) FROM acc", &[])
        .unwrap()
        .get(0);
    let small: i64 = c
        .query_one("SELECT count(*) FROM acc WHERE pid < 5", &[])
        .unwrap()
        .get(0);
    assert_eq!(visible, small);
    let no_grant = app
        .query_one("SELECT count(*) FROM acc_codes2", &[])
        .unwrap_err();
    assert_eq!(
        sqlstate(&no_grant),
        "42501",
        "acc_codes2 was never granted to app"
    );
    // A view runs as its owner (here a superuser), so RLS does not filter it.
    let via_view: i64 = app
        .query_one("SELECT count(*) FROM acc_codes", &[])
        .unwrap()
        .get(0);
    let all: i64 = c.query_one("SELECT count(*) FROM acc", &[]).unwrap().get(0);
    assert_eq!(via_view, all, "the view works and keeps its grant");
    // TOAST table renamed as PostgreSQL names it.
    let toast: String = c
        .query_one(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'acc'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(toast, format!("pg_toast.pg_toast_{oid}"));
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_failure_mid_copy_leaves_the_table_untouched() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE f (id int PRIMARY KEY, v int, note text);
         INSERT INTO f SELECT g, g % 50, g::text FROM generate_series(1, 30000) g;
         UPDATE f SET note = 'not a number' WHERE id = 29990;",
    )
    .unwrap();
    let fingerprint = |c: &mut Client| -> String {
        c.query_one(
            "SELECT (SELECT relfilenode::text FROM pg_class WHERE oid = 'f'::regclass)
                 || (SELECT string_agg(format_type(atttypid, atttypmod), ',') FROM pg_attribute WHERE attrelid = 'f'::regclass AND attnum > 0)
                 || (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'f'::regclass)
                 || (SELECT count(*) FROM pg_constraint WHERE conrelid = 'f'::regclass)
                 || (SELECT md5(string_agg(f::text, ',' ORDER BY id)) FROM f)",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = fingerprint(&mut c);
    for (alter, code) in [
        ("ALTER COLUMN note TYPE int USING note::int", "22P02"),
        (
            "ALTER COLUMN v TYPE bigint, ADD CONSTRAINT f_v_key UNIQUE (v)",
            "23505",
        ),
        (
            "ALTER COLUMN v TYPE bigint, ADD CONSTRAINT f_v_small CHECK (v < 40)",
            "23514",
        ),
    ] {
        let id = start(&mut c, "f", alter, "");
        let err = c
            .query_one("SELECT migrate.finish('f', '120s')", &[])
            .unwrap_err();
        assert_eq!(sqlstate(&err), code, "{alter}: {err:?}");
        let (phase, error): (String, Option<String>) = {
            let r = c
                .query_one(
                    "SELECT phase, error FROM migrate.status() WHERE id = $1",
                    &[&id],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(phase, "failed", "{alter}");
        assert!(error.is_some(), "{alter}: the error is kept in status()");
        assert_eq!(fingerprint(&mut c), before, "{alter}: the table changed");
        assert_eq!(leftovers(&mut c), 0, "{alter}: objects left behind");
    }
}

#[test]
fn swap_waits_for_a_blocker_without_blocking_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, ROWS);
    let writers = Writers::start(&cluster, "t", 2, ROWS);
    let id = start(
        &mut c,
        "t",
        "ALTER COLUMN v TYPE bigint",
        ", lock_timeout => '100ms'",
    );
    // Wait until the copy has caught up, then hold a lock on the table.
    let t0 = Instant::now();
    while phase(&mut c, id) != "ready" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "copy never caught up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut blocker = cluster.client();
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM t")
        .unwrap();
    // finish() with a timeout gives up with 57014; the migration goes on.
    let t1 = Instant::now();
    let err = c
        .query_one("SELECT migrate.finish('t', '1s')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert!(
        t1.elapsed() < Duration::from_secs(5),
        "a 1 s timeout took {:?}",
        t1.elapsed()
    );
    assert_eq!(
        phase(&mut c, id),
        "swapping",
        "the migration is still waiting to swap"
    );
    let port = cluster.port;
    let finisher = std::thread::spawn(move || {
        let mut f = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        )
        .unwrap();
        f.query_one("SELECT migrate.finish('t', '120s')", &[])
            .map(|r| r.get::<_, String>(0))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(
        phase(&mut c, id),
        "done",
        "the swap cannot happen while the blocker holds its lock"
    );
    let attempts: i32 = c
        .query_one(
            "SELECT swap_attempts FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(attempts >= 2, "the swap is retried ({attempts} attempts)");
    blocker.batch_execute("COMMIT").unwrap();
    let summary = finisher.join().unwrap().expect("finish");
    let (worst, _) = writers.stop();
    assert_eq!(phase(&mut c, id), "done", "{summary}");
    // Writers queued behind a swap attempt at most for its lock_timeout (plus
    // the swap itself and scheduling noise on a shared machine).
    assert!(
        worst < Duration::from_millis(1500),
        "a write waited {worst:?}"
    );
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
}

#[test]
fn step_drives_a_migration_without_a_worker_and_abort_undoes_one() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 5000);
    let id = start(
        &mut c,
        "t",
        "ALTER COLUMN v TYPE bigint",
        ", background => false",
    );
    let mut steps = 0;
    loop {
        let s: String = c.query_one("SELECT migrate.step('t')", &[]).unwrap().get(0);
        mixed_write(&mut c, "t", steps, 5000).unwrap();
        steps += 1;
        if s.starts_with("caught up") || steps > 100 {
            break;
        }
    }
    assert_eq!(phase(&mut c, id), "ready");
    finish(&mut c, "t");
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");

    // abort: everything the migration created goes, the table is as it was.
    let relfilenode: u32 = c
        .query_one(
            "SELECT relfilenode::int8::int4 FROM pg_class WHERE oid = 't'::regclass",
            &[],
        )
        .unwrap()
        .get::<_, i32>(0) as u32;
    let id = start(
        &mut c,
        "t",
        "ALTER COLUMN payload TYPE varchar(10000), ALTER COLUMN v TYPE int",
        "",
    );
    std::thread::sleep(Duration::from_millis(300));
    c.batch_execute("SELECT migrate.abort('t')").unwrap();
    assert_eq!(phase(&mut c, id), "aborted");
    assert_eq!(leftovers(&mut c), 0);
    let now: u32 = c
        .query_one(
            "SELECT relfilenode::int8::int4 FROM pg_class WHERE oid = 't'::regclass",
            &[],
        )
        .unwrap()
        .get::<_, i32>(0) as u32;
    assert_eq!(relfilenode, now);
    assert_same_rows(&mut c, "t");
}

#[test]
fn bad_input_and_interference_get_clear_errors() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;
         CREATE TABLE nokey (v int); CREATE ROLE stranger LOGIN;",
    )
    .unwrap();
    let code = |c: &mut Client, sql: &str| sqlstate(&c.batch_execute(sql).unwrap_err());
    assert_eq!(
        code(
            &mut c,
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 0)"
        ),
        "22023"
    );
    assert_eq!(
        code(
            &mut c,
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => '0')"
        ),
        "22023"
    );
    assert_eq!(code(&mut c, "SELECT migrate.start('t', NULL)"), "22004");
    assert_eq!(
        code(
            &mut c,
            "SELECT migrate.start('nokey', 'ALTER COLUMN v TYPE bigint')"
        ),
        "55000"
    );
    assert_eq!(
        code(
            &mut c,
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint; DROP TABLE t')"
        ),
        "42601"
    );
    assert_eq!(code(&mut c, "SELECT migrate.finish('t')"), "55000");
    let mut stranger = cluster.client_as("stranger");
    assert_eq!(
        code(
            &mut stranger,
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint')"
        ),
        "42501"
    );
    assert_eq!(leftovers(&mut c), 0, "refused starts leave nothing");

    start(&mut c, "t", "ALTER COLUMN v TYPE bigint", "");
    assert_eq!(
        code(
            &mut c,
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE numeric')"
        ),
        "55006"
    );
    assert_eq!(code(&mut c, "TRUNCATE t"), "55006");
    assert_eq!(code(&mut c, "ALTER TABLE t ADD COLUMN w int"), "55006");
    assert_eq!(code(&mut c, "DROP TABLE t"), "55006");
    finish(&mut c, "t");
    c.batch_execute("TRUNCATE t; ALTER TABLE t ADD COLUMN w int")
        .unwrap();
}

#[test]
fn foreign_keys_on_altered_columns_come_back_validated() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE p (id int PRIMARY KEY, v int);
         INSERT INTO p SELECT g, g FROM generate_series(1, 3000) g;
         CREATE TABLE ch (cid int PRIMARY KEY, pid int CONSTRAINT ch_pid_fkey REFERENCES p (id) ON DELETE CASCADE);
         INSERT INTO ch SELECT g, 1 + g % 3000 FROM generate_series(1, 6000) g;",
    )
    .unwrap();
    let fk = |c: &mut Client| -> (String, bool) {
        let r = c
            .query_one("SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conname = 'ch_pid_fkey'", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    let before = fk(&mut c);
    // Incoming: the referenced key changes type.
    let id = start(&mut c, "p", "ALTER COLUMN id TYPE bigint", "");
    finish(&mut c, "p");
    assert_eq!(phase(&mut c, id), "done");
    assert_eq!(
        fk(&mut c),
        before,
        "the foreign key is back, validated, with its action"
    );
    // Outgoing: the referencing column changes type.
    let id = start(&mut c, "ch", "ALTER COLUMN pid TYPE bigint", "");
    finish(&mut c, "ch");
    assert_eq!(phase(&mut c, id), "done");
    assert_eq!(fk(&mut c), before);
    c.batch_execute("DELETE FROM p WHERE id = 5").unwrap();
    let left: i64 = c
        .query_one("SELECT count(*) FROM ch WHERE pid = 5", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "ON DELETE CASCADE still acts");
    let err = c
        .execute("INSERT INTO ch VALUES (99999, 123456)", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn views_and_policies_on_altered_columns_are_recreated() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, ROWS);
    c.batch_execute(
        "CREATE ROLE reader;
         ALTER DEFAULT PRIVILEGES GRANT INSERT ON TABLES TO reader;
         CREATE VIEW v1 WITH (security_barrier = true) AS SELECT id, v FROM t WHERE v > 0;
         COMMENT ON VIEW v1 IS 'positive rows';
         COMMENT ON COLUMN v1.v IS 'the value';
         REVOKE INSERT ON v1 FROM reader;
         GRANT SELECT ON v1 TO reader;
         GRANT UPDATE (v) ON v1 TO reader WITH GRANT OPTION;
         CREATE VIEW v2 AS SELECT id, v * 2 AS w FROM v1;
         CREATE VIEW \"odd; name\" AS SELECT payload FROM t;
         ALTER TABLE t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY \"p v\" ON t AS RESTRICTIVE FOR SELECT TO reader, public USING (v >= 0);
         COMMENT ON POLICY \"p v\" ON t IS 'no negatives';
         CREATE TABLE u (id int PRIMARY KEY, name varchar(10));
         INSERT INTO u VALUES (1, 'a');
         CREATE VIEW uv AS SELECT name FROM u;
         GRANT SELECT ON uv TO reader;",
    )
    .unwrap();
    let snapshot = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT c.relname || ' ' || coalesce(c.reloptions::text, '') || ' ' || coalesce(c.relacl::text, '')
                    || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '')
                    || ' ' || coalesce(col_description(c.oid, 2), '')
                    || ' ' || pg_get_userbyid(c.relowner)
                    || ' ' || coalesce((SELECT string_agg(attname || attacl::text, ',') FROM pg_attribute
                                         WHERE attrelid = c.oid AND attacl IS NOT NULL), '')
                    || ' ' || regexp_replace(pg_get_viewdef(c.oid), '::(integer|bigint)', '', 'g')
               FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
             UNION ALL
             SELECT p.polname || ' ' || p.polpermissive || p.polcmd::text || p.polroles::text || ' '
                    || pg_get_expr(p.polqual, p.polrelid) || ' ' || coalesce(obj_description(p.oid, 'pg_policy'), '')
               FROM pg_policy p WHERE p.polrelid = 't'::regclass
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = snapshot(&mut c);
    assert_eq!(before.len(), 5, "{before:?}");

    let writers = Writers::start(&cluster, "t", 3, ROWS);
    std::thread::sleep(Duration::from_millis(300));
    start(
        &mut c,
        "t",
        "ALTER COLUMN v TYPE bigint, ALTER COLUMN payload TYPE varchar(100000), ALTER COLUMN id TYPE bigint",
        "",
    );
    let summary = finish(&mut c, "t");
    let (worst, _) = writers.stop();
    assert!(summary.contains("done"), "{summary}");
    assert!(worst < Duration::from_secs(2), "a write waited {worst:?}");
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint, ALTER COLUMN payload TYPE varchar(100000), ALTER COLUMN id TYPE bigint");

    // An instant type change under a view: the view comes back too.
    let id = start(&mut c, "u", "ALTER COLUMN name TYPE varchar(20)", "");
    let strategy: String = c
        .query_one(
            "SELECT strategy FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(strategy, "instant");

    assert_eq!(
        snapshot(&mut c),
        before,
        "views and policies came back as they were"
    );
    let types: Vec<String> = c
        .query(
            "SELECT attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod)
               FROM pg_attribute WHERE attrelid IN ('v1'::regclass, 'v2'::regclass, 'uv'::regclass)
                AND attnum > 0 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        [
            "uv.name character varying(20)",
            "v1.id bigint",
            "v1.v bigint",
            "v2.id bigint",
            "v2.w bigint"
        ]
    );
    let (through_views, direct): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM v2), (SELECT count(*) FROM t WHERE v > 0)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(through_views, direct);

    // What could not be recreated exactly is refused before anything starts.
    c.batch_execute(
        "CREATE MATERIALIZED VIEW mv AS SELECT id FROM u;
         CREATE FUNCTION uses_uv() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM uv; END;",
    )
    .unwrap();
    for alter in ["ALTER COLUMN id TYPE bigint", "ALTER COLUMN name TYPE text"] {
        let e = c
            .query_one("SELECT migrate.start('u', $1)", &[&alter])
            .unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{alter}: {e:?}");
    }
    assert_eq!(leftovers(&mut c), 0);
}
