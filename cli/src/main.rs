//! `halo_migrate`: online ALTER TABLE from a shell, over the extension's SQL
//! API. A dry run unless `--execute`; see `halo_migrate --help` and
//! `doc/cli.md`.
//!
//! This file only dispatches: flags are decided in `args`, connections in
//! `connect`, server calls in `session`, following a migration in `watch`,
//! printing in `render`, exit codes in `exit`.

mod args;
mod connect;
mod exit;
mod render;
mod session;
mod tls;
mod watch;

use args::{Action, Args};
use clap::Parser;
use exit::{code, Result};

fn main() {
    let args = Args::parse();
    let status = match run(&args) {
        Ok(()) => code::OK,
        Err(f) => {
            eprintln!("{f}");
            f.code
        }
    };
    std::process::exit(status);
}

fn run(args: &Args) -> Result<()> {
    if args.schema_version.as_deref() == Some("") && (args.execute || !args.alter.is_empty()) {
        return Err(exit::Failure::usage(
            "--version takes a name with --alter (--version=v2); alone it prints the program's version",
        ));
    }
    if args.schema_version.as_deref() == Some("") {
        // --version without a name: the program's version, as -V.
        println!("halo_migrate {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let action = args.action()?;
    let interrupted = watch::interrupt_flag();
    let (mut c, target) = connect::connect(&args.conn())?;
    session::check_extension(&mut c)?;
    let settings = args.settings();
    let say = |s: &str| {
        if !args.quiet {
            print!("{s}")
        }
    };
    let watch = |table: &str, finish: bool| watch::Watch {
        table: table.to_string(),
        finish,
        abort_on_interrupt: args.abort_on_interrupt,
        blockers: args.blockers.clone(),
        quiet: args.quiet,
        conn_flags: conn_flags(args),
    };
    match action {
        Action::Status { table } => {
            let table = match table {
                Some(t) => Some(session::check_table(&mut c, &t)?),
                None => None,
            };
            print!(
                "{}",
                render::status_table(&session::status(&mut c, table.as_deref())?)
            );
        }
        Action::Plan { table, alter } if settings.version.is_some() => {
            let table = session::check_table(&mut c, &table)?;
            println!(
                "Versioned migration {} of {table}:",
                settings.version.as_deref().unwrap_or_default()
            );
            for (i, (phase, what)) in session::plan_version(&mut c, &table, &alter, &settings)?
                .iter()
                .enumerate()
            {
                println!("{:>3}. {phase:<9} {what}", i + 1);
            }
            println!("\nDry run: nothing was changed. Add --execute to carry it out.");
        }
        Action::Plan { table, alter } => {
            let table = session::check_table(&mut c, &table)?;
            let steps = session::plan(&mut c, &table, &alter, args.revertible)?;
            print!("{}", render::plan(&table, &steps));
            println!("\nDry run: nothing was changed. Add --execute to carry it out.");
        }
        Action::Execute {
            table,
            alter,
            finish,
        } => {
            let table = session::check_table(&mut c, &table)?;
            match &settings.version {
                // migrate.plan() shows how the ALTER would run at once; a
                // versioned migration expands first (doc/expand-contract.md).
                Some(v) => say(&format!(
                    "Versioned migration {v}: the table keeps its shape; the new one is served by the version schema's views.\n"
                )),
                None => say(&render::plan(
                    &table,
                    &session::plan(&mut c, &table, &alter, args.revertible)?,
                )),
            }
            say("\n");
            let id = session::start(&mut c, &table, &alter, &settings)?;
            if settings.throttles() {
                session::throttle(&mut c, &table, &settings)?;
            }
            say(&format!("Started migration {id} of {table}.\n"));
            let mut mon = connect::connect_again(&target)?;
            let summary = watch::follow(&watch(&table, finish), c, &mut mon, &interrupted)?;
            println!("{summary}");
        }
        Action::Finish { table } => {
            let table = session::check_table(&mut c, &table)?;
            let mut mon = connect::connect_again(&target)?;
            let summary = watch::follow(&watch(&table, true), c, &mut mon, &interrupted)?;
            println!("{summary}");
        }
        Action::Abort { table } => {
            let table = session::check_table(&mut c, &table)?;
            session::text(
                &mut c,
                "SELECT migrate.abort($1::text::regclass)::text",
                &[&table],
                "aborting",
            )?;
            println!("The migration of {table} was aborted; the table is as it was.");
        }
        Action::Pause { table } => {
            let table = session::check_table(&mut c, &table)?;
            println!(
                "{}",
                session::text(
                    &mut c,
                    "SELECT migrate.pause($1::text::regclass)",
                    &[&table],
                    "pausing"
                )?
            );
        }
        Action::Resume { table } => {
            let table = session::check_table(&mut c, &table)?;
            println!(
                "{}",
                session::text(
                    &mut c,
                    "SELECT migrate.resume($1::text::regclass)",
                    &[&table],
                    "resuming"
                )?
            );
            if settings.throttles() {
                println!("{}", session::throttle(&mut c, &table, &settings)?);
            }
        }
        Action::Revert { table } => {
            let table = session::check_table(&mut c, &table)?;
            say(&format!(
                "{}\n",
                session::text(
                    &mut c,
                    "SELECT migrate.revert($1::text::regclass, background => true)",
                    &[&table],
                    "reverting"
                )?
            ));
            let mut mon = connect::connect_again(&target)?;
            let summary = watch::follow(&watch(&table, true), c, &mut mon, &interrupted)?;
            println!("{summary}");
        }
        Action::Forget { table } => {
            let table = session::check_table(&mut c, &table)?;
            println!(
                "{}",
                session::text(
                    &mut c,
                    "SELECT migrate.forget($1::text::regclass)",
                    &[&table],
                    "forgetting"
                )?
            );
        }
        Action::Throttle { table } => {
            let table = session::check_table(&mut c, &table)?;
            println!("{}", session::throttle(&mut c, &table, &settings)?);
        }
    }
    Ok(())
}

/// The connection flags as given, to repeat them in follow-up commands.
fn conn_flags(a: &Args) -> String {
    let mut out = String::new();
    let mut add = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            out += &format!(" {flag} {}", watch::shell_quote(&v));
        }
    };
    add("-h", a.host.clone());
    add("-p", a.port.map(|p| p.to_string()));
    add("-U", a.username.clone());
    add("-d", a.dbname.clone());
    out
}
