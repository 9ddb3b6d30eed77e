//! The SQL text of a verification chunk (pure; see `engine::verify`).
//!
//! A chunk is a range of the table's key, (after, upto], in the order of the
//! key's default btree operator class. One statement, so one snapshot,
//! compares the ALTER-mapped rows of the table in that range with the
//! shadow's rows in the same range (a full join on the key; rows compared
//! by their binary image, `*=`, as REFRESH MATERIALIZED VIEW CONCURRENTLY
//! compares them, since each value was cast to the shadow's column type by
//! the same function the copy used), skipping keys
//! that still have a row in the capture log: those are replayed anyway, and
//! in any snapshot the shadow equals the mapped table for every key that has
//! none (replay deletes the log rows it consumed in the transaction that
//! rewrites their keys in the shadow). A key that differs is written into
//! the log by the same statement, so the replay copies it again.
//!
//! Invariant: every identifier and type comes from the catalog (quoted),
//! every bound is a `$n` parameter.

use crate::pg::ident::{Ident, QualifiedName};

/// The btree operators of one key column, each `OPERATOR(schema.op)`.
/// `eq`/`lt`/`le`/`ge`/`gt` compare the table's type with itself; the `x_`
/// ones compare the shadow's type (left) with the table's (right).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyOps {
    pub eq: String,
    pub lt: String,
    pub le: String,
    pub ge: String,
    pub gt: String,
    pub x_eq: String,
    pub x_lt: String,
    pub x_le: String,
    pub x_ge: String,
    pub x_gt: String,
}

/// A key column: its name (the same in table and shadow) and the table's
/// type of it, as `format_type` writes it with only pg_catalog visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCol {
    pub name: String,
    pub orig_type: String,
    pub ops: KeyOps,
}

/// What a chunk compares.
pub struct Chunk<'a> {
    pub table: &'a QualifiedName,
    pub shadow: &'a QualifiedName,
    pub log: &'a QualifiedName,
    pub keys: &'a [KeyCol],
    /// The copy's INSERT column list and SELECT list over the table (alias `o`).
    pub copy_targets: &'a str,
    pub copy_exprs: &'a str,
    /// The shadow's type of each target, in order.
    pub target_types: &'a [String],
    /// The target names, in order (unquoted).
    pub target_names: &'a [String],
    pub has_after: bool,
    pub has_upto: bool,
}

/// The value of bound `param` (a text[]) at key position `i`, typed.
fn bound(param: u8, i: usize, k: &KeyCol) -> String {
    format!("CAST(${param}[{}] AS {})", i + 1, k.orig_type)
}

/// `cols > bound` (strictly after) in lexicographic order. `cols(i)` names
/// column i; `cross` chooses the shadow-side operators.
fn after(keys: &[KeyCol], cols: &dyn Fn(usize) -> String, cross: bool, param: u8) -> String {
    lexicographic(keys, cols, cross, param, true)
}

/// `cols <= bound` in lexicographic order.
fn upto(keys: &[KeyCol], cols: &dyn Fn(usize) -> String, cross: bool, param: u8) -> String {
    lexicographic(keys, cols, cross, param, false)
}

fn lexicographic(
    keys: &[KeyCol],
    cols: &dyn Fn(usize) -> String,
    cross: bool,
    param: u8,
    greater: bool,
) -> String {
    let op = |k: &KeyCol, which: &str| -> String {
        let o = &k.ops;
        match (cross, which) {
            (false, "eq") => o.eq.clone(),
            (false, "lt") => o.lt.clone(),
            (false, "le") => o.le.clone(),
            (false, "ge") => o.ge.clone(),
            (false, _) => o.gt.clone(),
            (true, "eq") => o.x_eq.clone(),
            (true, "lt") => o.x_lt.clone(),
            (true, "le") => o.x_le.clone(),
            (true, "ge") => o.x_ge.clone(),
            (true, _) => o.x_gt.clone(),
        }
    };
    let (strict, loose) = if greater { ("gt", "ge") } else { ("lt", "le") };
    if keys.len() == 1 {
        let which = if greater { strict } else { loose };
        return format!(
            "{} {} {}",
            cols(0),
            op(&keys[0], which),
            bound(param, 0, &keys[0])
        );
    }
    // (c1 > v1) OR (c1 = v1 AND c2 > v2) OR …; for "upto" the last term is
    // all-equal too. The leading c1 >= v1 (<=) lets an index bound the scan.
    let mut terms = Vec::new();
    for j in 0..keys.len() {
        let mut t: Vec<String> = (0..j)
            .map(|i| {
                format!(
                    "{} {} {}",
                    cols(i),
                    op(&keys[i], "eq"),
                    bound(param, i, &keys[i])
                )
            })
            .collect();
        let last_loose = !greater && j + 1 == keys.len();
        let which = if last_loose { loose } else { strict };
        t.push(format!(
            "{} {} {}",
            cols(j),
            op(&keys[j], which),
            bound(param, j, &keys[j])
        ));
        terms.push(format!("({})", t.join(" AND ")));
    }
    format!(
        "{} {} {} AND ({})",
        cols(0),
        op(&keys[0], loose),
        bound(param, 0, &keys[0]),
        terms.join(" OR ")
    )
}

/// The internal name of key column i in a chunk's derived tables, chosen
/// so that a user column of the same name (which would make the derived
/// table's column list ambiguous) is most unlikely.
fn key_alias(side: char, i: usize) -> Ident {
    Ident::new(format!("halo {side}key {}", i + 1))
}

/// The upper bound of the next chunk: the key of the `$2 + 1`-th row after
/// `$1` (text[]), as text[]; no row when fewer remain (the last chunk).
pub fn next_bound_sql(table: &QualifiedName, keys: &[KeyCol], has_after: bool) -> String {
    let col = |i: usize| format!("o.{}", Ident::new(&keys[i].name));
    let list = (0..keys.len()).map(col).collect::<Vec<_>>();
    let texts = list
        .iter()
        .map(|c| format!("{c}::pg_catalog.text"))
        .collect::<Vec<_>>();
    let filter = if has_after {
        format!("WHERE {}", after(keys, &col, false, 1))
    } else {
        String::new()
    };
    format!(
        "SELECT ARRAY[{}] FROM ONLY {table} o {filter} ORDER BY {} OFFSET $2 LIMIT 1",
        texts.join(", "),
        list.join(", ")
    )
}

/// Compare one chunk, log the keys that differ; returns one row: rows of
/// the table checked, keys logged for repair, and up to five of them as
/// text. `$1` is the lower bound (exclusive) and `$2` the upper
/// (inclusive), both text[], used only when `has_after` / `has_upto`.
pub fn chunk_sql(c: &Chunk) -> String {
    let n = c.keys.len();
    let kname = |i: usize| Ident::new(&c.keys[i].name).to_string();
    let ocol = |i: usize| format!("o.{}", kname(i));
    let scol = |i: usize| format!("s.{}", kname(i));
    let range = |cols: &dyn Fn(usize) -> String, cross: bool| {
        let mut r = Vec::new();
        if c.has_after {
            r.push(after(c.keys, cols, cross, 1));
        }
        if c.has_upto {
            r.push(upto(c.keys, cols, cross, 2));
        }
        if r.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", r.join(" AND "))
        }
    };
    let ok = |i: usize| format!("a.{}", key_alias('o', i));
    let sk = |i: usize| format!("b.{}", key_alias('s', i));
    let want = c
        .target_names
        .iter()
        .zip(c.target_types)
        .map(|(t, ty)| format!("CAST(a.{} AS {ty})", Ident::new(t)))
        .collect::<Vec<_>>()
        .join(", ");
    let got = c
        .target_names
        .iter()
        .map(|t| format!("s.{}", Ident::new(t)))
        .collect::<Vec<_>>()
        .join(", ");
    let a_keys = (0..n)
        .map(|i| format!("{} AS {}", ocol(i), key_alias('o', i)))
        .collect::<Vec<_>>()
        .join(", ");
    let a_names = (0..n)
        .map(|i| key_alias('o', i).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let b_keys = (0..n)
        .map(|i| format!("{} AS {}", scol(i), key_alias('s', i)))
        .collect::<Vec<_>>()
        .join(", ");
    let join_on = (0..n)
        .map(|i| format!("{} {} {}", sk(i), c.keys[i].ops.x_eq, ok(i)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let j_cols = (0..n)
        .map(|i| format!("{}, {}", ok(i), sk(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let jo = |i: usize| format!("j.{}", key_alias('o', i));
    let js = |i: usize| format!("j.{}", key_alias('s', i));
    let logged_o = (0..n)
        .map(|i| format!("l.k{} {} {}", i + 1, c.keys[i].ops.eq, jo(i)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let logged_s = (0..n)
        .map(|i| format!("{} {} l.k{}", js(i), c.keys[i].ops.x_eq, i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let diff_keys = (0..n)
        .map(|i| {
            format!(
                "coalesce({}, CAST({} AS {})) AS k{}",
                jo(i),
                js(i),
                c.keys[i].orig_type,
                i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let log_cols = (1..=n)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH j AS MATERIALIZED (
    SELECT a.want, b.got, a.here AS in_table, b.here AS in_shadow, {j_cols}
      FROM (SELECT ROW({want}) AS want, true AS here, {a_names}
              FROM (SELECT {exprs}, {a_keys} FROM ONLY {table} o {orange}) a({targets}, {a_names})) a
      FULL JOIN (SELECT ROW({got}) AS got, true AS here, {b_keys} FROM {shadow} s {srange}) b
        ON {join_on}),
diff AS MATERIALIZED (
    SELECT {diff_keys},
           CASE WHEN j.in_table IS NULL THEN 'extra in the shadow'
                WHEN j.in_shadow IS NULL THEN 'missing from the shadow'
                ELSE 'different' END AS how
      FROM j
     WHERE NOT coalesce(j.in_table AND j.in_shadow AND j.want OPERATOR(pg_catalog.*=) j.got, false)
       AND (j.in_table IS NULL OR NOT EXISTS (SELECT FROM {log} l WHERE {logged_o}))
       AND (j.in_shadow IS NULL OR NOT EXISTS (SELECT FROM {log} l WHERE {logged_s}))),
logged AS (INSERT INTO {log} ({log_cols}) SELECT {log_cols} FROM diff RETURNING 1)
SELECT ((SELECT pg_catalog.count(*) FROM j WHERE j.in_table)
        - (SELECT pg_catalog.count(*) FROM j
            WHERE j.in_table AND EXISTS (SELECT FROM {log} l WHERE {logged_o})))::bigint,
       (SELECT pg_catalog.count(*) FROM logged)::bigint,
       (SELECT pg_catalog.string_agg(ROW({log_cols})::pg_catalog.text || ' ' || how, ', ')
          FROM (SELECT * FROM diff LIMIT 5) d)",
        exprs = c.copy_exprs,
        targets = c.copy_targets,
        table = c.table,
        shadow = c.shadow,
        log = c.log,
        orange = range(&ocol, false),
        srange = range(&scol, true),
    )
}

/// Split a list of identifiers as `Ident` writes them (`a, "B c", "d""e"`).
pub fn split_idents(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() && !quoted => {}
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> KeyOps {
        let o = |s: &str| format!("OPERATOR(pg_catalog.{s})");
        KeyOps {
            eq: o("="),
            lt: o("<"),
            le: o("<="),
            ge: o(">="),
            gt: o(">"),
            x_eq: o("="),
            x_lt: o("<"),
            x_le: o("<="),
            x_ge: o(">="),
            x_gt: o(">"),
        }
    }

    fn key(name: &str, ty: &str) -> KeyCol {
        KeyCol {
            name: name.into(),
            orig_type: ty.into(),
            ops: ops(),
        }
    }

    #[test]
    fn identifier_lists_split_as_written() {
        assert_eq!(
            split_idents("a, \"B c\", \"d\"\"e\""),
            vec!["a", "B c", "d\"e"]
        );
        assert_eq!(split_idents("id"), vec!["id"]);
        assert_eq!(split_idents("\"x,y\", z"), vec!["x,y", "z"]);
        assert!(split_idents("").is_empty());
    }

    #[test]
    fn a_single_key_range_is_two_comparisons() {
        let keys = [key("id", "integer")];
        let col = |_: usize| "o.id".to_string();
        assert_eq!(
            after(&keys, &col, false, 1),
            "o.id OPERATOR(pg_catalog.>) CAST($1[1] AS integer)"
        );
        assert_eq!(
            upto(&keys, &col, false, 2),
            "o.id OPERATOR(pg_catalog.<=) CAST($2[1] AS integer)"
        );
    }

    #[test]
    fn a_composite_key_range_is_lexicographic_and_index_bounded() {
        let keys = [key("a", "integer"), key("b", "text")];
        let col = |i: usize| ["o.a", "o.b"][i].to_string();
        let gt = after(&keys, &col, false, 1);
        assert!(gt.starts_with("o.a OPERATOR(pg_catalog.>=) CAST($1[1] AS integer) AND ("));
        assert!(gt.contains("(o.a OPERATOR(pg_catalog.>) CAST($1[1] AS integer))"));
        assert!(gt.contains(
            "(o.a OPERATOR(pg_catalog.=) CAST($1[1] AS integer) AND o.b OPERATOR(pg_catalog.>) CAST($1[2] AS text))"
        ));
        let le = upto(&keys, &col, false, 2);
        assert!(le.contains("o.b OPERATOR(pg_catalog.<=) CAST($2[2] AS text)"));
        assert!(le.contains("(o.a OPERATOR(pg_catalog.<) CAST($2[1] AS integer))"));
    }

    #[test]
    fn a_chunk_compares_both_sides_in_one_statement_and_logs_differences() {
        let table = QualifiedName::new("public", "t");
        let shadow = QualifiedName::new("migrate", "shadow_1");
        let log = QualifiedName::new("migrate", "log_1");
        let keys = [key("id", "integer")];
        let names = ["id".to_string(), "amount".to_string()];
        let types = ["integer".to_string(), "bigint".to_string()];
        let sql = chunk_sql(&Chunk {
            table: &table,
            shadow: &shadow,
            log: &log,
            keys: &keys,
            copy_targets: "id, amount",
            copy_exprs: "o.id, (o.amount::bigint)",
            target_types: &types,
            target_names: &names,
            has_after: true,
            has_upto: false,
        });
        assert!(sql.contains(
            "FROM ONLY public.t o WHERE o.id OPERATOR(pg_catalog.>) CAST($1[1] AS integer)"
        ));
        assert!(sql.contains(
            "FROM migrate.shadow_1 s WHERE s.id OPERATOR(pg_catalog.>) CAST($1[1] AS integer)"
        ));
        assert!(sql.contains("ROW(CAST(a.id AS integer), CAST(a.amount AS bigint)) AS want"));
        assert!(sql.contains("j.want OPERATOR(pg_catalog.*=) j.got"));
        assert!(sql.contains("FULL JOIN"));
        assert!(sql.contains("INSERT INTO migrate.log_1 (k1) SELECT k1 FROM diff"));
        assert!(!sql.contains("$2"), "no upper bound on the last chunk");
        let first = next_bound_sql(&table, &keys, false);
        assert_eq!(
            first,
            "SELECT ARRAY[o.id::pg_catalog.text] FROM ONLY public.t o  ORDER BY o.id OFFSET $2 LIMIT 1"
        );
    }
}
