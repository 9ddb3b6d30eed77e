//! The command line: connection options as in psql, what to migrate, and
//! what to do. `Args::action()` turns the flags into one `Action`, refusing
//! combinations that make no sense before anything connects.

use crate::connect::ConnOpts;
use crate::exit::{Failure, Result};
use clap::{ArgAction, Parser};

const EXAMPLES: &str = "\
Examples:
  # Dry run: print what would happen, change nothing
  halo_migrate -d shop --table=accounts --alter='ALTER COLUMN id TYPE bigint'

  # Do it, with a live progress bar, then cut over
  halo_migrate -d shop --table=accounts --alter='ALTER COLUMN id TYPE bigint' --execute

  # Several changes at once; copy now, cut over later
  halo_migrate -d shop -t accounts -a 'ADD COLUMN note text' -a 'DROP COLUMN legacy' --execute --no-finish
  halo_migrate -d shop -t accounts --finish

  # Watch, slow down, pause, resume or abort a running migration
  halo_migrate -d shop --status
  halo_migrate -d shop -t accounts --batch-pause=50ms --max-replica-lag=5s
  halo_migrate -d shop -t accounts --pause
  halo_migrate -d shop -t accounts --abort

  # Keep the old table for a day after the cut-over; take it back, or keep the change
  halo_migrate -d shop -t accounts -a 'ALTER COLUMN id TYPE bigint' --execute --revertible --revert-window=1d
  halo_migrate -d shop -t accounts --revert
  halo_migrate -d shop -t accounts --forget

  # Expand/contract: serve the new shape as schema public_v2 beside the old one;
  # move the application over, then contract (or roll back with --abort)
  halo_migrate -d shop -t accounts -a 'RENAME COLUMN name TO full_name' --execute --version=v2
  halo_migrate -d shop -t accounts --finish

Exit codes: 0 done, 1 migration failed, 2 bad usage, 3 cannot connect,
4 extension not installed, 5 table missing, 6 permission denied,
130 interrupted by Ctrl-C.";

#[derive(Parser, Debug)]
#[command(
    name = "halo_migrate",
    version,
    disable_version_flag = true,
    about = "Online ALTER TABLE for PostgreSQL, over the halo_migrate extension.",
    long_about = "Online ALTER TABLE for PostgreSQL, over the halo_migrate extension.\n\n\
                  Without --execute, prints the plan and changes nothing.",
    after_help = EXAMPLES,
    disable_help_flag = true
)]
pub struct Args {
    /// Database server host or socket directory
    #[arg(short = 'h', long, help_heading = "Connection")]
    pub host: Option<String>,
    /// Database server port
    #[arg(short = 'p', long, help_heading = "Connection")]
    pub port: Option<u16>,
    /// Database user name
    #[arg(short = 'U', long, help_heading = "Connection")]
    pub username: Option<String>,
    /// Database name, or a connection string / URI
    #[arg(short = 'd', long, help_heading = "Connection")]
    pub dbname: Option<String>,
    /// Prompt for a password
    #[arg(short = 'W', long = "password", help_heading = "Connection")]
    pub prompt_password: bool,
    /// Never prompt for a password
    #[arg(short = 'w', long = "no-password", help_heading = "Connection")]
    pub no_password: bool,

    /// The table (optionally schema-qualified)
    #[arg(short = 't', long)]
    pub table: Option<String>,
    /// An ALTER TABLE subcommand, e.g. 'ALTER COLUMN id TYPE bigint'; repeat to apply several together
    #[arg(short = 'a', long, action = ArgAction::Append)]
    pub alter: Vec<String>,
    /// Carry the change out (without it: dry run)
    #[arg(long)]
    pub execute: bool,
    /// With --execute: copy and catch up, but leave the cut-over for --finish
    #[arg(long, requires = "execute")]
    pub no_finish: bool,
    /// With --execute: on Ctrl-C abort the migration instead of leaving it running
    #[arg(long)]
    pub abort_on_interrupt: bool,
    /// With --execute: before the cut-over, verify the new table against the ALTERed table row by row (and repair what differs)
    #[arg(long, requires = "execute")]
    pub verify: bool,
    /// Keep the old table after the cut-over, so that --revert can take the change back (with --alter)
    #[arg(long, requires = "alter")]
    pub revertible: bool,
    /// With --revertible: how long the change stays revertible (default: halo_migrate.revert_window)
    #[arg(long, value_name = "INTERVAL", requires = "revertible")]
    pub revert_window: Option<String>,
    /// Expand/contract: keep the table's old shape and serve the new one as the views of schema <schema>_NAME, until --finish (or --abort); --version alone prints the program's version
    #[arg(long = "version", value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub schema_version: Option<String>,
    /// With --version: new columns' values from the old row, as JSON: '{"col": "SQL expression"}'
    #[arg(long, value_name = "JSON")]
    pub up: Option<String>,
    /// With --version or --revertible: old columns' values from the new row, as JSON: '{"col": "SQL expression"}'
    #[arg(long, value_name = "JSON")]
    pub down: Option<String>,
    /// At the cut-over, sessions whose locks keep the swap waiting: wait for them, cancel their statements, or terminate them
    #[arg(long, value_name = "POLICY", default_value = "wait", value_parser = ["wait", "cancel", "terminate"])]
    pub blockers: String,

    /// Cut a running migration over (waits for it to catch up)
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub finish: bool,
    /// Stop a running migration and remove what it created
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub abort: bool,
    /// Show migrations (of --table, or all)
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub status: bool,
    /// Pause copying and replaying
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub pause: bool,
    /// Resume a paused or interrupted migration
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub resume: bool,
    /// Take a revertible migration back: the table returns to its old shape, with every row it has now
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub revert: bool,
    /// Keep a revertible migration: drop the old table it kept, and stop logging changes
    #[arg(long, help_heading = "Acting on a running migration", group = "act")]
    pub forget: bool,

    /// Longest wait for a lock at each step (bare numbers are milliseconds)
    #[arg(long, value_name = "INTERVAL", help_heading = "Settings")]
    pub lock_timeout: Option<String>,
    /// Rows per copy batch
    #[arg(long, value_name = "N", help_heading = "Settings")]
    pub batch_rows: Option<i32>,
    /// Pause between copy batches
    #[arg(long, value_name = "INTERVAL", help_heading = "Settings")]
    pub batch_pause: Option<String>,
    /// Adapt the batch size so a batch takes about this long (0: off)
    #[arg(long, value_name = "INTERVAL", help_heading = "Settings")]
    pub target_batch_time: Option<String>,
    /// Hold copying while a standby replays this far behind (0: off)
    #[arg(long, value_name = "INTERVAL", help_heading = "Settings")]
    pub max_replica_lag: Option<String>,

    /// No plan and no progress bar; errors and the summary only
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print help
    #[arg(short = '?', long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Print the program's version
    #[arg(short = 'V', action = ArgAction::Version)]
    pub print_version: Option<bool>,
}

/// Settings passed through to `migrate.start()` and `migrate.throttle()`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settings {
    pub lock_timeout: Option<String>,
    pub batch_rows: Option<i32>,
    pub batch_pause: Option<String>,
    pub target_batch_time: Option<String>,
    pub max_replica_lag: Option<String>,
    /// `--verify`; None leaves it to `halo_migrate.verify`.
    pub verify: Option<bool>,
    /// `--revertible`; None leaves it to `halo_migrate.revertible`.
    pub revertible: Option<bool>,
    /// `--revert-window`; None leaves it to `halo_migrate.revert_window`.
    pub revert_window: Option<String>,
    /// `--version NAME`, `--up`, `--down`: a versioned migration's.
    pub version: Option<String>,
    pub up: Option<String>,
    pub down: Option<String>,
}

impl Settings {
    /// Any of the settings `migrate.throttle()` changes.
    pub fn throttles(&self) -> bool {
        self.batch_rows.is_some()
            || self.batch_pause.is_some()
            || self.target_batch_time.is_some()
            || self.max_replica_lag.is_some()
    }
}

/// What to do, decided from the flags alone.
#[derive(Debug, PartialEq)]
pub enum Action {
    Plan {
        table: String,
        alter: String,
    },
    Execute {
        table: String,
        alter: String,
        finish: bool,
    },
    Finish {
        table: String,
    },
    Abort {
        table: String,
    },
    Status {
        table: Option<String>,
    },
    Pause {
        table: String,
    },
    Resume {
        table: String,
    },
    Revert {
        table: String,
    },
    Forget {
        table: String,
    },
    Throttle {
        table: String,
    },
}

/// An interval for the server; a bare number means milliseconds, as in
/// PostgreSQL's own `lock_timeout` (a bare '100'::interval is 100 seconds).
pub fn interval(s: &str) -> String {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        format!("{t}ms")
    } else {
        t.to_string()
    }
}

impl Args {
    pub fn conn(&self) -> ConnOpts {
        ConnOpts {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
            dbname: self.dbname.clone(),
            prompt_password: self.prompt_password,
            no_password: self.no_password,
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            lock_timeout: self.lock_timeout.as_deref().map(interval),
            batch_rows: self.batch_rows,
            batch_pause: self.batch_pause.as_deref().map(interval),
            target_batch_time: self.target_batch_time.as_deref().map(interval),
            max_replica_lag: self.max_replica_lag.as_deref().map(interval),
            verify: self.verify.then_some(true),
            revertible: self.revertible.then_some(true),
            revert_window: self.revert_window.as_deref().map(interval),
            version: self.schema_version.clone().filter(|v| !v.is_empty()),
            up: self.up.clone(),
            down: self.down.clone(),
        }
    }

    pub fn action(&self) -> Result<Action> {
        let table = || {
            self.table
                .clone()
                .ok_or_else(|| Failure::usage("--table is required"))
        };
        let acting = self.finish
            || self.abort
            || self.status
            || self.pause
            || self.resume
            || self.revert
            || self.forget;
        if acting && !self.alter.is_empty() {
            return Err(Failure::usage(
                "--alter starts a migration; it cannot be combined with --finish, --abort, --status, --pause, --resume, --revert or --forget",
            ));
        }
        if acting && self.execute {
            return Err(Failure::usage(
                "--execute goes with --alter, not with --finish, --abort, --status, --pause, --resume, --revert or --forget",
            ));
        }
        if self.abort_on_interrupt && !self.execute && !self.finish {
            return Err(Failure::usage(
                "--abort-on-interrupt goes with --execute or --finish",
            ));
        }
        let versioned = self
            .schema_version
            .as_deref()
            .is_some_and(|v| !v.is_empty());
        if versioned && self.alter.is_empty() {
            return Err(Failure::usage(
                "--version=NAME makes a migration versioned: it goes with --alter (a dry run; add --execute to run it)",
            ));
        }
        if self.up.is_some() && !versioned {
            return Err(Failure::usage("--up goes with --version=NAME"));
        }
        if self.down.is_some() && !versioned && !self.revertible {
            return Err(Failure::usage(
                "--down goes with --version=NAME or --revertible",
            ));
        }
        if versioned && (self.revertible || self.verify) {
            return Err(Failure::usage(
                "--version=NAME changes the table in place at its contract: it cannot be combined with --revertible or --verify",
            ));
        }
        if self.alter.iter().any(|a| a.trim().is_empty()) {
            return Err(Failure::usage("--alter must not be empty"));
        }
        let alter = self.alter.join(", ");
        Ok(if self.status {
            Action::Status {
                table: self.table.clone(),
            }
        } else if self.finish {
            Action::Finish { table: table()? }
        } else if self.abort {
            Action::Abort { table: table()? }
        } else if self.pause {
            Action::Pause { table: table()? }
        } else if self.resume {
            Action::Resume { table: table()? }
        } else if self.revert {
            Action::Revert { table: table()? }
        } else if self.forget {
            Action::Forget { table: table()? }
        } else if !self.alter.is_empty() {
            if self.execute {
                Action::Execute {
                    table: table()?,
                    alter,
                    // A versioned migration stops once expanded: the
                    // contract waits for the application (--finish).
                    finish: !self.no_finish && !versioned,
                }
            } else {
                Action::Plan {
                    table: table()?,
                    alter,
                }
            }
        } else if self.settings().throttles() {
            Action::Throttle { table: table()? }
        } else if self.execute {
            return Err(Failure::usage("--execute needs --alter"));
        } else {
            return Err(Failure::usage(
                "nothing to do: give --table and --alter (a dry run; add --execute to run it), or one of --status, --finish, --abort, --pause, --resume",
            ));
        }
        .checked(self)?)
    }
}

impl Action {
    /// Settings only make sense where they are passed on.
    fn checked(self, args: &Args) -> Result<Action> {
        let s = args.settings();
        let ok = match &self {
            Action::Execute { .. } | Action::Plan { .. } => true,
            Action::Throttle { .. } | Action::Resume { .. } => s.lock_timeout.is_none(),
            _ => !s.throttles() && s.lock_timeout.is_none(),
        };
        if ok {
            Ok(self)
        } else {
            Err(Failure::usage(
                "--lock-timeout goes with --execute; --batch-rows, --batch-pause, --target-batch-time and --max-replica-lag go with --execute, --resume or alone (to throttle a running migration)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(argv: &[&str]) -> Result<Action> {
        let mut full = vec!["halo_migrate"];
        full.extend(argv);
        Args::try_parse_from(full).expect("parses").action()
    }

    #[test]
    fn dry_run_is_the_default() {
        assert_eq!(
            action(&[
                "-t",
                "t",
                "-a",
                "ADD COLUMN x int",
                "--alter",
                "DROP COLUMN y"
            ])
            .unwrap(),
            Action::Plan {
                table: "t".into(),
                alter: "ADD COLUMN x int, DROP COLUMN y".into()
            }
        );
        assert_eq!(
            action(&[
                "--table=t",
                "--alter=DROP COLUMN y",
                "--execute",
                "--no-finish"
            ])
            .unwrap(),
            Action::Execute {
                table: "t".into(),
                alter: "DROP COLUMN y".into(),
                finish: false
            }
        );
    }

    #[test]
    fn actions_and_throttling() {
        assert_eq!(
            action(&["--status"]).unwrap(),
            Action::Status { table: None }
        );
        assert_eq!(
            action(&["-t", "t", "--abort"]).unwrap(),
            Action::Abort { table: "t".into() }
        );
        assert_eq!(
            action(&["-t", "t", "--batch-pause", "50"]).unwrap(),
            Action::Throttle { table: "t".into() }
        );
        assert_eq!(
            action(&["-t", "t", "--resume", "--batch-rows", "500"]).unwrap(),
            Action::Resume { table: "t".into() }
        );
    }

    #[test]
    fn nonsense_is_refused_before_connecting() {
        for argv in [
            &[][..],
            &["--execute"],
            &["-t", "t"],
            &["--finish"],
            &["-t", "t", "-a", "x", "--finish"],
            &["-t", "t", "--status", "--execute"],
            &["-t", "t", "--pause", "--batch-rows", "5"],
            &["-t", "t", "--abort", "--lock-timeout", "5"],
            &["-t", "t", "-a", " "],
            &["-t", "t", "--status", "--abort-on-interrupt"],
        ] {
            let r = action(argv);
            assert!(
                r.as_ref()
                    .is_err_and(|f| f.code == crate::exit::code::USAGE),
                "{argv:?}: {r:?}"
            );
        }
        let mut full = vec!["halo_migrate", "-t", "t", "--finish", "--abort"];
        assert!(Args::try_parse_from(&full).is_err(), "two actions");
        full = vec!["halo_migrate", "-t", "t", "-a", "x", "--no-finish"];
        assert!(
            Args::try_parse_from(&full).is_err(),
            "--no-finish without --execute"
        );
    }

    #[test]
    fn bare_numbers_are_milliseconds() {
        assert_eq!(interval("100"), "100ms");
        assert_eq!(interval(" 2s "), "2s");
        assert_eq!(interval("1 minute"), "1 minute");
    }
}
