//! What only some PostgreSQL versions have (`make test PG=18` runs these
//! for real; on older versions each test checks that the feature is absent
//! and stops).

use crate::harness::*;
use postgres::Client;

fn server_version(c: &mut Client) -> i32 {
    c.query_one("SELECT current_setting('server_version_num')::int", &[])
        .unwrap()
        .get(0)
}

/// PostgreSQL 18: a virtual generated column (the default kind of
/// generated column there) is stored nowhere and computed when read. The
/// shadow must have it virtual too, or its twin cannot be made (the
/// expression would become a DEFAULT naming another column) and the swap's
/// layout check would refuse.
#[test]
fn a_table_with_a_virtual_generated_column_migrates() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    if server_version(&mut c) < 180000 {
        assert!(c
            .batch_execute("CREATE TABLE x (a int, b int GENERATED ALWAYS AS (a) VIRTUAL)")
            .is_err());
        return;
    }
    create_with_control(
        &mut c,
        "t",
        "id int PRIMARY KEY, v int NOT NULL, payload text, twice bigint GENERATED ALWAYS AS (v * 2)",
        5_000,
    );
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN id TYPE bigint', background => false)",
            &[],
        )
        .unwrap()
        .get(0);
    for i in 0..20 {
        c.batch_execute("SELECT migrate.step('t')").unwrap();
        mixed_write(&mut c, "t", i, 5_000).unwrap();
    }
    let done: String = c
        .query_one("SELECT migrate.finish('t')", &[])
        .unwrap()
        .get(0);
    assert!(done.contains("done"), "migration {id}: {done}");
    let (kind, wrong): (String, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT attgenerated::text FROM pg_attribute
                          WHERE attrelid = 't'::regclass AND attname = 'twice'),
                        (SELECT count(*) FROM t WHERE twice IS DISTINCT FROM v * 2)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (kind.as_str(), wrong),
        ("v", 0),
        "still virtual, still right"
    );
    assert_matches_control(&mut c, "t", "ALTER COLUMN id TYPE bigint");
    assert_eq!(leftovers(&mut c), 0);
}

/// PostgreSQL 18: a NOT NULL constraint may be NOT VALID, so that a column
/// whose `attnotnull` is set may still hold NULLs. Refused, clearly, until
/// it is validated; nothing is left behind.
#[test]
fn a_not_valid_not_null_constraint_is_refused_until_validated() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    if server_version(&mut c) < 180000 {
        return;
    }
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g END FROM generate_series(1, 1000) g;
         ALTER TABLE t ADD CONSTRAINT v_nn NOT NULL v NOT VALID;",
    )
    .unwrap();
    let e = c
        .batch_execute("SELECT migrate.start('t', 'ALTER COLUMN id TYPE bigint')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
    let db = e.as_db_error().unwrap();
    assert!(db.detail().unwrap_or("").contains("v_nn"), "{db:?}");
    assert!(
        db.hint().unwrap_or("").contains("VALIDATE CONSTRAINT"),
        "{db:?}"
    );
    assert_eq!(leftovers(&mut c), 0);
    // Once validated (after the NULLs are fixed), the same call goes through.
    c.batch_execute(
        "UPDATE t SET v = 0 WHERE v IS NULL; ALTER TABLE t VALIDATE CONSTRAINT v_nn;
         SELECT migrate.start('t', 'ALTER COLUMN id TYPE bigint', background => false);
         SELECT migrate.finish('t');",
    )
    .unwrap();
    assert_eq!(leftovers(&mut c), 0);
}

/// PostgreSQL 18: `ALTER CONSTRAINT … ENFORCED` validates the constraint
/// by a scan under ACCESS EXCLUSIVE; it is refused, not planned as instant.
#[test]
fn alter_constraint_enforced_is_refused() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    if server_version(&mut c) < 180000 {
        return;
    }
    c.batch_execute(
        "CREATE TABLE p (id int PRIMARY KEY);
         CREATE TABLE t (id int PRIMARY KEY, pid int,
                         CONSTRAINT t_pid_fkey FOREIGN KEY (pid) REFERENCES p NOT ENFORCED);",
    )
    .unwrap();
    for call in [
        "SELECT * FROM migrate.plan('t', 'ALTER CONSTRAINT t_pid_fkey ENFORCED')",
        "SELECT migrate.start('t', 'ALTER CONSTRAINT t_pid_fkey ENFORCED')",
    ] {
        let e = c.batch_execute(call).unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{call}: {e:?}");
    }
    // Deferrability alone changes no row: still instant.
    c.batch_execute("SELECT migrate.start('t', 'ALTER CONSTRAINT t_pid_fkey DEFERRABLE')")
        .unwrap();
    assert_eq!(leftovers(&mut c), 0);
}
