//! The inverse of a revertible rewrite: the ALTER that takes the table's
//! catalog entry from its shape now back to the shape its kept storage has.
//!
//! Pure: it compares two descriptions read from the catalogs — the table now
//! and the kept table (a twin of the table as it was before the swap) — and
//! the table's CHECK and FOREIGN KEY constraints now and before. The result
//! is run on the table's empty storage in the revert's swap, like the
//! forward ALTER was, so it must leave the table with exactly the kept
//! table's physical row layout (attribute numbers, types, dropped slots).

use crate::pg::ident::Ident;

use crate::plan::model::{Stage, Step, Strategy};
use crate::plan::sqlgen;

/// Why a revertible migration copies a table for a DROP COLUMN.
pub const KEEP_DROPPED_REASON: &str =
    "revertible: the table is copied without the column (PostgreSQL would only hide it, and \
     an UPDATE would lose its value), so that the kept storage keeps every value";

/// The plan's last row for a revertible migration: what the window costs.
pub fn keep_step(oid: u32, bytes: i64) -> Step {
    Step {
        stage: Stage::Keep,
        undo: crate::plan::model::Undo::Nothing,
        subcommand: None,
        strategy: Strategy::Rewrite,
        sql: format!(
            "keep the old storage as {} (about {} MB now) and the capture trigger on {}, \
             until migrate.revert(), migrate.forget() or the window's end",
            sqlgen::shadow_table(oid),
            (bytes + (1 << 19)) >> 20,
            sqlgen::log_table(oid)
        ),
        lock: None,
        rewrites: false,
        reason: "revertible: the old rows and indexes take that disk until the window closes, \
                 and every write keeps logging its key (the capture trigger's cost), so that a \
                 revert is only a catch-up and a second swap"
            .into(),
    }
}

/// One attribute (`attnum > 0`) of a relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub attnum: i16,
    pub name: String,
    pub dropped: bool,
    /// `format_type()` of the type and modifier.
    pub type_sql: String,
    /// The collation's name where it differs from the type's.
    pub collation: Option<String>,
    pub not_null: bool,
    pub default: Option<String>,
    /// Generated or identity: kept exactly or refused.
    pub special: Option<String>,
}

/// A CHECK or FOREIGN KEY constraint of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub name: String,
    pub definition: String,
    pub validated: bool,
}

/// What the revert needs from the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inverse {
    /// Subcommands of one ALTER TABLE on the table.
    pub subcommands: Vec<String>,
    /// Subcommands run on the kept table first, one statement each: a column
    /// the forward ALTER added becomes a dropped slot there, as it will be
    /// in the table.
    pub kept_fixups: Vec<String>,
    /// Constraints re-added NOT VALID, to validate after the swap.
    pub validate: Vec<String>,
    /// Columns whose type the inverse changes.
    pub altered: Vec<String>,
    /// Columns the forward ALTER dropped, to be restored in place (the
    /// table's attribute is marked as not dropped again) before the
    /// subcommands run; their defaults and NOT NULL are subcommands.
    pub undrop: Vec<String>,
    /// Statements run after the ALTER, on the table's empty storage (the
    /// caller adds plain indexes of restored columns here).
    pub statements: Vec<String>,
}

/// The inverse ALTER, or why there is none (a sentence for the error's detail).
///
/// `down`: the DBA's expression per column, over the table's row now, for a
/// type change with no assignment cast back.
pub fn inverse(
    now: &[Column],
    kept: &[Column],
    down: &[(String, String)],
    constraints_now: &[Constraint],
    constraints_kept: &[Constraint],
) -> Result<Inverse, String> {
    let mut inv = Inverse::default();
    let max = now.len().max(kept.len());
    for i in 0..max {
        match (now.get(i), kept.get(i)) {
            (Some(n), Some(k)) => column(n, k, down, &mut inv)?,
            (Some(n), None) if n.dropped => inv.kept_fixups.extend(placeholder(n.attnum)),
            (Some(n), None) => {
                inv.subcommands
                    .push(format!("DROP COLUMN {}", Ident::new(&n.name)));
                inv.kept_fixups.extend(placeholder(n.attnum));
            }
            (None, Some(k)) => {
                return Err(format!(
                    "The table has no attribute {} (\"{}\") any more.",
                    k.attnum, k.name
                ))
            }
            (None, None) => {}
        }
    }
    for c in constraints_now {
        if !constraints_kept
            .iter()
            .any(|k| k.name == c.name && k.definition == c.definition)
        {
            inv.subcommands
                .push(format!("DROP CONSTRAINT {}", Ident::new(&c.name)));
        }
    }
    for k in constraints_kept {
        if !constraints_now
            .iter()
            .any(|c| c.name == k.name && c.definition == k.definition)
        {
            // Rows written since the swap may not satisfy it: add it NOT
            // VALID and validate after the swap (a NOT VALID one stays so).
            inv.subcommands.push(format!(
                "ADD CONSTRAINT {} {} NOT VALID",
                Ident::new(&k.name),
                k.definition.trim_end_matches(" NOT VALID")
            ));
            if k.validated {
                inv.validate.push(k.name.clone());
            }
        }
    }
    order_drops_first(&mut inv.subcommands);
    Ok(inv)
}

/// Constraints are dropped before columns: dropping a column drops the
/// constraints on it, and PostgreSQL runs the drops in the order given.
pub fn order_drops_first(subcommands: &mut [String]) {
    subcommands.sort_by_key(|s| !s.starts_with("DROP CONSTRAINT"));
}

/// The subcommands that give the table the kept table's storage options
/// again: each `name=value` of `reloptions`.
pub fn options(now: &[String], kept: &[String]) -> Vec<String> {
    let split = |o: &String| -> (String, String) {
        match o.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (o.clone(), String::new()),
        }
    };
    let (now, kept): (Vec<_>, Vec<_>) = (
        now.iter().map(split).collect(),
        kept.iter().map(split).collect(),
    );
    let mut out = Vec::new();
    let reset: Vec<String> = now
        .iter()
        .filter(|(n, _)| !kept.iter().any(|(k, _)| k == n))
        .map(|(n, _)| Ident::new(n).to_string())
        .collect();
    if !reset.is_empty() {
        out.push(format!("RESET ({})", reset.join(", ")));
    }
    let set: Vec<String> = kept
        .iter()
        .filter(|k| !now.contains(k))
        .map(|(n, v)| format!("{} = {}", Ident::new(n), sqlgen::literal(v)))
        .collect();
    if !set.is_empty() {
        out.push(format!("SET ({})", set.join(", ")));
    }
    out
}

/// ADD then DROP: a dropped slot at `attnum` (the kept table has exactly
/// `attnum - 1` attributes, so the new one lands there).
fn placeholder(attnum: i16) -> [String; 2] {
    let p = Ident::new(format!("halo_dropped_{attnum}"));
    [
        format!("ADD COLUMN {p} integer"),
        format!("DROP COLUMN {p}"),
    ]
}

fn column(
    n: &Column,
    k: &Column,
    down: &[(String, String)],
    inv: &mut Inverse,
) -> Result<(), String> {
    match (n.dropped, k.dropped) {
        (true, true) => return Ok(()),
        (true, false) => {
            // Dropped by the forward ALTER: restored at its attnum, then
            // given its default and NOT NULL again.
            if k.special.is_some() {
                return Err(format!(
                    "Column \"{}\" was a generated or identity column; it cannot be restored in place.",
                    k.name
                ));
            }
            inv.undrop.push(k.name.clone());
            let col = Ident::new(&k.name);
            if let Some(d) = &k.default {
                inv.subcommands
                    .push(format!("ALTER COLUMN {col} SET DEFAULT {d}"));
            }
            if k.not_null {
                inv.subcommands
                    .push(format!("ALTER COLUMN {col} SET NOT NULL"));
            }
            return Ok(());
        }
        (false, true) => {
            // A column the forward ALTER added, whose dropped slot an
            // earlier revert attempt already made in the kept table.
            inv.subcommands
                .push(format!("DROP COLUMN {}", Ident::new(&n.name)));
            return Ok(());
        }
        (false, false) => {}
    }
    if n.name != k.name {
        return Err(format!(
            "Column \"{}\" is now named \"{}\".",
            k.name, n.name
        ));
    }
    if n.special != k.special {
        return Err(format!(
            "Column \"{}\" changed its generated or identity property.",
            k.name
        ));
    }
    let col = Ident::new(&k.name);
    if n.type_sql != k.type_sql || n.collation != k.collation {
        let mut sub = format!("ALTER COLUMN {col} TYPE {}", k.type_sql);
        if let Some(c) = &k.collation {
            sub.push_str(&format!(" COLLATE {c}"));
        }
        if let Some((_, e)) = down.iter().find(|(c, _)| *c == k.name) {
            sub.push_str(&format!(" USING ({e})"));
        }
        inv.subcommands.push(sub);
        inv.altered.push(k.name.clone());
    }
    if n.default != k.default && k.special.is_none() {
        inv.subcommands.push(match &k.default {
            Some(d) => format!("ALTER COLUMN {col} SET DEFAULT {d}"),
            None => format!("ALTER COLUMN {col} DROP DEFAULT"),
        });
    }
    if n.not_null != k.not_null {
        inv.subcommands.push(format!(
            "ALTER COLUMN {col} {} NOT NULL",
            if k.not_null { "SET" } else { "DROP" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(attnum: i16, name: &str, ty: &str) -> Column {
        Column {
            attnum,
            name: name.into(),
            dropped: false,
            type_sql: ty.into(),
            collation: None,
            not_null: false,
            default: None,
            special: None,
        }
    }

    fn dropped(attnum: i16) -> Column {
        Column {
            dropped: true,
            name: String::new(),
            type_sql: String::new(),
            ..col(attnum, "", "")
        }
    }

    #[test]
    fn a_type_change_goes_back_with_its_default_and_not_null() {
        let mut now = col(1, "id", "bigint");
        now.not_null = true;
        now.default = Some("nextval('t_id_seq'::regclass)".into());
        let mut kept = col(1, "id", "integer");
        kept.default = now.default.clone();
        let inv = inverse(
            &[now, col(2, "v", "text")],
            &[kept, col(2, "v", "text")],
            &[],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            inv.subcommands,
            [
                "ALTER COLUMN id TYPE integer",
                "ALTER COLUMN id DROP NOT NULL"
            ]
        );
        assert_eq!(inv.altered, ["id"]);
        assert!(inv.kept_fixups.is_empty());
    }

    #[test]
    fn a_down_expression_becomes_using() {
        let inv = inverse(
            &[col(1, "Flag", "timestamp with time zone")],
            &[col(1, "Flag", "boolean")],
            &[("Flag".into(), "\"Flag\" IS NOT NULL".into())],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            inv.subcommands,
            ["ALTER COLUMN \"Flag\" TYPE boolean USING (\"Flag\" IS NOT NULL)"]
        );
    }

    #[test]
    fn an_added_column_is_dropped_and_the_kept_table_gets_its_slot() {
        let inv = inverse(
            &[col(1, "id", "integer"), dropped(2), col(3, "note", "text")],
            &[col(1, "id", "integer"), dropped(2)],
            &[],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(inv.subcommands, ["DROP COLUMN note"]);
        assert_eq!(
            inv.kept_fixups,
            [
                "ADD COLUMN halo_dropped_3 integer",
                "DROP COLUMN halo_dropped_3"
            ]
        );
        // Run again once the slot exists (a revert tried before): the
        // column is dropped, the slot is already there.
        let inv = inverse(
            &[col(1, "id", "integer"), dropped(2), col(3, "note", "text")],
            &[col(1, "id", "integer"), dropped(2), dropped(3)],
            &[],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(inv.subcommands, ["DROP COLUMN note"]);
        assert!(inv.kept_fixups.is_empty());
    }

    #[test]
    fn a_dropped_column_comes_back_in_place_with_its_default_and_not_null() {
        let mut legacy = col(2, "legacy", "text");
        legacy.default = Some("'none'::text".into());
        legacy.not_null = true;
        let inv = inverse(
            &[col(1, "id", "integer"), dropped(2)],
            &[col(1, "id", "integer"), legacy],
            &[],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(inv.undrop, ["legacy"]);
        assert_eq!(
            inv.subcommands,
            [
                "ALTER COLUMN legacy SET DEFAULT 'none'::text",
                "ALTER COLUMN legacy SET NOT NULL"
            ]
        );
        let mut serial = col(2, "n", "integer");
        serial.special = Some("a".into());
        let e = inverse(
            &[col(1, "id", "integer"), dropped(2)],
            &[col(1, "id", "integer"), serial],
            &[],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("identity"), "{e}");
    }

    #[test]
    fn constraints_are_dropped_before_columns() {
        let mut subs = vec![
            "DROP COLUMN x".to_string(),
            "ALTER COLUMN id TYPE integer".into(),
            "DROP CONSTRAINT t_x_key".into(),
        ];
        order_drops_first(&mut subs);
        assert_eq!(
            subs,
            [
                "DROP CONSTRAINT t_x_key",
                "DROP COLUMN x",
                "ALTER COLUMN id TYPE integer"
            ]
        );
    }

    #[test]
    fn storage_options_come_back() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            options(
                &o(&["fillfactor=70", "autovacuum_enabled=false"]),
                &o(&["autovacuum_enabled=false"])
            ),
            ["RESET (fillfactor)"]
        );
        assert_eq!(
            options(
                &o(&["fillfactor=70"]),
                &o(&["fillfactor=90", "toast_tuple_target=256"])
            ),
            ["SET (fillfactor = '90', toast_tuple_target = '256')"]
        );
        assert!(options(&o(&["fillfactor=70"]), &o(&["fillfactor=70"])).is_empty());
    }

    #[test]
    fn constraints_added_are_dropped_and_those_removed_come_back_not_valid() {
        let c = |n: &str, d: &str, v: bool| Constraint {
            name: n.into(),
            definition: d.into(),
            validated: v,
        };
        let inv = inverse(
            &[col(1, "id", "integer")],
            &[col(1, "id", "integer")],
            &[],
            &[
                c("new_check", "CHECK ((id > 0))", true),
                c("same", "CHECK ((id < 9))", true),
            ],
            &[
                c("same", "CHECK ((id < 9))", true),
                c("old_fk", "FOREIGN KEY (id) REFERENCES p(id)", true),
                c("lax", "CHECK ((id <> 5)) NOT VALID", false),
            ],
        )
        .unwrap();
        assert_eq!(
            inv.subcommands,
            [
                "DROP CONSTRAINT new_check",
                "ADD CONSTRAINT old_fk FOREIGN KEY (id) REFERENCES p(id) NOT VALID",
                "ADD CONSTRAINT lax CHECK ((id <> 5)) NOT VALID",
            ]
        );
        assert_eq!(inv.validate, ["old_fk"]);
    }
}
