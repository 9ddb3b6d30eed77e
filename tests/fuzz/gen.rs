//! Random cases: a table shape (columns, constraints, indexes, dependents),
//! its rows, and an ALTER subcommand list PostgreSQL may accept or reject.
//!
//! Everything is derived from one seed through [`Rng`], so a case is
//! reproduced exactly from its seed, and printed as plain SQL.

/// SplitMix64: small, seedable, good enough to pick cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A column type, how its values are made from `g`, and types it may be
/// changed to (some of which fail on the data, which is the point).
struct Kind {
    sql: &'static str,
    value: &'static str,
    targets: &'static [&'static str],
    /// Its values are distinct, so a UNIQUE index fits.
    distinct: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        sql: "int",
        value: "(g % 1000)",
        targets: &[
            "bigint",
            "numeric",
            "text",
            "smallint",
            "bigint USING {c} * 2",
        ],
        distinct: false,
    },
    Kind {
        sql: "bigint",
        value: "(g * 1000)",
        targets: &["numeric(20,0)", "text", "int", "smallint"],
        distinct: true,
    },
    Kind {
        sql: "numeric(12,2)",
        value: "(g / 7.0)",
        targets: &["numeric(14,3)", "float8", "text", "numeric(4,2)"],
        distinct: true,
    },
    Kind {
        sql: "text",
        value: "md5(g::text)",
        targets: &[
            "varchar(64)",
            "varchar(8)",
            "bytea USING convert_to({c}, 'UTF8')",
            "jsonb",
            "text COLLATE \"C\"",
        ],
        distinct: true,
    },
    Kind {
        sql: "varchar(40)",
        value: "('v' || g)",
        targets: &[
            "varchar(80)",
            "text",
            "varchar(3)",
            "int USING substr({c}, 2)::int",
        ],
        distinct: true,
    },
    Kind {
        sql: "jsonb",
        value: "jsonb_build_object('g', g, 'h', g % 3)",
        targets: &["json", "text"],
        distinct: true,
    },
    Kind {
        sql: "int[]",
        value: "ARRAY[g, g + 1]",
        targets: &["bigint[]", "text"],
        distinct: true,
    },
    Kind {
        sql: "timestamp",
        value: "(timestamp '2020-01-01' + g * interval '1 minute')",
        targets: &["timestamptz", "date", "text"],
        distinct: true,
    },
    Kind {
        sql: "bytea",
        value: "decode(repeat(md5(g::text), 140), 'hex')",
        targets: &["text USING encode({c}, 'hex')"],
        distinct: true,
    },
    Kind {
        sql: "fz_mood",
        value: "(ARRAY['a', 'b', 'c'])[1 + g % 3]::fz_mood",
        targets: &["text", "int"],
        distinct: false,
    },
    Kind {
        sql: "fz_pos",
        value: "(1 + g % 50)",
        targets: &["int", "bigint"],
        distinct: false,
    },
];

/// Types and functions every case may use, in both databases.
pub const PRELUDE: &str = "
CREATE TYPE fz_mood AS ENUM ('a', 'b', 'c');
CREATE DOMAIN fz_pos AS int CHECK (VALUE > 0);
CREATE FUNCTION fz_const() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 7';
CREATE FUNCTION fz_noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TABLE fz_parent (id int PRIMARY KEY);
INSERT INTO fz_parent SELECT generate_series(0, 1000);
GRANT ALL ON fz_parent TO PUBLIC;
";

/// Copy t's rows into t_control, over the columns one may insert into
/// (generated columns are computed again).
const COPY_TO_CONTROL: &str = "DO $fz$ DECLARE cols text; BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
     WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('INSERT INTO t_control (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM t', cols, cols);
END $fz$";

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    kind: usize,
    nullable: bool,
}

/// One case: what `setup` builds (in both databases), the ALTER, and how
/// the migration runs.
#[derive(Clone, Debug)]
pub struct Case {
    pub seed: u64,
    pub id_type: &'static str,
    pub columns: Vec<Column>,
    /// Shape features, each a list of statements run after the rows exist.
    pub features: Vec<(String, Vec<String>)>,
    pub rows: i64,
    pub alter: Vec<String>,
    pub writers: usize,
    pub background: bool,
    /// Start and finish as the non-superuser owner `fz_owner`.
    pub as_owner: bool,
    /// Start with `verify => true`: every other seed, so that adding it
    /// drew nothing from the generator and left the cases as they were.
    pub verify: bool,
    /// Start with `revertible => true` and take the migration back after
    /// it is compared: every third seed, drawn from the seed alone too.
    pub revert: bool,
}

impl Case {
    pub fn generate(seed: u64) -> Case {
        let mut r = Rng::new(seed);
        let id_type = if r.chance(70) { "int" } else { "bigint" };
        let columns: Vec<Column> = (0..1 + r.below(4))
            .map(|i| Column {
                name: format!("c{i}"),
                kind: r.below(KINDS.len()),
                nullable: r.chance(50),
            })
            .collect();
        let mut case = Case {
            seed,
            id_type,
            columns,
            features: vec![],
            rows: *r.pick(&[500, 2000, 8000]),
            alter: vec![],
            writers: r.below(3),
            background: r.chance(60),
            as_owner: r.chance(25),
            verify: seed % 2 == 1,
            revert: seed % 3 == 0,
        };
        case.features = (0..r.below(5)).map(|_| case.feature(&mut r)).collect();
        case.features.sort();
        case.features.dedup_by(|a, b| a.0 == b.0);
        case.alter = (0..1 + r.below(3))
            .map(|i| case.subcommand(&mut r, i))
            .collect();
        if case.alter.iter().any(|s| s.starts_with("RENAME")) && r.chance(70) {
            case.alter.retain(|s| s.starts_with("RENAME"));
            case.alter.truncate(1);
        }
        case
    }

    fn kind(&self, c: &Column) -> &'static Kind {
        &KINDS[c.kind]
    }

    fn feature(&self, r: &mut Rng) -> (String, Vec<String>) {
        let c = r.pick(&self.columns).clone();
        let n = &c.name;
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match r.below(22) {
            0 => ("dropped column".into(), s(&["ALTER TABLE t ADD COLUMN zz int", "ALTER TABLE t DROP COLUMN zz"])),
            1 => (format!("index on {n}"), vec![format!("CREATE INDEX ON t ({n})")]),
            2 => (format!("partial index on {n}"), vec![format!("CREATE INDEX ON t (id) WHERE {n} IS NOT NULL")]),
            3 => (format!("expression index on {n}"), vec![format!("CREATE INDEX ON t (({n}::text))")]),
            4 if self.kind(&c).distinct => (format!("unique on {n}"), vec![format!("ALTER TABLE t ADD UNIQUE ({n})")]),
            5 => ("views".into(), vec![format!("CREATE VIEW t_v AS SELECT id, {n} FROM t"), "CREATE VIEW t_vv AS SELECT * FROM t_v".into()]),
            6 => ("policy".into(), s(&["ALTER TABLE t ENABLE ROW LEVEL SECURITY", "CREATE POLICY p_even ON t USING (id % 2 = 0)"])),
            7 => ("forced policy".into(), s(&["ALTER TABLE t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY", "CREATE POLICY p_even ON t USING (id % 2 = 0)"])),
            8 => ("trigger".into(), s(&["CREATE TRIGGER fz_trg BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION fz_noop()"])),
            9 => ("comments and grants".into(), vec!["COMMENT ON TABLE t IS 'fuzzed'".into(), format!("COMMENT ON COLUMN t.{n} IS 'col'"), "GRANT SELECT ON t TO fz_reader".into(), format!("GRANT UPDATE ({n}) ON t TO fz_reader")]),
            10 => ("replica identity full".into(), s(&["ALTER TABLE t REPLICA IDENTITY FULL"])),
            11 => ("publication".into(), s(&["CREATE PUBLICATION fz_pub FOR TABLE t"])),
            12 => ("incoming foreign key".into(), vec![format!("CREATE TABLE fz_child (k int PRIMARY KEY, pid {} REFERENCES t (id))", self.id_type), "INSERT INTO fz_child SELECT g, g FROM generate_series(1, 50) g".into(), "ALTER TABLE fz_child OWNER TO fz_owner".into()]),
            13 => ("outgoing foreign key".into(), s(&["ALTER TABLE t ADD COLUMN ref int REFERENCES fz_parent (id)", "UPDATE t SET ref = id % 1000"])),
            14 => ("generated column".into(), s(&["ALTER TABLE t ADD COLUMN gen bigint GENERATED ALWAYS AS (id * 2) STORED"])),
            16 => ("exclusion constraint".into(), s(&["ALTER TABLE t ADD CONSTRAINT fz_excl EXCLUDE USING btree (id WITH =)"])),
            17 if self.kind(&c).distinct => (format!("deferrable unique on {n}"), vec![format!("ALTER TABLE t ADD CONSTRAINT fz_du UNIQUE ({n}) DEFERRABLE INITIALLY DEFERRED")]),
            18 => ("rule".into(), s(&["CREATE RULE fz_rule AS ON DELETE TO t WHERE old.id < 0 DO ALSO NOTHING"])),
            19 => ("statistics object".into(), vec![format!("CREATE STATISTICS fz_st (ndistinct) ON id, {n} FROM t")]),
            20 => ("identity key".into(), s(&["ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"])),
            21 => ("tablespace".into(), s(&["ALTER TABLE t SET TABLESPACE fz_ts"])),
            _ => ("fillfactor and statistics".into(), vec!["ALTER TABLE t SET (fillfactor = 80)".into(), format!("ALTER TABLE t ALTER COLUMN {n} SET STATISTICS 500")]),
        }
    }

    fn subcommand(&self, r: &mut Rng, i: usize) -> String {
        let c = r.pick(&self.columns).clone();
        let n = &c.name;
        match r.below(14) {
            0..=3 => {
                let t = r.pick(self.kind(&c).targets).replace("{c}", n);
                format!("ALTER COLUMN {n} TYPE {t}")
            }
            4 => format!(
                "ALTER COLUMN id TYPE {}",
                if self.id_type == "int" {
                    "bigint"
                } else {
                    "numeric(20,0)"
                }
            ),
            5 => format!(
                "ADD COLUMN n{i} {}",
                r.pick(&[
                    "int",
                    "int DEFAULT 5",
                    "int NOT NULL DEFAULT 5",
                    "int DEFAULT fz_const()",
                    "text DEFAULT 'x'",
                    "int NOT NULL"
                ])
            ),
            6 => format!("DROP COLUMN {n}"),
            7 => format!("ALTER COLUMN {n} SET NOT NULL"),
            8 => format!("ALTER COLUMN {n} DROP NOT NULL"),
            9 => format!("ADD CONSTRAINT fz_chk{i} CHECK ({n} IS NOT NULL)"),
            10 if self.kind(&c).distinct => format!("ADD UNIQUE ({n})"),
            11 => format!("RENAME COLUMN {n} TO {n}_r"),
            12 => r
                .pick(&[
                    "SET (fillfactor = 70)",
                    "ALTER COLUMN nope TYPE int",
                    "ADD COLUMN id int",
                    "SET TABLESPACE fz_ts",
                    "SET TABLESPACE pg_default",
                ])
                .to_string(),
            _ => format!("ALTER COLUMN {n} SET DEFAULT NULL"),
        }
    }

    /// The statements that build the table (with its control twin when
    /// `with_control`), in the order they run.
    pub fn setup(&self, with_control: bool) -> Vec<String> {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, self.kind(c).sql))
            .collect();
        let vals: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let v = self.kind(c).value;
                if c.nullable {
                    format!("CASE WHEN g % 7 = 3 THEN NULL ELSE {v} END")
                } else {
                    v.to_string()
                }
            })
            .collect();
        let mut out = vec![
            format!(
                "CREATE TABLE t (id {} PRIMARY KEY, {})",
                self.id_type,
                cols.join(", ")
            ),
            format!(
                "INSERT INTO t SELECT g, {} FROM generate_series(1, {}) g",
                vals.join(", "),
                self.rows
            ),
        ];
        for (_, stmts) in &self.features {
            out.extend(stmts.iter().cloned());
        }
        out.push("ALTER TABLE t OWNER TO fz_owner".into());
        if with_control {
            out.push("CREATE TABLE t_control (LIKE t INCLUDING ALL)".into());
            out.push(COPY_TO_CONTROL.into());
        }
        out.push("ANALYZE t".into());
        out
    }

    pub fn alter_text(&self) -> String {
        self.alter.join(", ")
    }

    /// The case as a script a person can run.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "-- fuzz case, seed {}: {} rows, {} writers, background => {}, verify => {}, revertible => {}, as {}\n-- features: {:?}\n",
            self.seed,
            self.rows,
            self.writers,
            self.background,
            self.verify,
            self.revert,
            if self.as_owner { "fz_owner" } else { "postgres" },
            self.features.iter().map(|f| f.0.as_str()).collect::<Vec<_>>()
        );
        s.push_str(PRELUDE.trim());
        s.push('\n');
        for stmt in self.setup(false) {
            s.push_str(&format!("{stmt};\n"));
        }
        s.push_str(&format!(
            "SELECT migrate.start('t', '{}', background => {}, verify => {}, revertible => {});\nSELECT migrate.finish('t');\n{}",
            self.alter_text().replace('\'', "''"),
            self.background,
            self.verify,
            self.revert,
            if self.revert { "SELECT migrate.revert('t');\n" } else { "" }
        ));
        s
    }
}
