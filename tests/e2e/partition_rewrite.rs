//! Rewrites of partitioned tables: every partition copied online (by the
//! migration's worker and its helpers), one cut-over for the whole tree.
//! The tree `ev` is range-partitioned by its key, with a hash-sub-partitioned
//! partition and a default one, so that the writers' key updates move rows
//! between partitions and their inserts land in the default partition; its
//! control table `ev_control` is an ordinary table written in the same
//! transactions.

use crate::harness::*;
use crate::partitioned::{tree_facts, tree_oids};
use postgres::Client;
use std::time::Duration;

/// A type change (every partition rewritten) that keeps the values: the
/// writers write the same values into the tree and its control, which is
/// altered only at the end.
const ALTER: &str = "ALTER COLUMN v TYPE numeric, ALTER COLUMN payload TYPE varchar(100000)";

/// The tree `p` (with a foreign key to `p_owners`, and `p_refs`
/// referencing it) and, with `control`, `p_control` holding the same rows.
fn make_tree(c: &mut Client, p: &str, rows: i64, control: bool) {
    c.batch_execute(&format!(
        "CREATE TABLE {p}_owners (id int PRIMARY KEY);
         INSERT INTO {p}_owners SELECT generate_series(1, 100);
         CREATE TABLE {p} (id int PRIMARY KEY, v bigint, payload text, owner int REFERENCES {p}_owners)
             PARTITION BY RANGE (id);
         CREATE TABLE {p}_1 PARTITION OF {p} FOR VALUES FROM (MINVALUE) TO (3000);
         CREATE TABLE {p}_2 PARTITION OF {p} FOR VALUES FROM (3000) TO (8000) PARTITION BY HASH (id);
         CREATE TABLE {p}_2a PARTITION OF {p}_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE {p}_2b PARTITION OF {p}_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         CREATE TABLE {p}_d PARTITION OF {p} DEFAULT;
         CREATE INDEX ON {p} (v);
         CREATE INDEX {p}_1_payload ON {p}_1 (left(payload, 5));
         INSERT INTO {p} (id, v, payload, owner)
         SELECT g, g, CASE WHEN g % 10 = 0 THEN NULL ELSE repeat(md5(g::text), 1 + g % 3) END,
                CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + g % 100 END
           FROM generate_series(1, {rows}) g;
         CREATE TABLE {p}_refs (id int PRIMARY KEY REFERENCES {p} (id));
         INSERT INTO {p}_refs SELECT g * 97 FROM generate_series(1, 40) g WHERE g * 97 <= {rows};"
    ))
    .unwrap();
    if control {
        c.batch_execute(&format!(
            "CREATE TABLE {p}_control (id int PRIMARY KEY, v bigint, payload text, owner int);
             INSERT INTO {p}_control SELECT * FROM {p};"
        ))
        .unwrap();
    }
}

fn start(c: &mut Client, options: &str) -> i64 {
    c.query_one(
        &format!("SELECT migrate.start('ev', $1{options})"),
        &[&ALTER],
    )
    .unwrap()
    .get(0)
}

fn finish(c: &mut Client) {
    c.batch_execute("SELECT migrate.finish('ev', timeout => '2 minutes')")
        .unwrap();
}

/// The foreign key into the tree is back and validated, and the tree's own
/// foreign key (on every partition) is still there and validated.
fn assert_reference_valid(c: &mut Client) {
    let own: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint k JOIN pg_partition_tree('ev') t ON t.relid = k.conrelid
              WHERE k.contype = 'f' AND k.convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(own, 6, "the tree's foreign key on every member");
    let valid: bool = c
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = 'ev_refs'::regclass AND contype = 'f' AND conparentid = 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(valid, "the foreign key referencing the tree is validated");
}

#[test]
fn a_tree_is_rewritten_under_writers_as_a_plain_alter_would_leave_it() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 12_000, true);
    make_tree(&mut c, "plain", 12_000, false);
    c.batch_execute(&format!("ALTER TABLE plain {ALTER}"))
        .unwrap();
    let oids = tree_oids(&mut c, "ev");

    let writers = Writers::start(&cluster, "ev", 2, 12_000);
    c.batch_execute("SET halo_migrate.jobs = 2").unwrap();
    let id = start(&mut c, ", batch_rows => 500");
    // The tree's row, then one per partition that holds rows.
    let parts: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate.status('ev') WHERE part_of = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(parts, 4);
    // Slowed down so that the helper is seen at work, and batch sizes
    // reach every partition's copy.
    c.batch_execute("SELECT migrate.throttle('ev', batch_pause => '20ms', batch_rows => 300)")
        .unwrap();
    let other_sizes: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate.migrations WHERE tree_id = $1 AND batch_rows <> 300",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        other_sizes, 0,
        "throttle(batch_rows) reaches the partitions"
    );
    wait_until("a helper to work on the tree", || {
        c.query_one(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("halo_migrate migration {id} helper")],
        )
        .unwrap()
        .get(0)
    });
    c.batch_execute("SELECT migrate.throttle('ev', batch_pause => '0')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    c.batch_execute("CALL migrate.wait('ev', '2 minutes')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    finish(&mut c);
    let (worst, committed) = writers.stop();
    assert!(committed > 100, "the writers went on ({committed} commits)");
    assert!(
        worst < Duration::from_secs(2),
        "no writer waited long (worst {worst:?})"
    );

    assert_eq!(phase(&mut c, id), "done");
    assert_matches_control(&mut c, "ev", ALTER);
    assert_eq!(
        tree_oids(&mut c, "ev"),
        oids,
        "every relation keeps its OID"
    );
    assert_eq!(tree_facts(&mut c, "ev"), tree_facts(&mut c, "plain"));
    assert_reference_valid(&mut c);
    assert_eq!(leftovers(&mut c), 0);
    let ended: Vec<String> = c
        .query(
            "SELECT DISTINCT phase FROM migrate.status('ev') WHERE part_of = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ended, vec!["done".to_string()]);
}

#[test]
fn a_tree_rewrite_survives_a_crash_and_aborts_cleanly() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 30_000, true);
    let before = tree_facts(&mut c, "ev");

    // Abort mid-copy: everything goes, every partition as before.
    let id = start(&mut c, ", batch_rows => 200");
    c.batch_execute("SELECT migrate.throttle('ev', batch_pause => '50ms')")
        .unwrap();
    wait_until("the copy to begin", || {
        c.query_one(
            "SELECT rows_copied > 0 FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
    });
    // Paused, the tree and every partition say so.
    c.batch_execute("SELECT migrate.pause('ev')").unwrap();
    let shown: Vec<String> = c
        .query(
            "SELECT DISTINCT phase FROM migrate.status('ev') WHERE id = $1 OR part_of = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(shown, vec!["paused".to_string()]);
    c.batch_execute("SELECT migrate.resume('ev')").unwrap();
    c.batch_execute("SELECT migrate.abort('ev')").unwrap();
    assert_eq!(phase(&mut c, id), "aborted");
    assert_eq!(leftovers(&mut c), 0);
    assert_eq!(tree_facts(&mut c, "ev"), before);
    assert_eq!(backends(&mut c, "halo_migrate worker"), 0);

    // A crash mid-copy under writers: the workers come back and finish.
    let writers = Writers::start(&cluster, "ev", 2, 30_000);
    let id = start(&mut c, ", batch_rows => 200");
    c.batch_execute("SELECT migrate.throttle('ev', batch_pause => '20ms')")
        .unwrap();
    wait_until("the copy to be under way", || {
        c.query_one(
            "SELECT rows_copied > 2000 FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
    });
    // The tree's worker is terminated: the migration shows as interrupted
    // (its helpers finish their partitions), and resume() goes on.
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until("the migration to show as interrupted", || {
        phase(&mut c, id) == "interrupted"
    });
    c.batch_execute("SELECT migrate.resume('ev')").unwrap();
    wait_until("the tree's worker to be back", || {
        c.query_one(
            "SELECT worker_pid IS NOT NULL AND worker_pid <> $2 FROM migrate.status() WHERE id = $1",
            &[&id, &pid],
        )
        .unwrap()
        .get(0)
    });
    // Then the server crashes mid-copy.
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    writers.stop();
    let mut c = cluster.crash_by_killing(pid);
    c.batch_execute("SELECT migrate.resume('ev')").unwrap();
    let writers = Writers::start(&cluster, "ev", 2, 30_000);
    c.batch_execute("SELECT migrate.throttle('ev', batch_pause => '0')")
        .unwrap();
    c.batch_execute("CALL migrate.wait('ev', '3 minutes')")
        .unwrap();
    finish(&mut c);
    writers.stop();
    assert_eq!(phase(&mut c, id), "done");
    assert_matches_control(&mut c, "ev", ALTER);
    assert_reference_valid(&mut c);
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_reader_of_one_partition_holds_the_cut_over_not_the_other_writers() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000, true);
    let id = start(&mut c, ", lock_timeout => '100ms'");
    c.batch_execute("CALL migrate.wait('ev', '2 minutes')")
        .unwrap();

    // A long transaction has read one partition: the cut-over cannot lock it.
    let mut reader = cluster.client();
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM ev_2a")
        .unwrap();
    let writers = Writers::start(&cluster, "ev", 2, 5_000);
    let mut f = cluster.client();
    let e = f
        .batch_execute("SELECT migrate.finish('ev', timeout => '3s')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert_ne!(phase(&mut c, id), "done");
    reader.batch_execute("COMMIT").unwrap();
    finish(&mut c);
    let (worst, _) = writers.stop();
    assert!(
        worst < Duration::from_millis(100 + 400),
        "writers waited at most about one lock timeout at each attempt (worst {worst:?})"
    );
    assert_eq!(phase(&mut c, id), "done");
    assert_matches_control(&mut c, "ev", ALTER);
}

#[test]
fn a_tree_driven_by_step_keeps_the_foreign_key_that_references_it() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    // Partitioned by ts: id is not in the partition key, so its type can
    // change; a table references the tree by (id, ts).
    c.batch_execute(
        "CREATE TABLE pt (id int, ts int, v text, PRIMARY KEY (id, ts)) PARTITION BY LIST (ts);
         CREATE TABLE pt_a PARTITION OF pt FOR VALUES IN (1, 2);
         CREATE TABLE pt_b PARTITION OF pt FOR VALUES IN (3);
         CREATE TABLE pt_empty PARTITION OF pt FOR VALUES IN (4);
         INSERT INTO pt SELECT g, 1 + g % 3, 'v' || g FROM generate_series(1, 3000) g;
         CREATE TABLE pt_refs (rid int PRIMARY KEY, id int, ts int,
                               FOREIGN KEY (id, ts) REFERENCES pt (id, ts));
         INSERT INTO pt_refs SELECT g, g, 1 + g % 3 FROM generate_series(1, 500) g;
         CREATE VIEW pt_view AS SELECT id, v FROM pt WHERE ts = 1;",
    )
    .unwrap();
    let before: i64 = c
        .query_one("SELECT sum(hashtext(id || v)) FROM pt", &[])
        .unwrap()
        .get(0);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('pt', 'ALTER COLUMN id TYPE bigint', background => false, jobs => 1)",
            &[],
        )
        .unwrap()
        .get(0);
    // Without a worker, step() drives every partition in turn.
    for _ in 0..200 {
        c.batch_execute("SELECT migrate.step('pt')").unwrap();
        c.batch_execute("INSERT INTO pt VALUES (100000 + (random() * 1000)::int, 3, 'late') ON CONFLICT DO NOTHING")
            .unwrap();
        if phase(&mut c, id) == "ready" {
            break;
        }
    }
    assert_eq!(phase(&mut c, id), "ready");
    c.batch_execute("SELECT migrate.finish('pt', timeout => '1 minute')")
        .unwrap();
    // The foreign key was put back NOT VALID; without a worker, step()
    // validates it, in a transaction of its own.
    assert_eq!(phase(&mut c, id), "validating");
    c.batch_execute("SELECT migrate.step('pt')").unwrap();
    assert_eq!(phase(&mut c, id), "done");
    let (typ, valid, late, sum): (String, bool, i64, i64) = {
        let r = c
            .query_one(
                "SELECT format_type(a.atttypid, a.atttypmod),
                        (SELECT convalidated FROM pg_constraint WHERE conrelid = 'pt_refs'::regclass
                            AND contype = 'f' AND conparentid = 0),
                        (SELECT count(*) FROM pt WHERE v = 'late'),
                        (SELECT sum(hashtext(id || v)) FROM pt WHERE v <> 'late')
                   FROM pg_attribute a WHERE a.attrelid = 'pt_b'::regclass AND a.attname = 'id'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(typ, "bigint");
    assert!(valid, "the foreign key into the tree is back and validated");
    assert!(late > 0, "rows written during the copy are there");
    assert_eq!(sum, before);
    let view_rows: i64 = c
        .query_one("SELECT count(*) FROM pt_view", &[])
        .unwrap()
        .get(0);
    assert_eq!(view_rows, 1000);
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn what_a_tree_rewrite_refuses_changes_nothing() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 1_000, false);
    c.batch_execute(
        "CREATE UNIQUE INDEX ON ev_d (v);
         CREATE TABLE leaf_refs (v bigint REFERENCES ev_d (v));
         CREATE TABLE ex (id int, s text, v int) PARTITION BY RANGE (id);
         CREATE TABLE ex_1 PARTITION OF ex FOR VALUES FROM (0) TO (100) PARTITION BY LIST (lower(s));
         CREATE TABLE ex_1a PARTITION OF ex_1 FOR VALUES IN ('a');",
    )
    .unwrap();
    let before = tree_facts(&mut c, "ev");
    for (table, alter, options, state, words) in [
        ("ev", "ALTER COLUMN v TYPE numeric", ", verify => true", "0A000", "verify => true"),
        ("ev", "ALTER COLUMN v TYPE numeric", ", revertible => true", "0A000", "revertible"),
        ("ev", "ALTER COLUMN v TYPE numeric", ", jobs => 0", "22023", "invalid value for jobs"),
        // A foreign key referencing one partition directly.
        ("ev", "ALTER COLUMN v TYPE numeric", "", "0A000", "partitioned table's foreign key"),
        ("ex", "ALTER COLUMN v TYPE bigint", "", "0A000", "partitioned by an expression below its root"),
        ("ev", "ALTER COLUMN owner TYPE bigint", "", "0A000", "partitioned table's foreign key"),
        (
            "ev",
            "ALTER COLUMN payload TYPE varchar(200), ADD FOREIGN KEY (owner) REFERENCES ev_owners (id)",
            "",
            "0A000",
            "adding a foreign key together with a rewrite",
        ),
        ("ev", "ADD COLUMN serial_no serial", "", "0A000", "serial or identity column"),
    ] {
        let e = c
            .query_one(
                &format!("SELECT migrate.start('{table}', $1{options})"),
                &[&alter],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), state, "{alter}: {e:?}");
        assert!(format!("{e:?}").contains(words), "{alter}: {e:?}");
    }
    assert_eq!(tree_facts(&mut c, "ev"), before);
    assert_eq!(leftovers(&mut c), 0);
    let recorded: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0);
}

#[test]
fn a_tree_rewrite_that_fails_in_one_partition_leaves_every_partition_as_it_was() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 20_000, false);
    // A row in three partitions cannot be cast: workers fail at once.
    c.batch_execute(
        "DROP INDEX ev_1_payload;
         UPDATE ev SET payload = '12' WHERE payload IS NOT NULL;
         UPDATE ev SET payload = 'twelve' WHERE id IN (19999, 1001, 5001);",
    )
    .unwrap();
    let before = tree_facts(&mut c, "ev");
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ALTER COLUMN payload TYPE int USING payload::int', jobs => 3, batch_rows => 1000)",
            &[],
        )
        .unwrap()
        .get(0);
    let e = c
        .batch_execute("CALL migrate.wait('ev', '2 minutes')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02", "{e:?}");
    assert_eq!(phase(&mut c, id), "failed");
    wait_until("the tree's workers to be gone", || {
        backends(&mut c, "halo_migrate worker") == 0
    });
    assert_eq!(leftovers(&mut c), 0);
    assert_eq!(tree_facts(&mut c, "ev"), before);
    let parts: Vec<String> = c
        .query(
            "SELECT DISTINCT phase FROM migrate.status() WHERE part_of = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(parts, vec!["failed".to_string()]);
}

#[test]
fn the_cut_over_uses_the_search_path_of_start() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    make_tree(&mut c, "ev", 5_000, true);
    c.batch_execute(
        "CREATE SCHEMA app;
         CREATE FUNCTION app.same(bigint) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT $1::numeric';
         SET search_path = app, public;",
    )
    .unwrap();
    let alter = "ALTER COLUMN v TYPE numeric USING same(v)";
    let writers = Writers::start(&cluster, "ev", 1, 5_000);
    let id: i64 = c
        .query_one("SELECT migrate.start('ev', $1)", &[&alter])
        .unwrap()
        .get(0);
    c.batch_execute("CALL migrate.wait('ev', '2 minutes')")
        .unwrap();
    // finish() from a session whose search_path does not have the function:
    // the worker swaps with start()'s.
    let mut other = cluster.client();
    other
        .batch_execute("SELECT migrate.finish('ev', timeout => '1 minute')")
        .unwrap();
    writers.stop();
    assert_eq!(phase(&mut c, id), "done");
    assert_matches_control(&mut c, "ev", alter);
}
