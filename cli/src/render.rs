//! What the tool prints: the plan as a table, the status of migrations, the
//! progress line. Pure functions of rows read from the server.

/// One row of `migrate.plan()`.
#[derive(Debug, Clone)]
pub struct PlanStep {
    pub step: i32,
    pub subcommand: Option<String>,
    pub strategy: String,
    pub sql: String,
    pub lock: Option<String>,
    pub rewrites: bool,
    pub reason: String,
}

/// One row of `migrate.status()`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub id: i64,
    pub table_name: String,
    pub strategy: String,
    pub phase: String,
    pub rows_copied: i64,
    pub rows_total: i64,
    pub percent: Option<f64>,
    pub backlog: i64,
    pub rate: Option<f64>,
    pub eta: Option<String>,
    pub worker_pid: Option<i32>,
    pub error: Option<String>,
    /// Rows verified in this pass (a migration started with verify).
    pub verify_rows: Option<i64>,
    /// A verification pass found no difference.
    pub verified: bool,
    /// Its revert window is open until then.
    pub revertible_until: Option<String>,
    /// A revert: the migration it takes back.
    pub reverts: Option<i64>,
}

/// The phase as `--status` shows it: a revert says what it takes back, a
/// revertible migration until when.
fn phase(s: &Status) -> String {
    let mut p = s.phase.clone();
    if let Some(of) = s.reverts {
        p.push_str(&format!(" (revert of {of})"));
    }
    if let Some(until) = &s.revertible_until {
        p.push_str(&format!(", revertible until {until}"));
    }
    p
}

/// A psql-style aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        padded.join("|").trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n") + "\n"
}

/// The dry run: a table of steps, then each step's SQL and reason.
pub fn plan(table_name: &str, steps: &[PlanStep]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                s.step.to_string(),
                s.subcommand.clone().unwrap_or_default(),
                s.strategy.clone(),
                s.lock.clone().unwrap_or_else(|| "-".into()),
                if s.rewrites { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    let mut out = format!("Plan for {table_name}:\n\n");
    out += &table(
        &["step", "subcommand", "strategy", "lock", "rewrites"],
        &rows,
    );
    out += "\n";
    for s in steps {
        out += &format!("step {}: {}\n", s.step, s.sql);
        out += &format!("  why: {}\n", s.reason);
    }
    out
}

/// `migrate.status()` as a table.
pub fn status_table(rows: &[Status]) -> String {
    if rows.is_empty() {
        return "No migrations.\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.table_name.clone(),
                s.strategy.clone(),
                phase(s),
                s.percent.map_or(String::new(), |p| format!("{p:.1}%")),
                format!("{} / {}", count(s.rows_copied), count(s.rows_total)),
                count(s.backlog),
                s.rate
                    .map_or(String::new(), |r| format!("{}/s", count(r as i64))),
                s.eta.clone().map(eta).unwrap_or_default(),
                s.worker_pid.map_or(String::new(), |p| p.to_string()),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "id", "table", "strategy", "phase", "done", "rows", "backlog", "rate", "eta", "worker",
            "error",
        ],
        &rows,
    )
}

/// The live progress message: phase, rows, rate, backlog, ETA.
pub fn progress(s: &Status) -> String {
    let mut parts = vec![format!("{:<10}", s.phase)];
    if s.strategy == "rewrite" {
        parts.push(format!(
            "{} / ~{} rows",
            count(s.rows_copied),
            count(s.rows_total)
        ));
        if let Some(r) = s.rate {
            parts.push(format!("{} rows/s", count(r as i64)));
        }
        parts.push(format!("backlog {}", count(s.backlog)));
        if let (Some(v), "verifying") = (s.verify_rows, s.phase.as_str()) {
            parts.push(format!("{} rows verified", count(v)));
        }
    }
    if let Some(e) = &s.eta {
        parts.push(format!("ETA {}", eta(e.clone())));
    }
    parts.join("  ")
}

/// An interval as PostgreSQL prints it, without fractions of a second.
fn eta(text: String) -> String {
    match text.split_once('.') {
        Some((whole, _)) => whole.to_string(),
        None => text,
    }
}

/// A count with thousands separators.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, " a   | long\n-----+------\n xyz | 1\n");
    }

    #[test]
    fn plan_lists_steps_then_sql() {
        let p = plan(
            "public.t",
            &[PlanStep {
                step: 1,
                subcommand: Some("ALTER COLUMN id TYPE bigint".into()),
                strategy: "rewrite".into(),
                sql: "ALTER TABLE public.t ALTER COLUMN id TYPE bigint".into(),
                lock: Some("AccessExclusiveLock".into()),
                rewrites: true,
                reason: "int4 to int8 rewrites".into(),
            }],
        );
        assert!(p.starts_with("Plan for public.t:\n\n step | subcommand"));
        assert!(p.contains(
            " 1    | ALTER COLUMN id TYPE bigint | rewrite  | AccessExclusiveLock | yes\n"
        ));
        assert!(p.ends_with("step 1: ALTER TABLE public.t ALTER COLUMN id TYPE bigint\n  why: int4 to int8 rewrites\n"));
    }

    #[test]
    fn progress_line() {
        let s = Status {
            phase: "copying".into(),
            strategy: "rewrite".into(),
            rows_copied: 1_234_567,
            rows_total: 5_000_000,
            rate: Some(250_000.4),
            backlog: 12,
            eta: Some("00:00:15.2".into()),
            ..Default::default()
        };
        assert_eq!(
            progress(&s),
            "copying     1,234,567 / ~5,000,000 rows  250,000 rows/s  backlog 12  ETA 00:00:15"
        );
        let s = Status {
            phase: "indexing".into(),
            strategy: "concurrent".into(),
            ..Default::default()
        };
        assert_eq!(progress(&s), "indexing  ");
    }

    #[test]
    fn status_says_what_can_be_reverted_and_what_is_a_revert() {
        let rows = [
            Status {
                id: 2,
                phase: "replaying".into(),
                reverts: Some(1),
                ..Default::default()
            },
            Status {
                id: 1,
                phase: "done".into(),
                revertible_until: Some("2026-11-29 15:40 UTC".into()),
                ..Default::default()
            },
        ];
        let t = status_table(&rows);
        assert!(t.contains("| replaying (revert of 1) "), "{t}");
        assert!(
            t.contains("| done, revertible until 2026-11-29 15:40 UTC "),
            "{t}"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(-1_234_567), "-1,234,567");
    }
}
