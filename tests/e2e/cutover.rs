//! Cut-over control: `finish(…, blockers => 'cancel' | 'terminate')` clears
//! sessions that keep the swap waiting; the application's own short
//! transactions are never touched. (Waiting, the default, is tested in
//! `engine::swap_waits_for_a_blocker_without_blocking_writers`.)

use crate::harness::*;
use postgres::Client;
use std::time::{Duration, Instant};

const COLUMNS: &str = "id int PRIMARY KEY, v int NOT NULL, payload text";
const ROWS: i64 = 20_000;

fn start_and_wait_ready(c: &mut Client, alter: &str) -> i64 {
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', $1, batch_rows => 2000, lock_timeout => '100ms')",
            &[&alter],
        )
        .unwrap()
        .get(0);
    wait_until("the copy to catch up", || phase(c, id) == "ready");
    id
}

/// A session inside a transaction that has read `t` and now sits idle.
fn idle_in_transaction(cluster: &Cluster) -> Client {
    let mut b = cluster.client();
    b.batch_execute("BEGIN; SELECT count(*) FROM t").unwrap();
    b
}

fn finish(c: &mut Client, timeout: &str, blockers: &str) -> Result<String, postgres::Error> {
    c.query_one(
        "SELECT migrate.finish('t', $1::text::interval, blockers => $2)",
        &[&timeout, &blockers],
    )
    .map(|r| r.get(0))
}

#[test]
fn finish_cancels_or_terminates_what_blocks_the_swap() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, ROWS);
    let writers = Writers::start(&cluster, "t", 2, ROWS);
    let id = start_and_wait_ready(&mut c, "ALTER COLUMN v TYPE bigint");
    // Without auto_finish, the cut-over waits for finish().
    std::thread::sleep(Duration::from_millis(1500));
    let (phase, v): (String, String) = {
        let r = c
            .query_one(
                "SELECT (SELECT phase FROM migrate.status() WHERE id = $1),
                        (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                          WHERE attrelid = 't'::regclass AND attname = 'v')",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((phase.as_str(), v.as_str()), ("ready", "integer"));

    // Cancelling does nothing to a session idle in its transaction: the
    // swap still cannot happen, and finish() times out.
    let mut idle = idle_in_transaction(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    let e = finish(&mut c, "2s", "cancel").unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    idle.batch_execute("SELECT 1")
        .expect("the idle session lives on");

    // A running statement holding a lock is cancelled, and the swap goes through.
    idle.batch_execute("COMMIT").unwrap();
    let port = cluster.port;
    let running = std::thread::spawn(move || {
        let mut b = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        )
        .unwrap();
        b.batch_execute("SELECT count(*) FROM t, pg_sleep(60)")
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let done = finish(&mut c, "60s", "cancel").expect("finish with blockers => cancel");
    assert!(done.contains("done"), "{done}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    let cancelled = running.join().unwrap().unwrap_err();
    assert_eq!(sqlstate(&cancelled), "57014", "{cancelled:?}");

    // Terminating ends a session idle in its transaction; its work rolls back.
    start_and_wait_ready(&mut c, "ALTER COLUMN v TYPE numeric");
    let mut idle = idle_in_transaction(&cluster);
    idle.batch_execute("UPDATE t SET v = -1; UPDATE t_control SET v = -1")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let done = finish(&mut c, "60s", "terminate").expect("finish with blockers => terminate");
    assert!(done.contains("done"), "{done}");
    assert!(
        idle.batch_execute("SELECT 1").is_err(),
        "the blocking session was terminated"
    );

    let (_, committed) = writers.stop();
    assert!(committed > 0);
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE numeric");

    let e = finish(&mut c, "1s", "kill").unwrap_err();
    assert_eq!(sqlstate(&e), "22023", "{e:?}");
}
