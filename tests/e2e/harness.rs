//! The end-to-end harness: throwaway clusters, client sessions, workloads and
//! the oracle comparison.
//!
//! `Cluster::start()` runs `scripts/pgcluster.sh` (initdb as the `postgres`
//! user, a free port on 127.0.0.1) and stops the cluster when dropped.
//! `Cluster::client()` opens another session. `assert_same_rows()` compares a
//! table with its control table row by row.

#![allow(dead_code)]

use postgres::{Client, NoTls};
use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    dir: PathBuf,
    pub port: u16,
}

/// The workspace root (this harness is shared with `cli/tests`).
fn repo() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if dir.join("scripts/pgcluster.sh").exists() {
        dir
    } else {
        dir.parent().expect("workspace root").to_path_buf()
    }
}

impl Cluster {
    /// A new cluster with `CREATE EXTENSION halo_migrate` done in `postgres`.
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// A new cluster with extra postgresql.conf lines.
    pub fn start_with(conf: &[&str]) -> Cluster {
        let dir = tempdir();
        let data = dir.join("data");
        let port = pgcluster(&["start".as_ref(), data.as_os_str()], conf);
        let cluster = Cluster { dir, port };
        cluster
            .client()
            .batch_execute("CREATE EXTENSION halo_migrate")
            .expect("CREATE EXTENSION");
        cluster
    }

    pub fn connstr(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres application_name=halo_e2e",
            self.port
        )
    }

    /// A new session as the superuser `postgres`.
    pub fn client(&self) -> Client {
        self.client_as("postgres")
    }

    pub fn client_as(&self, user: &str) -> Client {
        Client::connect(&self.connstr(user), NoTls).expect("connect")
    }

    /// A new session as `postgres` in database `db`.
    pub fn client_db(&self, db: &str) -> Client {
        let conn = self
            .connstr("postgres")
            .replace("dbname=postgres", &format!("dbname={db}"));
        Client::connect(&conn, NoTls).expect("connect")
    }
}

impl Cluster {
    /// Stop the server with `-m immediate` (no shutdown checkpoint, every
    /// backend and worker killed, as in a crash) and start it again.
    pub fn restart_immediate(&self) {
        let status = Command::new(repo().join("scripts/pgcluster.sh"))
            .arg("crash-restart")
            .arg(self.dir.join("data"))
            .status()
            .expect("run scripts/pgcluster.sh");
        assert!(status.success(), "crash-restart failed");
    }
}

impl Cluster {
    /// A new session as `postgres`, once the server accepts connections
    /// again (after a crash restart).
    pub fn reconnect(&self) -> Client {
        let mut c = None;
        wait_until("the server to accept connections", || {
            c = Client::connect(&self.connstr("postgres"), NoTls).ok();
            c.is_some()
        });
        c.unwrap()
    }

    /// Kill server process `pid` with SIGKILL, which makes the postmaster
    /// restart every process as after a crash, and return a session opened
    /// after that restart. The postmaster notices the death a moment after
    /// the kill, so a session opened at once could still be ended by the
    /// restart: the checkpointer's pid changing is what shows it happened.
    pub fn crash_by_killing(&self, pid: i32) -> Client {
        let checkpointer = |c: &mut Client| -> Option<i32> {
            c.query_one(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
                &[],
            )
            .ok()
            .map(|r| r.get(0))
        };
        let before = checkpointer(&mut self.client()).expect("the checkpointer");
        let pid = pid.to_string();
        let killed = Command::new("kill")
            .args(["-9", &pid])
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("sudo")
                .args(["-n", "-u", "postgres", "kill", "-9", &pid])
                .status()
                .is_ok_and(|s| s.success());
        assert!(killed, "could not kill process {pid}");
        let mut session = None;
        wait_until("the server to restart after the crash", || {
            session = Client::connect(&self.connstr("postgres"), NoTls)
                .ok()
                .and_then(|mut c| match checkpointer(&mut c) {
                    Some(now) if now != before => Some(c),
                    _ => None,
                });
            session.is_some()
        });
        session.unwrap()
    }

    /// A streaming standby of this cluster (pg_basebackup -R), with extra
    /// postgresql.conf lines; stopped and removed when dropped.
    pub fn standby(&self, conf: &[&str]) -> Cluster {
        let dir = tempdir();
        let (primary, data) = (self.dir.join("data"), dir.join("data"));
        let port = pgcluster(
            &["standby".as_ref(), primary.as_os_str(), data.as_os_str()],
            conf,
        );
        Cluster { dir, port }
    }
}

impl Cluster {
    /// Make `user` log in over TCP with a SCRAM password (the cluster
    /// otherwise trusts everyone).
    pub fn require_password(&self, user: &str) {
        let hba = self.dir.join("data/pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {user} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .expect("write pg_hba.conf");
        self.client()
            .batch_execute("SELECT pg_reload_conf()")
            .expect("reload");
    }
}

impl Cluster {
    /// Turn TLS on with this server certificate and key (PEM files), and
    /// make `user` connect over TCP with TLS only (the cluster otherwise
    /// takes both).
    pub fn enable_tls(&self, cert: &std::path::Path, key: &std::path::Path, user: &str) {
        let data = self.dir.join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, data.join(to)).expect("copy the server's certificate");
            let file = data.join(to);
            // The server runs as postgres and wants its key private.
            let ok = Command::new("chown").arg("postgres").arg(&file).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown {}", file.display());
            let ok = Command::new("chmod").arg("600").arg(&file).status();
            assert!(ok.is_ok_and(|s| s.success()), "chmod {}", file.display());
        }
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("hostnossl all {user} all reject\n{old}"))
            .expect("write pg_hba.conf");
        let mut c = self.client();
        for sql in [
            "ALTER SYSTEM SET ssl = on".to_string(),
            "SELECT pg_reload_conf()".to_string(),
            format!("CREATE ROLE {user} LOGIN SUPERUSER"),
        ] {
            c.execute(sql.as_str(), &[]).expect("TLS on");
        }
        wait_until("TLS to be on", || {
            self.client()
                .query_one("SHOW ssl", &[])
                .is_ok_and(|r| r.get::<_, String>(0) == "on")
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/pgcluster.sh"))
            .arg("stop")
            .arg(self.dir.join("data"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `scripts/pgcluster.sh` with `args` and then `conf` lines; the port
/// of the server it started.
fn pgcluster(args: &[&std::ffi::OsStr], conf: &[&str]) -> u16 {
    let out = Command::new(repo().join("scripts/pgcluster.sh"))
        .args(args)
        .args(conf)
        .output()
        .expect("run scripts/pgcluster.sh");
    assert!(
        out.status.success(),
        "pgcluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("port")
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "halo_e2e_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // initdb runs as `postgres`, which must be able to enter the directory.
    let _ = Command::new("chmod").arg("755").arg(&dir).status();
    dir
}

/// Poll `f` until it holds; fail the test after 2 minutes.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What exists in schema migrate besides the extension's own objects, plus
/// our triggers anywhere.
pub fn leftovers(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'migrate'::regnamespace
                    AND relname NOT LIKE 'migrations%')
              + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'halo_%')
              + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'migrate'::regnamespace
                    AND (proname LIKE 'capture_%' OR proname ~ '^version_[0-9]+$'))",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The phase `migrate.status()` shows for migration `id`.
pub fn phase(c: &mut Client, id: i64) -> String {
    c.query_one("SELECT phase FROM migrate.status() WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

/// How many processes of this `backend_type` pg_stat_activity shows.
pub fn backends(c: &mut Client, backend_type: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = $1",
        &[&backend_type],
    )
    .unwrap()
    .get(0)
}

/// A session that holds a snapshot: CREATE INDEX CONCURRENTLY waits for it.
pub fn hold_snapshot(cluster: &Cluster) -> Client {
    let mut old = cluster.client();
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
        .unwrap();
    old
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(err: &postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {err}"))
}

/// A table and its control table, created with the same shape and rows.
pub fn create_with_control(c: &mut Client, table: &str, ddl_columns: &str, rows: i64) {
    for t in [table.to_string(), format!("{table}_control")] {
        c.batch_execute(&format!(
            "CREATE TABLE {t} ({ddl_columns});
             INSERT INTO {t} (id, v, payload)
             SELECT g, g, CASE WHEN g % 10 = 0 THEN NULL ELSE repeat(md5(g::text), 1 + g % 3) END
               FROM generate_series(1, {rows}) g;"
        ))
        .unwrap();
    }
}

/// One transaction of a mixed workload (insert, update, key update, delete,
/// NULL, TOASTed value), applied identically to `table` and `table_control`.
pub fn mixed_write(
    c: &mut Client,
    table: &str,
    i: i64,
    max_id: i64,
) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    // Values are computed once, here, so both tables get exactly the same.
    let toasted = format!("{i:x}").repeat(2000);
    for t in [table.to_string(), format!("{table}_control")] {
        let k = 1 + (i * 7919) % max_id;
        match i % 6 {
            // Parameters are cast in SQL so the statements fit the table
            // before and after an ALTER changes its column types.
            0 => tx.execute(
                &format!("INSERT INTO {t} (id, v, payload) VALUES ($1::bigint, $2::bigint, NULL) ON CONFLICT (id) DO NOTHING"),
                &[&(max_id + i), &i],
            )?,
            1 => tx.execute(&format!("UPDATE {t} SET v = v + 1 WHERE id = $1::bigint"), &[&k])?,
            2 => tx.execute(&format!("UPDATE {t} SET id = id + 100000 WHERE id = $1::bigint"), &[&k])?,
            3 => tx.execute(&format!("DELETE FROM {t} WHERE id = $1::bigint"), &[&k])?,
            4 => tx.execute(&format!("UPDATE {t} SET payload = NULL WHERE id = $1::bigint"), &[&k])?,
            _ => tx.execute(&format!("UPDATE {t} SET payload = $2 WHERE id = $1::bigint"), &[&k, &toasted])?,
        };
    }
    tx.commit()
}

/// Writers running `mixed_write` on `table` until stopped; each returns the
/// worst latency it saw and how many transactions committed.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(std::time::Duration, u64)>>,
}

impl Writers {
    pub fn start(cluster: &Cluster, table: &str, n: i64, max_id: i64) -> Writers {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|w| {
                let mut c = cluster.client();
                let stop = stop.clone();
                let table = table.to_string();
                std::thread::spawn(move || {
                    let (mut worst, mut ok) = (std::time::Duration::ZERO, 0);
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = std::time::Instant::now();
                        // Writers may collide on keys; a failed transaction is
                        // rolled back on both tables alike.
                        if mixed_write(&mut c, &table, i, max_id).is_ok() {
                            ok += 1;
                        }
                        worst = worst.max(t0.elapsed());
                        i += n;
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    (worst, ok)
                })
            })
            .collect();
        Writers { stop, handles }
    }

    /// Stop; the worst latency and the committed transactions of all writers.
    pub fn stop(self) -> (std::time::Duration, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((std::time::Duration::ZERO, 0), |a, b| {
                (a.0.max(b.0), a.1 + b.1)
            })
    }
}

/// ALTER `table_control` the plain way, as the migration altered `table`,
/// then compare the two row by row.
pub fn assert_matches_control(c: &mut Client, table: &str, alter: &str) {
    c.batch_execute(&format!("ALTER TABLE {table}_control {alter}"))
        .unwrap();
    assert_same_rows(c, table);
}

/// Row-by-row equality of `table` and `table_control` (both directions of EXCEPT).
/// `payload` columns are compared by md5 since the control holds the same values.
pub fn assert_same_rows(c: &mut Client, table: &str) {
    let q = format!(
        "SELECT (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM {table}_control) a),
                (SELECT count(*) FROM (SELECT * FROM {table}_control EXCEPT ALL SELECT * FROM {table}) b),
                (SELECT count(*) FROM {table})"
    );
    let row = c.query_one(&q, &[]).unwrap();
    let (extra, missing, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (extra, missing),
        (0, 0),
        "{table} differs from its control ({total} rows): {extra} extra, {missing} missing"
    );
}

/// A publisher (`wal_level = logical`) with `t` and `t_control` of `rows`
/// rows, a `FOR ALL TABLES` publication, and a subscriber that has the two
/// tables, empty, and has synced them.
pub fn publisher_and_subscriber(columns: &str, rows: i64) -> (Cluster, Cluster) {
    let publisher = Cluster::start_with(&["wal_level = logical", "max_replication_slots = 10"]);
    let subscriber = Cluster::start();
    let mut p = publisher.client();
    let mut s = subscriber.client();
    create_with_control(&mut p, "t", columns, rows);
    p.batch_execute("CREATE PUBLICATION everything FOR ALL TABLES")
        .unwrap();
    // The subscriber has the application's tables, empty, and (like every
    // database of a FOR ALL TABLES setup) halo_migrate itself.
    s.batch_execute(&format!(
        "CREATE TABLE t ({columns}); CREATE TABLE t_control ({columns});"
    ))
    .unwrap();
    // On its own: CREATE SUBSCRIPTION cannot run in a transaction block.
    s.batch_execute(&format!(
        "CREATE SUBSCRIPTION everything
             CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=postgres'
             PUBLICATION everything",
        publisher.port
    ))
    .unwrap();
    wait_until("the initial sync", || {
        s.query_one(
            "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) > 0 FROM pg_subscription_rel",
            &[],
        )
        .unwrap()
        .get(0)
    });
    (publisher, subscriber)
}

/// Rows and a digest of `table`'s (id, v, payload), `v` read as bigint, so
/// that a publisher and a subscriber whose `v` types differ compare.
pub fn digest(c: &mut Client, table: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY id)), '')
                   FROM (SELECT id, v::bigint, payload FROM {table}) x"
            ),
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Apply and sync errors the subscriber's subscriptions have hit.
pub fn subscription_errors(s: &mut Client) -> i64 {
    s.query_one(
        "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::bigint FROM pg_stat_subscription_stats",
        &[],
    )
    .unwrap()
    .get(0)
}
