use super::*;

fn cols() -> Vec<BaseColumn> {
    vec![
        col("id", true, true, Some("nextval('t_id_seq'::regclass)")),
        col("name", false, false, None),
        col("legacy", true, false, None),
    ]
}

fn col(name: &str, not_null: bool, has_default: bool, default: Option<&str>) -> BaseColumn {
    BaseColumn {
        name: name.into(),
        not_null,
        has_default,
        type_sql: "integer".into(),
        default_sql: default.map(str::to_string),
    }
}

fn plan(cmds: &[VersionedCmd], up: &[(&str, &str)], down: &[(&str, &str)]) -> Result<VersionPlan> {
    let table = QualifiedName::new("public", "t");
    let columns = cols();
    let up: BTreeMap<String, String> = up
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let down: BTreeMap<String, String> = down
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    build(&Input {
        table: &table,
        columns: &columns,
        cmds,
        up: &up,
        down: &down,
        constraint_name: &|c: Option<&str>, label: &str| {
            Ok(format!(
                "t_{}_{}",
                c.unwrap_or(""),
                if label == "not_null_check" {
                    "nn"
                } else {
                    label
                }
            ))
        },
        new_column_name: &|c: &str| format!("_new_{c}"),
    })
}

#[test]
fn a_rename_is_an_alias_and_a_catalog_change_at_the_contract() {
    let p = plan(
        &[VersionedCmd::RenameColumn {
            from: "name".into(),
            to: "full_name".into(),
        }],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(p.view_columns[1], ("name".into(), "full_name".into()));
    assert!(p.expand_sql.is_empty() && p.fills.is_empty() && p.backfill.is_empty());
    assert_eq!(
        p.contract_sql,
        vec!["ALTER TABLE public.t RENAME COLUMN name TO full_name"]
    );
    assert_eq!(
        create_view("public_v2", &p.view_name, &QualifiedName::new("public", "t"), &p.view_columns),
        "CREATE VIEW public_v2.t WITH (security_invoker = true) AS SELECT id, name AS full_name, legacy FROM public.t"
    );
}

#[test]
fn renaming_onto_an_existing_column_or_a_missing_one_is_refused() {
    let e = plan(
        &[VersionedCmd::RenameColumn {
            from: "name".into(),
            to: "id".into(),
        }],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::DuplicateColumn { .. }));
    let e = plan(
        &[VersionedCmd::RenameColumn {
            from: "nope".into(),
            to: "x".into(),
        }],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::UndefinedColumn { .. }));
}

#[test]
fn a_dropped_not_null_column_needs_down() {
    let drop = [VersionedCmd::DropColumn {
        column: "legacy".into(),
        text: "DROP COLUMN legacy".into(),
    }];
    let e = plan(&drop, &[], &[]).unwrap_err();
    assert!(
        matches!(e, MigrateError::InvalidParameter { name: "down", .. }),
        "{e:?}"
    );
    let p = plan(&drop, &[], &[("legacy", "id * 2")]).unwrap();
    assert_eq!(p.view_columns.len(), 2);
    assert_eq!(
        p.fills,
        vec![Fill {
            column: "legacy".into(),
            expr: "id * 2".into(),
            side: Side::New
        }]
    );
    assert!(p.backfill.is_empty(), "old rows keep their value");
    assert_eq!(
        p.contract_sql,
        vec!["ALTER TABLE public.t DROP COLUMN legacy"]
    );
}

#[test]
fn a_not_null_column_without_default_is_added_nullable_filled_and_checked() {
    let add = [VersionedCmd::AddColumn {
        column: "score".into(),
        text: "ADD COLUMN score int NOT NULL".into(),
        nullable_text: Some("ADD COLUMN score int".into()),
        has_default: false,
    }];
    let e = plan(&add, &[], &[]).unwrap_err();
    assert!(matches!(
        e,
        MigrateError::InvalidParameter { name: "up", .. }
    ));
    let p = plan(&add, &[("score", "length(name)")], &[]).unwrap();
    assert_eq!(
        p.expand_sql,
        vec![
            "ALTER TABLE public.t ADD COLUMN score int",
            "ALTER TABLE public.t ADD CONSTRAINT t_score_nn CHECK (score IS NOT NULL) NOT VALID"
        ]
    );
    assert!(p.must_be_instant.is_empty());
    assert_eq!(p.backfill, vec!["score"]);
    assert_eq!(
        p.validate_sql,
        vec!["ALTER TABLE public.t VALIDATE CONSTRAINT t_score_nn"]
    );
    assert_eq!(
        p.contract_sql,
        vec![
            "ALTER TABLE public.t ALTER COLUMN score SET NOT NULL",
            "ALTER TABLE public.t DROP CONSTRAINT t_score_nn"
        ]
    );
    assert_eq!(
        p.undo_sql,
        vec![
            "ALTER TABLE public.t DROP COLUMN IF EXISTS score",
            "ALTER TABLE public.t DROP CONSTRAINT IF EXISTS t_score_nn"
        ]
    );
}

#[test]
fn set_not_null_checks_and_fills_from_up() {
    let p = plan(
        &[VersionedCmd::SetNotNull {
            column: "name".into(),
        }],
        &[("name", "'?'")],
        &[],
    )
    .unwrap();
    assert_eq!(p.fills[0].side, Side::Old);
    assert_eq!(p.backfill, vec!["name"]);
    assert_eq!(p.validate_sql.len(), 1);
    assert_eq!(
        p.contract_sql[0],
        "ALTER TABLE public.t ALTER COLUMN name SET NOT NULL"
    );
}

#[test]
fn unused_keys_and_other_subcommands_are_refused() {
    let e = plan(
        &[VersionedCmd::RenameColumn {
            from: "name".into(),
            to: "n".into(),
        }],
        &[("name", "1")],
        &[],
    )
    .unwrap_err();
    assert!(matches!(
        e,
        MigrateError::InvalidParameter { name: "up", .. }
    ));
    let e = plan(
        &[VersionedCmd::Unsupported {
            text: "ALTER COLUMN id TYPE bigint".into(),
        }],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::NotSupported { .. }));
}

#[test]
fn the_fill_function_reads_each_shape_by_its_names() {
    let mut p = VersionPlan::default();
    p.fills.push(Fill {
        column: "id".into(),
        expr: "key + 1".into(),
        side: Side::New,
    });
    let function = QualifiedName::new("migrate", "version_1");
    let base = [
        ("id".to_string(), "integer".to_string()),
        ("new".to_string(), "integer".to_string()),
    ];
    let f = fill_function(
        &function,
        &base,
        &[("id".into(), "key".into()), ("new".into(), "new".into())],
        &p,
    )
    .unwrap();
    assert!(
        f.starts_with("CREATE FUNCTION migrate.version_1() RETURNS trigger"),
        "{f}"
    );
    assert!(f.contains("#variable_conflict use_column"), "{f}");
    assert!(
        f.contains("\"key\" integer := halo_migrate_new_row.\"id\";"),
        "{f}"
    );
    assert!(
        f.contains("halo_migrate_new_row.\"id\" := (key + 1);"),
        "{f}"
    );
    assert!(
        f.contains("\"new\" integer := halo_migrate_new_row.\"new\";"),
        "a column named new is a variable like any other: {f}"
    );
    p.fills[0].expr = "$halo_migrate_body$".into();
    let e = fill_function(&function, &base, &[], &p).unwrap_err();
    assert!(matches!(e, MigrateError::InvalidParameter { .. }));
}

#[test]
fn a_type_change_gets_a_new_column_kept_in_step_both_ways() {
    let p = plan(
        &[VersionedCmd::AlterType {
            column: "id".into(),
            type_sql: "bigint".into(),
            using: None,
        }],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(p.view_columns[0], ("_new_id".into(), "id".into()));
    assert_eq!(
        p.syncs,
        vec![Sync {
            old: "id".into(),
            new: "_new_id".into(),
            up: "id::bigint".into(),
            down: "id::integer".into()
        }]
    );
    assert_eq!(p.backfill, vec!["_new_id"]);
    assert_eq!(
        p.contract_sql,
        vec![
            "ALTER TABLE public.t ALTER COLUMN _new_id SET NOT NULL",
            "ALTER TABLE public.t DROP CONSTRAINT t__new_id_nn",
            "ALTER TABLE public.t DROP COLUMN id",
            "ALTER TABLE public.t RENAME COLUMN _new_id TO id",
            "ALTER TABLE public.t ALTER COLUMN id SET DEFAULT (nextval('t_id_seq'::regclass))::bigint",
        ]
    );
    // USING is the default up; up and down override.
    let p = plan(
        &[VersionedCmd::AlterType {
            column: "name".into(),
            type_sql: "boolean".into(),
            using: Some("name IS NOT NULL".into()),
        }],
        &[],
        &[("name", "CASE WHEN name THEN 'yes' END")],
    )
    .unwrap();
    assert_eq!(p.syncs[0].up, "name IS NOT NULL");
    assert_eq!(p.syncs[0].down, "CASE WHEN name THEN 'yes' END");
    assert!(p.validate_sql.is_empty(), "name is nullable");
    let base = [
        ("id".to_string(), "integer".to_string()),
        ("name".to_string(), "text".to_string()),
        ("legacy".to_string(), "integer".to_string()),
        ("_new_name".to_string(), "boolean".to_string()),
    ];
    let f = fill_function(
        &QualifiedName::new("migrate", "version_1"),
        &base,
        &p.view_columns,
        &p,
    )
    .unwrap();
    assert!(
        f.contains("ELSIF halo_migrate_new_row.\"_new_name\"::text IS DISTINCT FROM halo_migrate_old_row.\"_new_name\"::text THEN"),
        "{f}"
    );
    assert!(
        f.contains("\"name\" boolean := halo_migrate_new_row.\"_new_name\";"),
        "down reads the new column as name: {f}"
    );
}

#[test]
fn the_backfill_touches_only_rows_with_a_null_to_fill_or_a_failed_check() {
    let mut p = VersionPlan::default();
    assert_eq!(backfill_batch(&QualifiedName::new("public", "t"), &p), None);
    p.backfill = vec!["a".into(), "b".into()];
    p.checks.push(CheckFill {
        constraint: "t_c_check".into(),
        column: "c".into(),
        up: "0".into(),
        expr: "c >= 0".into(),
        table_expr: "c >= 0".into(),
    });
    assert_eq!(
        backfill_batch(&QualifiedName::new("public", "t"), &p).unwrap(),
        "UPDATE public.t AS halo_migrate_t SET a = a, b = b, c = c WHERE ctid >= $1::tid AND ctid < $2::tid AND (a IS NULL OR b IS NULL OR (c >= 0) IS FALSE)"
    );
}

#[test]
fn a_check_is_added_not_valid_validated_and_mapped_by_up() {
    let spec = |name: Option<&str>| {
        let mut s = crate::plan::model::ConstraintSpec::new(
            crate::plan::model::ConstraintType::Check,
            vec!["legacy".into()],
            4,
        );
        s.name = name.map(str::to_string);
        s
    };
    let text = "ADD CHECK (legacy >= 0)".to_string();
    let p = plan(
        &[VersionedCmd::AddCheck {
            spec: spec(None),
            text: text.clone(),
        }],
        &[("legacy", "0")],
        &[],
    )
    .unwrap();
    assert_eq!(
        p.expand_sql,
        vec!["ALTER TABLE public.t ADD CONSTRAINT t_legacy_check CHECK (legacy >= 0) NOT VALID"]
    );
    assert_eq!(
        p.validate_sql,
        vec!["ALTER TABLE public.t VALIDATE CONSTRAINT t_legacy_check"]
    );
    assert!(p.contract_sql.is_empty());
    assert_eq!(p.checks[0].column, "legacy");
    let mut p = p;
    p.checks[0].expr = "(legacy >= 0)".into();
    let base = [
        ("id".to_string(), "integer".to_string()),
        ("legacy".to_string(), "integer".to_string()),
    ];
    let f = fill_function(
        &QualifiedName::new("migrate", "version_1"),
        &base,
        &p.view_columns,
        &p,
    )
    .unwrap();
    assert!(f.contains("IF ((legacy >= 0)) IS FALSE THEN"), "{f}");
    assert!(f.contains("halo_migrate_new_row.\"legacy\" := (0);"), "{f}");
    // Without up, only the constraint.
    let p = plan(
        &[VersionedCmd::AddCheck {
            spec: spec(Some("pos")),
            text,
        }],
        &[],
        &[],
    )
    .unwrap();
    assert!(p.checks.is_empty());
    assert_eq!(
        p.validate_sql,
        vec!["ALTER TABLE public.t VALIDATE CONSTRAINT pos"]
    );
}

#[test]
fn a_foreign_key_is_named_as_postgresql_names_it_and_one_column_may_be_mapped() {
    let spec = |columns: Vec<&str>| {
        crate::plan::model::ConstraintSpec::new(
            crate::plan::model::ConstraintType::ForeignKey,
            columns.into_iter().map(str::to_string).collect(),
            4,
        )
    };
    let text = "ADD FOREIGN KEY (legacy) REFERENCES owners".to_string();
    let p = plan(
        &[VersionedCmd::AddForeignKey {
            spec: spec(vec!["legacy"]),
            text: text.clone(),
        }],
        &[("legacy", "NULL")],
        &[],
    )
    .unwrap();
    assert_eq!(
        p.expand_sql,
        vec!["ALTER TABLE public.t ADD CONSTRAINT t_legacy_fkey FOREIGN KEY (legacy) REFERENCES owners NOT VALID"]
    );
    assert_eq!(
        p.validate_sql,
        vec!["ALTER TABLE public.t VALIDATE CONSTRAINT t_legacy_fkey"]
    );
    assert_eq!(p.checks[0].constraint, "t_legacy_fkey");
    let e = plan(
        &[VersionedCmd::AddForeignKey {
            spec: spec(vec!["legacy", "name"]),
            text: "ADD FOREIGN KEY (legacy, name) REFERENCES owners".into(),
        }],
        &[("legacy", "NULL")],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::NotSupported { .. }), "{e:?}");
}

#[test]
fn one_subcommand_per_column_and_no_constraint_on_a_replaced_column() {
    let e = plan(
        &[
            VersionedCmd::AlterType {
                column: "name".into(),
                type_sql: "varchar(9)".into(),
                using: None,
            },
            VersionedCmd::SetNotNull {
                column: "name".into(),
            },
        ],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::NotSupported { .. }), "{e:?}");
    let check = crate::plan::model::ConstraintSpec::new(
        crate::plan::model::ConstraintType::Check,
        vec!["name".into()],
        4,
    );
    let e = plan(
        &[
            VersionedCmd::AlterType {
                column: "name".into(),
                type_sql: "varchar(9)".into(),
                using: None,
            },
            VersionedCmd::AddCheck {
                spec: check,
                text: "ADD CHECK (name <> '')".into(),
            },
        ],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, MigrateError::NotSupported { .. }), "{e:?}");
    // A default fills the column: up for it would never apply.
    let e = plan(
        &[VersionedCmd::AddColumn {
            column: "x".into(),
            text: "ADD COLUMN x int DEFAULT 1".into(),
            nullable_text: None,
            has_default: true,
        }],
        &[("x", "2")],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(e, MigrateError::InvalidParameter { name: "up", .. }),
        "{e:?}"
    );
    // Dropping a column with a default: down would never apply.
    let e = plan(
        &[VersionedCmd::DropColumn {
            column: "id".into(),
            text: "DROP COLUMN id".into(),
        }],
        &[],
        &[("id", "1")],
    )
    .unwrap_err();
    assert!(
        matches!(e, MigrateError::InvalidParameter { name: "down", .. }),
        "{e:?}"
    );
}
