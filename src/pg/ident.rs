//! Identifier quoting: the one way an identifier gets into SQL text.
//!
//! Every table, column, constraint and index name that halo_migrate writes into
//! a statement passes through [`Ident`] (or [`QualifiedName`]); values never do,
//! they travel as `$n` parameters. The rule is PostgreSQL's own
//! `quote_identifier()`: a name is left bare only when it is a lower-case simple
//! identifier that is not a reserved, column-name or type/function-name keyword.
//! It is reimplemented here (with PostgreSQL 15's keyword list) so that SQL text
//! generation stays a pure function, testable without a server.

use std::fmt;

/// PostgreSQL 15 keywords that are not UNRESERVED_KEYWORD (from `parser/kwlist.h`);
/// `quote_identifier()` quotes exactly these. Sorted, for binary search.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// An SQL identifier, displayed quoted when (and only when) PostgreSQL would quote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn new(name: impl Into<String>) -> Self {
        Ident(name.into())
    }

    /// The name itself, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn needs_quotes(name: &str) -> bool {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return true;
        };
        if !(first.is_ascii_lowercase() || first == '_') {
            return true;
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return true;
        }
        QUOTED_KEYWORDS.binary_search(&name).is_ok()
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Self::needs_quotes(&self.0) {
            write!(f, "\"{}\"", self.0.replace('"', "\"\""))
        } else {
            f.write_str(&self.0)
        }
    }
}

/// `schema.name`, each part quoted as needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualifiedName {
    pub schema: Ident,
    pub name: Ident,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: Ident::new(schema),
            name: Ident::new(name),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A comma-separated list of identifiers, e.g. an index's key columns.
pub fn ident_list<'a>(names: impl IntoIterator<Item = &'a Ident>) -> String {
    names
        .into_iter()
        .map(Ident::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_list_is_sorted_for_binary_search() {
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn plain_names_stay_bare() {
        assert_eq!(Ident::new("accounts").to_string(), "accounts");
        assert_eq!(Ident::new("_x9").to_string(), "_x9");
        // unreserved keywords need no quotes, exactly as quote_identifier()
        assert_eq!(Ident::new("name").to_string(), "name");
        assert_eq!(Ident::new("data").to_string(), "data");
    }

    #[test]
    fn awkward_names_are_quoted() {
        assert_eq!(Ident::new("Accounts").to_string(), "\"Accounts\"");
        assert_eq!(Ident::new("my table").to_string(), "\"my table\"");
        assert_eq!(Ident::new("a\"b").to_string(), "\"a\"\"b\"");
        assert_eq!(
            Ident::new("x; DROP TABLE t; --").to_string(),
            "\"x; DROP TABLE t; --\""
        );
        assert_eq!(Ident::new("line\nbreak").to_string(), "\"line\nbreak\"");
        assert_eq!(Ident::new("1abc").to_string(), "\"1abc\"");
        assert_eq!(Ident::new("").to_string(), "\"\"");
        assert_eq!(Ident::new("naïve").to_string(), "\"naïve\"");
    }

    #[test]
    fn reserved_and_type_keywords_are_quoted() {
        for kw in [
            "select", "user", "order", "table", "int", "varchar", "primary", "check",
        ] {
            assert_eq!(Ident::new(kw).to_string(), format!("\"{kw}\""));
        }
    }

    #[test]
    fn long_names_are_kept_whole() {
        let n63 = "a".repeat(63);
        assert_eq!(Ident::new(n63.clone()).to_string(), n63);
        let q63 = format!("A{}", "b".repeat(62));
        assert_eq!(Ident::new(q63.clone()).to_string(), format!("\"{q63}\""));
    }

    #[test]
    fn qualified_names() {
        assert_eq!(QualifiedName::new("public", "t").to_string(), "public.t");
        assert_eq!(
            QualifiedName::new("My Schema", "T").to_string(),
            "\"My Schema\".\"T\""
        );
        let cols = [Ident::new("a"), Ident::new("B")];
        assert_eq!(ident_list(&cols), "a, \"B\"");
    }
}
