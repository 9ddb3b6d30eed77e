//! The SQL text of versioned migrations: the version's view, the trigger
//! function that keeps the two shapes in step, and a backfill batch.
//! Pure: every identifier goes through `Ident` (or is always quoted, for
//! PL/pgSQL variables); `up`/`down` expressions are the user's own SQL,
//! checked by `parse_versioned::check_expression` to be one expression.

use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::plan::sqlgen::alter;
use crate::plan::versioned::{Side, VersionPlan};

/// `sql` (an `ALTER TABLE table …` of this plan) without its table, so that
/// it can be run later on the table under whatever name it has then.
pub fn subcommand_of<'a>(table: &QualifiedName, sql: &'a str) -> &'a str {
    sql.strip_prefix(&alter(table, "")).unwrap_or(sql)
}

/// The version schema of `schema` for `version`.
pub fn version_schema(schema: &str, version: &str) -> String {
    format!("{schema}_{version}")
}

/// The view of a table in a version schema: the table's columns, renamed
/// as `columns` says. `security_invoker`: the reader's own privileges and
/// row security apply to the table, never the view owner's.
pub fn create_view(
    schema: &str,
    view: &str,
    table: &QualifiedName,
    columns: &[(String, String)],
) -> String {
    let list = columns
        .iter()
        .map(|(b, a)| {
            if b == a {
                Ident::new(b).to_string()
            } else {
                format!("{} AS {}", Ident::new(b), Ident::new(a))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "CREATE VIEW {}.{} WITH (security_invoker = true) AS SELECT {list} FROM {table}",
        Ident::new(schema),
        Ident::new(view)
    )
}

/// The dollar-quote tag of the trigger function's body.
const BODY_TAG: &str = "$halo_migrate_body$";

/// The trigger function that keeps the shapes in step: for each column
/// whose type changes, the side a write changed gives the other; then each
/// fill sets a column a write left NULL; then each mapped CHECK. Each
/// expression is evaluated in a block whose variables are the columns of
/// its shape, read from NEW (`base_columns`: every column of the table
/// after the expand phase, with its type). A name that is both a variable
/// and a column of a table an expression reads means the column
/// (`#variable_conflict use_column`), as it would in that query.
pub fn fill_function(
    function: &QualifiedName,
    base_columns: &[(String, String)],
    view_columns: &[(String, String)],
    plan: &VersionPlan,
) -> Result<String> {
    let old_vars: Vec<(String, String)> = base_columns
        .iter()
        .map(|(c, _)| (c.clone(), c.clone()))
        .collect();
    let vars = |side: Side| {
        if side == Side::Old {
            &old_vars[..]
        } else {
            view_columns
        }
    };
    let types = |base: &str| {
        base_columns
            .iter()
            .find(|(c, _)| c == base)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| MigrateError::Internal(format!("no type for column \"{base}\"")))
    };
    let decl = |side: Side| -> Result<String> {
        let mut b = String::from("        DECLARE\n");
        for (base, var) in vars(side)
            .iter()
            .filter(|(_, v)| v != NEW_ROW && v != OLD_ROW)
        {
            b.push_str(&format!(
                "            {} {} := {NEW_ROW}.{};\n",
                quoted(var),
                types(base)?,
                quoted(base)
            ));
        }
        Ok(b)
    };
    let set = |target: &str, expr: &str, option: &'static str| -> Result<String> {
        if expr.contains(BODY_TAG) {
            return Err(MigrateError::InvalidParameter {
                name: option,
                detail: format!("The expression for \"{target}\" contains {BODY_TAG}."),
                hint: "Write it without that dollar-quote tag.".into(),
            });
        }
        Ok(format!("{NEW_ROW}.{} := ({expr});", quoted(target)))
    };
    // NEW and OLD by names no column takes: a column named new, old or
    // tg_op is then an ordinary variable in the nested blocks.
    let mut body = format!(
        "#variable_conflict use_column\nDECLARE\n    {NEW_ROW} ALIAS FOR new;\n    {OLD_ROW} ALIAS FOR old;\nBEGIN\n"
    );
    for s in &plan.syncs {
        let (old, new) = (quoted(&s.old), quoted(&s.new));
        let up = format!(
            "{}        BEGIN\n            {}\n        END;\n",
            decl(Side::Old)?,
            set(&s.new, &s.up, "up")?
        );
        let down = format!(
            "{}        BEGIN\n            {}\n        END;\n",
            decl(Side::New)?,
            set(&s.old, &s.down, "down")?
        );
        // Compared as text: a type without an equality operator (json)
        // still tells a changed value from an unchanged one.
        body.push_str(&format!(
            "    IF TG_OP = 'INSERT' THEN\n        IF {NEW_ROW}.{new} IS NOT NULL THEN\n{down}        ELSE\n{up}        END IF;\n    \
             ELSIF {NEW_ROW}.{new}::text IS DISTINCT FROM {OLD_ROW}.{new}::text THEN\n{down}    \
             ELSIF {NEW_ROW}.{old}::text IS DISTINCT FROM {OLD_ROW}.{old}::text OR {NEW_ROW}.{new} IS NULL THEN\n{up}    END IF;\n"
        ));
    }
    for f in &plan.fills {
        let option = if f.side == Side::Old { "up" } else { "down" };
        body.push_str(&format!(
            "    IF {NEW_ROW}.{} IS NULL THEN\n{}        BEGIN\n            {}\n        END;\n    END IF;\n",
            quoted(&f.column),
            decl(f.side)?,
            set(&f.column, &f.expr, option)?
        ));
    }
    for c in &plan.checks {
        body.push_str(&format!(
            "    BEGIN\n{}        BEGIN\n            IF ({}) IS FALSE THEN\n                {}\n            END IF;\n        END;\n    END;\n",
            decl(Side::Old)?,
            c.expr,
            set(&c.column, &c.up, "up")?
        ));
    }
    body.push_str(&format!("    RETURN {NEW_ROW};\nEND\n"));
    Ok(format!(
        "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS {BODY_TAG}\n{body}{BODY_TAG}"
    ))
}

/// An identifier always in double quotes: PL/pgSQL reserves words SQL
/// does not (`loop`, `strict`), so a variable is never left bare.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The trigger's names for NEW and OLD (no column of the table may take
/// them; `refuse` checks).
pub const NEW_ROW: &str = "halo_migrate_new_row";
pub const OLD_ROW: &str = "halo_migrate_old_row";

/// The backfill's alias for the table, which a foreign key's condition
/// names (the statement is kept without the table's name).
pub const BACKFILL_ALIAS: &str = "halo_migrate_t";

/// One batch of the backfill: touch the rows of heap blocks `[from, to)`
/// (`$1`, `$2`: `'(from,0)'` and `'(to,0)'`) that have a NULL in a column
/// to fill or fail a mapped CHECK, so that the trigger fills them.
/// `None` when nothing needs a backfill.
pub fn backfill_batch(table: &QualifiedName, plan: &VersionPlan) -> Option<String> {
    let mut set: Vec<&String> = Vec::new();
    let mut when: Vec<String> = Vec::new();
    for c in &plan.backfill {
        if !set.contains(&c) {
            set.push(c);
            when.push(format!("{} IS NULL", Ident::new(c)));
        }
    }
    for c in &plan.checks {
        if !set.contains(&&c.column) {
            set.push(&c.column);
        }
        when.push(format!("({}) IS FALSE", c.table_expr));
    }
    if set.is_empty() {
        return None;
    }
    let set = set
        .iter()
        .map(|c| format!("{0} = {0}", Ident::new(c.as_str())))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "UPDATE {table} AS {BACKFILL_ALIAS} SET {set} WHERE ctid >= $1::tid AND ctid < $2::tid AND ({})",
        when.join(" OR ")
    ))
}
