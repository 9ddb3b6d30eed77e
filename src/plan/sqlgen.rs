//! SQL text generation for plan steps, and the names of the objects a
//! migration creates. Pure functions: identifiers go through `Ident`, and the
//! user's own subcommand text is only ever placed after `ALTER TABLE <name>`,
//! after it has been parsed as exactly one subcommand.

use crate::pg::ident::{ident_list, Ident, QualifiedName};
use crate::plan::model::ConstraintSpec;

/// PostgreSQL's NAMEDATALEN - 1: the longest name it keeps.
pub const MAX_IDENT_BYTES: usize = 63;

/// Objects a migration creates are named by the table's OID: short, unique.
pub fn shadow_table(oid: u32) -> QualifiedName {
    QualifiedName::new("migrate", format!("shadow_{oid}"))
}
/// The kept table's name during the swap that creates it; it then takes
/// the shadow's name, so that a revert finds it where a rewrite's shadow is.
pub fn kept_table(oid: u32) -> QualifiedName {
    QualifiedName::new("migrate", format!("kept_{oid}"))
}
/// Where a revert holds, for one replay batch, the kept values of the
/// columns it restores.
pub fn stash_table(oid: u32) -> QualifiedName {
    QualifiedName::new("migrate", format!("stash_{oid}"))
}
/// A kept index's name; its comment names the table's index it keeps.
pub fn kept_index(oid: u32, n: usize) -> String {
    format!("halo_kept_{oid}_{n}")
}
/// The name of the shadow's `n`th index, built after the copy. Never the
/// table's own index name: the shadows of tables in different schemas share
/// the schema `migrate`, and their indexes must not collide there. The swap
/// pairs indexes by definition, not by name.
pub fn shadow_index(oid: u32, n: usize) -> String {
    format!("halo_index_{oid}_{n}")
}
pub fn log_table(oid: u32) -> QualifiedName {
    QualifiedName::new("migrate", format!("log_{oid}"))
}
pub fn capture_trigger(oid: u32) -> Ident {
    Ident::new(format!("halo_capture_{oid}"))
}
pub fn capture_function(oid: u32) -> QualifiedName {
    QualifiedName::new("migrate", format!("capture_{oid}"))
}

/// PostgreSQL's `makeObjectName()`: `name1[_name2][_label]`, with name1 and
/// name2 shortened (the longer first) so the result fits in 63 bytes.
pub fn make_object_name(name1: &str, name2: Option<&str>, label: &str) -> String {
    let mut overhead = 0;
    if name2.is_some() {
        overhead += 1;
    }
    if !label.is_empty() {
        overhead += label.len() + 1;
    }
    let avail = MAX_IDENT_BYTES.saturating_sub(overhead);
    let mut n1 = name1.len();
    let mut n2 = name2.map_or(0, str::len);
    while n1 + n2 > avail {
        if n1 > n2 {
            n1 -= 1;
        } else {
            n2 -= 1;
        }
    }
    let mut out = clip(name1, n1).to_string();
    if let Some(n) = name2 {
        out.push('_');
        out.push_str(clip(n, n2));
    }
    if !label.is_empty() {
        out.push('_');
        out.push_str(label);
    }
    out
}

/// Cut to at most `bytes` bytes without splitting a character (pg_mbcliplen).
fn clip(s: &str, bytes: usize) -> &str {
    let mut end = bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// PostgreSQL's choose-a-free-name loop (`ChooseConstraintName()`,
/// `ChooseRelationName()`): `label`, then `label1`, `label2`, … until `taken` says no.
pub fn choose_name<E>(
    name1: &str,
    name2: Option<&str>,
    label: &str,
    taken: &dyn Fn(&str) -> Result<bool, E>,
) -> Result<String, E> {
    let mut pass = 0;
    loop {
        let modlabel = if pass == 0 {
            label.to_string()
        } else {
            format!("{label}{pass}")
        };
        let candidate = make_object_name(name1, name2, &modlabel);
        if !taken(&candidate)? {
            return Ok(candidate);
        }
        pass += 1;
    }
}

/// The `name2` part of a unique index's name: its key and INCLUDE columns,
/// as PostgreSQL's `ChooseIndexColumnNames` takes them.
pub fn index_columns_addition(spec: &ConstraintSpec) -> String {
    columns_addition(&[spec.columns.clone(), spec.including.clone()].concat())
}

/// The `name2` part PostgreSQL uses for index and foreign-key names: the
/// column names joined by `_`, stopping once it is long enough.
pub fn columns_addition(columns: &[String]) -> String {
    let mut out = String::new();
    for c in columns {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(c);
        if out.len() >= MAX_IDENT_BYTES {
            break;
        }
    }
    out
}

pub fn alter(table: &QualifiedName, subcommand: &str) -> String {
    format!("ALTER TABLE {table} {subcommand}")
}

/// Is `sql` an ALTER TABLE of `table` (as [`alter`] writes one)?
pub fn alters(table: &QualifiedName, sql: &str) -> bool {
    sql.starts_with(&alter(table, ""))
}

/// The user's `ADD [CONSTRAINT name] CHECK/FOREIGN KEY …` made NOT VALID and
/// given a name (the one PostgreSQL would choose) so it can be validated later.
pub fn add_not_valid(
    table: &QualifiedName,
    text: &str,
    spec: &ConstraintSpec,
    name: &str,
) -> String {
    alter(
        table,
        &format!("{} NOT VALID", name_constraint(text, spec, name)),
    )
}

/// The user's `ADD …` subcommand with `CONSTRAINT name` written in when it
/// had no name.
pub fn name_constraint(text: &str, spec: &ConstraintSpec, name: &str) -> String {
    if spec.name.is_some() {
        return text.to_string();
    }
    let (head, tail) = text.split_at(spec.clause_offset);
    format!("{head}CONSTRAINT {} {tail}", Ident::new(name))
}

pub fn validate(table: &QualifiedName, constraint: &str) -> String {
    alter(
        table,
        &format!("VALIDATE CONSTRAINT {}", Ident::new(constraint)),
    )
}

pub fn drop_constraint_if_exists(table: &QualifiedName, constraint: &str) -> String {
    alter(
        table,
        &format!("DROP CONSTRAINT IF EXISTS {}", Ident::new(constraint)),
    )
}

/// `DROP INDEX IF EXISTS` of an index in the table's schema.
/// [`drop_constraint_if_exists`] that also passes when the table itself is
/// gone (a partition dropped while its migration was under way).
pub fn drop_constraint_if_table_exists(table: &QualifiedName, constraint: &str) -> String {
    format!(
        "ALTER TABLE IF EXISTS {table} DROP CONSTRAINT IF EXISTS {}",
        Ident::new(constraint)
    )
}

pub fn drop_index_if_exists(table: &QualifiedName, index: &str) -> String {
    format!(
        "DROP INDEX IF EXISTS {}.{}",
        table.schema,
        Ident::new(index)
    )
}

pub fn drop_constraint(table: &QualifiedName, constraint: &str) -> String {
    alter(
        table,
        &format!("DROP CONSTRAINT {}", Ident::new(constraint)),
    )
}

/// The four steps of an online SET NOT NULL (PostgreSQL 12+ skips the scan
/// when a validated CHECK (col IS NOT NULL) proves it).
pub fn set_not_null_steps(table: &QualifiedName, column: &str, check_name: &str) -> [String; 4] {
    let col = Ident::new(column);
    [
        alter(
            table,
            &format!(
                "ADD CONSTRAINT {} CHECK ({col} IS NOT NULL) NOT VALID",
                Ident::new(check_name)
            ),
        ),
        validate(table, check_name),
        alter(table, &format!("ALTER COLUMN {col} SET NOT NULL")),
        drop_constraint(table, check_name),
    ]
}

/// `CREATE UNIQUE INDEX CONCURRENTLY` for a PRIMARY KEY or UNIQUE constraint.
/// How every concurrent index build we generate begins: such a statement
/// must run as a top-level command.
pub const CREATE_UNIQUE_INDEX_CONCURRENTLY: &str = "CREATE UNIQUE INDEX CONCURRENTLY";

pub fn create_unique_index_concurrently(
    table: &QualifiedName,
    spec: &ConstraintSpec,
    index: &str,
) -> String {
    let cols: Vec<Ident> = spec.columns.iter().map(Ident::new).collect();
    let mut sql = format!(
        "{CREATE_UNIQUE_INDEX_CONCURRENTLY} {} ON {table} ({})",
        Ident::new(index),
        ident_list(&cols)
    );
    if !spec.including.is_empty() {
        let inc: Vec<Ident> = spec.including.iter().map(Ident::new).collect();
        sql.push_str(&format!(" INCLUDE ({})", ident_list(&inc)));
    }
    if spec.nulls_not_distinct {
        sql.push_str(" NULLS NOT DISTINCT");
    }
    if !spec.index_options.is_empty() {
        let opts: Vec<String> = spec
            .index_options
            .iter()
            .map(|(k, v)| format!("{} = {}", Ident::new(k), literal(v)))
            .collect();
        sql.push_str(&format!(" WITH ({})", opts.join(", ")));
    }
    if let Some(ts) = &spec.index_tablespace {
        sql.push_str(&format!(" TABLESPACE {}", Ident::new(ts)));
    }
    sql
}

/// Attach a unique index built concurrently as the constraint.
pub fn add_constraint_using_index(
    table: &QualifiedName,
    spec: &ConstraintSpec,
    name: &str,
    primary: bool,
) -> String {
    let kind = if primary { "PRIMARY KEY" } else { "UNIQUE" };
    let mut sub = format!(
        "ADD CONSTRAINT {} {kind} USING INDEX {}",
        Ident::new(name),
        Ident::new(name)
    );
    if spec.deferrable {
        sub.push_str(" DEFERRABLE");
    }
    if spec.initially_deferred {
        sub.push_str(" INITIALLY DEFERRED");
    }
    alter(table, &sub)
}

/// A string literal (standard_conforming_strings).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn alters_recognises_statements_on_the_table_only() {
        let t = QualifiedName::new("public", "ev");
        assert!(alters(&t, "ALTER TABLE public.ev ADD COLUMN a int"));
        assert!(!alters(&t, "ALTER TABLE public.ev_1 ADD COLUMN a int"));
        assert!(!alters(
            &t,
            "CREATE UNIQUE INDEX CONCURRENTLY k ON public.ev (a)"
        ));
    }

    use super::*;
    use crate::plan::model::ConstraintType;

    fn spec(contype: ConstraintType, name: Option<&str>, offset: usize) -> ConstraintSpec {
        ConstraintSpec {
            name: name.map(str::to_string),
            ..ConstraintSpec::new(contype, vec![], offset)
        }
    }

    #[test]
    fn object_names_follow_postgres() {
        assert_eq!(make_object_name("accounts", None, "pkey"), "accounts_pkey");
        assert_eq!(
            make_object_name("accounts", Some("balance"), "check"),
            "accounts_balance_check"
        );
        let long = "t".repeat(70);
        let n = make_object_name(&long, Some("col"), "fkey");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_col_fkey"));
        // multi-byte characters are never split
        let wide = "é".repeat(40);
        let n = make_object_name(&wide, None, "key");
        assert!(n.len() <= 63 && n.ends_with("_key"));
    }

    #[test]
    fn choose_name_skips_taken_names() {
        let taken = |n: &str| Ok::<_, ()>(n == "t_a_check" || n == "t_a_check1");
        assert_eq!(
            choose_name("t", Some("a"), "check", &taken),
            Ok("t_a_check2".to_string())
        );
        assert_eq!(columns_addition(&["a".into(), "b".into()]), "a_b");
    }

    #[test]
    fn not_valid_keeps_the_users_text_and_adds_a_name_when_missing() {
        let t = QualifiedName::new("public", "Acc");
        let text = "ADD CHECK (a > 0)";
        let s = spec(ConstraintType::Check, None, 4);
        assert_eq!(
            add_not_valid(&t, text, &s, "Acc_a_check"),
            "ALTER TABLE public.\"Acc\" ADD CONSTRAINT \"Acc_a_check\" CHECK (a > 0) NOT VALID"
        );
        let named = spec(ConstraintType::Check, Some("pos"), 4);
        assert_eq!(
            add_not_valid(&t, "ADD CONSTRAINT pos CHECK (a > 0)", &named, "pos"),
            "ALTER TABLE public.\"Acc\" ADD CONSTRAINT pos CHECK (a > 0) NOT VALID"
        );
        assert_eq!(
            validate(&t, "pos"),
            "ALTER TABLE public.\"Acc\" VALIDATE CONSTRAINT pos"
        );
    }

    #[test]
    fn set_not_null_goes_through_a_validated_check() {
        let t = QualifiedName::new("public", "t");
        let s = set_not_null_steps(&t, "Email", "t_Email_not_null");
        assert_eq!(s[0], "ALTER TABLE public.t ADD CONSTRAINT \"t_Email_not_null\" CHECK (\"Email\" IS NOT NULL) NOT VALID");
        assert_eq!(
            s[1],
            "ALTER TABLE public.t VALIDATE CONSTRAINT \"t_Email_not_null\""
        );
        assert_eq!(
            s[2],
            "ALTER TABLE public.t ALTER COLUMN \"Email\" SET NOT NULL"
        );
        assert_eq!(
            s[3],
            "ALTER TABLE public.t DROP CONSTRAINT \"t_Email_not_null\""
        );
    }

    #[test]
    fn unique_index_sql_carries_every_index_option() {
        let t = QualifiedName::new("public", "t");
        let mut s = spec(ConstraintType::Unique, None, 4);
        s.columns = vec!["a".into(), "B".into()];
        s.including = vec!["c".into()];
        s.nulls_not_distinct = true;
        s.index_options = vec![("fillfactor".into(), "70".into())];
        s.index_tablespace = Some("fast".into());
        s.deferrable = true;
        assert_eq!(
            create_unique_index_concurrently(&t, &s, "t_a_B_key"),
            "CREATE UNIQUE INDEX CONCURRENTLY \"t_a_B_key\" ON public.t (a, \"B\") INCLUDE (c) \
             NULLS NOT DISTINCT WITH (fillfactor = '70') TABLESPACE fast"
        );
        assert_eq!(
            add_constraint_using_index(&t, &s, "t_a_B_key", false),
            "ALTER TABLE public.t ADD CONSTRAINT \"t_a_B_key\" UNIQUE USING INDEX \"t_a_B_key\" DEFERRABLE"
        );
    }

    #[test]
    fn migration_objects_are_named_by_oid() {
        assert_eq!(shadow_table(16384).to_string(), "migrate.shadow_16384");
        assert_eq!(log_table(4294967295).to_string(), "migrate.log_4294967295");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
