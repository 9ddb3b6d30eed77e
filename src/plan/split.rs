//! Splits an ALTER TABLE subcommand list into the text of each subcommand.
//!
//! PostgreSQL's raw parse tree keeps no source location for an `AlterTableCmd`,
//! so to show each subcommand as the user wrote it (and to carry it out one at a
//! time) we cut the text at top-level commas. This is a lexer-level split, not a
//! parse: it understands exactly what can hide a comma — string literals (plain,
//! `E''` escape strings, dollar quotes), quoted identifiers, comments and
//! brackets. The parser stays the authority: `parse.rs` parses every piece on
//! its own with PostgreSQL's raw parser and checks that the pieces together give
//! exactly the subcommands of the whole text.

/// Byte ranges of the top-level comma-separated pieces of `text`, each trimmed
/// of surrounding white space. `None` when the text has an unterminated literal,
/// comment or bracket (the parser then reports the syntax error).
pub fn split_top_level(text: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    scan_top_level(text, |i| {
        if text.as_bytes()[i] == b',' {
            pieces.push(trim(text, start, i));
            start = i + 1;
        }
        true
    })?;
    pieces.push(trim(text, start, text.len()));
    Some(pieces)
}

/// Byte offset of the first top-level (outside literals, comments and
/// brackets) occurrence of the bare keyword `word`, case-insensitively.
/// Used to find the `USING` expression of `ALTER COLUMN … TYPE … USING expr`,
/// which the grammar puts last.
pub fn find_top_level_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut found = None;
    scan_top_level(text, |i| {
        let end = i + word.len();
        let starts_word = i == 0 || !is_ident_byte(b[i - 1]);
        if starts_word
            && end <= b.len()
            && b[i..end].eq_ignore_ascii_case(word.as_bytes())
            && (end == b.len() || !is_ident_byte(b[end]))
        {
            found = Some(i);
            return false;
        }
        true
    })?;
    found
}

/// Calls `at(i)` for every byte offset `i` of `text` that is at bracket depth
/// zero and outside any literal, quoted identifier or comment, until `at`
/// returns false. `None` when a literal, comment or bracket is unterminated.
fn scan_top_level(text: &str, mut at: impl FnMut(usize) -> bool) -> Option<()> {
    let b = text.as_bytes();
    let mut depth: i32 = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let escape =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escape)?;
                continue;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"', false)?;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i)?;
                continue;
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => {
                if let Some(tag_end) = dollar_tag_end(b, i) {
                    let tag = &b[i..=tag_end];
                    let body = tag_end + 1;
                    let close = find(b, body, tag)?;
                    i = close + tag.len();
                    continue;
                }
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ if depth == 0 => {
                if !at(i) {
                    return Some(());
                }
            }
            _ => {}
        }
        i += 1;
    }
    (depth == 0).then_some(())
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Index just past the closing quote of a literal that opens at `open`.
fn skip_quoted(b: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    let mut i = open + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Block comments nest in PostgreSQL.
fn skip_block_comment(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = open;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// If a dollar-quote tag (`$$` or `$tag$`) starts at `i`, the index of its closing `$`.
/// `$1` (a parameter) is not a tag: tags do not start with a digit.
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        return None;
    }
    while j < b.len() && is_ident_byte(b[j]) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn trim(text: &str, start: usize, end: usize) -> std::ops::Range<usize> {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trail = piece.len() - piece.trim_end().len();
    (start + lead)..(end - trail).max(start + lead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_using_only_at_top_level() {
        let t = "ALTER COLUMN a TYPE int USING (a || 'using')::int";
        assert_eq!(find_top_level_word(t, "using"), Some(24));
        assert_eq!(
            find_top_level_word("ALTER COLUMN \"using\" TYPE int", "using"),
            None
        );
        assert_eq!(
            find_top_level_word("ALTER COLUMN usingx TYPE int", "using"),
            None
        );
        assert_eq!(
            find_top_level_word("ALTER COLUMN a TYPE int /* using */", "using"),
            None
        );
    }

    fn split(text: &str) -> Vec<&str> {
        split_top_level(text)
            .expect("splits")
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn single_and_multiple_subcommands() {
        assert_eq!(
            split("ALTER COLUMN id TYPE bigint"),
            ["ALTER COLUMN id TYPE bigint"]
        );
        assert_eq!(
            split(" ADD COLUMN a int ,  DROP COLUMN b "),
            ["ADD COLUMN a int", "DROP COLUMN b"]
        );
    }

    #[test]
    fn commas_inside_brackets_do_not_split() {
        assert_eq!(
            split("ALTER COLUMN n TYPE numeric(10,2), SET (fillfactor=70, autovacuum_enabled=off)"),
            [
                "ALTER COLUMN n TYPE numeric(10,2)",
                "SET (fillfactor=70, autovacuum_enabled=off)"
            ]
        );
        assert_eq!(
            split("ADD COLUMN a int[] DEFAULT ARRAY[1,2]"),
            ["ADD COLUMN a int[] DEFAULT ARRAY[1,2]"]
        );
    }

    #[test]
    fn commas_inside_literals_identifiers_and_comments_do_not_split() {
        assert_eq!(
            split("ADD COLUMN a text DEFAULT 'x,y'"),
            ["ADD COLUMN a text DEFAULT 'x,y'"]
        );
        assert_eq!(
            split("ADD COLUMN a text DEFAULT 'it''s, ok'"),
            ["ADD COLUMN a text DEFAULT 'it''s, ok'"]
        );
        assert_eq!(
            split("ADD COLUMN a text DEFAULT E'\\', x'"),
            ["ADD COLUMN a text DEFAULT E'\\', x'"]
        );
        assert_eq!(split("ADD COLUMN \"a,b\" int"), ["ADD COLUMN \"a,b\" int"]);
        assert_eq!(
            split("ADD COLUMN a text DEFAULT $$x,y$$"),
            ["ADD COLUMN a text DEFAULT $$x,y$$"]
        );
        assert_eq!(
            split("ADD COLUMN a text DEFAULT $q$x,$$y$q$"),
            ["ADD COLUMN a text DEFAULT $q$x,$$y$q$"]
        );
        assert_eq!(
            split("ADD COLUMN a int -- no, split\n"),
            ["ADD COLUMN a int -- no, split"]
        );
        assert_eq!(
            split("ADD COLUMN a int /* a, /* b, */ c */"),
            ["ADD COLUMN a int /* a, /* b, */ c */"]
        );
    }

    #[test]
    fn a_plain_identifier_ending_in_e_is_not_an_escape_string() {
        // `type'…'` would be a typed literal; a backslash in it is an ordinary character.
        assert_eq!(
            split("ADD COLUMN a text DEFAULT date'2020-01-01', DROP b"),
            ["ADD COLUMN a text DEFAULT date'2020-01-01'", "DROP b"]
        );
    }

    #[test]
    fn unterminated_input_is_left_to_the_parser() {
        assert!(split_top_level("ADD COLUMN a text DEFAULT 'x").is_none());
        assert!(split_top_level("ADD CHECK ((a > 0)").is_none());
        assert!(split_top_level("ADD CHECK (a > 0))").is_none());
        assert!(split_top_level("ADD COLUMN a int /* x").is_none());
        assert!(split_top_level("ADD COLUMN a text DEFAULT $$x").is_none());
    }

    #[test]
    fn empty_pieces_are_reported_as_empty() {
        assert_eq!(split("ADD COLUMN a int,"), ["ADD COLUMN a int", ""]);
        assert_eq!(split(""), [""]);
    }
}
