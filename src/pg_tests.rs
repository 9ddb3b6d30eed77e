//! In-server tests (`#[pg_test]`): each runs inside one transaction that is
//! rolled back, so they cover what needs a backend but no commit — the
//! parser, the probe, the catalog reads and `migrate.plan()` end to end.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::plan::model::*;
    use crate::plan::parse::parse_alter;
    use pgrx::prelude::*;

    /// (strategy, sql, lock, rewrites) of every step of `migrate.plan(tbl, alter)`.
    fn plan(tbl: &str, alter: &str) -> Vec<(String, String, Option<String>, bool)> {
        Spi::connect(|c| {
            c.select(
                "SELECT strategy, sql, lock, rewrites FROM migrate.plan($1::regclass, $2) ORDER BY step",
                None,
                &[tbl.into(), alter.into()],
            )
            .unwrap()
            .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap(), r.get(4).unwrap().unwrap()))
            .collect()
        })
    }

    fn strategies(tbl: &str, alter: &str) -> Vec<String> {
        plan(tbl, alter).into_iter().map(|s| s.0).collect()
    }

    fn setup() {
        Spi::run(
            "CREATE TABLE acc (id int PRIMARY KEY, email varchar(50), n int, note text);
             CREATE INDEX acc_email_idx ON acc (email);
             INSERT INTO acc SELECT g, 'u' || g, g FROM generate_series(1, 100) g;",
        )
        .unwrap();
    }

    #[pg_test]
    fn parser_splits_and_models_subcommands() {
        let cmds = parse_alter("ALTER COLUMN n TYPE numeric(10,2), ADD CONSTRAINT c CHECK (n > 0 AND note <> 'a,b'), DROP COLUMN note").unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].text, "ALTER COLUMN n TYPE numeric(10,2)");
        assert_eq!(
            cmds[0].kind,
            CmdKind::AlterColumnType {
                column: "n".into(),
                using: None,
                using_columns: vec![]
            }
        );
        assert_eq!(cmds[0].lock, LockMode::AccessExclusive);
        let CmdKind::AddConstraint(spec) = &cmds[1].kind else {
            panic!("{:?}", cmds[1].kind)
        };
        assert_eq!(spec.contype, ConstraintType::Check);
        assert_eq!(spec.name.as_deref(), Some("c"));
        assert_eq!(spec.columns, ["n", "note"]);
        assert_eq!(
            &cmds[1].text[spec.clause_offset..spec.clause_offset + 10],
            "CONSTRAINT"
        );
        assert_eq!(
            cmds[2].kind,
            CmdKind::DropColumn {
                column: "note".into(),
                cascade: false,
            }
        );
        let cmds = parse_alter("ALTER COLUMN n TYPE bigint USING (n * 100 + m)::bigint").unwrap();
        assert_eq!(
            cmds[0].kind,
            CmdKind::AlterColumnType {
                column: "n".into(),
                using: Some("(n * 100 + m)::bigint".into()),
                using_columns: vec!["n".into(), "m".into()]
            }
        );
    }

    #[pg_test]
    fn parser_reports_postgres_locks() {
        let cmds = parse_alter(
            "SET (fillfactor = 70), VALIDATE CONSTRAINT x, ADD FOREIGN KEY (a) REFERENCES t",
        )
        .unwrap();
        assert_eq!(cmds[0].lock, LockMode::ShareUpdateExclusive);
        assert_eq!(cmds[1].lock, LockMode::ShareUpdateExclusive);
        assert_eq!(cmds[2].lock, LockMode::ShareRowExclusive);
    }

    #[pg_test]
    fn parser_refuses_anything_but_one_subcommand_list() {
        for bad in [
            "",
            "ADD COLUMN a int; DROP TABLE acc",
            "ADD COLUMN a int,",
            "SELECT 1",
            "ADD COLUMN a int)",
            "ATTACH PARTITION p DEFAULT",
        ] {
            assert!(parse_alter(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[pg_test]
    fn type_changes_are_classified_by_postgres() {
        setup();
        assert_eq!(
            strategies("acc", "ALTER COLUMN email TYPE varchar(100)"),
            ["instant"]
        );
        assert_eq!(
            strategies("acc", "ALTER COLUMN email TYPE text"),
            ["instant"]
        );
        let p = plan("acc", "ALTER COLUMN id TYPE bigint");
        assert!(p.iter().all(|s| s.0 == "rewrite"));
        assert!(p[1].3, "int -> bigint rewrites");
        assert_eq!(
            p[1].1,
            format!(
                "ALTER TABLE migrate.shadow_{} ALTER COLUMN id TYPE bigint",
                oid("acc")
            )
        );
    }

    #[pg_test]
    fn add_column_defaults_are_classified_by_volatility() {
        setup();
        assert_eq!(strategies("acc", "ADD COLUMN a int"), ["instant"]);
        assert_eq!(
            strategies("acc", "ADD COLUMN a int NOT NULL DEFAULT 0"),
            ["instant"]
        );
        assert_eq!(
            strategies("acc", "ADD COLUMN a timestamptz DEFAULT now()"),
            ["instant"]
        );
        let p = plan("acc", "ADD COLUMN a float8 DEFAULT random()");
        assert!(p[1].3 && p[1].0 == "rewrite");
        let p = plan("acc", "ADD COLUMN a int GENERATED ALWAYS AS (n * 2) STORED");
        assert!(p[1].3, "a stored generated column rewrites");
        let p = plan("acc", "ADD COLUMN u int UNIQUE");
        assert_eq!(
            p[1].0, "rewrite",
            "an inline UNIQUE builds an index under ACCESS EXCLUSIVE"
        );
    }

    #[pg_test]
    fn catalog_only_subcommands_are_instant() {
        setup();
        for alter in [
            "DROP COLUMN note",
            "ALTER COLUMN n SET DEFAULT 5",
            "ALTER COLUMN n DROP DEFAULT",
            "ALTER COLUMN email DROP NOT NULL",
            "ALTER COLUMN note SET STORAGE EXTERNAL",
            "ALTER COLUMN n SET STATISTICS 500",
            "SET (fillfactor = 70)",
            "RESET (fillfactor)",
            "RENAME COLUMN note TO notes",
            "RENAME CONSTRAINT acc_pkey TO acc_pk",
            "ENABLE ROW LEVEL SECURITY",
            "REPLICA IDENTITY FULL",
            "CLUSTER ON acc_email_idx",
            "OWNER TO CURRENT_USER",
        ] {
            let p = plan("acc", alter);
            assert_eq!(p.len(), 1, "{alter}");
            assert_eq!(p[0].0, "instant", "{alter}");
            assert!(!p[0].3, "{alter}");
        }
    }

    #[pg_test]
    fn constraints_are_two_phase_or_concurrent() {
        setup();
        let p = plan("acc", "ADD CONSTRAINT pos CHECK (n > 0)");
        assert_eq!(
            p[0].1,
            "ALTER TABLE public.acc ADD CONSTRAINT pos CHECK (n > 0) NOT VALID"
        );
        assert_eq!(p[0].2.as_deref(), Some("AccessExclusiveLock"));
        assert_eq!(p[1].1, "ALTER TABLE public.acc VALIDATE CONSTRAINT pos");
        assert_eq!(p[1].2.as_deref(), Some("ShareUpdateExclusiveLock"));
        assert_eq!(
            strategies("acc", "ALTER COLUMN email SET NOT NULL"),
            ["two-phase"; 4]
        );
        assert_eq!(
            strategies("acc", "ALTER COLUMN id SET NOT NULL"),
            ["instant"]
        );
        let p = plan("acc", "ADD UNIQUE (email)");
        assert_eq!(
            p[0].1,
            "CREATE UNIQUE INDEX CONCURRENTLY acc_email_key ON public.acc (email)"
        );
        assert_eq!(
            p[1].1,
            "ALTER TABLE public.acc ADD CONSTRAINT acc_email_key UNIQUE USING INDEX acc_email_key"
        );
    }

    #[pg_test]
    fn plan_changes_nothing() {
        setup();
        let before = catalog_fingerprint();
        let _ = plan(
            "acc",
            "ALTER COLUMN id TYPE bigint, ADD COLUMN z int DEFAULT 1, DROP COLUMN note",
        );
        let _ = plan("acc", "ADD CONSTRAINT pos CHECK (n > 0)");
        assert_eq!(before, catalog_fingerprint());
    }

    #[pg_test(error = "column \"nope\" of relation \"acc\" does not exist")]
    fn unknown_column_is_reported_by_postgres() {
        setup();
        plan("acc", "ALTER COLUMN nope TYPE int");
    }

    #[pg_test(
        error = "table \"public.acc2\" has no primary key or unique index on NOT NULL columns"
    )]
    fn rewrite_without_a_key_is_refused() {
        Spi::run("CREATE TABLE acc2 (a int)").unwrap();
        plan("acc2", "ALTER COLUMN a TYPE bigint");
    }

    #[pg_test(error = "\"public.v\" is not a table")]
    fn views_are_refused() {
        Spi::run("CREATE VIEW v AS SELECT 1 AS x").unwrap();
        plan("v", "ADD COLUMN a int");
    }

    fn oid(tbl: &str) -> u32 {
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[tbl.into()])
            .unwrap()
            .unwrap()
            .to_u32()
    }

    fn catalog_fingerprint() -> String {
        Spi::get_one::<String>(
            "SELECT string_agg(format('%s:%s:%s', c.relname, c.relfilenode, c.relnatts), ',' ORDER BY c.relname)
               || (SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace)
               || (SELECT string_agg(attname || atttypid::text, ',' ORDER BY attname) FROM pg_attribute WHERE attrelid = 'acc'::regclass)
               FROM pg_class c WHERE c.relnamespace IN ('public'::regnamespace, 'migrate'::regnamespace)",
        )
        .unwrap()
        .unwrap()
    }

    const BULK_SQL: &str = "INSERT INTO dst (id, v) SELECT o.id, o.v * 2 FROM ONLY src o
         WHERE o.ctid >= pg_catalog.format('(%s,0)', $1::bigint)::pg_catalog.tid
           AND o.ctid < pg_catalog.format('(%s,0)', $2::bigint)::pg_catalog.tid";

    fn bulk_setup() {
        Spi::run(
            "CREATE TABLE src (id int, v int);
             INSERT INTO src SELECT g, g FROM generate_series(1, 5000) g;
             CREATE TABLE dst (id int NOT NULL, v bigint, g bigint GENERATED ALWAYS AS (v + 1) STORED);",
        )
        .unwrap();
    }

    #[pg_test]
    fn bulk_copy_inserts_what_insert_would() {
        bulk_setup();
        let n = crate::engine::bulk::insert_select(BULK_SQL, &[0, 1_000_000]).unwrap();
        assert_eq!(n, Some(5000));
        // Within the block range only, and visible to the next statement.
        let n = crate::engine::bulk::insert_select(BULK_SQL, &[0, 1])
            .unwrap()
            .unwrap();
        assert!(n > 0 && n < 5000, "{n}");
        let wrong = Spi::get_one::<i64>(
            "SELECT count(*) FROM dst d JOIN src s USING (id) WHERE d.v <> s.v * 2 OR d.g <> d.v + 1",
        );
        assert_eq!(wrong, Ok(Some(0)));
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM dst"),
            Ok(Some(5000 + n as i64))
        );
    }

    #[pg_test]
    fn bulk_copy_leaves_tables_with_indexes_or_triggers_to_insert() {
        bulk_setup();
        Spi::run("CREATE INDEX dst_v ON dst (v)").unwrap();
        assert_eq!(
            crate::engine::bulk::insert_select(BULK_SQL, &[0, 1_000_000]).unwrap(),
            None
        );
        Spi::run(
            "DROP INDEX dst_v;
             CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
             CREATE TRIGGER t BEFORE INSERT ON dst FOR EACH ROW EXECUTE FUNCTION nothing();",
        )
        .unwrap();
        assert_eq!(
            crate::engine::bulk::insert_select(BULK_SQL, &[0, 1_000_000]).unwrap(),
            None
        );
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM dst"), Ok(Some(0)));
    }

    #[pg_test(
        error = "null value in column \"id\" of relation \"dst\" violates not-null constraint"
    )]
    fn bulk_copy_checks_not_null() {
        bulk_setup();
        Spi::run("UPDATE src SET id = NULL WHERE id = 4000").unwrap();
        let _ = crate::engine::bulk::insert_select(BULK_SQL, &[0, 1_000_000]);
    }
}
