//! Names: every migration's shadow, log and kept table live in the one
//! schema `migrate`, so nothing named after a table's own objects may
//! collide there — not between two tables of the same name in different
//! schemas (schema-per-tenant applications migrate them all at once), and
//! not with halo_migrate's own objects.

use crate::harness::*;
use postgres::Client;

/// Each index of `table`: its name and definition.
fn indexes(c: &mut Client, table: &str) -> String {
    c.query_one(
        "SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indexrelid::regclass::text)
           FROM pg_index WHERE indrelid = $1::text::regclass",
        &[&table],
    )
    .unwrap()
    .get(0)
}

fn column_type(c: &mut Client, table: &str, column: &str) -> String {
    c.query_one(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
          WHERE attrelid = $1::text::regclass AND attname = $2",
        &[&table, &column],
    )
    .unwrap()
    .get(0)
}

/// Step a `background => false` migration of `table` until it waits for
/// its cut-over.
fn step_to_ready(c: &mut Client, table: &str) {
    wait_until(&format!("{table} to be ready"), || {
        c.query_one("SELECT migrate.step($1::text::regclass)", &[&table])
            .unwrap();
        let phase: String = c
            .query_one(
                "SELECT phase FROM migrate.status($1::text::regclass) ORDER BY id DESC LIMIT 1",
                &[&table],
            )
            .unwrap()
            .get(0);
        phase == "ready"
    });
}

#[test]
fn tables_of_one_name_in_two_schemas_migrate_and_revert_at_once() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    for s in ["a", "b"] {
        c.batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.t (id int PRIMARY KEY, v int, w text UNIQUE);
             CREATE INDEX t_v ON {s}.t (v);
             CREATE INDEX t_v_dup ON {s}.t (v);
             INSERT INTO {s}.t SELECT g, g, '{s}' || g FROM generate_series(1, 5000) g;"
        ))
        .unwrap();
    }
    let before = [indexes(&mut c, "a.t"), indexes(&mut c, "b.t")];
    // Both copies done and their indexes built before either swaps: before
    // the fix, the second build failed with 42P07 (relation "t_pkey"
    // already exists) because both shadows named their indexes after the
    // table's.
    for t in ["a.t", "b.t"] {
        c.execute(
            "SELECT migrate.start($1::text::regclass, 'ALTER COLUMN v TYPE bigint',
                                  background => false, revertible => true)",
            &[&t],
        )
        .unwrap();
    }
    step_to_ready(&mut c, "a.t");
    step_to_ready(&mut c, "b.t");
    c.batch_execute(
        "INSERT INTO a.t VALUES (6001, 6001, 'a6001'); UPDATE b.t SET v = -v WHERE id <= 10;",
    )
    .unwrap();
    for t in ["a.t", "b.t"] {
        let done: String = c
            .query_one("SELECT migrate.finish($1::text::regclass)", &[&t])
            .unwrap()
            .get(0);
        assert!(done.contains("done"), "{done}");
        assert_eq!(column_type(&mut c, t, "v"), "bigint");
    }
    // The tables keep their own index names and definitions, bigint aside.
    assert_eq!(
        [indexes(&mut c, "a.t"), indexes(&mut c, "b.t")],
        before,
        "index names and definitions after the swap"
    );
    // Both reverts under way at once: before the fix, the second one's
    // start failed with 42P07, renaming its kept indexes to the names the
    // first one had already given back in the schema migrate.
    for t in ["a.t", "b.t"] {
        let started: String = c
            .query_one(
                "SELECT migrate.revert($1::text::regclass, background => true)",
                &[&t],
            )
            .unwrap()
            .get(0);
        assert!(started.contains("started as migration"), "{started}");
    }
    for t in ["a.t", "b.t"] {
        let done: String = c
            .query_one("SELECT migrate.finish($1::text::regclass, '120s')", &[&t])
            .unwrap()
            .get(0);
        assert!(done.contains("reverted"), "{done}");
        assert_eq!(column_type(&mut c, t, "v"), "integer");
    }
    assert_eq!(
        [indexes(&mut c, "a.t"), indexes(&mut c, "b.t")],
        before,
        "index names and definitions after the revert"
    );
    let rows: (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM a.t WHERE id = 6001 AND v = 6001),
                        (SELECT count(*) FROM b.t WHERE id <= 10 AND v < 0)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(rows, (1, 10), "the writes made during the migrations");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_table_named_migrations_migrates() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    // Its primary key is migrations_pkey, which was the name of
    // halo_migrate's own: start() failed with 42P07 twinning it.
    c.batch_execute(
        "CREATE TABLE migrations (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO migrations (name) SELECT 'm' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let before = indexes(&mut c, "migrations");
    c.batch_execute(
        "SELECT migrate.start('migrations', 'ALTER COLUMN id TYPE bigint', background => false);
         SELECT migrate.finish('migrations');",
    )
    .unwrap();
    assert_eq!(column_type(&mut c, "migrations", "id"), "bigint");
    assert_eq!(indexes(&mut c, "migrations"), before);
    let n: i64 = c
        .query_one("SELECT count(*) FROM migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    assert_eq!(leftovers(&mut c), 0);
}
