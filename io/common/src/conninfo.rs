//! PostgreSQL's `keyword = value` connection strings, read as libpq reads
//! them: for masking their password ([`crate::secret`]) and for taking out
//! the TLS options that tokio-postgres does not know (`callwatch_ledger`).
//!
//! Spaces around `=` are optional; a value is either a run of non-space
//! characters or a single-quoted string, and in both a backslash takes the
//! next character as it is (`\'`, `\\`).

use std::ops::Range;

/// One `keyword = value` of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The keyword, as written.
    pub key: &'a str,
    /// The value, unquoted and unescaped.
    pub value: String,
    /// Where the whole pair stands in the string, so that a caller can
    /// copy the pairs it keeps exactly as they were written.
    pub span: Range<usize>,
}

/// Whether `s` is in the URL form (`postgres://…`, `postgresql://…`) rather
/// than the `keyword = value` form, as tokio-postgres decides it.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The pairs of a `keyword = value` string, in order; `None` if it is not
/// one (a keyword without `=`, a quote left open).
pub fn pairs(s: &str) -> Option<Vec<Pair<'_>>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_spaces(bytes, 0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        i = skip_spaces(bytes, i);
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_spaces(bytes, i + 1);
        let (value, end) = value_at(s, i)?;
        out.push(Pair {
            key,
            value,
            span: start..end,
        });
        i = skip_spaces(bytes, end);
    }
    Some(out)
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The value starting at byte `i`, and where it ends.
fn value_at(s: &str, i: usize) -> Option<(String, usize)> {
    let quoted = s.as_bytes().get(i) == Some(&b'\'');
    let mut value = String::new();
    let mut chars = s[i..].char_indices().skip(usize::from(quoted));
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if quoted => return Some((value, i + at + 1)),
            c if c.is_ascii_whitespace() && !quoted => return Some((value, i + at)),
            c => value.push(c),
        }
    }
    // The end of the string closes an unquoted value, not a quoted one.
    (!quoted).then_some((value, s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_values(s: &str) -> Vec<(&str, String)> {
        pairs(s)
            .unwrap()
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect()
    }

    #[test]
    fn values_are_read_as_libpq_reads_them() {
        assert_eq!(
            keys_values("host=db  port = 5432 password='a b\\'c' user=x\\ y dbname=''"),
            [
                ("host", "db".to_owned()),
                ("port", "5432".to_owned()),
                ("password", "a b'c".to_owned()),
                ("user", "x y".to_owned()),
                ("dbname", String::new()),
            ]
        );
        assert_eq!(keys_values(""), []);
    }

    #[test]
    fn spans_cover_each_pair_as_written() {
        let s = "host=db sslmode = 'verify-full' user=cw";
        let spans: Vec<&str> = pairs(s)
            .unwrap()
            .iter()
            .map(|p| &s[p.span.clone()])
            .collect();
        assert_eq!(spans, ["host=db", "sslmode = 'verify-full'", "user=cw"]);
    }

    #[test]
    fn what_is_not_a_connection_string_is_refused() {
        for bad in ["host", "host=db password='open", "=x", "a=\\"] {
            assert_eq!(pairs(bad), None, "{bad}");
        }
    }
}
