//! Verified cut-over (`start(verify => true)`): differences planted in the
//! shadow are found and repaired before the swap; a verification cut short
//! by a crash resumes where it was; an ALTER whose key cannot be compared
//! range by range is refused and leaves nothing behind. Under writers, with
//! the control table as the oracle.

use crate::harness::*;
use postgres::Client;

const COLUMNS: &str = "id int PRIMARY KEY, v int NOT NULL, payload text";

/// (rows checked, chunks, differences, verified) from status().
fn verification(c: &mut Client, id: i64) -> (i64, i64, i64, bool) {
    let r = c
        .query_one(
            "SELECT coalesce(verify_rows, -1), coalesce(verify_chunks, -1),
                    coalesce(verify_differences, -1), verified_at IS NOT NULL
               FROM migrate.status() WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[test]
fn differences_planted_in_the_shadow_are_found_and_repaired_before_the_swap() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 20_000);
    // The writers update and delete keys up to 10,000 only: the rows from
    // 10,001 on keep what the copy gave them unless we change it.
    let writers = Writers::start(&cluster, "t", 2, 10_000);
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint', batch_rows => 1000,
                                  background => false, verify => true)",
            &[],
        )
        .unwrap()
        .get(0);
    // Drive it by hand up to the verification, then plant three differences
    // in the shadow (as a superuser may): a changed value, a missing row
    // and a row that the table does not have.
    wait_until("the verification to begin", || {
        c.batch_execute("SELECT migrate.step('t')").unwrap();
        phase(&mut c, id) == "verifying"
    });
    assert_eq!(verification(&mut c, id), (0, 0, 0, false));
    let shadow = format!(
        "migrate.shadow_{}",
        c.query_one("SELECT 't'::regclass::oid::int8", &[])
            .unwrap()
            .get::<_, i64>(0)
    );
    c.batch_execute(&format!(
        "UPDATE {shadow} SET v = -1 WHERE id = 15000;
         DELETE FROM {shadow} WHERE id = 15001;
         INSERT INTO {shadow} (id, v, payload) VALUES (5000000, 1, 'not in the table');"
    ))
    .unwrap();

    let summary: String = c
        .query_one("SELECT migrate.finish('t', '120s')", &[])
        .unwrap()
        .get(0);
    writers.stop();
    assert!(
        summary.contains("3 differences found and repaired, then a pass with none"),
        "{summary}"
    );
    let (rows, chunks, differences, verified) = verification(&mut c, id);
    assert_eq!(differences, 3);
    assert!(verified);
    assert!(
        chunks >= 10 && rows >= 10_000,
        "{rows} rows in {chunks} chunks"
    );
    assert_matches_control(&mut c, "t", "ALTER COLUMN v TYPE bigint");
    assert_eq!(leftovers(&mut c), 0);
}

#[test]
fn a_verification_cut_short_by_a_crash_resumes_where_it_was() {
    let cluster = Cluster::start_with(&["halo_migrate.verify = on"]);
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 200_000);
    let writers = Writers::start(&cluster, "t", 2, 200_000);
    // verify is on by the setting; small chunks make the pass long enough
    // to be cut short.
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('t', 'ALTER COLUMN id TYPE bigint', batch_rows => 200)",
            &[],
        )
        .unwrap()
        .get(0);
    wait_until("a few chunks verified", || verification(&mut c, id).1 >= 20);
    let worker: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut c = cluster.crash_by_killing(worker);
    writers.stop();
    let (_, chunks_before, _, verified) = verification(&mut c, id);
    assert!(!verified, "the pass was cut short");
    assert!(chunks_before >= 20, "committed chunks survive the crash");
    assert_eq!(phase(&mut c, id), "interrupted");
    let after: Option<Vec<String>> = c
        .query_one(
            "SELECT verify_after FROM migrate.migrations WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(after.is_some(), "the pass's position survives the crash");

    let writers = Writers::start(&cluster, "t", 2, 200_000);
    c.batch_execute("SELECT migrate.resume('t')").unwrap();
    let summary: String = c
        .query_one("SELECT migrate.finish('t', '300s')", &[])
        .unwrap()
        .get(0);
    writers.stop();
    assert!(summary.contains("verified"), "{summary}");
    assert!(summary.contains(": 0 differences"), "{summary}");
    let (rows, chunks, _, verified) = verification(&mut c, id);
    assert!(verified);
    // One pass, resumed: not started over, which would count the rows
    // checked before the crash (at least 20 chunks of 200) twice. The
    // writers' inserts and deletes move the count a little either way.
    let total: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert!(
        rows < total + chunks_before * 200 / 2 && rows >= total * 9 / 10,
        "{rows} rows verified of {total}"
    );
    assert!(chunks > chunks_before);
    assert_matches_control(&mut c, "t", "ALTER COLUMN id TYPE bigint");
}

#[test]
fn verify_is_refused_where_key_ranges_cannot_be_compared() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 1_000);
    for alter in [
        // The key's order changes (another type family, or USING).
        "ALTER COLUMN id TYPE text",
        "ALTER COLUMN id TYPE bigint USING -id",
    ] {
        let e = c
            .query_one("SELECT migrate.start('t', $1, verify => true)", &[&alter])
            .unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{alter}: {e}");
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains("verify"), "{alter}: {msg}");
        assert_eq!(leftovers(&mut c), 0, "{alter}");
    }
    // A key the ALTER rounds would land under another key in the new table.
    c.batch_execute(
        "CREATE TABLE tn (k numeric(12,4) PRIMARY KEY, v int);
         INSERT INTO tn SELECT g / 3.0, g FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let e = c
        .query_one(
            "SELECT migrate.start('tn', 'ALTER COLUMN k TYPE numeric(12,2)', verify => true)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert_eq!(leftovers(&mut c), 0);
    // Without a copy there is nothing to verify: said, and done in place.
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN payload SET DEFAULT ''x''', verify => true)",
    )
    .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM migrate.migrations WHERE verify", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Bounds are kept as text between chunks: sessions with different date
/// styles driving one pass read them back as the same keys.
#[test]
fn a_pass_driven_by_sessions_with_other_date_styles_checks_every_row() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE ev (at timestamptz PRIMARY KEY, v int NOT NULL);
         INSERT INTO ev SELECT timestamptz '2024-01-31 10:00:00.123456+00' + g * interval '1 day 1.5 s', g
           FROM generate_series(1, 3000) g;",
    )
    .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT migrate.start('ev', 'ALTER COLUMN v TYPE bigint', batch_rows => 100,
                                  background => false, verify => true)",
            &[],
        )
        .unwrap()
        .get(0);
    let styles = [
        "ISO, MDY",
        "SQL, DMY",
        "German, DMY",
        "Postgres, MDY",
        "SQL, MDY",
    ];
    let mut n = 0;
    wait_until("the verification to pass", || {
        let mut s = cluster.client();
        s.batch_execute(&format!(
            "SET DateStyle = '{}'; SET TimeZone = 'Asia/Kathmandu'; SELECT migrate.step('ev')",
            styles[n % styles.len()]
        ))
        .unwrap();
        n += 1;
        verification(&mut c, id).3
    });
    let (rows, chunks, differences, _) = verification(&mut c, id);
    assert_eq!((rows, differences), (3000, 0), "in {chunks} chunks");
    assert!(chunks >= 30);
    c.batch_execute("SELECT migrate.finish('ev')").unwrap();
}

/// A USING expression that gives another value each time can never
/// verify: after three passes with differences the migration fails with
/// 22000, its own hint says why (stored with the failure, raised again by
/// finish()), and the table is left as it was.
#[test]
fn a_using_that_is_not_deterministic_fails_verification_and_says_why() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    create_with_control(&mut c, "t", COLUMNS, 2_000);
    c.batch_execute(
        "SELECT migrate.start('t', 'ALTER COLUMN v TYPE bigint USING v + (random() * 1000)::int',
                              batch_rows => 1000, verify => true)",
    )
    .unwrap();
    let e = c
        .query_one("SELECT migrate.finish('t', '120s')", &[])
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(sqlstate(&e), "22000", "{e}");
    assert!(db.message().contains("did not verify"), "{}", db.message());
    assert!(
        db.hint().is_some_and(|h| h.contains("not deterministic")),
        "{:?}",
        db.hint()
    );
    assert_eq!(leftovers(&mut c), 0);
    assert_same_rows(&mut c, "t");
}
