//! Faults in the phases the other suites do not cut short: capture set-up
//! (inside `start()`), the swap (`finish()` cancelled, the server crashed,
//! while the swap waits for its lock) and validation (after the swap).
//! After each, the original is intact or the migration completes on resume,
//! and the oracle comparison is exact. (Copy and replay faults are in
//! `operations.rs`.)

use crate::harness::*;
use postgres::Client;
use std::time::Duration;

const COLUMNS: &str = "id int PRIMARY KEY, v int NOT NULL, payload text";

fn shape(c: &mut Client) -> String {
    c.query_one(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
              || ' / triggers ' || (SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass)
           FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Start the migration of `t`; its id.
fn start(c: &mut Client, alter: &str, options: &str) -> i64 {
    c.query_one(
        &format!("SELECT migrate.start('t', $1, {options})"),
        &[&alter],
    )
    .unwrap()
    .get(0)
}

/// `start()` in a session of its own, on a thread; its backend pid.
fn start_in_background(
    cluster: &Cluster,
) -> (std::thread::JoinHandle<Result<i64, postgres::Error>>, i32) {
    let mut s = cluster.client();
    let pid: i32 = s.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let h = std::thread::spawn(move || {
        s.query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', lock_timeout => '50ms')",
            &[],
        )
        .map(|r| r.get(0))
    });
    (h, pid)
}

/// The session `pid` is inside `start()`, retrying the trigger's lock.
fn wait_until_stuck_installing_capture(c: &mut Client, pid: i32) {
    wait_until("start() to wait for its lock", || {
        c.query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND relation = 't'::regclass",
            &[&pid],
        )
        .unwrap()
        .get::<_, i64>(0)
            > 0
    });
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn start_cancelled_or_crashed_while_setting_up_capture_leaves_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 10_000);
    let before = shape(&mut c);
    // A writer's open transaction keeps the trigger's lock from being granted.
    let mut blocker = cluster.client();
    blocker
        .batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 1; UPDATE t_control SET v = v + 1 WHERE id = 1")
        .unwrap();

    // The caller's statement is cancelled mid-set-up.
    let (h, pid) = start_in_background(&cluster);
    wait_until_stuck_installing_capture(&mut c, pid);
    c.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let e = h.join().unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert_eq!(shape(&mut c), before);
    assert_eq!(leftovers(&mut c), 0);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no migration recorded");

    // The server stops with -m immediate mid-set-up.
    let (h, pid) = start_in_background(&cluster);
    wait_until_stuck_installing_capture(&mut c, pid);
    cluster.restart_immediate();
    assert!(h.join().unwrap().is_err());
    let mut c = cluster.reconnect();
    assert_eq!(shape(&mut c), before);
    assert_eq!(leftovers(&mut c), 0);
    let over: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate.status() WHERE phase NOT IN ('done', 'failed', 'aborted')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(over, 0, "nothing to resume");

    // The blocker's transaction died with the server, on both tables alike;
    // a new migration runs through under writers.
    let writers = Writers::start(&cluster, "t", 2, 10_000);
    c.batch_execute("SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    writers.stop();
    c.batch_execute("SELECT migrate.finish('t', '120s')")
        .unwrap();
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
}

#[test]
fn server_crashed_and_worker_terminated_while_validating_then_resumed() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 20_000);
    // Two referencing tables: after the swap (the referenced key changes
    // type) their foreign keys are validated one at a time, the large one
    // first (by constraint oid), which takes seconds.
    c.batch_execute(
        "CREATE TABLE ch (cid int PRIMARY KEY,
                          pid int CONSTRAINT ch_pid_fkey REFERENCES t (id) ON DELETE CASCADE ON UPDATE CASCADE);
         CREATE TABLE ch2 (cid int PRIMARY KEY,
                          pid int CONSTRAINT ch2_pid_fkey REFERENCES t (id) ON DELETE CASCADE ON UPDATE CASCADE);
         INSERT INTO ch SELECT g, 1 + g % 20000 FROM generate_series(1, 3000000) g;
         INSERT INTO ch2 SELECT g, 1 + g % 20000 FROM generate_series(1, 1000) g;
         ANALYZE ch, ch2;",
    )
    .unwrap();
    let writers = Writers::start(&cluster, "t", 2, 20_000);
    let id = start(&mut c, "ALTER COLUMN id TYPE bigint", "auto_finish => true");
    let valid = |c: &mut Client| -> (bool, bool) {
        let r = c
            .query_one(
                "SELECT bool_or(convalidated) FILTER (WHERE conname = 'ch_pid_fkey'),
                        bool_or(convalidated) FILTER (WHERE conname = 'ch2_pid_fkey')
                   FROM pg_constraint WHERE conname IN ('ch_pid_fkey', 'ch2_pid_fkey')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let validating_ch = |c: &mut Client| -> bool {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'halo_migrate worker' AND query LIKE '%ch_pid_fkey%'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            > 0
    };
    wait_until("the swap", || phase(&mut c, id) == "validating");

    // The server stops with -m immediate in the middle of the first VALIDATE.
    wait_until("the first validation", || validating_ch(&mut c));
    cluster.restart_immediate();
    writers.stop();
    let mut c = cluster.reconnect();
    assert_eq!(phase(&mut c, id), "interrupted");
    assert_eq!(
        valid(&mut c),
        (false, false),
        "swapped, nothing validated yet"
    );
    // The swap stands: the table has its new type and takes writes.
    let writers = Writers::start(&cluster, "t", 2, 20_000);
    let t: String = c
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = 't'::regclass AND attname = 'id'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(t, "bigint");

    // Resumed, the worker validates again; terminated meanwhile, it ends the
    // statement it is in (SIGTERM is honoured between units) and stops.
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    wait_until("the first validation again", || validating_ch(&mut c));
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
    )
    .unwrap();
    wait_until("the migration to show as interrupted", || {
        phase(&mut c, id) == "interrupted"
    });
    assert_eq!(valid(&mut c), (true, false), "one of two validated");

    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    let s: String = c
        .query_one("SELECT migrate.finish('t', '120s')", &[])
        .unwrap()
        .get(0);
    assert!(s.contains("done"), "{s}");
    assert_eq!(valid(&mut c), (true, true), "both validated in the end");
    writers.stop();
    assert_matches_control(&mut c, "t", "ALTER COLUMN id TYPE bigint");
}

/// The session `pid` waits for a lock.
fn waiting_for_a_lock(c: &mut Client, pid: i32) -> bool {
    c.query_one(
        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted",
        &[&pid],
    )
    .unwrap()
    .get::<_, i64>(0)
        > 0
}

#[test]
fn finish_cancelled_and_server_crashed_in_the_middle_of_the_swap() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 20_000);
    let writers = Writers::start(&cluster, "t", 2, 20_000);
    // A long lock timeout keeps the swap waiting inside its transaction.
    let id = start(
        &mut c,
        "ALTER COLUMN v TYPE bigint",
        "lock_timeout => '60s', background => false",
    );
    while phase(&mut c, id) == "copying" {
        c.batch_execute("SELECT migrate.step('t')").unwrap();
    }
    writers.stop();
    let before = shape(&mut c);
    let mut blocker = cluster.client();
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM t")
        .unwrap();

    // finish() performs the swap itself and waits for its lock; cancelled
    // there, its transaction rolls back and the table is as it was.
    let mut f = cluster.client();
    let pid: i32 = f.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let h = std::thread::spawn(move || f.batch_execute("SELECT migrate.finish('t')"));
    wait_until("finish() to wait for the swap's lock", || {
        waiting_for_a_lock(&mut c, pid)
    });
    c.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let e = h.join().unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert_eq!(shape(&mut c), before, "the swap rolled back");
    assert_ne!(phase(&mut c, id), "done");

    // Again, and now the server stops with -m immediate mid-swap.
    let mut f = cluster.client();
    let pid: i32 = f.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let h = std::thread::spawn(move || f.batch_execute("SELECT migrate.finish('t')"));
    wait_until("finish() to wait for the swap's lock again", || {
        waiting_for_a_lock(&mut c, pid)
    });
    cluster.restart_immediate();
    assert!(h.join().unwrap().is_err());
    let mut c = cluster.reconnect();
    assert_eq!(shape(&mut c), before, "the swap rolled back");
    let s: String = c
        .query_one("SELECT migrate.finish('t', '120s')", &[])
        .unwrap()
        .get(0);
    assert!(s.contains("done"), "{s}");
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
    assert_eq!(leftovers(&mut c), 0);
}
