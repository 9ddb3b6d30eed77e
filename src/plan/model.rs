//! The planner's view of a table and of an ALTER: plain Rust data, filled from
//! the parse tree (`parse.rs`), the catalogs (`catalog.rs`) and the empty-clone
//! probe (`probe.rs`), so that every planning decision is a pure function.

use std::fmt;

/// PostgreSQL's table-level lock modes, in strength order (lock.h numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockMode {
    AccessShare = 1,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl LockMode {
    pub fn from_pg(mode: i32) -> Option<Self> {
        use LockMode::*;
        [
            AccessShare,
            RowShare,
            RowExclusive,
            ShareUpdateExclusive,
            Share,
            ShareRowExclusive,
            Exclusive,
            AccessExclusive,
        ]
        .into_iter()
        .find(|m| *m as i32 == mode)
    }

    /// The name PostgreSQL uses (pg_locks.mode, GetLockmodeName()).
    pub fn name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "AccessShareLock",
            LockMode::RowShare => "RowShareLock",
            LockMode::RowExclusive => "RowExclusiveLock",
            LockMode::ShareUpdateExclusive => "ShareUpdateExclusiveLock",
            LockMode::Share => "ShareLock",
            LockMode::ShareRowExclusive => "ShareRowExclusiveLock",
            LockMode::Exclusive => "ExclusiveLock",
            LockMode::AccessExclusive => "AccessExclusiveLock",
        }
    }

    /// The mode as `LOCK TABLE … IN <mode> MODE` spells it.
    pub fn sql_name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Whether holding this lock stops INSERT/UPDATE/DELETE (which take RowExclusiveLock).
    pub fn blocks_writes(self) -> bool {
        self >= LockMode::Share
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstraintType {
    Check,
    ForeignKey,
    PrimaryKey,
    Unique,
    Exclusion,
}

/// An `ADD [CONSTRAINT name] …` subcommand, as far as planning needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstraintSpec {
    pub contype: ConstraintType,
    pub name: Option<String>,
    /// NOT VALID was written (CHECK and FOREIGN KEY only).
    pub not_valid: bool,
    /// `… USING INDEX idx` (PRIMARY KEY and UNIQUE only).
    pub using_index: Option<String>,
    /// Key columns (PRIMARY KEY, UNIQUE) or referencing columns (FOREIGN KEY).
    pub columns: Vec<String>,
    pub including: Vec<String>,
    /// Storage parameters of the index, `WITH (name = value)`.
    pub index_options: Vec<(String, String)>,
    pub index_tablespace: Option<String>,
    pub nulls_not_distinct: bool,
    pub deferrable: bool,
    pub initially_deferred: bool,
    /// Byte offset in the subcommand text where the constraint clause begins
    /// (`CONSTRAINT name …` or, unnamed, `CHECK …`/`FOREIGN KEY …`).
    pub clause_offset: usize,
}

#[cfg(test)]
impl ConstraintSpec {
    /// Test fixture: an unnamed, immediately-validated constraint with no index options.
    pub fn new(contype: ConstraintType, columns: Vec<String>, clause_offset: usize) -> Self {
        ConstraintSpec {
            contype,
            name: None,
            not_valid: false,
            using_index: None,
            columns,
            including: vec![],
            index_options: vec![],
            index_tablespace: None,
            nulls_not_distinct: false,
            deferrable: false,
            initially_deferred: false,
            clause_offset,
        }
    }
}

/// The kinds of object a subcommand can name without defining it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Constraint,
    Index,
    Trigger,
    Rule,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Constraint => "constraint",
            ObjectKind::Index => "index",
            ObjectKind::Trigger => "trigger",
            ObjectKind::Rule => "rule",
        }
    }
}

/// What a subcommand does, in the terms the planner decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdKind {
    AddColumn {
        column: String,
        inline_foreign_key: bool,
    },
    /// `using` is the text of the USING expression, if any, and
    /// `using_columns` the columns it reads (the copy evaluates it per row).
    AlterColumnType {
        column: String,
        using: Option<String>,
        using_columns: Vec<String>,
    },
    DropColumn {
        column: String,
        /// `DROP COLUMN … CASCADE`: PostgreSQL drops what depends on it.
        cascade: bool,
    },
    SetNotNull {
        column: String,
    },
    AddConstraint(ConstraintSpec),
    ValidateConstraint {
        name: String,
    },
    /// Names an existing object (DROP/ALTER CONSTRAINT, CLUSTER ON, REPLICA
    /// IDENTITY USING INDEX, ENABLE TRIGGER, …). PostgreSQL never rewrites the
    /// table for these, and they cannot be tried on the clone, which lacks the object.
    NamesObject {
        kind: ObjectKind,
        name: String,
        missing_ok: bool,
    },
    /// INHERIT / NO INHERIT / OF / NOT OF: catalog links to another object.
    Link,
    /// `SET SCHEMA` (its own statement kind; cannot be combined).
    SetSchema {
        schema: String,
    },
    /// `SET LOGGED` / `SET UNLOGGED`: PostgreSQL refuses these on a temporary
    /// table, so the probe uses a permanent clone for them.
    SetPersistence,
    /// `RENAME …` (its own statement kind; cannot be combined).
    Rename {
        new_table_name: Option<String>,
    },
    /// Everything else: the probe on the empty clone decides.
    Other,
}

/// One parsed subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subcommand {
    /// As the user wrote it.
    pub text: String,
    pub kind: CmdKind,
    /// The lock PostgreSQL takes for it (AlterTableGetLockLevel()).
    pub lock: LockMode,
}

/// What applying a subcommand to an empty clone of the table did, read from
/// PostgreSQL itself: relfilenodes before and after, and the transaction's scan counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub rewrote_table: bool,
    /// Indexes built or rebuilt (new storage).
    pub built_indexes: Vec<String>,
    /// The table was read in full (a verification scan or an index build).
    pub scanned: bool,
    /// Indexes that did not exist before (by name): the subcommand creates
    /// an index, rather than rebuilding one.
    pub created_indexes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub not_null: bool,
}

/// The catalog facts about the table that planning needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFacts {
    pub oid: u32,
    /// OID of the table's schema.
    pub namespace: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub unlogged: bool,
    /// The key replay uses: the primary key, else a unique index on NOT NULL columns.
    pub replay_key: Option<Vec<String>>,
    pub constraints: Vec<String>,
    pub indexes: Vec<String>,
    pub triggers: Vec<String>,
    pub rules: Vec<String>,
    /// Legacy inheritance (or partition) links: the parent this table
    /// inherits from, if any, and how many tables inherit from it.
    pub parent: Option<String>,
    pub children: i64,
    /// The parent link is declarative partitioning (`PARTITION OF`).
    pub is_partition: bool,
    /// Row-level security would filter this table's rows for the current
    /// role (`row_security_active()`: enabled, and FORCEd or not the owner,
    /// and no BYPASSRLS).
    pub row_security_applies: bool,
    /// The current role may create objects in the table's schema, which
    /// PostgreSQL requires of whoever creates an index there.
    pub schema_create: bool,
    /// A partitioned table: the partitions that hold its rows (the leaves
    /// of the tree, sub-partitions included; not the partitioned tables in
    /// between). `None` for an ordinary table.
    pub leaves: Option<Vec<Leaf>>,
    /// A partitioned table: the keys of every partitioned table in its
    /// tree, itself first.
    pub partition_keys: Vec<PartitionKey>,
}

/// A partition that holds rows: what per-partition statements need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaf {
    pub oid: u32,
    /// OID of the partition's schema.
    pub namespace: u32,
    pub schema: String,
    pub name: String,
    /// The names of its constraints.
    pub constraints: Vec<String>,
    /// Its PRIMARY KEY and UNIQUE constraints.
    pub keys: Vec<LeafKey>,
    /// Its foreign keys not attached to one of the parent's: name, columns.
    pub foreign_keys: Vec<(String, Vec<String>)>,
}

/// A partition's PRIMARY KEY or UNIQUE constraint, as the parent's ADD of
/// the same key would see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafKey {
    pub name: String,
    pub primary: bool,
    pub columns: Vec<String>,
    pub including: Vec<String>,
    pub nulls_not_distinct: bool,
    pub deferrable: bool,
    pub initially_deferred: bool,
    /// Not attached to a parent's key; valid; a btree on plain columns with their
    /// default operator classes and collations, no predicate: an ADD of the
    /// same key on the parent attaches it rather than building an index.
    pub attachable: bool,
}

/// The partition key of a partitioned table in the tree (the root or a
/// sub-partitioned partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionKey {
    pub table: String,
    pub columns: Vec<String>,
    /// The key has expressions.
    pub expressions: bool,
}

impl TableFacts {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Instant,
    TwoPhase,
    Concurrent,
    Rewrite,
    /// An expand/contract migration (`start(version => …)`).
    Versioned,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Instant => "instant",
            Strategy::TwoPhase => "two-phase",
            Strategy::Concurrent => "concurrent",
            Strategy::Rewrite => "rewrite",
            Strategy::Versioned => "versioned",
        }
    }

    /// The strategy of this name (as stored in `migrate.migrations`).
    pub fn parse(name: &str) -> Option<Strategy> {
        [
            Strategy::Instant,
            Strategy::TwoPhase,
            Strategy::Concurrent,
            Strategy::Rewrite,
            Strategy::Versioned,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// How a step of a plan run statement by statement is taken back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// Nothing to take back (a validation; the rewrite machinery).
    Nothing,
    /// This statement takes it back.
    Sql(String),
    /// It cannot be taken back (a dropped column, a changed type): such a
    /// step may only run in one transaction with the rest of its plan.
    Irreversible,
}

/// When `migrate.start()` carries a step out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// At once, on the table itself (instant, two-phase, concurrent steps).
    Direct,
    /// Concurrent: `CREATE INDEX CONCURRENTLY` of this index (its bare
    /// name; schema-qualified on a partition), run by the background worker
    /// as a top-level command.
    BuildIndex(String),
    /// Two-phase SET NOT NULL: the validation of the helper check on this
    /// column. If it finds a NULL, the error is SET NOT NULL's own (23502).
    ValidateNotNull(String),
    /// Rewrite: install the capture trigger.
    Capture,
    /// Rewrite: this subcommand text (unnamed constraints named) is applied
    /// to the shadow table, and at the swap to the emptied table.
    Shadow(String),
    /// Rewrite: the batched copy.
    Copy,
    /// Rewrite: the swap.
    Swap,
    /// Rewrite: inside the swap transaction, after the storage swap.
    AtSwap,
    /// Rewrite: after the swap, each in its own transaction.
    AfterSwap,
    /// Revertible rewrite: the old storage kept after the swap (a note).
    Keep,
}

/// One row of `migrate.plan()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub stage: Stage,
    /// How to take this step back if a later step of the same plan fails
    /// (plans run statement by statement, so they are undone that way).
    pub undo: Undo,
    /// The user's subcommand this step serves; `None` for the rewrite machinery.
    pub subcommand: Option<String>,
    pub strategy: Strategy,
    pub sql: String,
    /// The lock taken on the table being altered; `None` when there is none.
    pub lock: Option<LockMode>,
    pub rewrites: bool,
    pub reason: String,
}
