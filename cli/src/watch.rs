//! Following a migration to its end: the progress display, the cut-over and
//! Ctrl-C.
//!
//! Two sessions: `migrate.finish()` blocks in one (on its own thread) while
//! the other polls `migrate.status()` for the display. Ctrl-C never leaves a
//! half-done cut-over: it cancels `finish()` (which rolls back), then either
//! leaves the migration running in the server — it is the background
//! worker's, not this process's — and says how to reach it, or, with
//! `--abort-on-interrupt`, aborts it.

use crate::exit::{code, Failure, Result};
use crate::render::{self, Status};
use crate::session;
use indicatif::{ProgressBar, ProgressStyle};
use postgres::{CancelToken, Client, NoTls};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Watch {
    pub table: String,
    /// Cut over once the copy is done (false: stop there, for `--no-finish`).
    pub finish: bool,
    pub abort_on_interrupt: bool,
    /// `finish()`'s `blockers`: wait, cancel or terminate.
    pub blockers: String,
    pub quiet: bool,
    /// The connection flags the user gave, to print follow-up commands.
    pub conn_flags: String,
}

type FinishCall = JoinHandle<std::result::Result<String, postgres::Error>>;

/// `migrate.finish()`: the summary of a done migration, the stored error of a
/// failed or aborted one; for a running one, it cuts over first.
fn call_finish(
    c: &mut Client,
    table: &str,
    blockers: &str,
) -> std::result::Result<String, postgres::Error> {
    c.query_one(
        "SELECT migrate.finish($1::text::regclass, blockers => $2)",
        &[&table, &blockers],
    )
    .map(|r| r.get(0))
}

/// What the poll loop does next, given the migration's state.
#[derive(Debug, PartialEq)]
enum Next {
    Poll,
    /// Call `migrate.finish()` now.
    Finish,
    /// Stop waiting; copying is over and the cut-over is left for later.
    LeaveForLater,
    /// Over (done, failed or aborted): `finish()` reports which.
    Ended,
    /// The worker is gone and no `finish()` is driving the migration.
    Interrupted,
}

fn next(s: &Status, want_finish: bool, finishing: bool) -> Next {
    match s.phase.as_str() {
        "done" | "failed" | "aborted" => Next::Ended,
        "interrupted" if !finishing => Next::Interrupted,
        "expanded" if s.strategy == "versioned" && !finishing => {
            if want_finish {
                Next::Finish
            } else {
                Next::LeaveForLater
            }
        }
        "replaying" | "ready" if s.strategy == "rewrite" && !finishing => {
            if want_finish {
                Next::Finish
            } else if s.verify_rows.is_some() && !s.verified {
                // --no-finish leaves once the new table is proven, not
                // before its verification has even begun.
                Next::Poll
            } else {
                Next::LeaveForLater
            }
        }
        _ => Next::Poll,
    }
}

pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // If a handler cannot be installed, Ctrl-C simply kills the tool, which
    // is still safe: the server cancels finish() and the worker goes on.
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

/// Follow the table's newest migration until it ends (or, without
/// `finish`, until its copy is done); the summary line.
pub fn follow(
    w: &Watch,
    ctl: Client,
    mon: &mut Client,
    interrupted: &AtomicBool,
) -> Result<String> {
    let display = Display::new(w.quiet);
    let mut ctl = Some(ctl);
    let mut call: Option<(FinishCall, CancelToken)> = None;
    // 'interrupted' is believed when two polls in a row say so: a worker
    // is then surely gone, not just starting or ending.
    let mut gone_before = false;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            display.clear();
            return Err(on_interrupt(w, mon, call));
        }
        let s = session::latest(mon, &w.table)?;
        display.show(&s);
        let seen = next(&s, w.finish, call.is_some());
        let gone = seen == Next::Interrupted;
        match seen {
            Next::Interrupted if !gone_before => {}
            Next::Poll => {}
            Next::Finish => {
                let mut c = ctl.take().expect("one finish() call");
                let token = c.cancel_token();
                let (table, blockers) = (w.table.clone(), w.blockers.clone());
                let handle = std::thread::spawn(move || call_finish(&mut c, &table, &blockers));
                call = Some((handle, token));
            }
            Next::LeaveForLater if s.strategy == "versioned" => {
                display.clear();
                return Ok(format!(
                    "migration {} of {} is expanded: the old shape is served by the table, the new one by its version schema (SELECT * FROM migrate.versions()).\nContract once the application has moved over:\n  halo_migrate{} --table={} --finish\nor roll back:\n  halo_migrate{} --table={} --abort",
                    s.id, s.table_name, w.conn_flags, shell_quote(&s.table_name), w.conn_flags, shell_quote(&s.table_name)
                ));
            }
            Next::LeaveForLater => {
                display.clear();
                return Ok(format!(
                    "migration {} of {} has copied the table and keeps replaying changes; cut over with:\n  halo_migrate{} --table={} --finish",
                    s.id, s.table_name, w.conn_flags, shell_quote(&s.table_name)
                ));
            }
            Next::Interrupted => {
                display.clear();
                return Err(Failure::new(
                    code::FAILED,
                    format!(
                        "migration {} of {} is interrupted: its worker is gone",
                        s.id, s.table_name
                    ),
                )
                .hint(format!(
                    "Continue it from its last checkpoint with: halo_migrate{} --table={} --resume",
                    w.conn_flags,
                    shell_quote(&s.table_name)
                )));
            }
            Next::Ended => {
                display.clear();
                let r = match call.take() {
                    Some((h, _)) => h.join().expect("finish() thread"),
                    None => call_finish(
                        ctl.as_mut().expect("control session"),
                        &w.table,
                        &w.blockers,
                    ),
                };
                return r.map_err(|e| Failure::from_db("finishing", &e));
            }
        }
        if let Some((h, _)) = &call {
            if h.is_finished() {
                let r = call
                    .take()
                    .expect("checked")
                    .0
                    .join()
                    .expect("finish() thread");
                display.clear();
                return r.map_err(|e| Failure::from_db("finishing", &e));
            }
        }
        gone_before = gone;
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn on_interrupt(w: &Watch, mon: &mut Client, call: Option<(FinishCall, CancelToken)>) -> Failure {
    if let Some((h, token)) = call {
        // finish() rolls back whatever it had not committed.
        let _ = token.cancel_query(NoTls);
        let _ = h.join();
    }
    let t = shell_quote(&w.table);
    if w.abort_on_interrupt {
        return match session::text(
            mon,
            "SELECT migrate.abort($1::text::regclass)::text",
            &[&w.table],
            "aborting",
        ) {
            Ok(_) => Failure::new(
                code::INTERRUPTED,
                format!(
                    "interrupted: the migration of {} was aborted; the table is as it was",
                    w.table
                ),
            ),
            Err(f) => f,
        };
    }
    Failure::new(
        code::INTERRUPTED,
        format!("interrupted: the migration of {} goes on in the server", w.table),
    )
    .hint(format!(
        "Watch it:  halo_migrate{c} --table={t} --status\n      Finish it: halo_migrate{c} --table={t} --finish\n      Abort it:  halo_migrate{c} --table={t} --abort",
        c = w.conn_flags
    ))
}

/// A word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A progress bar on a terminal; elsewhere (logs, pg_cron, CI) a line every
/// ten seconds and at each change of phase.
struct Display {
    bar: Option<ProgressBar>,
    lines: bool,
    last: std::cell::RefCell<(String, Instant)>,
}

impl Display {
    fn new(quiet: bool) -> Display {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = ProgressBar::new(1000);
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Display {
            bar,
            lines: !quiet && !tty,
            last: std::cell::RefCell::new((String::new(), Instant::now())),
        }
    }

    fn show(&self, s: &Status) {
        let pct = s.percent.unwrap_or(0.0);
        let msg = format!("{pct:>5.1}%  {}", render::progress(s));
        if let Some(b) = &self.bar {
            b.set_position((pct * 10.0) as u64);
            b.set_message(msg);
        } else if self.lines {
            let mut last = self.last.borrow_mut();
            if last.0 != s.phase || last.1.elapsed() >= Duration::from_secs(10) {
                eprintln!("halo_migrate: {} {msg}", s.table_name);
                *last = (s.phase.clone(), Instant::now());
            }
        }
    }

    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(phase: &str, strategy: &str) -> Status {
        Status {
            phase: phase.into(),
            strategy: strategy.into(),
            ..Default::default()
        }
    }

    #[test]
    fn finish_is_called_once_the_copy_is_done() {
        assert_eq!(next(&st("copying", "rewrite"), true, false), Next::Poll);
        assert_eq!(next(&st("replaying", "rewrite"), true, false), Next::Finish);
        assert_eq!(next(&st("ready", "rewrite"), true, true), Next::Poll);
        assert_eq!(
            next(&st("ready", "rewrite"), false, false),
            Next::LeaveForLater
        );
        // Concurrent builds end by themselves; finish() could not wait for them.
        assert_eq!(next(&st("indexing", "concurrent"), true, false), Next::Poll);
        assert_eq!(next(&st("done", "instant"), true, false), Next::Ended);
        assert_eq!(next(&st("failed", "rewrite"), true, true), Next::Ended);
        // A gone worker: finish() takes over if it is running, else we stop.
        assert_eq!(
            next(&st("interrupted", "rewrite"), true, false),
            Next::Interrupted
        );
        assert_eq!(next(&st("interrupted", "rewrite"), true, true), Next::Poll);
        // --verify --no-finish: leave only once the new table is verified.
        let unverified = Status {
            verify_rows: Some(0),
            ..st("replaying", "rewrite")
        };
        assert_eq!(next(&unverified, false, false), Next::Poll);
        let verified = Status {
            verified: true,
            ..unverified.clone()
        };
        assert_eq!(next(&verified, false, false), Next::LeaveForLater);
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("public.accounts"), "public.accounts");
        assert_eq!(shell_quote("My Table"), "'My Table'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
