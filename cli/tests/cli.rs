//! The `halo_migrate` binary against real clusters: the dry run changes
//! nothing, `--execute` migrates under concurrent writers (checked row by
//! row against a control table), the actions on a running migration, Ctrl-C,
//! connecting like psql, and the exit code of every error path.

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use harness::{assert_same_rows, create_with_control, wait_until, Cluster, Writers};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_halo_migrate");

/// The tool with the cluster's connection flags, and no PG* variables from
/// the environment that runs the tests.
fn tool(cluster: &Cluster, args: &[&str]) -> Command {
    tool_as(cluster, "postgres", "postgres", args)
}

fn tool_as(cluster: &Cluster, user: &str, db: &str, args: &[&str]) -> Command {
    let mut cmd = bare();
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port.to_string(),
        "-U",
        user,
        "-d",
        db,
    ]);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// The tool with no connection flags and no PG* variables.
fn bare() -> Command {
    let mut cmd = Command::new(BIN);
    for v in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGHOSTADDR",
        "PGTARGETSESSIONATTRS",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    outcome(tool(cluster, args).output().expect("run halo_migrate"))
}

fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut postgres::Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn interrupt(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT");
}

#[test]
fn dry_run_changes_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g")
        .unwrap();
    let before: String = one(&mut c, "SELECT string_agg(attname || ':' || atttypid::regtype, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0");
    let (code, out, err) = run(
        &cluster,
        &[
            "--table=t",
            "--alter=ALTER COLUMN id TYPE bigint",
            "--alter",
            "ADD CHECK (v > 0)",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ALTER COLUMN id TYPE bigint") && out.contains("ADD CHECK (v > 0)"),
        "{out}"
    );
    assert!(out.contains("| rewrite "), "{out}");
    assert!(out.contains("Dry run: nothing was changed."), "{out}");
    let after: String = one(&mut c, "SELECT string_agg(attname || ':' || atttypid::regtype, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0");
    assert_eq!(before, after);
    assert_eq!(
        one::<i64>(&mut c, "SELECT count(*) FROM migrate.migrations"),
        0
    );
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass"
        ),
        0
    );
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname LIKE 'shadow%'"), 0);
}

#[test]
fn execute_migrates_under_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(
        &mut c,
        "acc",
        "id int PRIMARY KEY, v int, payload text",
        50_000,
    );
    let writers = Writers::start(&cluster, "acc", 3, 50_000);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "ALTER COLUMN id TYPE bigint",
            "-a",
            "ALTER COLUMN v TYPE bigint",
            "--execute",
            "--batch-rows=5000",
            "--lock-timeout=200",
        ],
    );
    let (worst, committed) = writers.stop();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("Started migration") && out.contains("done: "),
        "{out}"
    );
    // Not a terminal: progress comes as lines on stderr.
    assert!(
        err.contains("halo_migrate: public.acc") && err.contains("copying"),
        "{err}"
    );
    assert!(committed > 0);
    eprintln!("worst write {worst:?}, {committed} transactions");
    assert_eq!(
        one::<String>(&mut c, "SELECT string_agg(atttypid::regtype::text, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname IN ('id', 'v')"),
        "bigint,bigint"
    );
    assert_same_rows(&mut c, "acc");
}

/// A two-phase change runs in the worker, one statement per transaction:
/// the tool waits for it, and its throttle options are harmless.
#[test]
fn execute_a_two_phase_change() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE acc (id int PRIMARY KEY, v int);
         INSERT INTO acc SELECT g, g FROM generate_series(1, 10000) g;",
    )
    .unwrap();
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "ADD CONSTRAINT v_positive CHECK (v > 0)",
            "--execute",
            "--batch-pause=10ms",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("done (two-phase)"), "{out}");
    assert!(one::<bool>(
        &mut c,
        "SELECT convalidated FROM pg_constraint WHERE conname = 'v_positive'"
    ));
}

/// A partitioned table: the dry run lists each partition's statements, and
/// --execute adds the key to the whole tree, each partition's index built
/// concurrently and attached by the parent's.
#[test]
fn execute_a_key_on_a_partitioned_table() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE ev (id int NOT NULL, ts int NOT NULL) PARTITION BY RANGE (ts);
         CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (100);
         CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (100) TO (200);
         INSERT INTO ev SELECT g, g % 200 FROM generate_series(1, 10000) g;",
    )
    .unwrap();
    let (code, out, err) = run(&cluster, &["-t", "ev", "-a", "ADD PRIMARY KEY (id, ts)"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for leaf in ["ev_1", "ev_2"] {
        assert!(
            out.contains(&format!(
                "CREATE UNIQUE INDEX CONCURRENTLY {leaf}_pkey ON public.{leaf}"
            )),
            "{out}"
        );
    }
    let (code, out, err) = run(
        &cluster,
        &["-t", "ev", "-a", "ADD PRIMARY KEY (id, ts)", "--execute"],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("done (concurrent)"), "{out}");
    let attached: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND conparentid <> 0",
    );
    assert_eq!(
        attached, 2,
        "both partitions' keys are attached to the parent's"
    );
}

#[test]
fn execute_a_rewrite_of_a_partitioned_table() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE ev (id int, ts int, v int, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
         CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (100);
         CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (100) TO (200);
         INSERT INTO ev SELECT g, g % 200, g FROM generate_series(1, 10000) g;",
    )
    .unwrap();
    let (code, out, err) = run(
        &cluster,
        &["-t", "ev", "-a", "ALTER COLUMN v TYPE bigint", "--execute"],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // The tree's row counts every partition's rows.
    assert!(out.contains("done: 10000 rows copied, swapped"), "{out}");
    let typed: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_attribute WHERE attname = 'v' AND atttypid = 'bigint'::regtype
            AND attrelid IN ('ev'::regclass, 'ev_1'::regclass, 'ev_2'::regclass)",
    );
    assert_eq!(typed, 3, "the parent and both partitions are changed");
    let sum: i64 = one(&mut c, "SELECT sum(v)::bigint FROM ev");
    assert_eq!(sum, 50_005_000);
}

#[test]
fn a_versioned_migration_expands_then_finish_contracts() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE acc (id int PRIMARY KEY, name text, legacy int NOT NULL);
         INSERT INTO acc SELECT g, 'n' || g, g FROM generate_series(1, 3000) g;",
    )
    .unwrap();
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "DROP COLUMN legacy",
            "-a",
            "ADD COLUMN score int NOT NULL",
            "--execute",
            "--version=v2",
            "--up",
            r#"{"score": "length(name)"}"#,
            "--down",
            r#"{"legacy": "0"}"#,
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("is expanded"), "{out}");
    assert!(out.contains("--finish"), "{out}");
    // Both shapes are served until the contract.
    let old: i64 = one(&mut c, "SELECT sum(legacy)::bigint FROM acc");
    let new: i64 = one(&mut c, "SELECT sum(score)::bigint FROM public_v2.acc");
    assert_eq!((old, new), (4_501_500, 13_893));
    let (code, out, err) = run(&cluster, &["-t", "acc", "--finish"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("done"), "{out}");
    let gone: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'legacy' AND NOT attisdropped",
    );
    assert_eq!(gone, 0);
    // --version alone prints the program's version; with a name and no
    // --execute, a dry run that changes nothing.
    let (code, out, _) = run(&cluster, &["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("halo_migrate "), "{out}");
    let (code, out, err) = run(
        &cluster,
        &["-t", "acc", "-a", "RENAME COLUMN name TO n", "--version=v3"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("contract") && out.contains("RENAME COLUMN name TO n"),
        "{out}"
    );
    let schemas: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'public_v3'",
    );
    assert_eq!(schemas, 0, "a dry run changes nothing");
    let (code, _, err) = run(&cluster, &["-t", "acc", "--version=v3"]);
    assert_eq!(code, 2, "{err}");
    // A bare --version after an action is a mistake, not a version query.
    let (code, _, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "RENAME COLUMN name TO n",
            "--execute",
            "--version",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "RENAME COLUMN name TO n",
            "--execute",
            "--up",
            "{}",
        ],
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn execute_a_verified_rewrite() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE acc (id int PRIMARY KEY, v int);
         INSERT INTO acc SELECT g, g FROM generate_series(1, 10000) g;",
    )
    .unwrap();
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "ALTER COLUMN v TYPE bigint",
            "--execute",
            "--verify",
            "--batch-rows=2000",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("verified 10000 rows in "), "{out}");
    assert!(out.contains(" chunks: 0 differences"), "{out}");
    // --verify needs --execute.
    let (code, _, err) = run(
        &cluster,
        &["-t", "acc", "-a", "ADD COLUMN w int", "--verify"],
    );
    assert_ne!(code, 0, "{err}");
}

#[test]
fn execute_revertible_then_revert_or_forget() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE acc (id int PRIMARY KEY, v int);
         INSERT INTO acc SELECT g, g FROM generate_series(1, 10000) g;
         CREATE TABLE kept (id int PRIMARY KEY, v int);
         INSERT INTO kept SELECT g, g FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let revertible = |t: &'static str| {
        let a = [
            "-t",
            t,
            "-a",
            "ALTER COLUMN v TYPE bigint",
            "--execute",
            "--revertible",
        ];
        a.into_iter().chain(["--revert-window=1h"])
    };
    let (code, out, err) = run(&cluster, &revertible("acc").collect::<Vec<_>>());
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("revertible until"), "{out}");
    let (code, out, _) = run(&cluster, &["-t", "acc", "--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("| done, revertible until "), "{out}");
    c.batch_execute(
        "UPDATE acc SET v = 5000000000 WHERE id = 1; UPDATE acc SET v = -v WHERE id = 2",
    )
    .unwrap();
    // A row the old type cannot hold: refused, with the row named.
    let (code, out, err) = run(&cluster, &["-t", "acc", "--revert"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("row (id)=(1) does not fit the old shape"),
        "{err}"
    );
    c.batch_execute("UPDATE acc SET v = 1 WHERE id = 1")
        .unwrap();
    let (code, out, err) = run(&cluster, &["-t", "acc", "--revert"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("reverted"), "{out}");
    assert_eq!(
        one::<String>(&mut c, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'v'"),
        "integer"
    );
    assert_eq!(
        one::<i64>(&mut c, "SELECT sum(v)::int8 FROM acc"),
        50005000 - 4
    );

    let (code, out, err) = run(&cluster, &revertible("kept").collect::<Vec<_>>());
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (code, out, err) = run(&cluster, &["-t", "kept", "--forget"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("closed"), "{out}");
    let (code, _, err) = run(&cluster, &["-t", "kept", "--revert"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forgotten"), "{err}");
    // A dry run shows what the window costs; --revert does not go with --alter.
    let (code, out, err) = run(
        &cluster,
        &["-t", "acc", "-a", "DROP COLUMN v", "--revertible"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("keep the old storage as migrate.shadow_"),
        "{out}"
    );
    let (code, _, _) = run(&cluster, &["-t", "acc", "--revertible"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(
        &cluster,
        &["-t", "acc", "-a", "ADD COLUMN w int", "--revert"],
    );
    assert_eq!(code, 2);
}

#[test]
fn cut_over_later_and_act_on_a_running_migration() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(
        &mut c,
        "acc",
        "id int PRIMARY KEY, v int, payload text",
        30_000,
    );
    let writers = Writers::start(&cluster, "acc", 2, 30_000);
    // --no-finish: copy and catch up, then leave; the swap waits for --finish.
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "acc",
            "-a",
            "ADD COLUMN note text DEFAULT 'x' NOT NULL",
            "-a",
            "ALTER COLUMN v TYPE numeric",
            "--execute",
            "--no-finish",
            "-q",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("--finish"), "{out}");
    assert!(!out.contains("Plan for"), "-q prints no plan: {out}");
    let (code, out, _) = run(&cluster, &["--status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("public.acc") && (out.contains("replaying") || out.contains("ready")),
        "{out}"
    );
    let (code, out, err) = run(
        &cluster,
        &["-t", "acc", "--batch-pause=20", "--max-replica-lag=5s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    assert_eq!(
        one::<i32>(&mut c, "SELECT batch_pause_ms FROM migrate.migrations"),
        20
    );
    assert_eq!(run(&cluster, &["-t", "acc", "--pause"]).0, 0);
    assert_eq!(
        one::<String>(&mut c, "SELECT phase FROM migrate.status()"),
        "paused"
    );
    assert_eq!(
        run(&cluster, &["-t", "acc", "--resume", "--batch-rows=777"]).0,
        0
    );
    assert_eq!(
        one::<i32>(&mut c, "SELECT batch_rows FROM migrate.migrations"),
        777
    );
    // Settings that go nowhere are refused before connecting.
    assert_eq!(
        run(&cluster, &["-t", "acc", "--abort", "--batch-rows=5"]).0,
        2
    );
    let (code, out, err) = run(&cluster, &["-t", "acc", "--finish"]);
    writers.stop();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("done: "), "{out}");
    c.batch_execute("ALTER TABLE acc_control ADD COLUMN note text DEFAULT 'x' NOT NULL, ALTER COLUMN v TYPE numeric")
        .unwrap();
    assert_same_rows(&mut c, "acc");
    // --finish on a finished migration repeats its summary.
    assert_eq!(run(&cluster, &["-t", "acc", "--finish"]).0, 0);
}

#[test]
fn error_paths_have_their_exit_codes() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, note text);
         INSERT INTO t SELECT g, CASE WHEN g = 3 THEN 'three' ELSE g::text END FROM generate_series(1, 10) g;
         CREATE ROLE bob LOGIN;",
    )
    .unwrap();
    c.batch_execute("CREATE DATABASE bare").unwrap();
    // cannot connect: nothing listens on port 1
    let (code, _, err) = outcome(
        Command::new(BIN)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "1",
                "-U",
                "postgres",
                "-t",
                "t",
                "-a",
                "x",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cannot connect to host \"127.0.0.1\", port 1"),
        "{err}"
    );
    // cannot connect: no such database
    let (code, _, err) = outcome(
        tool_as(&cluster, "postgres", "nosuchdb", &["-t", "t", "-a", "x"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 3, "{err}");
    // extension not installed, with the fix
    let (code, _, err) = outcome(
        tool_as(
            &cluster,
            "postgres",
            "bare",
            &["-t", "t", "-a", "DROP COLUMN note"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("CREATE EXTENSION halo_migrate"), "{err}");
    // table missing
    for args in [
        &["-t", "nope", "-a", "DROP COLUMN note"][..],
        &["-t", "nope", "--status"],
        &["-t", "nosuchschema.t", "--abort"],
    ] {
        let (code, _, err) = run(&cluster, args);
        assert_eq!(code, 5, "{args:?}: {err}");
    }
    // permission denied: bob does not own t
    let (code, _, err) = outcome(
        tool_as(
            &cluster,
            "bob",
            "postgres",
            &["-t", "t", "-a", "DROP COLUMN note", "--execute"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("must be owner"), "{err}");
    // the migration fails on the data (row 3): exit 1, the server's message, table intact
    let (code, _, err) = run(
        &cluster,
        &[
            "-t",
            "t",
            "-a",
            "ALTER COLUMN note TYPE int USING note::int",
            "--execute",
            "-q",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("invalid input syntax for type integer: \"three\""),
        "{err}"
    );
    assert_eq!(one::<String>(&mut c, "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'note'"), "text");
    // refused by the planner: exit 1 with the server's hint
    let (code, _, err) = run(&cluster, &["-t", "t", "-a", "ALTER COLUMN note TYPE int"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HINT:"), "{err}");
    // usage errors never connect
    let (code, _, err) = outcome(
        Command::new(BIN)
            .args(["-p", "1", "--execute"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = outcome(Command::new(BIN).args(["--no-such-flag"]).output().unwrap());
    assert_eq!(code, 2);
    let (code, out, _) = outcome(Command::new(BIN).arg("--help").output().unwrap());
    assert_eq!(code, 0);
    assert!(
        out.contains("--execute") && out.contains("Exit codes"),
        "{out}"
    );
}

/// A copy slow enough to interrupt: 200 batches with a pause after each.
fn slow_start(cluster: &Cluster, extra: &[&str]) -> Child {
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, v int); INSERT INTO big SELECT g, g FROM generate_series(1, 100000) g")
        .unwrap();
    let mut args = vec![
        "-t",
        "big",
        "-a",
        "ALTER COLUMN v TYPE bigint",
        "--execute",
        "--batch-rows=500",
        "--batch-pause=100",
    ];
    args.extend(extra);
    let child = tool(cluster, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the copy to start", || {
        c.query_opt(
            "SELECT FROM migrate.migrations WHERE phase = 'copying' AND rows_copied > 0",
            &[],
        )
        .unwrap()
        .is_some()
    });
    child
}

#[test]
fn ctrl_c_leaves_the_migration_running() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let child = slow_start(&cluster, &[]);
    interrupt(&child);
    let (code, _, err) = outcome(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("goes on in the server")
            && err.contains("--finish")
            && err.contains("--abort"),
        "{err}"
    );
    let rows =
        |c: &mut postgres::Client| one::<i64>(c, "SELECT rows_copied FROM migrate.migrations");
    let before = rows(&mut c);
    wait_until("the worker to go on copying", || rows(&mut c) > before);
    assert_eq!(run(&cluster, &["-t", "big", "--abort"]).0, 0);
    assert_eq!(
        one::<String>(&mut c, "SELECT phase FROM migrate.migrations"),
        "aborted"
    );
}

#[test]
fn ctrl_c_with_abort_on_interrupt_aborts() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let child = slow_start(&cluster, &["--abort-on-interrupt"]);
    interrupt(&child);
    let (code, _, err) = outcome(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("was aborted"), "{err}");
    assert_eq!(
        one::<String>(&mut c, "SELECT phase FROM migrate.migrations"),
        "aborted"
    );
    assert_eq!(one::<String>(&mut c, "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'big'::regclass AND attname = 'v'"), "integer");
}

#[test]
fn ctrl_c_during_a_blocked_cut_over_rolls_it_back() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 5000) g")
        .unwrap();
    let (code, out, err) = run(
        &cluster,
        &[
            "-t",
            "t",
            "-a",
            "ALTER COLUMN v TYPE bigint",
            "--execute",
            "--no-finish",
            "-q",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A long transaction holds a lock the swap needs.
    let mut blocker = cluster.client();
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM t")
        .unwrap();
    let child = tool(&cluster, &["-t", "t", "--finish"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("finish() to wait for the lock", || {
        one::<i64>(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'halo_migrate' AND query LIKE '%migrate.finish%' AND state = 'active'") > 0
    });
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    let (code, _, err) = outcome(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{err}");
    assert_eq!(one::<String>(&mut c, "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v'"), "integer");
    // The worker stops trying to swap once nobody waits in finish().
    wait_until("the worker to stop trying to swap", || {
        ["replaying", "ready"]
            .contains(&one::<String>(&mut c, "SELECT phase FROM migrate.migrations").as_str())
    });
    blocker.batch_execute("COMMIT").unwrap();
    let (code, out, err) = run(&cluster, &["-t", "t", "--finish"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(one::<String>(&mut c, "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v'"), "bigint");
}

#[test]
fn connects_like_psql() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE ROLE alice LOGIN PASSWORD 'wonder';
         CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO alice;",
    )
    .unwrap();
    cluster.require_password("alice");
    let port = cluster.port.to_string();
    // PG* variables
    let out = bare()
        .envs([
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", port.as_str()),
            ("PGUSER", "postgres"),
            ("PGDATABASE", "postgres"),
        ])
        .args(["--status"])
        .output()
        .unwrap();
    assert_eq!(outcome(out).0, 0);
    // a connection string and a URI in -d
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    assert_eq!(
        outcome(bare().args(["-d", &conninfo, "--status"]).output().unwrap()).0,
        0
    );
    let uri = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    assert_eq!(
        outcome(bare().args(["-d", &uri, "--status"]).output().unwrap()).0,
        0
    );
    // a password is required for alice: none given, no terminal to ask on
    let alice = [
        "-h",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "-U",
        "alice",
        "-d",
        "postgres",
        "-t",
        "t",
        "-a",
        "ADD COLUMN x int",
    ];
    let (code, _, err) = outcome(bare().args(alice).output().unwrap());
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = outcome(
        bare()
            .env("PGPASSWORD", "wrong")
            .args(alice)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    let (code, out, err) = outcome(
        bare()
            .env("PGPASSWORD", "wonder")
            .args(alice)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{out}{err}");
    // .pgpass, and only when others cannot read it
    let pgpass = std::env::temp_dir().join(format!("halo_cli_pgpass_{}", std::process::id()));
    std::fs::write(
        &pgpass,
        format!("# test\n127.0.0.1:{port}:postgres:alice:wonder\n"),
    )
    .unwrap();
    let chmod = |mode: &str| {
        assert!(Command::new("chmod")
            .arg(mode)
            .arg(&pgpass)
            .status()
            .unwrap()
            .success())
    };
    let as_alice = || {
        outcome(
            bare()
                .env("PGPASSFILE", &pgpass)
                .args(alice)
                .output()
                .unwrap(),
        )
    };
    chmod("600");
    let (code, out, err) = as_alice();
    assert_eq!(code, 0, "{out}{err}");
    chmod("644");
    let (code, _, err) = as_alice();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("group or world access"), "{err}");
    let _ = std::fs::remove_file(&pgpass);
}

/// A CA, a second CA, and a server certificate for "localhost" only,
/// made with the openssl command; their directory.
fn certificates() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("halo_tls_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |cmd: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            ok.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    for ca in ["ca", "other"] {
        sh(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout {ca}.key -out {ca}.crt -days 2 -subj '/CN=halo test {ca}'"
        ));
    }
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost'");
    sh("printf 'subjectAltName=DNS:localhost\\n' > san.ext");
    sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext");
    dir
}

#[test]
fn tls_connections_as_libpq_makes_them() {
    let cluster = Cluster::start();
    let certs = certificates();
    cluster.enable_tls(
        &certs.join("server.crt"),
        &certs.join("server.key"),
        "tlsuser",
    );
    let ca = certs.join("ca.crt").display().to_string();
    let other = certs.join("other.crt").display().to_string();
    let port = cluster.port;
    // --status over a connection string; the user may connect with TLS only.
    let status = |conn: &str, env: &[(&str, &str)]| {
        let mut cmd = bare();
        cmd.env("HOME", &certs); // no ~/.postgresql: libpq's defaults find nothing
        cmd.envs(env.iter().copied());
        cmd.args([
            "-d",
            &format!("port={port} user=tlsuser dbname=postgres {conn}"),
            "--status",
        ]);
        outcome(cmd.output().unwrap())
    };
    let ok = |r: (i32, String, String), what: &str| assert_eq!(r.0, 0, "{what}: {}", r.2);
    let fails = |r: (i32, String, String), what: &str, says: &str| {
        assert_ne!(r.0, 0, "{what} should fail");
        assert!(r.2.contains(says), "{what}: {}", r.2);
    };

    ok(
        status("host=127.0.0.1", &[]),
        "the default (prefer) encrypts when the server offers it",
    );
    fails(
        status("host=127.0.0.1 sslmode=disable", &[]),
        "disable",
        "no encryption",
    );
    ok(status("host=127.0.0.1 sslmode=require", &[]), "require");
    ok(
        status(
            &format!("host=127.0.0.1 sslmode=verify-ca sslrootcert={ca}"),
            &[],
        ),
        "verify-ca",
    );
    fails(
        status(
            &format!("host=127.0.0.1 sslmode=verify-ca sslrootcert={other}"),
            &[],
        ),
        "verify-ca against another CA",
        "certificate verify failed",
    );
    // A socket cannot give the TLS that require asks for.
    fails(
        status("host=/tmp,127.0.0.1 sslmode=require", &[]),
        "a socket and a TCP host with require",
        "Unix-domain socket",
    );
    fails(
        status("host=localhost sslrootcert=system sslmode=require", &[]),
        "sslrootcert=system with a weak sslmode",
        "weak sslmode",
    );
    fails(
        status(
            &format!("host=127.0.0.1 sslmode=verify-full sslrootcert={ca}"),
            &[],
        ),
        "verify-full to a host name the certificate does not name",
        "certificate verify failed",
    );
    ok(
        status(
            &format!("host=localhost sslmode=verify-full sslrootcert={ca}"),
            &[],
        ),
        "verify-full",
    );
    fails(
        status(
            "host=localhost sslmode=verify-full sslrootcert=/nonexistent/ca.crt",
            &[],
        ),
        "verify-full without its root certificate",
        "does not exist",
    );
    // The environment, and the connection string over it.
    ok(
        status(
            "host=localhost",
            &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
        ),
        "PGSSLMODE and PGSSLROOTCERT",
    );
    fails(
        status(
            "host=127.0.0.1",
            &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
        ),
        "PGSSLMODE=verify-full to 127.0.0.1",
        "certificate verify failed",
    );
    fails(
        status(
            "host=127.0.0.1 sslmode=disable",
            &[("PGSSLMODE", "require")],
        ),
        "sslmode in the connection string over PGSSLMODE",
        "no encryption",
    );
    fails(
        status("host=127.0.0.1 sslmode=sometimes", &[]),
        "a bad sslmode",
        "invalid sslmode",
    );
    // A URI carries them as parameters.
    let mut cmd = bare();
    cmd.env("HOME", &certs);
    cmd.args([
        "-d",
        &format!(
            "postgresql://tlsuser@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
        ),
        "--status",
    ]);
    ok(outcome(cmd.output().unwrap()), "a URI");
    let _ = std::fs::remove_dir_all(&certs);
}
