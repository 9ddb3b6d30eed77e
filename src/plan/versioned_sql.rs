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
        for (base, var) in vars(side).iter().filter(|(_, v)| !shadows_trigger_name(v)) {
            b.push_str(&format!(
                "            {} {} := NEW.{};\n",
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
        Ok(format!("NEW.{} := ({expr});", quoted(target)))
    };
    let mut body = String::from("#variable_conflict use_column\nBEGIN\n");
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
            "    IF TG_OP = 'INSERT' THEN\n        IF NEW.{new} IS NOT NULL THEN\n{down}        ELSE\n{up}        END IF;\n    \
             ELSIF NEW.{new}::text IS DISTINCT FROM OLD.{new}::text THEN\n{down}    \
             ELSIF NEW.{old}::text IS DISTINCT FROM OLD.{old}::text OR NEW.{new} IS NULL THEN\n{up}    END IF;\n"
        ));
    }
    for f in &plan.fills {
        let option = if f.side == Side::Old { "up" } else { "down" };
        body.push_str(&format!(
            "    IF NEW.{} IS NULL THEN\n{}        BEGIN\n            {}\n        END;\n    END IF;\n",
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
    body.push_str("    RETURN NEW;\nEND\n");
    Ok(format!(
        "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS {BODY_TAG}\n{body}{BODY_TAG}"
    ))
}

/// An identifier always in double quotes: PL/pgSQL reserves words SQL
/// does not (`loop`, `strict`), so a variable is never left bare.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A variable of this name would hide PL/pgSQL's own NEW or OLD: such a
/// column cannot be read by name in an `up`/`down` expression.
fn shadows_trigger_name(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "new" | "old") || name.starts_with("tg_")
}

/// One batch of the backfill: touch the rows of heap blocks `[from, to)`
/// (`$1`, `$2`: `'(from,0)'` and `'(to,0)'`) that have a NULL in a column
/// to fill or fail a mapped CHECK, so that the trigger fills them.
/// `None` when nothing needs a backfill.
pub fn backfill_batch(table: &QualifiedName, plan: &VersionPlan) -> Option<String> {
    let mut set: Vec<&String> = plan.backfill.iter().collect();
    // A second column whose old column is NULL stays NULL: nothing to do.
    let mut when: Vec<String> = plan
        .backfill
        .iter()
        .map(|c| match plan.syncs.iter().find(|s| &s.new == c) {
            Some(s) => format!(
                "({} IS NULL AND {} IS NOT NULL)",
                Ident::new(c),
                Ident::new(&s.old)
            ),
            None => format!("{} IS NULL", Ident::new(c)),
        })
        .collect();
    for c in &plan.checks {
        if !set.contains(&&c.column) {
            set.push(&c.column);
        }
        when.push(format!("({}) IS FALSE", c.expr));
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
        "UPDATE {table} SET {set} WHERE ctid >= $1::tid AND ctid < $2::tid AND ({})",
        when.join(" OR ")
    ))
}
