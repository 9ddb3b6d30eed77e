//! Planner decisions, without a server: the probe outcomes and catalog facts
//! are given, as PostgreSQL would report them.

use super::*;

pub(super) fn facts() -> TableFacts {
    TableFacts {
        oid: 16384,
        namespace: 2200,
        schema: "public".into(),
        name: "accounts".into(),
        columns: vec![
            Column {
                name: "id".into(),
                not_null: true,
            },
            Column {
                name: "email".into(),
                not_null: false,
            },
        ],
        unlogged: false,
        replay_key: Some(vec!["id".into()]),
        constraints: vec!["accounts_pkey".into(), "positive".into()],
        indexes: vec!["accounts_pkey".into(), "accounts_email_idx".into()],
        triggers: vec!["audit".into()],
        rules: vec![],
        parent: None,
        children: 0,
        is_partition: false,
        row_security_applies: false,
        schema_create: true,
        leaves: None,
        partition_keys: vec![],
    }
}

pub(super) fn cmd(text: &str, kind: CmdKind, lock: LockMode) -> Subcommand {
    Subcommand {
        text: text.into(),
        kind,
        lock,
    }
}

pub(super) fn spec(
    contype: ConstraintType,
    columns: &[&str],
    clause_offset: usize,
) -> ConstraintSpec {
    ConstraintSpec::new(
        contype,
        columns.iter().map(|c| c.to_string()).collect(),
        clause_offset,
    )
}

/// Locks as PostgreSQL computes them for the statements the planner generates.
fn lock_of(sql: &str) -> Result<LockMode> {
    Ok(if sql.contains("VALIDATE") {
        LockMode::ShareUpdateExclusive
    } else if sql.contains("FOREIGN KEY") {
        LockMode::ShareRowExclusive
    } else {
        LockMode::AccessExclusive
    })
}

pub(super) fn plan(
    facts: &TableFacts,
    cmds: &[Subcommand],
    probes: &[Option<ProbeOutcome>],
) -> Result<Vec<Step>> {
    let taken = |n: &str| Ok(n == "accounts_email_key");
    let oracle = Oracle {
        constraint_taken: &taken,
        relation_taken: &taken,
        relation_taken_in: &|_, n| taken(n),
        constraint_taken_in: &|_, n| taken(n),
        lock_of: &lock_of,
    };
    build_plan(facts, cmds, probes, &oracle, None)
}

pub(super) fn catalog_only() -> Option<ProbeOutcome> {
    Some(ProbeOutcome::default())
}

#[test]
fn catalog_only_change_is_instant() {
    let c = cmd(
        "ALTER COLUMN email TYPE varchar(100)",
        CmdKind::AlterColumnType {
            column: "email".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].strategy, Strategy::Instant);
    assert_eq!(
        steps[0].sql,
        "ALTER TABLE public.accounts ALTER COLUMN email TYPE varchar(100)"
    );
    assert_eq!(steps[0].lock, Some(LockMode::AccessExclusive));
    assert!(!steps[0].rewrites);
}

#[test]
fn a_rewrite_goes_through_capture_shadow_copy_and_swap() {
    let c = cmd(
        "ALTER COLUMN id TYPE bigint",
        CmdKind::AlterColumnType {
            column: "id".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let probe = Some(ProbeOutcome {
        rewrote_table: true,
        built_indexes: vec!["accounts_pkey".into()],
        scanned: true,
        created_indexes: vec![],
    });
    let steps = plan(&facts(), &[c], &[probe]).unwrap();
    let strategies: Vec<_> = steps.iter().map(|s| s.strategy).collect();
    assert_eq!(strategies, [Strategy::Rewrite; 4]);
    assert!(steps[0]
        .sql
        .starts_with("CREATE TRIGGER halo_capture_16384"));
    assert_eq!(
        steps[1].sql,
        "ALTER TABLE migrate.shadow_16384 ALTER COLUMN id TYPE bigint"
    );
    assert!(steps[1].rewrites);
    assert_eq!(
        steps[1].lock, None,
        "the ALTER itself only touches the shadow"
    );
    assert_eq!(steps[3].lock, Some(LockMode::AccessExclusive));
}

#[test]
fn index_build_or_full_scan_under_a_write_blocking_lock_is_never_instant() {
    let c = cmd(
        "ADD COLUMN u int UNIQUE",
        CmdKind::AddColumn {
            column: "u".into(),
            inline_foreign_key: false,
        },
        LockMode::AccessExclusive,
    );
    let built = Some(ProbeOutcome {
        rewrote_table: false,
        built_indexes: vec!["accounts_u_key".into()],
        scanned: true,
        created_indexes: vec![],
    });
    let steps = plan(&facts(), &[c.clone()], &[built]).unwrap();
    assert!(steps.iter().all(|s| s.strategy == Strategy::Rewrite));
    assert!(steps[1].reason.contains("accounts_u_key"));

    let scanned = Some(ProbeOutcome {
        scanned: true,
        created_indexes: vec![],
        ..Default::default()
    });
    let steps = plan(&facts(), &[c], &[scanned]).unwrap();
    assert!(steps[1].reason.contains("read the whole table"));

    // A scan under a lock that lets writes through is fine.
    let c = cmd(
        "SET (fillfactor = 70)",
        CmdKind::Other,
        LockMode::ShareUpdateExclusive,
    );
    let steps = plan(
        &facts(),
        &[c],
        &[Some(ProbeOutcome {
            scanned: true,
            created_indexes: vec![],
            ..Default::default()
        })],
    )
    .unwrap();
    assert_eq!(steps[0].strategy, Strategy::Instant);
}

#[test]
fn check_constraint_is_added_not_valid_then_validated_under_its_postgres_name() {
    let c = cmd(
        "ADD CHECK (email <> '')",
        CmdKind::AddConstraint(spec(ConstraintType::Check, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].strategy, Strategy::TwoPhase);
    assert_eq!(steps[0].sql, "ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_check CHECK (email <> '') NOT VALID");
    assert_eq!(
        steps[1].sql,
        "ALTER TABLE public.accounts VALIDATE CONSTRAINT accounts_email_check"
    );
    assert_eq!(steps[1].lock, Some(LockMode::ShareUpdateExclusive));
}

#[test]
fn not_valid_constraint_is_instant() {
    let mut s = spec(ConstraintType::ForeignKey, &["email"], 4);
    s.not_valid = true;
    let c = cmd(
        "ADD FOREIGN KEY (email) REFERENCES users (email) NOT VALID",
        CmdKind::AddConstraint(s),
        LockMode::ShareRowExclusive,
    );
    let steps = plan(&facts(), &[c], &[None]).unwrap();
    assert_eq!(steps[0].strategy, Strategy::Instant);
}

#[test]
fn foreign_key_is_two_phase_and_named_like_postgres() {
    let c = cmd(
        "ADD FOREIGN KEY (email) REFERENCES users (email)",
        CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 4)),
        LockMode::ShareRowExclusive,
    );
    let steps = plan(&facts(), &[c], &[None]).unwrap();
    assert_eq!(
        steps[0].sql,
        "ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_fkey FOREIGN KEY (email) REFERENCES users (email) NOT VALID"
    );
    assert_eq!(steps[0].lock, Some(LockMode::ShareRowExclusive));
    assert!(steps[0].reason.contains("referenced table"));
}

#[test]
fn set_not_null_uses_a_validated_check_unless_already_not_null() {
    let c = cmd(
        "ALTER COLUMN email SET NOT NULL",
        CmdKind::SetNotNull {
            column: "email".into(),
        },
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s.strategy == Strategy::TwoPhase));
    assert!(steps[0].sql.contains("CHECK (email IS NOT NULL) NOT VALID"));
    assert_eq!(
        steps[2].sql,
        "ALTER TABLE public.accounts ALTER COLUMN email SET NOT NULL"
    );

    let c = cmd(
        "ALTER COLUMN id SET NOT NULL",
        CmdKind::SetNotNull {
            column: "id".into(),
        },
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].strategy, Strategy::Instant);
}

#[test]
fn unique_constraint_is_built_concurrently_with_a_free_name() {
    let c = cmd(
        "ADD UNIQUE (email)",
        CmdKind::AddConstraint(spec(ConstraintType::Unique, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 2);
    // accounts_email_key is taken, so PostgreSQL's loop goes on to accounts_email_key1
    assert_eq!(
        steps[0].sql,
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_email_key1 ON public.accounts (email)"
    );
    assert_eq!(steps[0].lock, Some(LockMode::ShareUpdateExclusive));
    assert_eq!(
        steps[1].sql,
        "ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_key1 UNIQUE USING INDEX accounts_email_key1"
    );
}

#[test]
fn primary_key_on_nullable_columns_sets_not_null_online_first() {
    let mut f = facts();
    f.constraints.retain(|c| c != "accounts_pkey");
    let c = cmd(
        "ADD PRIMARY KEY (email)",
        CmdKind::AddConstraint(spec(ConstraintType::PrimaryKey, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    let steps = plan(&f, &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps.len(), 6);
    assert!(steps[0].sql.contains("CHECK (email IS NOT NULL) NOT VALID"));
    assert_eq!(
        steps[4].sql,
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_pkey ON public.accounts (email)"
    );
    assert!(steps[5]
        .sql
        .ends_with("PRIMARY KEY USING INDEX accounts_pkey"));
}

#[test]
fn rewrite_folds_other_subcommands_into_the_shadow_and_adds_foreign_keys_after_the_swap() {
    let cmds = [
        cmd(
            "ALTER COLUMN id TYPE bigint",
            CmdKind::AlterColumnType {
                column: "id".into(),
                using: None,
                using_columns: vec![],
            },
            LockMode::AccessExclusive,
        ),
        cmd(
            "ADD CHECK (email <> '')",
            CmdKind::AddConstraint(spec(ConstraintType::Check, &["email"], 4)),
            LockMode::AccessExclusive,
        ),
        cmd(
            "ADD FOREIGN KEY (email) REFERENCES users (email)",
            CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 4)),
            LockMode::ShareRowExclusive,
        ),
    ];
    let rewrite = Some(ProbeOutcome {
        rewrote_table: true,
        ..Default::default()
    });
    let steps = plan(&facts(), &cmds, &[rewrite, catalog_only(), None]).unwrap();
    let sqls: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    // Unnamed constraints get the name PostgreSQL would give them on the
    // table, so the shadow and the table agree after the swap.
    assert_eq!(
        sqls[2],
        "ALTER TABLE migrate.shadow_16384 ADD CONSTRAINT accounts_email_check CHECK (email <> '')"
    );
    assert_eq!(
        steps[2].stage,
        Stage::Shadow("ADD CONSTRAINT accounts_email_check CHECK (email <> '')".into())
    );
    assert_eq!(
        (&steps[5].stage, &steps[6].stage),
        (&Stage::AtSwap, &Stage::AfterSwap)
    );
    assert!(sqls[4].starts_with("LOCK TABLE"));
    assert!(sqls[5].contains("FOREIGN KEY (email) REFERENCES users (email) NOT VALID"));
    assert!(sqls[6].contains("VALIDATE CONSTRAINT accounts_email_fkey"));
    assert_eq!(steps.len(), 7);
}

#[test]
fn a_rewrite_needs_a_replay_key() {
    let mut f = facts();
    f.replay_key = None;
    let c = cmd(
        "ALTER COLUMN id TYPE bigint",
        CmdKind::AlterColumnType {
            column: "id".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let err = plan(
        &f,
        &[c.clone()],
        &[Some(ProbeOutcome {
            rewrote_table: true,
            ..Default::default()
        })],
    )
    .unwrap_err();
    assert!(matches!(err, MigrateError::NoKey { .. }));
    // ...but an instant change does not
    assert!(plan(&f, &[c], &[catalog_only()]).is_ok());
}

#[test]
fn named_objects_must_exist_or_be_created_earlier_in_the_same_alter() {
    let drop = |name: &str, missing_ok| {
        cmd(
            &format!("DROP CONSTRAINT {name}"),
            CmdKind::NamesObject {
                kind: ObjectKind::Constraint,
                name: name.into(),
                missing_ok,
            },
            LockMode::AccessExclusive,
        )
    };
    assert!(plan(&facts(), &[drop("positive", false)], &[None]).is_ok());
    let err = plan(&facts(), &[drop("nope", false)], &[None]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "constraint \"nope\" of table \"accounts\" does not exist"
    );
    assert!(plan(&facts(), &[drop("nope", true)], &[None]).is_ok());

    let mut s = spec(ConstraintType::Check, &["email"], 4);
    s.name = Some("fresh".into());
    s.not_valid = true;
    let add = cmd(
        "ADD CONSTRAINT fresh CHECK (email <> '') NOT VALID",
        CmdKind::AddConstraint(s),
        LockMode::AccessExclusive,
    );
    let validate = cmd(
        "VALIDATE CONSTRAINT fresh",
        CmdKind::ValidateConstraint {
            name: "fresh".into(),
        },
        LockMode::ShareUpdateExclusive,
    );
    let steps = plan(&facts(), &[add, validate], &[catalog_only(), None]).unwrap();
    assert_eq!(steps[1].strategy, Strategy::TwoPhase);
}

#[test]
fn exclusion_constraints_and_inline_foreign_keys() {
    let c = cmd(
        "ADD EXCLUDE USING gist (email WITH =)",
        CmdKind::AddConstraint(spec(ConstraintType::Exclusion, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    let steps = plan(&facts(), &[c], &[catalog_only()]).unwrap();
    assert_eq!(steps[1].strategy, Strategy::Rewrite);

    let c = cmd(
        "ADD COLUMN owner int REFERENCES users",
        CmdKind::AddColumn {
            column: "owner".into(),
            inline_foreign_key: true,
        },
        LockMode::AccessExclusive,
    );
    let err = plan(&facts(), &[c], &[None]).unwrap_err();
    assert_eq!(
        err.sqlstate(),
        pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED
    );
}

#[test]
fn probe_statements_never_touch_other_tables() {
    let fk = cmd(
        "ADD FOREIGN KEY (email) REFERENCES users (email)",
        CmdKind::AddConstraint(spec(ConstraintType::ForeignKey, &["email"], 4)),
        LockMode::ShareRowExclusive,
    );
    assert_eq!(probe_statement(&fk), None);
    let check = cmd(
        "ADD CHECK (email <> '')",
        CmdKind::AddConstraint(spec(ConstraintType::Check, &["email"], 4)),
        LockMode::AccessExclusive,
    );
    assert_eq!(
        probe_statement(&check).as_deref(),
        Some("ADD CHECK (email <> '') NOT VALID")
    );
    let link = cmd("INHERIT parent", CmdKind::Link, LockMode::AccessExclusive);
    assert_eq!(probe_statement(&link), None);
}

#[test]
fn inheritance_and_row_security_refuse_what_would_not_be_online() {
    let retype = |col: &str| {
        cmd(
            &format!("ALTER COLUMN {col} TYPE bigint"),
            CmdKind::AlterColumnType {
                column: col.into(),
                using: None,
                using_columns: vec![],
            },
            LockMode::AccessExclusive,
        )
    };
    let rewrite = Some(ProbeOutcome {
        rewrote_table: true,
        built_indexes: vec![],
        scanned: true,
        created_indexes: vec![],
    });
    let code = |r: Result<Vec<Step>>| r.unwrap_err().sqlstate();
    let parent = TableFacts {
        children: 2,
        ..facts()
    };
    // A type change on a parent, even one the clone finds catalog-only.
    let e = plan(&parent, &[retype("email")], &[catalog_only()]).unwrap_err();
    assert_eq!(
        e.sqlstate(),
        pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED
    );
    assert!(e.detail().unwrap().contains("2 child table(s)"), "{e:?}");
    // Any rewrite of a parent.
    let add = cmd(
        "ADD COLUMN r float8 DEFAULT random()",
        CmdKind::AddColumn {
            column: "r".into(),
            inline_foreign_key: false,
        },
        LockMode::AccessExclusive,
    );
    assert_eq!(
        code(plan(&parent, &[add.clone()], &[rewrite.clone()])),
        pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED
    );
    // A catalog-only change of a parent is still instant.
    let steps = plan(&parent, &[add.clone()], &[catalog_only()]).unwrap();
    assert_eq!(steps[0].strategy, Strategy::Instant);
    // A rewrite of a child.
    let child = TableFacts {
        parent: Some("public.base".into()),
        ..facts()
    };
    let e = plan(&child, &[retype("id")], &[rewrite.clone()]).unwrap_err();
    assert!(
        e.detail().unwrap().contains("inherits from public.base"),
        "{e:?}"
    );
    // A rewrite the table's policies would filter; instant changes are fine.
    let filtered = TableFacts {
        row_security_applies: true,
        ..facts()
    };
    assert_eq!(
        code(plan(&filtered, &[retype("id")], &[rewrite])),
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
    );
    assert!(plan(&filtered, &[add], &[catalog_only()]).is_ok());
}

#[test]
fn a_new_index_needs_create_on_the_schema_as_alter_would() {
    let add_unique = cmd(
        "ADD UNIQUE (email)",
        CmdKind::AddConstraint(spec(ConstraintType::Unique, &["email"], 4)),
        LockMode::Share,
    );
    let probe = Some(ProbeOutcome {
        rewrote_table: false,
        built_indexes: vec!["accounts_email_key1".into()],
        scanned: true,
        created_indexes: vec!["accounts_email_key1".into()],
    });
    let no_create = TableFacts {
        schema_create: false,
        ..facts()
    };
    let e = plan(&no_create, &[add_unique.clone()], &[probe.clone()]).unwrap_err();
    assert_eq!(e.to_string(), "permission denied for schema public");
    assert_eq!(
        e.sqlstate(),
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
    );
    assert!(plan(&facts(), &[add_unique], &[probe]).is_ok());
    // Rebuilding an existing index (a type change) creates nothing new.
    let retype = cmd(
        "ALTER COLUMN email TYPE text",
        CmdKind::AlterColumnType {
            column: "email".into(),
            using: None,
            using_columns: vec![],
        },
        LockMode::AccessExclusive,
    );
    let rebuilt = Some(ProbeOutcome {
        rewrote_table: true,
        built_indexes: vec!["a_renamed_clone_index".into()],
        scanned: true,
        created_indexes: vec![],
    });
    assert!(plan(&no_create, &[retype], &[rebuilt]).is_ok());
}
