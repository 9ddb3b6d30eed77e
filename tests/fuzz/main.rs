//! The differential fuzzer: random table shapes and ALTERs, run through
//! halo_migrate under concurrent writes and through a plain ALTER TABLE on
//! a twin database, compared (see `run.rs` for what counts as a finding).
//!
//! `make fuzz SEED=… ITERATIONS=…` runs a campaign and prints every finding
//! with a shrunk reproducer. CI runs a short pass with a fixed seed (the
//! defaults below), which must find nothing.
//!
//! Settings (environment): FUZZ_SEED (default 20261128), FUZZ_ITERATIONS
//! (default 40), FUZZ_MARGIN_MS (how much longer than the 100 ms lock
//! timeout a write may wait; default 900, for shared noisy machines),
//! FUZZ_CASE (one case's own seed, as printed: run just that case).

#[path = "../e2e/harness.rs"]
mod harness;

mod gen;
mod run;

use gen::Case;
use harness::Cluster;
use run::{Finding, Verdict};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Smaller variants of `case`, to try while shrinking a finding.
fn smaller(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    for i in 0..case.features.len() {
        let mut c = case.clone();
        c.features.remove(i);
        out.push(c);
    }
    if case.alter.len() > 1 {
        for i in 0..case.alter.len() {
            let mut c = case.clone();
            c.alter.remove(i);
            out.push(c);
        }
    }
    if case.columns.len() > 1 {
        // Only columns nothing names any more.
        for i in 0..case.columns.len() {
            let name = &case.columns[i].name;
            let named = |s: &String| s.contains(name.as_str());
            if !case.alter.iter().any(named) && !case.features.iter().any(|f| f.1.iter().any(named))
            {
                let mut c = case.clone();
                c.columns.remove(i);
                out.push(c);
            }
        }
    }
    if case.writers > 0 {
        out.push(Case {
            writers: 0,
            ..case.clone()
        });
    }
    if case.rows > 500 {
        out.push(Case {
            rows: 500,
            ..case.clone()
        });
    }
    if case.as_owner {
        out.push(Case {
            as_owner: false,
            ..case.clone()
        });
    }
    out
}

/// Greedily keep any smaller variant that still gives the same kind of
/// finding; at most `budget` runs.
fn shrink(cluster: &Cluster, case: Case, found: Finding, margin: Duration) -> (Case, Finding) {
    let (mut case, mut found) = (case, found);
    let mut budget = 30;
    'outer: while budget > 0 {
        for c in smaller(&case) {
            budget -= 1;
            if let Err(f) = run::run(cluster, &c, margin) {
                if f.kind == found.kind {
                    (case, found) = (c, f);
                    continue 'outer;
                }
            }
            if budget == 0 {
                break 'outer;
            }
        }
        break;
    }
    (case, found)
}

#[test]
fn differential_fuzz() {
    let seed = env("FUZZ_SEED", 20_261_128);
    let iterations = env("FUZZ_ITERATIONS", 40);
    let margin = Duration::from_millis(env("FUZZ_MARGIN_MS", 900));
    let cluster = Cluster::start();
    // A tablespace of its own, for shapes and ALTERs that move the table.
    let ts = std::env::temp_dir().join(format!("halo_fuzz_ts_{}", std::process::id()));
    std::fs::create_dir_all(&ts).unwrap();
    let owned = std::process::Command::new("chown")
        .arg("postgres:")
        .arg(&ts)
        .status()
        .is_ok_and(|s| s.success());
    assert!(owned, "chown postgres {ts:?}");
    let mut admin = cluster.client();
    admin
        .batch_execute("CREATE ROLE fz_owner LOGIN; CREATE ROLE fz_reader")
        .unwrap();
    // On its own: CREATE TABLESPACE cannot run in a transaction block.
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE fz_ts LOCATION '{}'",
            ts.display()
        ))
        .unwrap();
    admin
        .batch_execute("GRANT CREATE ON TABLESPACE fz_ts TO PUBLIC")
        .unwrap();
    drop(admin);
    let t0 = Instant::now();
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut rng = gen::Rng::new(seed);
    // FUZZ_CASE=<a case's seed, as printed> runs just that case.
    let only = std::env::var("FUZZ_CASE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let iterations = if only.is_some() { 1 } else { iterations };
    for i in 0..iterations {
        let case = Case::generate(only.unwrap_or_else(|| rng.next()));
        let verdict = run::run(&cluster, &case, margin);
        let label = match &verdict {
            Ok(Verdict::Skipped) => "skipped (shape not buildable)".to_string(),
            Ok(Verdict::Same) => "same as ALTER".to_string(),
            Ok(Verdict::Reverted) => {
                "same as ALTER, then reverted to the same as before".to_string()
            }
            Ok(Verdict::RevertRefused(code)) => {
                format!("same as ALTER; its revert refused a row with {code}")
            }
            Ok(Verdict::BothFailed(code)) => format!("both failed with {code}"),
            Ok(Verdict::Refused(code)) => format!("refused by halo_migrate with {code}"),
            Ok(Verdict::HaloDidMore(code)) => {
                format!("ALTER refused with {code}, halo_migrate did it")
            }
            Err(f) => format!("FINDING: {}", f.kind),
        };
        println!(
            "fuzz case {i} (seed {}): {label} -- {}",
            case.seed,
            case.alter_text()
        );
        *tally.entry(label).or_default() += 1;
        if let Err(found) = verdict {
            let (small, found) = shrink(&cluster, case, found, margin);
            println!(
                "FINDING {}: {}\n{}\n",
                found.kind,
                found.detail,
                small.describe()
            );
            findings.push((small.seed, found));
        }
    }
    println!(
        "fuzz: seed {seed}, {iterations} cases in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    for (label, n) in &tally {
        println!("  {n:4}  {label}");
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&ts);
    assert!(
        findings.is_empty(),
        "{} finding(s): {findings:?}",
        findings.len()
    );
}
