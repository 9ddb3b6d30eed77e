//! Planning for partitioned tables, without a server.

use crate::plan::model::*;
use crate::plan::tests::{catalog_only, cmd, facts, plan, spec};

/// `accounts`, partitioned: a leaf in its own schema and one elsewhere.
fn tree() -> TableFacts {
    TableFacts {
        leaves: Some(vec![
            Leaf {
                oid: 20001,
                namespace: 2200,
                schema: "public".into(),
                name: "accounts_1".into(),
                ..Leaf::default()
            },
            Leaf {
                oid: 20002,
                namespace: 30000,
                schema: "archive".into(),
                name: "accounts_old".into(),
                ..Leaf::default()
            },
        ]),
        children: 2,
        ..facts()
    }
}

#[test]
fn a_unique_key_is_built_per_partition_then_attached_by_the_parent() {
    let c = cmd(
        "ADD UNIQUE (email)",
        CmdKind::AddConstraint(spec(ConstraintType::Unique, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    let steps = plan(&tree(), &[c], &[catalog_only()]).unwrap();
    let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            "CREATE UNIQUE INDEX CONCURRENTLY accounts_1_email_key ON public.accounts_1 (email)",
            "ALTER TABLE public.accounts_1 ADD CONSTRAINT accounts_1_email_key UNIQUE USING INDEX accounts_1_email_key",
            "CREATE UNIQUE INDEX CONCURRENTLY accounts_old_email_key ON archive.accounts_old (email)",
            "ALTER TABLE archive.accounts_old ADD CONSTRAINT accounts_old_email_key UNIQUE USING INDEX accounts_old_email_key",
            // accounts_email_key is taken: the parent gets PostgreSQL's next name.
            "ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_key1 UNIQUE (email)",
        ]
    );
    assert_eq!(
        steps[0].stage,
        Stage::BuildIndex("public.accounts_1_email_key".into())
    );
    assert_eq!(
        steps[2].undo,
        Undo::Sql("DROP INDEX IF EXISTS archive.accounts_old_email_key".into())
    );
    assert_eq!(
        steps[4].undo,
        Undo::Sql(
            "ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS accounts_email_key1".into()
        )
    );
    assert!(steps.iter().all(|s| !s.rewrites));
}

#[test]
fn a_partition_index_name_that_is_taken_in_its_schema_gets_the_next_one() {
    let c = cmd(
        "ADD PRIMARY KEY (id)",
        CmdKind::AddConstraint(spec(ConstraintType::PrimaryKey, &["id"], 4)),
        LockMode::AccessExclusive,
    );
    let mut f = tree();
    f.constraints.retain(|c| c != "accounts_pkey");
    let taken = |ns: u32, n: &str| Ok(ns == 30000 && n == "accounts_old_pkey");
    let oracle = crate::plan::Oracle {
        constraint_taken: &|_| Ok(false),
        relation_taken: &|_| Ok(false),
        relation_taken_in: &taken,
        constraint_taken_in: &|_, _| Ok(false),
        lock_of: &|_| Ok(LockMode::AccessExclusive),
    };
    let steps = crate::plan::build_plan(&f, &[c], &[catalog_only()], &oracle, None).unwrap();
    assert!(steps[0]
        .sql
        .starts_with("CREATE UNIQUE INDEX CONCURRENTLY accounts_1_pkey ON public.accounts_1"));
    assert!(steps[2].sql.starts_with(
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_old_pkey1 ON archive.accounts_old"
    ));
    assert!(steps[3]
        .sql
        .ends_with("PRIMARY KEY USING INDEX accounts_old_pkey1"));
    assert_eq!(
        steps[4].sql,
        "ALTER TABLE public.accounts ADD CONSTRAINT accounts_pkey PRIMARY KEY (id)"
    );
}

#[test]
fn a_foreign_key_is_validated_per_partition_then_attached_by_the_parent() {
    let c = cmd(
        "ADD FOREIGN KEY (email) REFERENCES people (email)",
        CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 4)),
        LockMode::ShareRowExclusive,
    );
    let steps = plan(&tree(), &[c], &[None]).unwrap();
    let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            "ALTER TABLE public.accounts_1 ADD CONSTRAINT accounts_email_fkey FOREIGN KEY (email) REFERENCES people (email) NOT VALID",
            "ALTER TABLE public.accounts_1 VALIDATE CONSTRAINT accounts_email_fkey",
            "ALTER TABLE archive.accounts_old ADD CONSTRAINT accounts_email_fkey FOREIGN KEY (email) REFERENCES people (email) NOT VALID",
            "ALTER TABLE archive.accounts_old VALIDATE CONSTRAINT accounts_email_fkey",
            "ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_fkey FOREIGN KEY (email) REFERENCES people (email)",
        ]
    );
    assert_eq!(steps[1].lock, Some(LockMode::ShareUpdateExclusive));
    assert!(steps.iter().all(|s| s.strategy == Strategy::TwoPhase));
}

#[test]
fn a_check_and_not_null_recurse_from_the_parent() {
    let c = cmd(
        "ALTER COLUMN email SET NOT NULL",
        CmdKind::SetNotNull {
            column: "email".into(),
        },
        LockMode::AccessExclusive,
    );
    let steps = plan(&tree(), &[c], &[None]).unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps
        .iter()
        .all(|s| s.sql.starts_with("ALTER TABLE public.accounts ")));
}

#[test]
fn a_type_change_or_rewrite_of_a_tree_is_a_rewrite_of_every_partition() {
    let retype = || {
        cmd(
            "ALTER COLUMN email TYPE varchar(100)",
            CmdKind::AlterColumnType {
                column: "email".into(),
                using: None,
                using_columns: vec![],
            },
            LockMode::AccessExclusive,
        )
    };
    // Catalog-only on the empty clone, yet copied: partitions may have
    // indexes of their own on the column.
    let steps = plan(&tree(), &[retype()], &[catalog_only()]).unwrap();
    assert!(steps.iter().all(|s| s.strategy == Strategy::Rewrite));
    assert!(steps.iter().any(|s| s.stage == Stage::Copy));
    let shadow = steps
        .iter()
        .find(|s| matches!(s.stage, Stage::Shadow(_)))
        .unwrap();
    assert!(
        shadow.reason.contains("every partition"),
        "{}",
        shadow.reason
    );

    let add = cmd(
        "ADD COLUMN n float DEFAULT random()",
        CmdKind::AddColumn {
            column: "n".into(),
            inline_foreign_key: false,
        },
        LockMode::AccessExclusive,
    );
    let rewrote = Some(ProbeOutcome {
        rewrote_table: true,
        ..ProbeOutcome::default()
    });
    let steps = plan(&tree(), &[add], &[rewrote]).unwrap();
    assert!(steps.iter().any(|s| s.stage == Stage::Copy));

    // A column of a partition key, at any level, keeps its type.
    let mut f = tree();
    f.partition_keys = vec![PartitionKey {
        table: "accounts_1".into(),
        columns: vec!["email".into()],
        expressions: false,
    }];
    let e = plan(&f, &[retype()], &[catalog_only()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot alter column \"email\" because it is part of the partition key of relation \"accounts_1\""
    );
    assert_eq!(
        e.sqlstate(),
        pgrx::PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION
    );
}

#[test]
fn a_partition_is_not_rewritten_on_its_own() {
    let f = TableFacts {
        parent: Some("accounts".into()),
        is_partition: true,
        ..facts()
    };
    let retype = cmd(
        "ALTER COLUMN id TYPE bigint",
        CmdKind::AlterColumnType {
            column: "id".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let rewrote = Some(ProbeOutcome {
        rewrote_table: true,
        ..ProbeOutcome::default()
    });
    let e = plan(&f, &[retype], &[rewrote]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rewriting one partition of a partitioned table is not supported"
    );
}

fn add_unique() -> Subcommand {
    cmd(
        "ADD UNIQUE (email)",
        CmdKind::AddConstraint(spec(ConstraintType::Unique, &["email"], 4)),
        LockMode::AccessExclusive,
    )
}

fn key(name: &str, primary: bool, columns: &[&str], attachable: bool) -> LeafKey {
    LeafKey {
        name: name.into(),
        primary,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        attachable,
        ..LeafKey::default()
    }
}

#[test]
fn a_partition_whose_key_the_parent_attaches_gets_no_build() {
    let mut f = tree();
    f.leaves.as_mut().unwrap()[1]
        .keys
        .push(key("old_email", false, &["email"], true));
    let steps = plan(&f, &[add_unique()], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 3, "{steps:#?}");
    assert!(steps.iter().all(|s| !s.sql.contains("accounts_old")));
    // Not attachable (another operator class, say): built like the others.
    let mut f = tree();
    f.leaves.as_mut().unwrap()[1]
        .keys
        .push(key("old_email", false, &["email"], false));
    assert_eq!(
        plan(&f, &[add_unique()], &[catalog_only()]).unwrap().len(),
        5
    );
}

#[test]
fn a_partition_with_another_primary_key_is_refused_before_any_build() {
    let mut f = tree();
    f.constraints.retain(|c| c != "accounts_pkey");
    f.leaves.as_mut().unwrap()[1]
        .keys
        .push(key("accounts_old_pkey", true, &["id", "email"], true));
    let c = cmd(
        "ADD PRIMARY KEY (id)",
        CmdKind::AddConstraint(spec(ConstraintType::PrimaryKey, &["id"], 4)),
        LockMode::AccessExclusive,
    );
    let e = plan(&f, &[c], &[catalog_only()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "multiple primary keys for table \"archive.accounts_old\" are not allowed"
    );
    assert_eq!(
        e.sqlstate(),
        pgrx::PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION
    );
}

#[test]
fn a_foreign_key_name_taken_on_a_partition_gets_the_next_free_one() {
    let fk = || {
        cmd(
            "ADD FOREIGN KEY (email) REFERENCES people (email)",
            CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 4)),
            LockMode::ShareRowExclusive,
        )
    };
    let mut f = tree();
    f.leaves.as_mut().unwrap()[0].constraints = vec!["accounts_email_fkey".into()];
    let steps = plan(&f, &[fk()], &[None]).unwrap();
    assert!(
        steps[0]
            .sql
            .contains("ADD CONSTRAINT accounts_1_email_fkey FOREIGN KEY"),
        "{}",
        steps[0].sql
    );
    assert!(
        steps[2]
            .sql
            .contains("ADD CONSTRAINT accounts_email_fkey FOREIGN KEY"),
        "{}",
        steps[2].sql
    );
    // One on the same columns already: refused, whatever it references.
    let mut f = tree();
    f.leaves.as_mut().unwrap()[1].foreign_keys = vec![("mine".into(), vec!["email".into()])];
    let e = plan(&f, &[fk()], &[None]).unwrap_err();
    assert!(e
        .detail()
        .unwrap()
        .contains("archive.accounts_old already has foreign key \"mine\""));
}

#[test]
fn a_unique_key_must_hold_every_level_of_partition_key() {
    let mut f = tree();
    f.partition_keys = vec![
        PartitionKey {
            table: "accounts".into(),
            columns: vec!["email".into()],
            expressions: false,
        },
        PartitionKey {
            table: "accounts_2".into(),
            columns: vec!["id".into()],
            expressions: false,
        },
    ];
    let e = plan(&f, &[add_unique()], &[catalog_only()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unique constraint on partitioned table must include all partitioning columns"
    );
    assert!(e
        .detail()
        .unwrap()
        .contains("table \"accounts_2\" lacks column \"id\""));
}

#[test]
fn a_partition_key_differing_only_in_deferrability_is_refused() {
    let mut f = tree();
    f.leaves.as_mut().unwrap()[1].keys.push(LeafKey {
        deferrable: true,
        ..key("old_email", false, &["email"], true)
    });
    let e = plan(&f, &[add_unique()], &[catalog_only()]).unwrap_err();
    assert!(
        e.to_string().contains("differs only in deferrability"),
        "{e}"
    );
}

#[test]
fn a_partition_key_with_expressions_is_refused_with_postgres_words() {
    let mut f = tree();
    f.partition_keys = vec![PartitionKey {
        table: "accounts".into(),
        columns: vec![],
        expressions: true,
    }];
    let e = plan(&f, &[add_unique()], &[catalog_only()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported UNIQUE constraint with partition key definition"
    );
}

#[test]
fn a_tree_rewrite_refuses_a_foreign_key_and_keys_by_expression_below_the_root() {
    let retype = cmd(
        "ALTER COLUMN email TYPE varchar(100)",
        CmdKind::AlterColumnType {
            column: "email".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let fk = cmd(
        "ADD FOREIGN KEY (email) REFERENCES owners (email)",
        CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 0)),
        LockMode::ShareRowExclusive,
    );
    let e = plan(&tree(), &[retype.clone(), fk], &[catalog_only(), None]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "adding a foreign key together with a rewrite of a partitioned table is not supported"
    );

    let mut f = tree();
    // The root's key comes first; a partition below it is partitioned by
    // an expression.
    f.partition_keys = vec![
        PartitionKey {
            table: "accounts".into(),
            columns: vec!["id".into()],
            expressions: false,
        },
        PartitionKey {
            table: "accounts_1".into(),
            columns: vec![],
            expressions: true,
        },
    ];
    let e = plan(&f, &[retype], &[catalog_only()]).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("changing a column's type in a tree partitioned by an expression"));
}
