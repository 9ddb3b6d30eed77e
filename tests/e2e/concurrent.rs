//! The concurrent strategy (ADD PRIMARY KEY / ADD UNIQUE via an index built
//! CONCURRENTLY by the background worker) on a live cluster.

use crate::harness::*;
use postgres::Client;
use std::time::{Duration, Instant};

const ROWS: i64 = 20_000;

fn wait_for_phase(c: &mut Client, id: i64, want: &str) {
    let t0 = Instant::now();
    loop {
        let p = phase(c, id);
        if p == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "still {p}, waiting for {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invalid_indexes(c: &mut Client, table: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass AND NOT indisvalid",
        &[&table],
    )
    .unwrap()
    .get(0)
}

#[test]
fn primary_key_added_concurrently_under_writes() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(
        &mut c,
        "acc",
        "id int UNIQUE, v int NOT NULL, payload text",
        ROWS,
    );
    let writers = Writers::start(&cluster, "acc", 3, ROWS);
    std::thread::sleep(Duration::from_millis(300));

    // Hold the build in its wait for older snapshots, to see it in progress.
    let mut old = hold_snapshot(&cluster);
    let id: i64 = c
        .query_one("SELECT migrate.start('acc', 'ADD PRIMARY KEY (id)')", &[])
        .unwrap()
        .get(0);
    let strategy: String = c
        .query_one(
            "SELECT strategy FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(strategy, "concurrent");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        phase(&mut c, id),
        "indexing",
        "the build should wait for the old snapshot"
    );
    // finish() cannot wait for a concurrent build; it says so and what to use.
    let e = c
        .query_one("SELECT migrate.finish('acc')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .hint()
            .unwrap_or("")
            .contains("migrate.wait"),
        "{e:?}"
    );
    // wait() gives up at its timeout, and the build goes on.
    let e = c
        .batch_execute("CALL migrate.wait('acc', '1s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");

    old.batch_execute("COMMIT").unwrap();
    c.batch_execute("CALL migrate.wait('acc', '60s')").unwrap();
    let (worst, committed) = writers.stop();
    assert!(committed > 50, "writers made progress: {committed}");
    assert!(worst < Duration::from_secs(2), "a write waited {worst:?}");

    let row = c
        .query_one(
            "SELECT k.conname::text, k.contype::text, i.indisvalid, i.indisprimary,
                    (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'id')
               FROM pg_constraint k JOIN pg_index i ON i.indexrelid = k.conindid
              WHERE k.conrelid = 'acc'::regclass AND k.contype = 'p'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "acc_pkey");
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3) && row.get::<_, bool>(4));
    assert_eq!(invalid_indexes(&mut c, "acc"), 0);
    let summary: String = c
        .query_one("SELECT migrate.finish('acc')", &[])
        .unwrap()
        .get(0);
    assert!(summary.contains("done"), "{summary}");
    assert_same_rows(&mut c, "acc");
}

#[test]
fn a_failed_or_aborted_concurrent_build_leaves_no_index() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE dup (id int PRIMARY KEY, v int);
         INSERT INTO dup SELECT g, g % 1000 FROM generate_series(1, 20000) g;
         CREATE TABLE ab (id int PRIMARY KEY, v int);
         INSERT INTO ab SELECT g, g FROM generate_series(1, 20000) g;",
    )
    .unwrap();

    // Duplicates: the build fails with 23505 and its invalid index is dropped.
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('dup', 'ADD CONSTRAINT dup_v_key UNIQUE (v)')",
            &[],
        )
        .unwrap()
        .get(0);
    let e = c
        .batch_execute("CALL migrate.wait('dup', '60s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e:?}");
    let e = c
        .query_one("SELECT migrate.finish('dup')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e:?}");
    let (phase, err): (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT phase, error FROM migrate.status() WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(phase, "failed");
    assert!(err.unwrap_or_default().contains("dup_v_key"));
    let indexes: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'dup'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 1, "only the primary key is left");

    // Abort while the build waits: the worker is cancelled, the index dropped.
    let mut old = hold_snapshot(&cluster);
    let id: i64 = c
        .query_one("SELECT migrate.start('ab', 'ADD UNIQUE (v)')", &[])
        .unwrap()
        .get(0);
    let t0 = Instant::now();
    while invalid_indexes(&mut c, "ab") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the build never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.batch_execute("SELECT migrate.abort('ab')").unwrap();
    wait_for_phase(&mut c, id, "aborted");
    old.batch_execute("COMMIT").unwrap();
    let indexes: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'ab'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 1, "only the primary key is left");
    let workers = backends(&mut c, "halo_migrate worker");
    assert_eq!(workers, 0);

    // The build needs the worker: background => false is refused up front.
    let e = c
        .query_one(
            "SELECT migrate.start('ab', 'ADD UNIQUE (v)', background => false)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
}
