//! A revert under logical replication: the revert's swap, like the forward
//! one, must reach a `FOR ALL TABLES` subscriber as nothing but the
//! application's own row changes, and the kept table, its log and its
//! stash must never be sent.

use crate::harness::*;
use postgres::Client;
use std::time::Duration;

const COLUMNS: &str = "id int PRIMARY KEY, v int, payload text";

/// Rows and a digest of `table`, `v` read as bigint on either side.
fn digest(c: &mut Client, table: &str) -> (i64, String) {
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

#[test]
fn a_for_all_tables_subscriber_follows_a_migration_and_its_revert() {
    const ROWS: i64 = 20_000;
    let publisher = Cluster::start_with(&["wal_level = logical", "max_replication_slots = 10"]);
    let subscriber = Cluster::start();
    let mut p = publisher.client();
    let mut s = subscriber.client();
    create_with_control(&mut p, "t", COLUMNS, ROWS);
    p.batch_execute("CREATE PUBLICATION everything FOR ALL TABLES")
        .unwrap();
    s.batch_execute(&format!(
        "CREATE TABLE t ({COLUMNS}); CREATE TABLE t_control ({COLUMNS});"
    ))
    .unwrap();
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

    // Forward and back, with writers on the publisher throughout.
    let writers = Writers::start(&publisher, "t", 2, ROWS);
    p.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 2000,
                              revertible => true);
         SELECT pg_sleep(1);
         SELECT migrate.finish('t', '120s');",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let reverted: String = p
        .query_one("SELECT migrate.revert('t', '120s')", &[])
        .unwrap()
        .get(0);
    assert!(reverted.contains("reverted"), "{reverted}");
    std::thread::sleep(Duration::from_millis(500));
    let (_, committed) = writers.stop();
    assert!(committed > 0);
    let v: String = p
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = 't'::regclass AND attname = 'v'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, "integer", "the revert gave back the old type");
    assert_same_rows(&mut p, "t");
    assert_eq!(leftovers(&mut p), 0);

    let want = digest(&mut p, "t");
    wait_until("the subscriber to catch up", || digest(&mut s, "t") == want);
    let errors: i64 = s
        .query_one(
            "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::bigint FROM pg_stat_subscription_stats",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(errors, 0, "the subscription hit errors");
}
