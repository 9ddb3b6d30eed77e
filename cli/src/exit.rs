//! What can go wrong, and the exit code each outcome gets.
//!
//! Scripts branch on the exit code, so each class of failure has its own and
//! the codes never change meaning (they are listed in `doc/cli.md`). Server
//! errors keep PostgreSQL's message, detail and hint, printed as psql does.

use std::fmt;

/// The exit codes, one per outcome a script may want to tell apart.
pub mod code {
    pub const OK: i32 = 0;
    /// The migration (or another server call) failed.
    pub const FAILED: i32 = 1;
    /// Bad command-line usage (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    pub const CANNOT_CONNECT: i32 = 3;
    pub const NO_EXTENSION: i32 = 4;
    pub const NO_TABLE: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 6;
    /// Ctrl-C: the migration was left running (or aborted, if asked).
    pub const INTERRUPTED: i32 = 130;
}

/// A failure, with the text to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(code::USAGE, message)
            .hint("Run halo_migrate --help for the options and examples.")
    }

    /// A server error: its SQLSTATE picks the exit code.
    pub fn from_db(context: &str, err: &postgres::Error) -> Failure {
        let Some(db) = err.as_db_error() else {
            // Not an error the server sent: the connection went away.
            return Failure::new(code::CANNOT_CONNECT, format!("{context}: {err}"));
        };
        Failure {
            code: exit_code_for_sqlstate(db.code().code()),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }
}

/// The exit code of a server error, by its SQLSTATE.
pub fn exit_code_for_sqlstate(sqlstate: &str) -> i32 {
    match sqlstate {
        // insufficient_privilege
        "42501" => code::PERMISSION_DENIED,
        // undefined_table, invalid_schema_name, invalid_name
        "42P01" | "3F000" | "42602" => code::NO_TABLE,
        // invalid_authorization_specification, invalid_password, cannot_connect_now,
        // too_many_connections, invalid_catalog_name (no such database)
        "28000" | "28P01" | "57P03" | "53300" | "3D000" => code::CANNOT_CONNECT,
        _ => code::FAILED,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "halo_migrate: error: {}", self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL:  {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT:  {h}")?;
        }
        Ok(())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_pick_distinct_codes() {
        assert_eq!(exit_code_for_sqlstate("42501"), code::PERMISSION_DENIED);
        assert_eq!(exit_code_for_sqlstate("42P01"), code::NO_TABLE);
        assert_eq!(exit_code_for_sqlstate("3D000"), code::CANNOT_CONNECT);
        assert_eq!(exit_code_for_sqlstate("22P02"), code::FAILED);
        let all = [
            code::OK,
            code::FAILED,
            code::USAGE,
            code::CANNOT_CONNECT,
            code::NO_EXTENSION,
            code::NO_TABLE,
            code::PERMISSION_DENIED,
            code::INTERRUPTED,
        ];
        let mut sorted = all.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
    }

    #[test]
    fn prints_like_psql() {
        let mut f = Failure::new(1, "boom");
        f.detail = Some("row 3".into());
        let f = f.hint("fix it");
        assert_eq!(
            f.to_string(),
            "halo_migrate: error: boom\nDETAIL:  row 3\nHINT:  fix it"
        );
    }
}
