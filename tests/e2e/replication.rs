//! A revert under logical replication: the revert's swap, like the forward
//! one, must reach a `FOR ALL TABLES` subscriber as nothing but the
//! application's own row changes, and the kept table, its log and its
//! stash must never be sent.

use crate::harness::*;
use std::time::Duration;

const COLUMNS: &str = "id int PRIMARY KEY, v int, payload text";

#[test]
fn a_for_all_tables_subscriber_follows_a_migration_and_its_revert() {
    const ROWS: i64 = 20_000;
    let (publisher, subscriber) = publisher_and_subscriber(COLUMNS, ROWS);
    let mut p = publisher.client();
    let mut s = subscriber.client();

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
    assert_eq!(
        subscription_errors(&mut s),
        0,
        "the subscription hit errors"
    );
}
