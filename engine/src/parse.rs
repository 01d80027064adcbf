//! The JSON Lines parser: one line in, one typed [`Event`] or one clear
//! [`LineError`] out.
//!
//! It walks simd-json's flat tape instead of building a DOM or going through
//! serde: the tape and the parser's buffers are reused from line to line, so
//! a good line costs no allocation (a `settings` line's `follow` list and a
//! `plan` excepted), and every field gets an error message that names it.

use std::fmt;

use simd_json::{Buffers, Node, StaticNode, Tape};

use crate::event::{ChannelId, Event, SettingsPatch, limits};
use crate::time::{self, Nanos};
use crate::token::Token;

/// Why a line was rejected. The text is what `replay` prints on stderr.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("line is {0} bytes long, over the {max}-byte limit", max = limits::MAX_LINE_BYTES)]
    TooLong(usize),
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("invalid JSON at column {column}: {what}")]
    Json { what: &'static str, column: usize },
    #[error("an event must be a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("unknown field `{field}` for a `{kind}` event")]
    Unknown { field: String, kind: &'static str },
    #[error("field `{0}` appears more than once")]
    Duplicate(String),
    #[error("unknown event type `{0}` (expected subscribe, settings, call or price)")]
    UnknownType(String),
    #[error("{field} must be {what}")]
    Invalid {
        field: &'static str,
        what: &'static str,
    },
    #[error("{field}: {err}")]
    Time {
        field: &'static str,
        err: time::TimeError,
    },
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(
        "settings would leave min_fdv_usd ({min}) above max_fdv_usd ({max}) for chat {chat_id}"
    )]
    FdvRange { chat_id: i64, min: f64, max: f64 },
    #[error(
        "dated in the future: at {at}, {ahead_secs} s after it arrived ({arrived}), over the {skew_secs} s allowed",
        at = time::format_rfc3339(*at),
        arrived = time::format_rfc3339(*arrived),
        ahead_secs = (at - arrived) / time::NANOS_PER_SEC,
        skew_secs = skew / time::NANOS_PER_SEC
    )]
    Ahead {
        at: Nanos,
        arrived: Nanos,
        skew: Nanos,
    },
}

/// The fields any event may have; a bit each in [`Fields::present`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Field {
    Type,
    At,
    ChatId,
    ExpiresAt,
    Plan,
    MinCallers,
    LookbackMinutes,
    MinFdvUsd,
    MaxFdvUsd,
    Follow,
    Token,
    ChannelId,
    FdvUsd,
}

const FIELDS: [(&str, Field); 13] = [
    ("type", Field::Type),
    ("at", Field::At),
    ("chat_id", Field::ChatId),
    ("expires_at", Field::ExpiresAt),
    ("plan", Field::Plan),
    ("min_callers", Field::MinCallers),
    ("lookback_minutes", Field::LookbackMinutes),
    ("min_fdv_usd", Field::MinFdvUsd),
    ("max_fdv_usd", Field::MaxFdvUsd),
    ("follow", Field::Follow),
    ("token", Field::Token),
    ("channel_id", Field::ChannelId),
    ("fdv_usd", Field::FdvUsd),
];

/// The field a key names. A `match` compiles to length-then-bytes
/// comparisons, cheaper than walking `FIELDS` for every key of every line.
fn field_named(key: &str) -> Option<Field> {
    Some(match key {
        "type" => Field::Type,
        "at" => Field::At,
        "chat_id" => Field::ChatId,
        "expires_at" => Field::ExpiresAt,
        "plan" => Field::Plan,
        "min_callers" => Field::MinCallers,
        "lookback_minutes" => Field::LookbackMinutes,
        "min_fdv_usd" => Field::MinFdvUsd,
        "max_fdv_usd" => Field::MaxFdvUsd,
        "follow" => Field::Follow,
        "token" => Field::Token,
        "channel_id" => Field::ChannelId,
        "fdv_usd" => Field::FdvUsd,
        _ => return None,
    })
}

impl Field {
    fn name(self) -> &'static str {
        FIELDS[self as usize].0
    }

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// Which fields each event type allows (`type` and `at` always).
fn allowed(kind: &str) -> Option<(&'static str, u16)> {
    let base = Field::Type.bit() | Field::At.bit();
    let bits = |fs: &[Field]| fs.iter().fold(base, |acc, f| acc | f.bit());
    Some(match kind {
        "subscribe" => (
            "subscribe",
            bits(&[Field::ChatId, Field::ExpiresAt, Field::Plan]),
        ),
        "settings" => (
            "settings",
            bits(&[
                Field::ChatId,
                Field::MinCallers,
                Field::LookbackMinutes,
                Field::MinFdvUsd,
                Field::MaxFdvUsd,
                Field::Follow,
            ]),
        ),
        "call" => (
            "call",
            bits(&[Field::Token, Field::ChannelId, Field::FdvUsd]),
        ),
        "price" => ("price", bits(&[Field::Token, Field::FdvUsd])),
        _ => return None,
    })
}

const POSITIVE: &str = "a finite number > 0";
const NON_NEGATIVE: &str = "a finite number >= 0";

/// Where each present field's value starts on the tape.
struct Fields {
    present: u16,
    at: [u32; FIELDS.len()],
}

/// A reusable line parser. Not `Sync`: one per ingest thread.
pub struct LineParser {
    buffers: Buffers,
    /// Kept between lines for its allocation; always empty in between.
    tape: Option<Tape<'static>>,
    line: Vec<u8>,
}

impl fmt::Debug for LineParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineParser").finish_non_exhaustive()
    }
}

impl Default for LineParser {
    fn default() -> Self {
        Self::new()
    }
}

impl LineParser {
    pub fn new() -> Self {
        // Events nest two deep (an object holding a `follow` array); a small
        // bound stops a hostile line from making the parser recurse.
        const MAX_DEPTH: usize = 8;
        LineParser {
            buffers: Buffers::with_max_depth(512, MAX_DEPTH),
            tape: Some(Tape::null().reset()),
            line: Vec::with_capacity(512),
        }
    }

    /// Parses one line (without its newline). Blank lines are the caller's
    /// business: they are not events and have no error.
    pub fn parse(&mut self, line: &[u8]) -> Result<Event, LineError> {
        if line.len() > limits::MAX_LINE_BYTES {
            return Err(LineError::TooLong(line.len()));
        }
        // Our own copy, with the padding simd-json reads past the end, saves
        // it copying the line into a padded buffer of its own.
        self.line.clear();
        self.line.extend_from_slice(line);
        self.line.resize(line.len() + simd_json::INPUT_PADDING, 0);
        let mut tape = self.tape.take().unwrap_or_else(|| Tape::null().reset());
        let parsed =
            simd_json::fill_tape_padded(&mut self.line, line.len(), &mut self.buffers, &mut tape);
        let result = match parsed {
            Ok(()) => decode(&tape.0),
            Err(e) => Err(json_error(line, &e)),
        };
        self.tape = Some(tape.reset());
        result
    }
}

fn json_error(line: &[u8], e: &simd_json::Error) -> LineError {
    use simd_json::ErrorType as E;
    if std::str::from_utf8(line).is_err() {
        return LineError::NotUtf8;
    }
    let what = match e.error() {
        E::Eof => "the line ends inside a value",
        E::TrailingData => "text follows the JSON value",
        E::UnterminatedString => "unterminated string",
        E::InvalidEscape | E::InvalidUnicodeEscape | E::InvalidUnicodeCodepoint => {
            "invalid escape in a string"
        }
        E::InvalidNumber | E::InvalidExponent | E::Overflow => "invalid number",
        E::DepthLimitExceeded => "nested too deeply",
        E::ExpectedNull | E::ExpectedTrue | E::ExpectedFalse => {
            "unknown literal (only null, true and false exist)"
        }
        E::ExpectedObjectColon => "expected ':' after an object key",
        E::ExpectedMapComma | E::ExpectedMapEnd => "expected ',' or '}' in an object",
        E::ExpectedArrayComma => "expected ',' or ']' in an array",
        E::ExpectedObjectKey | E::KeyMustBeAString => "object keys must be strings",
        E::NoStructure => "no JSON value on the line",
        _ => "unexpected character",
    };
    LineError::Json {
        what,
        column: e.index() + 1,
    }
}

fn decode(tape: &[Node<'_>]) -> Result<Event, LineError> {
    let (fields, first_unknown) = index_fields(tape)?;
    let kind = kind_of(tape, &fields, first_unknown)?;
    let at = fields.time(tape, Field::At)?;
    Ok(match kind {
        "subscribe" => Event::Subscribe {
            chat_id: fields.id(tape, Field::ChatId)?,
            at,
            expires_at: fields.time(tape, Field::ExpiresAt)?,
            plan: match fields.get(tape, Field::Plan) {
                None => None,
                Some(Node::String(s)) => Some((*s).into()),
                Some(_) => {
                    return Err(LineError::Invalid {
                        field: "plan",
                        what: "a string",
                    });
                }
            },
        },
        "settings" => Event::Settings {
            chat_id: fields.id(tape, Field::ChatId)?,
            at,
            patch: Box::new(settings_patch(tape, &fields)?),
        },
        "call" => Event::Call {
            token: fields.token(tape)?,
            channel_id: fields.id(tape, Field::ChannelId)?,
            fdv_usd: fields.fdv(tape)?,
            at,
        },
        "price" => Event::Price {
            token: fields.token(tape)?,
            fdv_usd: fields.fdv(tape)?,
            at,
        },
        _ => unreachable!("allowed() knows only these kinds"),
    })
}

/// Where each known field's value sits on the tape, and the first unknown
/// key (an error once the event's kind is known, so that the message can
/// name the kind). A key given twice is an error at once.
#[inline]
fn index_fields<'t, 'a>(tape: &'t [Node<'a>]) -> Result<(Fields, Option<&'t str>), LineError> {
    let Some(&Node::Object { len, .. }) = tape.first() else {
        return Err(LineError::NotObject);
    };
    let mut fields = Fields {
        present: 0,
        at: [0; FIELDS.len()],
    };
    let mut idx = 1;
    let mut first_unknown = None;
    for _ in 0..len {
        let Some(Node::String(key)) = tape.get(idx) else {
            return Err(LineError::NotObject);
        };
        let value = idx + 1;
        idx = value + node_count(&tape[value]);
        match field_named(key) {
            Some(field) => {
                if fields.present & field.bit() != 0 {
                    return Err(LineError::Duplicate((*key).to_owned()));
                }
                fields.present |= field.bit();
                fields.at[field as usize] = value as u32;
            }
            None => {
                first_unknown.get_or_insert(*key);
            }
        }
    }
    Ok((fields, first_unknown))
}

/// The event's `type`, once every field present is one that type takes.
#[inline]
fn kind_of(
    tape: &[Node<'_>],
    fields: &Fields,
    first_unknown: Option<&str>,
) -> Result<&'static str, LineError> {
    let kind = match fields.get(tape, Field::Type) {
        None => return Err(LineError::Missing("type")),
        Some(Node::String(kind)) => *kind,
        Some(_) => {
            return Err(LineError::Invalid {
                field: "type",
                what: "a string",
            });
        }
    };
    let Some((kind, allowed)) = allowed(kind) else {
        return Err(LineError::UnknownType(kind.to_owned()));
    };
    if let Some(field) = first_unknown {
        return Err(LineError::Unknown {
            field: field.to_owned(),
            kind,
        });
    }
    if let Some(&(name, _)) = FIELDS
        .iter()
        .find(|(_, f)| fields.present & f.bit() & !allowed != 0)
    {
        return Err(LineError::Unknown {
            field: name.to_owned(),
            kind,
        });
    }
    Ok(kind)
}

/// A `settings` event's fields, each checked against its bounds.
fn settings_patch(tape: &[Node<'_>], fields: &Fields) -> Result<SettingsPatch, LineError> {
    Ok(SettingsPatch {
        min_callers: fields.opt_int_in(
            tape,
            Field::MinCallers,
            limits::MIN_CALLERS,
            "an integer from 1 to 100",
        )?,
        lookback_minutes: fields.opt_int_in(
            tape,
            Field::LookbackMinutes,
            limits::LOOKBACK_MINUTES,
            "an integer from 1 to 10080",
        )?,
        min_fdv_usd: fields.opt_number(tape, Field::MinFdvUsd, |v| v >= 0.0, NON_NEGATIVE)?,
        max_fdv_usd: fields.opt_number(tape, Field::MaxFdvUsd, |v| v > 0.0, POSITIVE)?,
        follow: fields.follow(tape)?,
    })
}

fn node_count(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// The value of an integer node, if it is one that fits an i64.
fn as_i64(node: &Node<'_>) -> Option<Result<i64, ()>> {
    match *node {
        Node::Static(StaticNode::I64(v)) => Some(Ok(v)),
        Node::Static(StaticNode::U64(v)) => Some(i64::try_from(v).map_err(|_| ())),
        _ => None,
    }
}

impl Fields {
    fn get<'t, 'i>(&self, tape: &'t [Node<'i>], field: Field) -> Option<&'t Node<'i>> {
        (self.present & field.bit() != 0).then(|| &tape[self.at[field as usize] as usize])
    }

    fn required<'t, 'i>(
        &self,
        tape: &'t [Node<'i>],
        field: Field,
    ) -> Result<&'t Node<'i>, LineError> {
        self.get(tape, field)
            .ok_or_else(|| LineError::Missing(field.name()))
    }

    fn time(&self, tape: &[Node<'_>], field: Field) -> Result<Nanos, LineError> {
        match self.required(tape, field)? {
            Node::String(s) => time::parse_rfc3339(s).map_err(|err| LineError::Time {
                field: field.name(),
                err,
            }),
            _ => Err(LineError::Invalid {
                field: field.name(),
                what: "an RFC 3339 time string",
            }),
        }
    }

    fn id(&self, tape: &[Node<'_>], field: Field) -> Result<i64, LineError> {
        match as_i64(self.required(tape, field)?) {
            Some(Ok(v)) if v != 0 => Ok(v),
            _ => Err(LineError::Invalid {
                field: field.name(),
                what: "a non-zero 64-bit integer",
            }),
        }
    }

    fn opt_int_in(
        &self,
        tape: &[Node<'_>],
        field: Field,
        range: std::ops::RangeInclusive<u32>,
        what: &'static str,
    ) -> Result<Option<u32>, LineError> {
        let Some(node) = self.get(tape, field) else {
            return Ok(None);
        };
        match as_i64(node) {
            Some(Ok(v)) => match u32::try_from(v) {
                Ok(v) if range.contains(&v) => Ok(Some(v)),
                _ => Err(LineError::Invalid {
                    field: field.name(),
                    what,
                }),
            },
            _ => Err(LineError::Invalid {
                field: field.name(),
                what,
            }),
        }
    }

    fn number(&self, node: &Node<'_>) -> Option<f64> {
        match *node {
            Node::Static(StaticNode::F64(v)) => Some(v),
            Node::Static(StaticNode::I64(v)) => Some(v as f64),
            Node::Static(StaticNode::U64(v)) => Some(v as f64),
            _ => None,
        }
    }

    fn opt_number(
        &self,
        tape: &[Node<'_>],
        field: Field,
        ok: impl Fn(f64) -> bool,
        what: &'static str,
    ) -> Result<Option<f64>, LineError> {
        let Some(node) = self.get(tape, field) else {
            return Ok(None);
        };
        match self.number(node) {
            Some(v) if v.is_finite() && ok(v) => Ok(Some(v)),
            _ => Err(LineError::Invalid {
                field: field.name(),
                what,
            }),
        }
    }

    fn fdv(&self, tape: &[Node<'_>]) -> Result<f64, LineError> {
        self.required(tape, Field::FdvUsd)?;
        Ok(self
            .opt_number(tape, Field::FdvUsd, |v| v > 0.0, POSITIVE)?
            .expect("checked present above"))
    }

    fn token(&self, tape: &[Node<'_>]) -> Result<Token, LineError> {
        match self.required(tape, Field::Token)? {
            Node::String(s) => Ok(Token::parse(s)?),
            _ => Err(LineError::Invalid {
                field: "token",
                what: "a string",
            }),
        }
    }

    fn follow(&self, tape: &[Node<'_>]) -> Result<Option<Vec<ChannelId>>, LineError> {
        let Some(&Node::Array { len, count }) = self.get(tape, Field::Follow) else {
            return match self.get(tape, Field::Follow) {
                None => Ok(None),
                Some(_) => Err(LineError::Invalid {
                    field: "follow",
                    what: "an array of non-zero channel ids",
                }),
            };
        };
        let bad = || LineError::Invalid {
            field: "follow",
            what: "an array of non-zero channel ids",
        };
        // Nested arrays or objects would make `count` exceed `len`.
        if count != len {
            return Err(bad());
        }
        let start = self.at[Field::Follow as usize] as usize + 1;
        let mut ids = Vec::with_capacity(len);
        for node in &tape[start..start + len] {
            match as_i64(node) {
                Some(Ok(v)) if v != 0 => ids.push(v),
                _ => return Err(bad()),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Some(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";

    fn parse(line: &str) -> Result<Event, String> {
        LineParser::new()
            .parse(line.as_bytes())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn field_names_match_the_table() {
        for (name, field) in FIELDS {
            assert_eq!(field_named(name), Some(field));
            assert_eq!(field.name(), name);
        }
        assert_eq!(field_named("Type"), None);
    }

    #[test]
    fn price_line_parses() {
        let ev = parse(&format!(
            r#"{{"type":"price","at":"2026-11-25T10:00:00Z","token":"{SOL}","fdv_usd":125000}}"#
        ))
        .unwrap();
        assert!(matches!(ev, Event::Price { fdv_usd, .. } if fdv_usd == 125000.0));
    }

    #[test]
    fn field_order_does_not_matter() {
        let ev = parse(&format!(
            r#"{{"fdv_usd":1.5,"channel_id":-1001,"token":"{SOL}","at":"2026-11-25T10:00:00+02:00","type":"call"}}"#
        ))
        .unwrap();
        assert!(matches!(
            ev,
            Event::Call {
                channel_id: -1001,
                ..
            }
        ));
    }

    #[test]
    fn fdv_must_be_positive() {
        let err = parse(&format!(
            r#"{{"type":"price","at":"2026-11-25T10:00:00Z","token":"{SOL}","fdv_usd":0}}"#
        ))
        .unwrap_err();
        assert_eq!(err, "fdv_usd must be a finite number > 0");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse(&format!(
            r#"{{"type":"price","at":"2026-11-25T10:00:00Z","token":"{SOL}","fdv_usd":1,"channel_id":5}}"#
        ))
        .unwrap_err();
        assert_eq!(err, "unknown field `channel_id` for a `price` event");
        let err = parse(r#"{"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":1,"expires_at":"2026-11-25T10:00:00Z","x":1}"#).unwrap_err();
        assert_eq!(err, "unknown field `x` for a `subscribe` event");
    }

    #[test]
    fn duplicate_field_is_rejected() {
        let err = parse(r#"{"type":"price","type":"call"}"#).unwrap_err();
        assert_eq!(err, "field `type` appears more than once");
    }

    #[test]
    fn missing_field_is_named() {
        let err =
            parse(r#"{"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":1}"#).unwrap_err();
        assert_eq!(err, "missing field `expires_at`");
        assert_eq!(parse("{}").unwrap_err(), "missing field `type`");
    }

    #[test]
    fn chat_id_must_be_nonzero_integer() {
        for v in ["0", "1.5", "\"7\"", "18446744073709551615"] {
            let err = parse(&format!(
                r#"{{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":{v}}}"#
            ))
            .unwrap_err();
            assert_eq!(err, "chat_id must be a non-zero 64-bit integer", "{v}");
        }
    }

    #[test]
    fn settings_ranges_are_checked() {
        let base = r#"{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":5,"#;
        assert!(parse(&format!("{base}\"min_callers\":101}}")).is_err());
        assert!(parse(&format!("{base}\"min_callers\":0}}")).is_err());
        assert!(parse(&format!("{base}\"lookback_minutes\":10081}}")).is_err());
        assert!(parse(&format!("{base}\"min_fdv_usd\":-1}}")).is_err());
        assert!(parse(&format!("{base}\"follow\":[1,[2]]}}")).is_err());
        assert!(parse(&format!("{base}\"follow\":[0]}}")).is_err());
        let ev = parse(&format!("{base}\"follow\":[3,1,3],\"min_callers\":100}}")).unwrap();
        let Event::Settings { patch, .. } = ev else {
            panic!()
        };
        assert_eq!(patch.follow, Some(vec![1, 3]));
        assert_eq!(patch.min_callers, Some(100));
    }

    #[test]
    fn not_an_object_or_not_json() {
        assert_eq!(
            parse("[1,2]").unwrap_err(),
            "an event must be a JSON object"
        );
        assert!(
            parse("{\"type\":")
                .unwrap_err()
                .starts_with("invalid JSON at column")
        );
        assert_eq!(
            LineParser::new()
                .parse(b"{\"type\":\"\xff\"}")
                .unwrap_err()
                .to_string(),
            "line is not valid UTF-8"
        );
    }

    #[test]
    fn long_line_is_rejected_before_parsing() {
        let line = vec![b' '; limits::MAX_LINE_BYTES + 1];
        assert!(matches!(
            LineParser::new().parse(&line),
            Err(LineError::TooLong(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let line = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&line).is_err());
    }

    #[test]
    fn parser_is_reusable_after_errors() {
        let mut p = LineParser::new();
        assert!(p.parse(b"{").is_err());
        let ok = format!(
            r#"{{"type":"price","at":"2026-11-25T10:00:00Z","token":"{SOL}","fdv_usd":2}}"#
        );
        assert!(p.parse(ok.as_bytes()).is_ok());
    }
}
