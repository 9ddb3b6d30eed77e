//! `migrate.plan()` on a live cluster: it never waits longer than the lock
//! timeout, never disturbs concurrent writers, changes nothing, and refuses
//! callers who do not own the table.

use crate::harness::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const COLUMNS: &str = "id bigint PRIMARY KEY, v int NOT NULL, payload text";

#[test]
fn plan_gives_up_after_lock_timeout_instead_of_queueing() {
    let cluster = Cluster::start();
    let mut setup = cluster.client();
    create_with_control(&mut setup, "t", COLUMNS, 1000);

    // A session holds ACCESS EXCLUSIVE (as a running ALTER would).
    let mut blocker = cluster.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    let mut planner = cluster.client();
    planner
        .batch_execute("SET halo_migrate.lock_timeout = '200ms'")
        .unwrap();
    let started = Instant::now();
    let err = planner
        .query(
            "SELECT * FROM migrate.plan('t', 'ALTER COLUMN v TYPE bigint')",
            &[],
        )
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(
        sqlstate(&err),
        "55P03",
        "expected lock_not_available, got {err}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "plan waited {waited:?} with a 200ms lock timeout"
    );

    // Once the lock is gone, the same plan answers, and the session is usable.
    blocker.batch_execute("COMMIT").unwrap();
    let rows = planner
        .query(
            "SELECT strategy FROM migrate.plan('t', 'ALTER COLUMN v TYPE bigint')",
            &[],
        )
        .unwrap();
    assert!(rows.iter().all(|r| r.get::<_, String>(0) == "rewrite"));
}

#[test]
fn plan_is_invisible_to_concurrent_writers() {
    let cluster = Cluster::start();
    let mut setup = cluster.client();
    create_with_control(&mut setup, "t", COLUMNS, 2000);
    setup
        .batch_execute("CREATE INDEX t_v_idx ON t (v)")
        .unwrap();
    let fingerprint = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT (SELECT string_agg(relname || ':' || relfilenode, ',' ORDER BY relname) FROM pg_class
                      WHERE relnamespace IN ('public'::regnamespace, 'migrate'::regnamespace))
                 || (SELECT count(*) FROM pg_constraint WHERE conrelid = 't'::regclass)::text",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = fingerprint(&mut setup);

    // Writers run a mixed workload on t and its control, in the same transactions.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let mut c = cluster.client();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    // Concurrent key updates may collide between writers; a failed
                    // transaction is rolled back on both tables alike.
                    let _ = mixed_write(&mut c, "t", i, 2000);
                    worst = worst.max(t0.elapsed());
                    i += 3;
                }
                worst
            })
        })
        .collect();

    let mut planner = cluster.client();
    for alter in [
        "ALTER COLUMN id TYPE numeric",
        "ALTER COLUMN v TYPE bigint, ADD COLUMN z int DEFAULT 1",
        "ADD CONSTRAINT v_pos CHECK (v > 0)",
        "ALTER COLUMN payload SET NOT NULL",
        "ADD UNIQUE (v)",
        "DROP COLUMN payload",
    ] {
        for _ in 0..5 {
            planner
                .query("SELECT * FROM migrate.plan('t', $1)", &[&alter])
                .unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let worst = w.join().unwrap();
        // plan() takes ACCESS SHARE at most, which never blocks a writer.
        assert!(worst < Duration::from_secs(2), "a write waited {worst:?}");
    }
    assert_same_rows(&mut setup, "t");
    assert_eq!(
        before,
        fingerprint(&mut setup),
        "plan() changed the catalog"
    );
}

#[test]
fn non_owner_is_refused_with_42501_and_nothing_changes() {
    let cluster = Cluster::start();
    let mut admin = cluster.client();
    create_with_control(&mut admin, "t", COLUMNS, 10);
    admin
        .batch_execute(
            "CREATE ROLE stranger LOGIN;
             GRANT USAGE ON SCHEMA migrate TO stranger;
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO stranger;",
        )
        .unwrap();
    let mut stranger = cluster.client_as("stranger");
    let err = stranger
        .query("SELECT * FROM migrate.plan('t', 'ADD COLUMN a int')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), "must be owner of table public.t");
    assert!(db.hint().is_some() && db.detail().is_some());
    assert_same_rows(&mut admin, "t");
}
