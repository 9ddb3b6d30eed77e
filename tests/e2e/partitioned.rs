//! Partitioned tables: one `migrate.start()` on the parent changes the whole
//! tree (range partitions, a hash-sub-partitioned one, a default one) as a
//! plain ALTER on the parent would, while writers go on, and nothing is
//! built or validated under a lock that blocks them. Rewrites of a tree
//! are in `partition_rewrite.rs`.

use crate::harness::*;
use postgres::Client;
use std::time::{Duration, Instant};

/// `p` range-partitioned by ts: `p_1` [0, 1000), `p_2` [1000, 2000) itself
/// hash-partitioned into `p_2a` and `p_2b`, and the default `p_d`.
fn make_tree(c: &mut Client, p: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {p} (id int NOT NULL, ts int NOT NULL, r int, v text) PARTITION BY RANGE (ts);
         CREATE TABLE {p}_1 PARTITION OF {p} FOR VALUES FROM (0) TO (1000);
         CREATE TABLE {p}_2 PARTITION OF {p} FOR VALUES FROM (1000) TO (2000) PARTITION BY HASH (id);
         CREATE TABLE {p}_2a PARTITION OF {p}_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE {p}_2b PARTITION OF {p}_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         CREATE TABLE {p}_d PARTITION OF {p} DEFAULT;
         INSERT INTO {p} SELECT g, g % 3000, 1 + g % 100, 'v' || g FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
}

/// Everything a plain ALTER leaves on the tree `p`, with `p` written as `P`
/// in names and definitions: per relation, its constraints (type, validated,
/// parent), its indexes (definition, validity, parent) and NOT NULL columns.
pub(crate) fn tree_facts(c: &mut Client, p: &str) -> Vec<String> {
    let mut facts = c
        .query(
            "WITH tree AS (SELECT relid FROM pg_partition_tree($1::text::regclass))
         SELECT 'constraint ' || k.conrelid::regclass || ' ' || k.conname || ' ' || k.contype::text
                || ' valid=' || k.convalidated || ' parent=' || coalesce(pk.conname, '-')
                || ' ' || pg_get_constraintdef(k.oid)
           FROM pg_constraint k JOIN tree ON tree.relid = k.conrelid
           LEFT JOIN pg_constraint pk ON pk.oid = k.conparentid
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' valid=' || i.indisvalid
                || ' parent=' || coalesce((SELECT h.inhparent::regclass::text FROM pg_inherits h
                                            WHERE h.inhrelid = i.indexrelid), '-')
           FROM pg_index i JOIN tree ON tree.relid = i.indrelid
         UNION ALL
         SELECT 'not null ' || a.attrelid::regclass || '.' || a.attname
           FROM pg_attribute a JOIN tree ON tree.relid = a.attrelid
          WHERE a.attnum > 0 AND a.attnotnull AND NOT a.attisdropped
         ORDER BY 1",
            &[&p],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).replace(p, "P"))
        .collect::<Vec<_>>();
    // Sorted after the names are made alike: "ev" and "plain" sort
    // differently against "other".
    facts.sort();
    facts
}

pub(crate) fn tree_oids(c: &mut Client, p: &str) -> Vec<(String, u32)> {
    c.query(
        "SELECT relid::text, relid::oid FROM pg_partition_tree($1::text::regclass) ORDER BY 1",
        &[&p],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A writer through the parent: inserts, and updates of the partition key
/// that move rows between partitions. Its worst latency and commit count.
fn writer(
    cluster: &Cluster,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Duration, u64)> {
    let mut w = cluster.client();
    std::thread::spawn(move || {
        let (mut worst, mut ok, mut i) = (Duration::ZERO, 0u64, 0i64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            let t0 = Instant::now();
            let sql = if i % 2 == 0 {
                format!(
                    "INSERT INTO ev VALUES ({}, {}, {}, 'w')",
                    100_000 + i,
                    i % 3000,
                    1 + i % 100
                )
            } else {
                format!(
                    "UPDATE ev SET ts = (ts + 1500) % 3000 WHERE id = {}",
                    1 + (i * 37) % 20_000
                )
            };
            w.batch_execute(&sql).unwrap();
            ok += 1;
            worst = worst.max(t0.elapsed());
            std::thread::sleep(Duration::from_millis(2));
        }
        (worst, ok)
    })
}

#[test]
fn a_tree_gets_its_keys_and_checks_online_as_a_plain_alter_gives_them() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE ref (id int PRIMARY KEY); INSERT INTO ref SELECT generate_series(1, 100);",
    )
    .unwrap();
    make_tree(&mut c, "ev", 20_000);
    make_tree(&mut c, "plain", 20_000);
    let oids = tree_oids(&mut c, "ev");
    let alter = "ADD PRIMARY KEY (id, ts), ADD FOREIGN KEY (r) REFERENCES ref, \
                 ALTER COLUMN v SET NOT NULL, ADD CONSTRAINT positive CHECK (id > 0)";

    // The plan names every partition's own statements.
    let plan: Vec<String> = c
        .query("SELECT sql FROM migrate.plan('ev', $1)", &[&alter])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for leaf in ["ev_1", "ev_2a", "ev_2b", "ev_d"] {
        assert!(
            plan.iter()
                .any(|s| s.starts_with("CREATE UNIQUE INDEX CONCURRENTLY")
                    && s.contains(&format!("ON public.{leaf} "))),
            "no concurrent build on {leaf}: {plan:#?}"
        );
        assert!(
            plan.iter().any(
                |s| s.contains(&format!("public.{leaf} ADD CONSTRAINT ev_r_fkey"))
                    && s.ends_with("NOT VALID")
            ),
            "no NOT VALID key on {leaf}: {plan:#?}"
        );
    }
    assert!(
        !plan.iter().any(|s| s.contains("ev_2 ")),
        "a partitioned partition gets no statement of its own: {plan:#?}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = writer(&cluster, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    c.execute(
        "SELECT migrate.start('ev', $1, lock_timeout => '200ms')",
        &[&alter],
    )
    .unwrap();
    c.batch_execute("CALL migrate.wait('ev')").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, ok) = w.join().unwrap();
    c.batch_execute(&format!("ALTER TABLE plain {alter}"))
        .unwrap();

    assert_eq!(tree_facts(&mut c, "ev"), tree_facts(&mut c, "plain"));
    assert_eq!(
        tree_oids(&mut c, "ev"),
        oids,
        "every relation keeps its OID"
    );
    assert!(ok > 50, "the writer committed only {ok} statements");
    // Each statement of the plan waits at most 200 ms for its locks; a
    // shared 2-core machine adds its own stalls.
    assert!(
        worst < Duration::from_millis(2000),
        "worst write took {worst:?}"
    );
    assert_eq!(leftovers(&mut c), 0);
    // The constraints work: a duplicate key, a dangling reference, a NULL.
    c.batch_execute("INSERT INTO ev VALUES (900000, 1500, 1, 'x')")
        .unwrap();
    for bad in [
        "INSERT INTO ev VALUES (900000, 1500, 1, 'x')",
        "INSERT INTO ev VALUES (900001, 5, 1000, 'x')",
        "INSERT INTO ev VALUES (900002, 2500, 1, NULL)",
        "INSERT INTO ev VALUES (-1, 5, 1, 'x')",
    ] {
        c.batch_execute(bad).expect_err(bad);
    }
}

#[test]
fn a_failed_partition_build_takes_back_every_partition() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000);
    // A duplicate key in the default partition: its build fails after
    // ev_1's index has been built and attached as ev_1's constraint.
    c.batch_execute("INSERT INTO ev VALUES (7, 2999, 1, 'dup'), (7, 2999, 1, 'dup')")
        .unwrap();
    let before = tree_facts(&mut c, "ev");
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ADD PRIMARY KEY (id, ts)')",
            &[],
        )
        .unwrap()
        .get(0);
    let e = c.batch_execute("CALL migrate.wait('ev')").unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e}");
    assert_eq!(phase(&mut c, id), "failed");
    // The partitions built before it lost their index and constraint again,
    // and the invalid index the failed build left is gone.
    assert_eq!(tree_facts(&mut c, "ev"), before);
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn partition_maintenance_waits_for_the_migration() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000);
    c.batch_execute(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw;",
    )
    .unwrap();
    // A two-phase plan stepped by hand: the guard holds between the steps.
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ADD CONSTRAINT positive CHECK (id > 0)', background => false)",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute("SELECT migrate.step('ev')").unwrap();
    assert_eq!(phase(&mut c, id), "validating");
    for ddl in [
        "CREATE TABLE ev_x PARTITION OF ev FOR VALUES FROM (5000) TO (6000)",
        "CREATE FOREIGN TABLE ev_far PARTITION OF ev FOR VALUES FROM (6000) TO (7000) SERVER elsewhere",
        "ALTER TABLE ev_2 DETACH PARTITION ev_2b",
        "ALTER TABLE ev DETACH PARTITION ev_1",
        "CREATE INDEX ON ev_2a (v)",
        "ALTER TABLE ev_1 ADD CONSTRAINT small CHECK (id < 1000000)",
        "ALTER TABLE ev_1 ALTER COLUMN v SET STATISTICS 10",
    ] {
        let e = c.batch_execute(ddl).expect_err(ddl);
        assert_eq!(sqlstate(&e), "55006", "{ddl}: {e:?}");
        assert!(
            format!("{e:?}").contains("public.ev is being migrated"),
            "{ddl}: {e}"
        );
    }
    // One migration per tree: not of a partition while the tree's runs.
    for (table, alter) in [
        ("ev_1", "ADD CONSTRAINT small CHECK (id < 1000000)"),
        ("ev_2", "ADD CONSTRAINT small CHECK (id < 1000000)"),
    ] {
        let e = c
            .query_one(
                "SELECT migrate.start($1::text::regclass, $2)",
                &[&table, &alter],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), "55006", "{table}: {e:?}");
        assert!(
            format!("{e:?}").contains("public.ev, in the same partition tree as public."),
            "{e:?}"
        );
    }
    while phase(&mut c, id) != "done" {
        c.batch_execute("SELECT migrate.step('ev')").unwrap();
    }
    // Nor of the tree while a partition's runs.
    c.batch_execute(
        "SELECT migrate.start('ev_2a', 'ADD CONSTRAINT small CHECK (id < 1000000)', background => false)",
    )
    .unwrap();
    let e = c
        .query_one("SELECT migrate.start('ev', 'ADD COLUMN note text')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55006", "{e:?}");
    c.batch_execute("SELECT migrate.abort('ev_2a')").unwrap();
    c.batch_execute(
        "CREATE TABLE ev_x PARTITION OF ev FOR VALUES FROM (5000) TO (6000);
         ALTER TABLE ev DETACH PARTITION ev_x;",
    )
    .unwrap();
}

/// A partition dropped after its statements ran, then a failure later in
/// the plan: the undo still takes back every partition that is left.
#[test]
fn a_plan_is_undone_even_when_a_finished_partition_was_dropped() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE ref (id int PRIMARY KEY); INSERT INTO ref SELECT generate_series(1, 100);",
    )
    .unwrap();
    make_tree(&mut c, "ev", 5_000);
    // A dangling reference in ev_2b, the last partition validated.
    c.batch_execute("INSERT INTO ev VALUES (1001, 1500, 999, 'dangling')")
        .unwrap();
    let before = tree_facts(&mut c, "ev");
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ADD FOREIGN KEY (r) REFERENCES ref', background => false)",
            &[],
        )
        .unwrap()
        .get(0);
    // ev_1's NOT VALID key and its validation.
    c.batch_execute("SELECT migrate.step('ev')").unwrap();
    c.batch_execute("SELECT migrate.step('ev')").unwrap();
    c.batch_execute("DROP TABLE ev_1").unwrap();
    // step() records a failure (and undoes the plan) rather than raising it.
    while !["done", "failed"].contains(&phase(&mut c, id).as_str()) {
        c.batch_execute("SELECT migrate.step('ev')").unwrap();
    }
    let state: Option<String> = c
        .query_one(
            "SELECT error_sqlstate FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        state.as_deref(),
        Some("23503"),
        "the dangling reference was not found"
    );
    assert_eq!(phase(&mut c, id), "failed");
    let left: Vec<String> = before.into_iter().filter(|f| !f.contains("P_1")).collect();
    assert_eq!(tree_facts(&mut c, "ev"), left);
}

#[test]
fn keys_partitions_already_have_are_attached_or_refused_as_alter_does() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    for p in ["ev", "plain"] {
        make_tree(&mut c, p, 5_000);
        // Made standalone with its own key, then attached, as many are.
        c.batch_execute(&format!(
            "ALTER TABLE {p} DETACH PARTITION {p}_1;
             ALTER TABLE {p}_1 ADD PRIMARY KEY (id, ts);
             ALTER TABLE {p} ATTACH PARTITION {p}_1 FOR VALUES FROM (0) TO (1000);"
        ))
        .unwrap();
    }
    let plan: Vec<String> = c
        .query(
            "SELECT sql FROM migrate.plan('ev', 'ADD PRIMARY KEY (id, ts)')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !plan.iter().any(|s| s.contains("public.ev_1 ")),
        "ev_1's own key is attached, not built again: {plan:#?}"
    );
    c.batch_execute("SELECT migrate.start('ev', 'ADD PRIMARY KEY (id, ts)')")
        .unwrap();
    c.batch_execute("CALL migrate.wait('ev')").unwrap();
    c.batch_execute("ALTER TABLE plain ADD PRIMARY KEY (id, ts)")
        .unwrap();
    assert_eq!(tree_facts(&mut c, "ev"), tree_facts(&mut c, "plain"));
    // Another key on a partition: refused up front, as ALTER refuses it.
    c.batch_execute(
        "CREATE TABLE t2 (id int NOT NULL, ts int NOT NULL) PARTITION BY RANGE (ts);
         CREATE TABLE t2_1 PARTITION OF t2 FOR VALUES FROM (0) TO (10);
         CREATE TABLE t2_2 PARTITION OF t2 FOR VALUES FROM (10) TO (20);
         ALTER TABLE t2_2 ADD PRIMARY KEY (ts);",
    )
    .unwrap();
    let e = c
        .query_one(
            "SELECT migrate.start('t2', 'ADD PRIMARY KEY (id, ts)')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P16", "{e:?}");
    let plain = c
        .batch_execute("ALTER TABLE t2 ADD PRIMARY KEY (id, ts)")
        .unwrap_err();
    assert_eq!(sqlstate(&plain), "42P16", "{plain:?}");
    assert_eq!(leftovers(&mut c), 0);
}

/// Several busy partitions, each for less than the lock timeout: ALTER
/// TABLE's own recursion would wait for each in turn, holding the parent
/// (and every writer behind it) for longer than one timeout; the tree is
/// locked within one.
#[test]
fn busy_partitions_keep_the_wait_of_writers_within_one_lock_timeout() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000);
    let hold = |table: &'static str, secs: f64| {
        let mut r = cluster.client();
        std::thread::spawn(move || {
            r.batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS SHARE MODE; SELECT pg_sleep({secs}); COMMIT;"
            ))
            .unwrap();
        })
    };
    // Locked in the order ev, ev_1, ev_2, ev_d, ev_2a, ev_2b.
    let b1 = hold("ev_1", 2.2);
    let b2 = hold("ev_d", 4.7);
    std::thread::sleep(Duration::from_millis(200));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writes through the parent to a partition nobody holds.
    let mut w = cluster.client();
    let flag = stop.clone();
    let writes = std::thread::spawn(move || {
        let (mut worst, mut i) = (Duration::ZERO, 0);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            let t0 = Instant::now();
            w.batch_execute(&format!(
                "INSERT INTO ev VALUES ({}, {}, 1, 'w')",
                10_000 + i,
                1000 + i % 1000
            ))
            .unwrap();
            worst = worst.max(t0.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        worst
    });
    let t0 = Instant::now();
    c.batch_execute("SELECT migrate.start('ev', 'ADD COLUMN note text', lock_timeout => '3s')")
        .unwrap();
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = writes.join().unwrap();
    b1.join().unwrap();
    b2.join().unwrap();
    // The ALTER had to wait for ev_d's reader to end (about 4.5 s)...
    assert!(
        took > Duration::from_millis(4000),
        "start() took only {took:?}"
    );
    // ...and its first attempt gave up after 3 s in all, where PostgreSQL's
    // own recursion would have waited 2 s for ev_1, then 2.5 s for ev_d.
    assert!(
        worst < Duration::from_millis(3700),
        "worst write through the parent took {worst:?}"
    );
    let cols: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute a JOIN pg_partition_tree('ev') t ON t.relid = a.attrelid
              WHERE a.attname = 'note'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cols, 6, "every member of the tree has the new column");
}

#[test]
fn what_a_tree_cannot_take_online_is_refused_and_changes_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 1_000);
    c.batch_execute("CREATE INDEX ev_v ON ev (v)").unwrap();
    let before = tree_facts(&mut c, "ev");
    for (alter, state, words) in [
        // PostgreSQL's own rule, for a sub-partition's key too.
        (
            "ALTER COLUMN id TYPE bigint",
            "42P16",
            "because it is part of the partition key of relation \\\"ev_2\\\"",
        ),
        // PostgreSQL's own rule, at every level: ev_2 is partitioned by id.
        (
            "ADD UNIQUE (ts)",
            "0A000",
            "constraint on table \\\"ev_2\\\" lacks column \\\"id\\\"",
        ),
        // PostgreSQL's own rule, met on the partitioned empty copy.
        (
            "ADD PRIMARY KEY (id)",
            "0A000",
            "must include all partitioning columns",
        ),
    ] {
        let e = c
            .query_one("SELECT migrate.start('ev', $1)", &[&alter])
            .unwrap_err();
        assert_eq!(sqlstate(&e), state, "{alter}: {e}");
        let text = format!("{e:?}");
        assert!(text.contains(words), "{alter}: {text}");
    }
    // A partition named for a change that belongs to the tree.
    let e = c
        .query_one(
            "SELECT migrate.start('ev_1', 'ALTER COLUMN id TYPE bigint')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert!(
        format!("{e:?}").contains("public.ev_1 is a partition of ev"),
        "{e:?}"
    );
    // A foreign-table partition.
    c.batch_execute(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw;
         CREATE FOREIGN TABLE ev_far PARTITION OF ev FOR VALUES FROM (5000) TO (6000) SERVER elsewhere;",
    )
    .unwrap();
    let e = c
        .query_one("SELECT migrate.start('ev', 'ADD COLUMN note text')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert!(
        format!("{e:?}").contains("public.ev_far, a foreign table"),
        "{e:?}"
    );
    c.batch_execute("DROP FOREIGN TABLE ev_far").unwrap();
    assert_eq!(tree_facts(&mut c, "ev"), before);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM migrate.status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no migration was recorded");
    assert_eq!(leftovers(&mut c), 0);
}

/// Invalid indexes on the members of the tree `p` (a build under way, or
/// left behind).
fn invalid_indexes(c: &mut Client, p: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_index i JOIN pg_partition_tree($1::text::regclass) t
             ON t.relid = i.indrelid
          WHERE NOT i.indisvalid",
        &[&p],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_tree_plan_is_aborted_or_resumed_in_the_middle_of_a_build() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000);
    make_tree(&mut c, "plain", 5_000);
    // A partition in another schema, with a plain index named as the key
    // of public.ev_1 will be: cleaning up after the crash must not take
    // it for the build's.
    c.batch_execute("CREATE SCHEMA other").unwrap();
    for p in ["ev", "plain"] {
        c.batch_execute(&format!(
            "CREATE TABLE other.{p}_3 PARTITION OF {p} FOR VALUES FROM (3000) TO (4000);
             INSERT INTO {p} SELECT g, 3000 + g % 1000, 1, 'o' FROM generate_series(100001, 101000) g;
             CREATE INDEX {p}_1_pkey ON other.{p}_3 (v);"
        ))
        .unwrap();
    }
    let before = tree_facts(&mut c, "ev");
    let building = |c: &mut Client| {
        wait_until("a partition's index build to start", || {
            invalid_indexes(c, "ev") > 0
        })
    };

    // Abort while the first partition's build waits for an old snapshot.
    let mut old = hold_snapshot(&cluster);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ADD PRIMARY KEY (id, ts)')",
            &[],
        )
        .unwrap()
        .get(0);
    building(&mut c);
    c.batch_execute("SELECT migrate.abort('ev')").unwrap();
    wait_until("the abort", || phase(&mut c, id) == "aborted");
    old.batch_execute("COMMIT").unwrap();
    assert_eq!(tree_facts(&mut c, "ev"), before, "the tree is as it was");
    assert_eq!(invalid_indexes(&mut c, "ev"), 0);
    assert_eq!(leftovers(&mut c), 0);

    // The worker killed (kill -9, so the server restarts as after a crash)
    // in the same place, then resumed: the invalid index the build left on
    // the partition goes, the build starts again, and the tree ends as a
    // plain ALTER leaves it. (SIGTERM would not do: CREATE INDEX
    // CONCURRENTLY only stops between statements for it.)
    let old = hold_snapshot(&cluster);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ADD PRIMARY KEY (id, ts)')",
            &[],
        )
        .unwrap()
        .get(0);
    building(&mut c);
    let worker: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
            &[],
        )
        .unwrap()
        .get(0);
    // The crash ends the session holding the snapshot too.
    let mut c = cluster.crash_by_killing(worker);
    drop(old);
    assert_eq!(phase(&mut c, id), "interrupted");
    assert!(
        invalid_indexes(&mut c, "ev") > 0,
        "the crash left the build's index"
    );
    c.batch_execute("SELECT migrate.resume('ev')").unwrap();
    c.batch_execute("CALL migrate.wait('ev')").unwrap();
    c.batch_execute("ALTER TABLE plain ADD PRIMARY KEY (id, ts)")
        .unwrap();
    assert_eq!(tree_facts(&mut c, "ev"), tree_facts(&mut c, "plain"));
    assert_eq!(invalid_indexes(&mut c, "ev"), 0);
    assert_eq!(leftovers(&mut c), 0);
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE oid = 'other.ev_1_pkey'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the other schema's ev_1_pkey is still there");
}
