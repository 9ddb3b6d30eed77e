//! The one error type of halo_migrate, and its mapping to SQLSTATEs.
//!
//! Internal modules return `Result<_, MigrateError>`; only the `api` layer turns
//! an error into a PostgreSQL ERROR (with SQLSTATE, message, detail and hint),
//! through [`MigrateError::report`]. An error PostgreSQL itself raised inside one
//! of our operations (for instance while probing a subcommand on the empty
//! clone) is carried through unchanged as [`MigrateError::Postgres`], so the
//! user sees PostgreSQL's own SQLSTATE and wording, plus our context; a
//! migration's stored error is raised again as [`MigrateError::Failed`],
//! with the SQLSTATE and detail it was stored with. halo_migrate's own errors are the other
//! variants, one per failure, each with its SQLSTATE, detail and hint here.

use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::PgLogLevel;

pub type Result<T> = std::result::Result<T, MigrateError>;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{message}")]
    Syntax { message: String, detail: String },

    #[error("{what} is not supported")]
    NotSupported {
        what: String,
        detail: String,
        hint: String,
    },

    #[error("\"{table}\" is not a table")]
    WrongObjectType { table: String, kind: String },

    #[error("must be owner of table {table}")]
    NotOwner { table: String },

    #[error("cannot drop column {column} of table {table} because other objects depend on it")]
    DependentObjects {
        column: String,
        table: String,
        users: String,
    },

    /// PostgreSQL's own refusal, raised before anything is created.
    #[error("cannot alter type of a column used by a view or rule")]
    RuleUsesColumn {
        /// As PostgreSQL describes it: `rule r on table t`.
        rule: String,
        column: String,
    },

    #[error("permission denied for schema {schema}")]
    SchemaPrivilege { schema: String },

    #[error("row-level security would hide rows of table {table} from the migration")]
    RowSecurity { table: String },

    #[error("{kind} \"{name}\" of table \"{table}\" does not exist")]
    UndefinedObject {
        kind: &'static str,
        name: String,
        table: String,
    },

    #[error("column \"{column}\" of relation {table} does not exist")]
    UndefinedColumn { column: String, table: String },

    #[error("column \"{column}\" of relation {table} already exists")]
    DuplicateColumn { column: String, table: String },

    #[error("schema \"{schema}\" already exists")]
    VersionSchemaTaken { schema: String },

    #[error("migration {id} of {table} is not expanded yet")]
    NotExpanded { id: i64, table: String },

    #[error("\"{schema}\" is not a version schema of halo_migrate")]
    NoVersion { schema: String },

    #[error("version schema \"{schema}\" is in use by migration {id} of {table}")]
    VersionInUse {
        schema: String,
        id: i64,
        table: String,
    },

    #[error("table \"{table}\" has no primary key or unique index on NOT NULL columns")]
    NoKey { table: String },

    #[error("invalid value for {name}")]
    InvalidParameter {
        name: &'static str,
        detail: String,
        hint: String,
    },

    #[error("table {table} is already being migrated (migration {id}, {phase})")]
    Busy {
        table: String,
        id: i64,
        phase: &'static str,
    },

    #[error("unique constraint on partitioned table must include all partitioning columns")]
    UniqueWithoutPartitionKey { detail: String },

    #[error("unsupported {kind} constraint with partition key definition")]
    UniqueOnPartitionExpression { kind: &'static str, table: String },

    #[error("multiple primary keys for table \"{partition}\" are not allowed")]
    PartitionPrimaryKey {
        partition: String,
        existing: String,
        columns: String,
    },

    #[error("cannot alter column \"{column}\" because it is part of the partition key of relation \"{table}\"")]
    PartitionKeyType { column: String, table: String },

    #[error("{other}, in the same partition tree as {table}, is being migrated (migration {id}, {phase})")]
    TreeBusy {
        table: String,
        other: String,
        id: i64,
        phase: String,
    },

    #[error("the swap was not committed: {holders}")]
    SnapshotsHeld { holders: String, pids: Vec<i32> },

    #[error("table {table} has no migration in progress")]
    NoMigration { table: String },

    #[error("{name} must not be NULL")]
    NullArgument { name: &'static str },

    /// An error PostgreSQL raised, passed through with its own SQLSTATE and
    /// text, plus where it happened.
    #[error("{message}")]
    Postgres {
        code: PgSqlErrorCode,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        context: String,
    },

    /// A migration that failed earlier: its stored error, raised again with
    /// its own SQLSTATE and detail.
    #[error("migration {id} of {table} failed: {error}")]
    Failed {
        id: i64,
        table: String,
        error: String,
        code: PgSqlErrorCode,
        detail: Option<String>,
        /// Its own hint as stored (None: a general one).
        hint: Option<String>,
    },

    #[error("relation with OID {oid} does not exist")]
    TableGone { oid: u32 },

    #[error("migration {id} of {table} was aborted")]
    Aborted { id: i64, table: String },

    #[error("migrate.finish() must run in a READ COMMITTED transaction")]
    FinishIsolation,

    #[error("migration {id} of {table} is still building its index CONCURRENTLY")]
    StillBuildingConcurrently { id: i64, table: String },

    #[error(
        "migration {id} of {table} runs its statements one transaction each, and has no worker"
    )]
    StatementsWithoutWorker { id: i64, table: String },

    #[error("migration {id} of {table} has no worker to build its index")]
    NoIndexWorker { id: i64, table: String },

    #[error("migrate.finish() timed out; migration {id} of {table} is still {phase}")]
    FinishTimedOut {
        id: i64,
        table: String,
        phase: &'static str,
    },

    #[error("column \"{column}\" of relation \"{relation}\" contains null values")]
    NullsFound { column: String, relation: String },

    #[error("could not lock the table to {what} in {attempts} attempts of {timeout_ms} ms")]
    LockNotAvailable {
        what: String,
        attempts: u32,
        timeout_ms: i32,
    },

    #[error("table {table} was rewritten while it was being migrated")]
    Rewritten { table: String },

    #[error("max_replica_lag needs to read standbys' replay lag")]
    ReplicaLagPrivilege,

    #[error("could not start a halo_migrate background worker")]
    NoWorkerSlot,

    #[error("the new table of {table} did not verify: {passes} passes found differences")]
    VerificationFailed {
        table: String,
        passes: i32,
        sample: String,
    },

    /// The swap of a migration with constraints validated after it stands,
    /// but a validation failed: the validation's error, and what it means.
    #[error("the table was migrated, but a constraint could not be validated: {cause}")]
    ValidationAfterSwap {
        code: PgSqlErrorCode,
        cause: String,
        detail: Option<String>,
    },

    #[error("table {table} has an open revert window (migration {id})")]
    RevertWindowOpen { table: String, id: i64 },

    #[error("table {table} has no migration that can be reverted")]
    NothingToRevert { table: String, why: String },

    #[error("the revert window of migration {id} of {table} closed at {at}")]
    RevertWindowExpired { id: i64, table: String, at: String },

    /// A row written after the swap that the old shape cannot hold.
    #[error(
        "cannot revert migration {id} of {table}: row {key} does not fit the old shape: {cause}"
    )]
    RevertRow {
        id: i64,
        table: String,
        key: String,
        cause: String,
        code: PgSqlErrorCode,
    },

    #[error("halo_migrate's SQL objects are version {installed}, but its library is {library}")]
    VersionMismatch {
        installed: String,
        library: &'static str,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl MigrateError {
    pub fn syntax(message: impl Into<String>, detail: impl Into<String>) -> Self {
        MigrateError::Syntax {
            message: message.into(),
            detail: detail.into(),
        }
    }

    pub fn not_supported(
        what: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        MigrateError::NotSupported {
            what: what.into(),
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    /// Wrap an error PostgreSQL raised, keeping its SQLSTATE and text, adding where it happened.
    pub fn from_caught(caught: CaughtError, context: impl Into<String>) -> Self {
        let report = match caught {
            CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. } => r,
        };
        MigrateError::Postgres {
            code: report.sql_error_code(),
            message: report.message().to_string(),
            detail: report.detail().map(str::to_string),
            hint: report.hint().map(str::to_string),
            context: context.into(),
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            MigrateError::Syntax { .. } => ERRCODE_SYNTAX_ERROR,
            MigrateError::NotSupported { .. } | MigrateError::RuleUsesColumn { .. } => {
                ERRCODE_FEATURE_NOT_SUPPORTED
            }
            MigrateError::WrongObjectType { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            MigrateError::NotOwner { .. }
            | MigrateError::RowSecurity { .. }
            | MigrateError::SchemaPrivilege { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            MigrateError::UndefinedObject { .. } => ERRCODE_UNDEFINED_OBJECT,
            MigrateError::UndefinedColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            MigrateError::DuplicateColumn { .. } => ERRCODE_DUPLICATE_COLUMN,
            MigrateError::VersionSchemaTaken { .. } => ERRCODE_DUPLICATE_SCHEMA,
            MigrateError::NotExpanded { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            MigrateError::NoVersion { .. } => ERRCODE_INVALID_SCHEMA_NAME,
            MigrateError::VersionInUse { .. } => ERRCODE_OBJECT_IN_USE,
            MigrateError::NoKey { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            MigrateError::NullArgument { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            MigrateError::InvalidParameter { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            MigrateError::PartitionPrimaryKey { .. } | MigrateError::PartitionKeyType { .. } => {
                ERRCODE_INVALID_TABLE_DEFINITION
            }
            MigrateError::UniqueWithoutPartitionKey { .. }
            | MigrateError::UniqueOnPartitionExpression { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            MigrateError::Busy { .. }
            | MigrateError::TreeBusy { .. }
            | MigrateError::SnapshotsHeld { .. } => ERRCODE_OBJECT_IN_USE,
            MigrateError::DependentObjects { .. } => ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            MigrateError::NoMigration { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            MigrateError::Postgres { code, .. } | MigrateError::Failed { code, .. } => *code,
            MigrateError::TableGone { .. } => ERRCODE_UNDEFINED_TABLE,
            MigrateError::Aborted { .. }
            | MigrateError::StillBuildingConcurrently { .. }
            | MigrateError::StatementsWithoutWorker { .. }
            | MigrateError::NoIndexWorker { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            MigrateError::FinishIsolation => ERRCODE_ACTIVE_SQL_TRANSACTION,
            MigrateError::FinishTimedOut { .. } => ERRCODE_QUERY_CANCELED,
            MigrateError::VerificationFailed { .. } => ERRCODE_DATA_EXCEPTION,
            MigrateError::NullsFound { .. } => ERRCODE_NOT_NULL_VIOLATION,
            MigrateError::LockNotAvailable { .. } => ERRCODE_LOCK_NOT_AVAILABLE,
            MigrateError::Rewritten { .. } => ERRCODE_OBJECT_IN_USE,
            MigrateError::ReplicaLagPrivilege => ERRCODE_INSUFFICIENT_PRIVILEGE,
            MigrateError::NoWorkerSlot => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            MigrateError::ValidationAfterSwap { code, .. }
            | MigrateError::RevertRow { code, .. } => *code,
            MigrateError::RevertWindowOpen { .. } => ERRCODE_OBJECT_IN_USE,
            MigrateError::NothingToRevert { .. } | MigrateError::RevertWindowExpired { .. } => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            MigrateError::VersionMismatch { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            MigrateError::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            MigrateError::Syntax { detail, .. }
            | MigrateError::NotSupported { detail, .. }
            | MigrateError::InvalidParameter { detail, .. }
            | MigrateError::UniqueWithoutPartitionKey { detail } => Some(detail.clone()),
            MigrateError::UniqueOnPartitionExpression { kind, table } => Some(format!(
                "{kind} constraints cannot be used when partition keys include expressions \
                 (the key of table \"{table}\" does)."
            )),
            MigrateError::PartitionPrimaryKey {
                partition,
                existing,
                columns,
            } => Some(format!(
                "Partition {partition} has primary key \"{existing}\" on ({columns}), which the new one would not attach."
            )),
            MigrateError::Busy { .. } => {
                Some("A table has at most one migration at a time.".into())
            }
            MigrateError::TreeBusy { .. } => Some(
                "A partition tree has at most one migration at a time: a partitioned table's \
                 changes its partitions too. Wait for it, or abort it first."
                    .into(),
            ),
            MigrateError::WrongObjectType { kind, .. } => Some(format!(
                "It is {kind}; halo_migrate alters ordinary tables."
            )),
            MigrateError::NotOwner { .. } => {
                Some("Only the owner of a table (or a superuser) may migrate it.".into())
            }
            MigrateError::DependentObjects { users, .. } => {
                Some(format!("{users} depend(s) on it."))
            }
            MigrateError::SchemaPrivilege { .. } => Some(
                "The ALTER creates an index, which PostgreSQL allows only to roles that may create \
                 objects in the table's schema."
                    .into(),
            ),
            MigrateError::RowSecurity { .. } => Some(
                "The table has FORCE ROW LEVEL SECURITY (or the current role is not its owner), and \
                 the current role is neither a superuser nor BYPASSRLS: the copy would read only the \
                 rows its policies let it see, and the swap would lose the others."
                    .into(),
            ),
            MigrateError::NoKey { .. } => Some(
                "Rewriting the table online copies it and replays concurrent changes by key."
                    .into(),
            ),
            MigrateError::Postgres {
                detail, context, ..
            } => Some(match detail {
                Some(d) => format!("{d}\n{context}"),
                None => context.clone(),
            }),
            MigrateError::RuleUsesColumn { rule, column } => {
                Some(format!("{rule} depends on column \"{column}\""))
            }
            MigrateError::Failed { detail, .. } => detail.clone(),
            MigrateError::TableGone { .. } => {
                Some("The table was dropped while the migration was being planned.".into())
            }
            MigrateError::FinishIsolation => Some(
                "It watches the migration's progress, which a snapshot taken once would never show."
                    .into(),
            ),
            MigrateError::StillBuildingConcurrently { .. } => Some(
                "CREATE INDEX CONCURRENTLY waits for every transaction that holds an older \
                 snapshot, this one included: a function that waited for it would wait forever."
                    .into(),
            ),
            MigrateError::StatementsWithoutWorker { .. } => Some(
                "finish() runs in one transaction: a validation there would scan the table under \
                 the lock an earlier statement of the same transaction took."
                    .into(),
            ),
            MigrateError::NoIndexWorker { .. } => Some(
                "An index built CONCURRENTLY can only be built by the background worker.".into(),
            ),
            MigrateError::FinishTimedOut { .. } => {
                Some("The migration goes on; nothing was swapped.".into())
            }
            MigrateError::NullsFound { .. } => Some("while validating SET NOT NULL".into()),
            MigrateError::VerificationFailed { sample, .. } => Some(format!(
                "Keys that differ in the last pass: {sample}. Each was copied again after the pass \
                 that found it; nothing was swapped, and the table is as it was."
            )),
            MigrateError::LockNotAvailable { what, .. } => Some(format!("while trying to {what}")),
            MigrateError::Rewritten { .. } => Some(
                "Its storage changed (VACUUM FULL, CLUSTER or a table rewrite), so the copy no \
                 longer matches it.\nwhile copying"
                    .into(),
            ),
            MigrateError::ReplicaLagPrivilege => Some(
                "pg_stat_replication shows replay_lag only to roles with the privileges of \
                 pg_read_all_stats."
                    .into(),
            ),
            MigrateError::NoWorkerSlot => Some(
                "All background worker slots are in use.\nwhile starting the migration".into(),
            ),
            MigrateError::VersionMismatch { .. } => Some(
                "The installed package and the extension in this database are of different \
                 versions (after a package upgrade and a restart, until the extension is \
                 updated). Migrations in flight wait, untouched."
                    .into(),
            ),
            MigrateError::ValidationAfterSwap { detail, .. } => Some(match detail {
                Some(d) => format!("{d}\nafter the swap"),
                None => "after the swap".into(),
            }),
            MigrateError::RevertWindowOpen { .. } => Some(
                "Its old storage is kept so that the migration can be taken back; another \
                 change would make it stale."
                    .into(),
            ),
            MigrateError::NothingToRevert { why, .. } => Some(why.clone()),
            MigrateError::RevertWindowExpired { .. } => Some(
                "The migration's worker (without one, the next migrate.step()) removes the kept \
                 table, the log and the capture trigger; migrate.forget() removes them now."
                    .into(),
            ),
            MigrateError::VersionSchemaTaken { .. } => Some(
                "It was not made by a versioned migration of halo_migrate, which names the \
                 schema of a version <table's schema>_<version>."
                    .into(),
            ),
            MigrateError::NoVersion { .. } => {
                Some("migrate.versions() lists the version schemas.".into())
            }
            MigrateError::RevertRow { .. } => Some(
                "The row was written after the swap. Nothing was reverted; the revert window is \
                 still open."
                    .into(),
            ),
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            MigrateError::Syntax { .. } => Some(
                "Pass only the subcommands that follow ALTER TABLE <name>, separated by commas, \
                 e.g. 'ALTER COLUMN id TYPE bigint, ADD COLUMN note text'."
                    .into(),
            ),
            MigrateError::NotSupported { hint, .. } | MigrateError::InvalidParameter { hint, .. } => Some(hint.clone()),
            MigrateError::Busy { table, .. } => Some(format!(
                "Watch it with SELECT * FROM migrate.status('{table}'); finish it with migrate.finish() or cancel it with migrate.abort()."
            )),
            MigrateError::NoMigration { table } => {
                Some(format!("Start one with SELECT migrate.start('{table}', '<subcommands>')."))
            }
            MigrateError::WrongObjectType { .. } => None,
            MigrateError::NotOwner { table } => Some(format!(
                "Connect as the owner of {table}, or ask its owner to run the migration."
            )),
            MigrateError::DependentObjects { .. } => Some(
                "PostgreSQL refuses this ALTER too while they exist: drop them (or change them \
                 not to use the column) first."
                    .into(),
            ),
            MigrateError::RowSecurity { table } => Some(format!(
                "Run the migration as a superuser or a role with BYPASSRLS, or lift FORCE ROW LEVEL \
                 SECURITY on {table} until it is done."
            )),
            MigrateError::NoKey { table } => Some(format!(
                "Add a primary key first, e.g. ALTER TABLE {table} ADD PRIMARY KEY (...), \
                 or a unique index on NOT NULL columns."
            )),
            MigrateError::Postgres { hint, .. } => hint.clone(),
            MigrateError::Aborted { .. } => Some("Start it again with migrate.start().".into()),
            MigrateError::Failed { hint: Some(h), .. } => Some(h.clone()),
            MigrateError::Failed { .. } => Some(
                "The table is as it was before the migration (see migrate.status()); start it \
                 again once the cause is fixed."
                    .into(),
            ),
            MigrateError::FinishIsolation => Some(
                "Call it on its own, outside an explicit REPEATABLE READ or SERIALIZABLE \
                 transaction."
                    .into(),
            ),
            MigrateError::StillBuildingConcurrently { table, .. } => Some(format!(
                "CALL migrate.wait('{}') waits for it (it commits between checks); or watch \
                 migrate.status().",
                table.replace('\'', "''")
            )),
            MigrateError::StatementsWithoutWorker { table, .. } => Some(format!(
                "Drive it with SELECT migrate.step('{}') until it is done, one call per \
                 transaction (each call runs one statement).",
                table.replace('\'', "''")
            )),
            MigrateError::NoIndexWorker { .. } => {
                Some("Run migrate.abort() and start the migration again.".into())
            }
            MigrateError::FinishTimedOut { .. } => Some(
                "Call migrate.finish() again later, or cancel it with migrate.abort().".into(),
            ),
            MigrateError::LockNotAvailable { .. } => Some(
                "Long transactions on the table hold the lock; see pg_locks, or raise lock_timeout."
                    .into(),
            ),
            MigrateError::Rewritten { .. } => Some("Start the migration again.".into()),
            MigrateError::VerificationFailed { .. } => Some(
                "A USING expression or a column default that is not deterministic (random(), \
                 now(), a sequence) gives another value at each evaluation and cannot verify: \
                 start the migration without verify. Otherwise, report it as a bug.".into(),
            ),
            MigrateError::ReplicaLagPrivilege => Some(
                "GRANT pg_read_all_stats TO the role that runs the migration.".into(),
            ),
            MigrateError::VersionMismatch { library, .. } => Some(format!(
                "Run ALTER EXTENSION halo_migrate UPDATE TO '{library}'; in this database, or \
                 install the package of the extension's version."
            )),
            MigrateError::NoWorkerSlot => Some(
                "Raise max_worker_processes, or start with background => false and drive the \
                 migration with migrate.step() (for example from pg_cron)."
                    .into(),
            ),
            MigrateError::ValidationAfterSwap { .. } => Some(
                "The constraint is in place as NOT VALID; fix the offending rows and VALIDATE it."
                    .into(),
            ),
            MigrateError::RevertWindowOpen { table, .. } => Some(format!(
                "Take the migration back with migrate.revert('{t}'), or keep it and end the \
                 window with migrate.forget('{t}'), first.",
                t = table.replace('\'', "''")
            )),
            MigrateError::NothingToRevert { .. } => Some(
                "Only a migration started with revertible => true can be reverted, until its \
                 window closes (see revertible_until in migrate.status()).".into(),
            ),
            MigrateError::NotExpanded { table, .. } => Some(format!(
                "Its backfill or validation is still running: wait for it with CALL migrate.wait('{table}') (or drive it with migrate.step() without a worker), then finish."
            )),
            MigrateError::VersionSchemaTaken { .. } => Some(
                "Choose another version name, or drop or rename that schema.".into(),
            ),
            MigrateError::VersionInUse { table, .. } => Some(format!(
                "Finish it with migrate.finish('{table}') or cancel it with migrate.abort('{table}') first."
            )),
            MigrateError::RevertRow { .. } => Some(
                "Change or delete that row (or give a down expression that maps it), then call \
                 migrate.revert() again; or keep the new shape with migrate.forget().".into(),
            ),
            _ => None,
        }
    }

    /// Raise this error as a PostgreSQL ERROR. Only the `api` layer calls this.
    pub fn report(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "halo_migrate");
        if let Some(d) = self.detail() {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint() {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// The five-character SQLSTATE of a code (PostgreSQL packs it six bits a character).
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let v = code as i32;
    (0..5)
        .map(|i| (((v >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// The inverse of [`sqlstate_text`]; `XX000` for anything malformed.
pub fn sqlstate_code(text: &str) -> PgSqlErrorCode {
    let b = text.as_bytes();
    if b.len() != 5
        || !b
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    let v = b.iter().enumerate().fold(0i32, |acc, (i, c)| {
        acc | (((*c - b'0') as i32 & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(v)
}

impl From<pgrx::spi::SpiError> for MigrateError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        MigrateError::Internal(format!("SPI: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_round_trip_as_text() {
        for code in [
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        ] {
            assert_eq!(sqlstate_code(&sqlstate_text(code)), code);
        }
        assert_eq!(
            sqlstate_text(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION),
            "23505"
        );
        assert_eq!(
            sqlstate_code("oops"),
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR
        );
    }

    #[test]
    fn a_failure_after_the_swap_keeps_its_hint_when_raised_again() {
        let e = MigrateError::ValidationAfterSwap {
            code: PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            cause: "x".into(),
            detail: None,
        };
        // Stored with its hint (state::set_failed), raised again with it.
        let stored = MigrateError::Failed {
            id: 1,
            table: "t".into(),
            error: e.to_string(),
            code: e.sqlstate(),
            detail: None,
            hint: e.hint(),
        };
        assert!(stored.hint().unwrap().contains("NOT VALID"));
    }

    #[test]
    fn every_error_has_a_sqlstate_and_user_errors_have_hints() {
        let not_owner = MigrateError::NotOwner {
            table: "public.t".into(),
        };
        assert_eq!(
            not_owner.sqlstate(),
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
        );
        assert_eq!(not_owner.to_string(), "must be owner of table public.t");
        assert!(not_owner.hint().unwrap().contains("owner"));

        let syntax = MigrateError::syntax("multiple statements", "found 2");
        assert_eq!(syntax.sqlstate(), PgSqlErrorCode::ERRCODE_SYNTAX_ERROR);
        assert_eq!(syntax.detail().as_deref(), Some("found 2"));

        let nokey = MigrateError::NoKey { table: "t".into() };
        assert_eq!(
            nokey.sqlstate(),
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        );
        assert!(nokey.hint().unwrap().contains("PRIMARY KEY"));
    }
}
