//! Operating a long migration: detached progress, pause/resume, throttling,
//! a worker terminated or a server stopped mid-copy and then resumed, and a
//! migration driven by pg_cron. Each ends with the oracle comparison.

use crate::harness::*;
use postgres::Client;
use std::time::Duration;

const COLUMNS: &str = "id int PRIMARY KEY, v int NOT NULL, payload text";
const ALTER: &str = "ALTER COLUMN v TYPE bigint";

fn copied(c: &mut Client, id: i64) -> (String, i64) {
    let r = c
        .query_one(
            "SELECT phase, rows_copied FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// After a resume: once the copy of migration `id` is past `at` rows, let
/// it run at full speed, stop the writers, finish and compare.
fn go_on_then_compare(c: &mut Client, id: i64, at: i64, writers: Writers) {
    wait_until("the copy to go on", || copied(c, id).1 > at);
    c.batch_execute("SELECT migrate.throttle('t', batch_pause => '0')")
        .unwrap();
    writers.stop();
    finish_and_compare(c, "t");
}

fn finish_and_compare(c: &mut Client, table: &str) {
    let s: String = c
        .query_one(&format!("SELECT migrate.finish('{table}', '120s')"), &[])
        .unwrap()
        .get(0);
    assert!(s.contains("done"), "{s}");
    assert_matches_control(c, table, ALTER);
}

#[test]
fn detached_pause_resume_and_throttle() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 200_000);
    let writers = Writers::start(&cluster, "t", 2, 200_000);
    // Started by a session that then goes away: the copy goes on.
    let id: i64 = {
        let mut s = cluster.client();
        s.query_one(
            "SELECT migrate.start('t', $1, batch_rows => 2000)",
            &[&ALTER],
        )
        .unwrap()
        .get(0)
    };
    let slow = c
        .query_one("SELECT migrate.throttle('t', batch_pause => '300ms')", &[])
        .unwrap()
        .get::<_, String>(0);
    assert!(slow.contains("batch_pause 300 ms"), "{slow}");
    wait_until("the copy to start", || copied(&mut c, id).1 > 0);

    // Throttled: at most one 2000-row batch per 300 ms.
    let a = copied(&mut c, id).1;
    std::thread::sleep(Duration::from_millis(1500));
    let b = copied(&mut c, id).1;
    assert!(
        b > a && b - a <= 7 * 2100,
        "copied {} rows in 1.5 s at 300 ms per batch",
        b - a
    );

    // Paused: nothing moves.
    c.batch_execute("SELECT migrate.pause('t')").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (phase, p1) = copied(&mut c, id);
    assert_eq!(phase, "paused");
    let eta: Option<String> = c
        .query_one(
            "SELECT eta::text FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(eta, None, "no ETA while paused");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(copied(&mut c, id).1, p1, "a paused migration copied rows");
    let activity: String = c
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(activity.contains("paused"), "{activity}");

    // Resumed, unthrottled, with adaptive batches: it speeds up.
    c.batch_execute(
        "SELECT migrate.resume('t');
         SELECT migrate.throttle('t', batch_pause => '0', target_batch_time => '500ms');",
    )
    .unwrap();
    wait_until("the copy to move again", || copied(&mut c, id).1 > p1);
    wait_until("the batch size to adapt", || {
        c.query_one(
            "SELECT batch_rows FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get::<_, i32>(0)
            > 2000
            || copied(&mut c, id).0 != "copying"
    });
    let (worst, _) = writers.stop();
    assert!(worst < Duration::from_secs(2), "a write waited {worst:?}");
    finish_and_compare(&mut c, "t");

    // Bad settings change nothing.
    for (call, code) in [
        ("SELECT migrate.throttle('t', batch_rows => 0)", "22023"),
        ("SELECT migrate.pause('t')", "55000"),
        ("SELECT migrate.throttle(NULL)", "22004"),
    ] {
        let e = c.query_one(call, &[]).unwrap_err();
        assert_eq!(sqlstate(&e), code, "{call}: {e:?}");
    }
}

/// 100k rows under two writers, copied slowly (100 ms between batches);
/// returns once the copy has begun.
fn slow_copy_under_writers(cluster: &Cluster, c: &mut Client) -> (Writers, i64) {
    create_with_control(c, "t", COLUMNS, 100_000);
    c.batch_execute("SET halo_migrate.batch_pause = '100ms'")
        .unwrap();
    let writers = Writers::start(cluster, "t", 2, 100_000);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', $1, batch_rows => 2000)",
            &[&ALTER],
        )
        .unwrap()
        .get(0);
    wait_until("the copy to start", || copied(c, id).1 > 0);
    (writers, id)
}

#[test]
fn worker_terminated_mid_copy_then_resumed() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let (writers, id) = slow_copy_under_writers(&cluster, &mut c);
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
    )
    .unwrap();
    wait_until("the migration to show as interrupted", || {
        copied(&mut c, id).0 == "interrupted"
    });
    let (_, at) = copied(&mut c, id);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(copied(&mut c, id).1, at, "nothing copies without a worker");
    let e = c.batch_execute("CALL migrate.wait('t', '5s')").unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");

    let r: String = c
        .query_one("SELECT migrate.resume('t')", &[])
        .unwrap()
        .get(0);
    assert!(r.contains("new worker"), "{r}");
    go_on_then_compare(&mut c, id, at, writers);
}

#[test]
fn immediate_shutdown_mid_copy_then_resumed() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let (writers, id) = slow_copy_under_writers(&cluster, &mut c);
    cluster.restart_immediate();
    // Writers lose their connections; a transaction cut short is rolled back
    // on both tables alike.
    writers.stop();
    let mut c = cluster.client();
    let (phase, at) = copied(&mut c, id);
    assert_eq!(phase, "interrupted");
    assert!(at > 0);

    let writers = Writers::start(&cluster, "t", 2, 100_000);
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    go_on_then_compare(&mut c, id, at, writers);
}

#[test]
fn pg_cron_drives_a_migration_to_completion() {
    let cluster = Cluster::start_with(&[
        "shared_preload_libraries = 'pg_cron'",
        "cron.database_name = 'postgres'",
        "cron.use_background_workers = on",
    ]);
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 20_000);
    c.batch_execute("CREATE EXTENSION pg_cron").unwrap();
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', $1, batch_rows => 5000, background => false)",
            &[&ALTER],
        )
        .unwrap()
        .get(0);
    // pg_cron 1.4 runs jobs once a minute: each run takes many steps.
    c.batch_execute(
        "SELECT cron.schedule('halo-step', '* * * * *',
                $$SELECT migrate.step('t') FROM generate_series(1, 50)$$)",
    )
    .unwrap();
    let writers = Writers::start(&cluster, "t", 2, 20_000);
    wait_until("pg_cron to bring the copy to ready", || {
        phase(&mut c, id) == "ready"
    });
    writers.stop();
    c.batch_execute("SELECT cron.unschedule('halo-step')")
        .unwrap();
    finish_and_compare(&mut c, "t");
}

#[test]
fn worker_killed_and_server_crashed_while_replaying_then_resumed() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 30_000);
    let writers = Writers::start(&cluster, "t", 2, 30_000);
    let id: i64 = c
        .query_one("SELECT migrate.start('t', $1)", &[&ALTER])
        .unwrap()
        .get(0);
    let replaying = |c: &mut Client| ["replaying", "ready"].contains(&copied(c, id).0.as_str());
    wait_until("the copy to end", || replaying(&mut c));
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
    )
    .unwrap();
    wait_until("the migration to show as interrupted", || {
        copied(&mut c, id).0 == "interrupted"
    });
    // Changes pile up in the log while no worker replays them.
    std::thread::sleep(Duration::from_millis(500));
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    wait_until("the replay to go on", || replaying(&mut c));
    // Now a crash: every backend and the worker die mid-replay.
    cluster.restart_immediate();
    writers.stop();
    let mut c = cluster.client();
    wait_until(
        "the migration to show as interrupted after the crash",
        || copied(&mut c, id).0 == "interrupted",
    );
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    finish_and_compare(&mut c, "t");
}

#[test]
fn copy_holds_while_a_real_standby_lags() {
    let primary = Cluster::start();
    let standby = primary.standby(&["wal_receiver_status_interval = 1s"]);
    let mut c = primary.client();
    let mut s = standby.client();
    wait_until("the standby to stream", || {
        c.query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
    create_with_control(&mut c, "t", COLUMNS, 100_000);
    c.batch_execute(
        "SET halo_migrate.batch_pause = '50ms'; SET halo_migrate.max_replica_lag = '1s'",
    )
    .unwrap();
    let writers = Writers::start(&primary, "t", 2, 100_000);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', $1, batch_rows => 1000)",
            &[&ALTER],
        )
        .unwrap()
        .get(0);
    wait_until("the copy to start", || copied(&mut c, id).1 > 0);

    // The standby stops replaying; the writers go on, so its lag grows, and
    // the copy waits once the lag passes 1 s.
    s.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    let worker_says = |c: &mut Client| -> String {
        c.query_one(
            "SELECT coalesce(max(query), '') FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    wait_until("the worker to wait for the standby", || {
        worker_says(&mut c).contains("replay lag")
    });
    let held = copied(&mut c, id).1;
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        copied(&mut c, id).1,
        held,
        "copied while the standby lagged: {}",
        worker_says(&mut c)
    );
    let lag: f64 = c
        .query_one(
            "SELECT extract(epoch FROM max(replay_lag))::float8 FROM pg_stat_replication",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(lag > 1.0, "replay lag {lag} s");

    // Replay resumes, the lag falls, the copy goes on.
    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    wait_until("the copy to go on", || copied(&mut c, id).1 > held);
    c.batch_execute("SELECT migrate.throttle('t', batch_pause => '0')")
        .unwrap();
    writers.stop();
    finish_and_compare(&mut c, "t");
    // And the standby has the migrated table too.
    let lsn: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    wait_until("the standby to replay the swap", || {
        s.query_one(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            &[&lsn],
        )
        .unwrap()
        .get::<_, bool>(0)
    });
    assert_same_rows(&mut s, "t");
}

/// Wait until migration `id` copies again, with a live worker.
fn copy_goes_on(c: &mut Client, id: i64, what: &str) {
    let at = copied(c, id).1;
    wait_until(what, || {
        let (phase, n) = copied(c, id);
        phase == "copying" && n > at
    });
}

#[test]
fn preloaded_migrations_resume_by_themselves_after_restarts() {
    let cluster = Cluster::start_with(&["shared_preload_libraries = 'halo_migrate'"]);
    let mut c = cluster.client();
    wait_until("the launcher to run", || {
        backends(&mut c, "halo_migrate launcher") == 1
    });
    // A migration driven by step() is not the launcher's to resume.
    c.batch_execute(
        "CREATE TABLE stepped (id int PRIMARY KEY, v int);
         INSERT INTO stepped SELECT g, g FROM generate_series(1, 1000) g;
         SELECT migrate.start('stepped', 'ALTER COLUMN v TYPE bigint', background => false);",
    )
    .unwrap();
    let (writers, id) = slow_copy_under_writers(&cluster, &mut c);

    // An immediate shutdown and a start: nobody calls resume().
    cluster.restart_immediate();
    writers.stop();
    let mut c = cluster.reconnect();
    copy_goes_on(&mut c, id, "the copy to go on by itself");

    // A crash restart without a shutdown: a backend killed with SIGKILL
    // makes the postmaster restart every process, the launcher too.
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    drop(c);
    let mut c = cluster.crash_by_killing(pid);
    copy_goes_on(&mut c, id, "the copy to go on after the crash restart");
    let stepped: String = c
        .query_one(
            "SELECT phase FROM migrate.status() WHERE table_name = 'public.stepped'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stepped, "copying", "step()'s migration was left alone");
    let workers = backends(&mut c, "halo_migrate worker");
    assert_eq!(workers, 1, "one worker, for the background migration");
    c.batch_execute("SELECT migrate.throttle('t', batch_pause => '0')")
        .unwrap();
    finish_and_compare(&mut c, "t");
}
