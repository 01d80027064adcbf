//! Typed input events, as CONTRACT.md defines them.
//!
//! An [`Event`] is already validated: every value is in range and every token
//! is a canonical [`Token`]. The only check left for later is the one that
//! needs history (a `settings` line whose *result* has `min_fdv_usd >
//! max_fdv_usd`), which [`crate::ingest::Ingest`] makes because it sees every
//! chat event in input order.

use crate::time::Nanos;
use crate::token::Token;

/// A chat id as Telegram gives it (never 0).
pub type ChatId = i64;
/// A channel id as Telegram gives it (never 0).
pub type ChannelId = i64;

/// Bounds from CONTRACT.md, kept in one place so parser, docs and tests agree.
pub mod limits {
    /// The longest accepted line, in bytes, not counting its newline.
    pub const MAX_LINE_BYTES: usize = 64 * 1024;
    /// `min_callers` range.
    pub const MIN_CALLERS: std::ops::RangeInclusive<u32> = 1..=100;
    /// `lookback_minutes` range (one week at most).
    pub const LOOKBACK_MINUTES: std::ops::RangeInclusive<u32> = 1..=10_080;
    /// The longest lookback any chat can have, in nanoseconds.
    pub const MAX_LOOKBACK_NANOS: i64 = 10_080 * 60 * 1_000_000_000;
}

/// One validated input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A chat's subscription; the latest one decides whether it is active.
    Subscribe {
        chat_id: ChatId,
        at: Nanos,
        expires_at: Nanos,
        plan: Option<Box<str>>,
    },
    /// A change to some of a chat's settings; absent fields keep their value.
    Settings {
        chat_id: ChatId,
        at: Nanos,
        patch: Box<SettingsPatch>,
    },
    /// A channel called a token.
    Call {
        token: Token,
        channel_id: ChannelId,
        fdv_usd: f64,
        at: Nanos,
    },
    /// A new valuation for a token.
    Price {
        token: Token,
        fdv_usd: f64,
        at: Nanos,
    },
}

impl Event {
    /// The event's own time, "now" for the rules that it triggers.
    pub fn at(&self) -> Nanos {
        match *self {
            Event::Subscribe { at, .. }
            | Event::Settings { at, .. }
            | Event::Call { at, .. }
            | Event::Price { at, .. } => at,
        }
    }

    /// The token of a token event; `None` for chat events, which every shard
    /// receives.
    pub fn token(&self) -> Option<&Token> {
        match self {
            Event::Call { token, .. } | Event::Price { token, .. } => Some(token),
            Event::Subscribe { .. } | Event::Settings { .. } => None,
        }
    }
}

/// The fields of a `settings` event; `None` keeps the chat's current value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsPatch {
    pub min_callers: Option<u32>,
    pub lookback_minutes: Option<u32>,
    pub min_fdv_usd: Option<f64>,
    pub max_fdv_usd: Option<f64>,
    /// Sorted, without duplicates; empty means every channel.
    pub follow: Option<Vec<ChannelId>>,
}

/// An event with its place in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The 1-based input line number.
    pub seq: u64,
    /// The stream clock: the latest `at` of this and every earlier event.
    /// Expiry is judged against it, so that a record, once expired, stays
    /// expired whatever order later events arrive in, and so that a shard
    /// can drop expired state whenever it likes without changing any
    /// output (see ARCHITECTURE.md, "Expiry").
    pub clock: Nanos,
    pub event: Event,
}

impl Event {
    /// Appends the event as one JSON line in the input format, so that a
    /// generated or forwarded event reads back as itself.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ints = itoa::Buffer::new();
        let at = |out: &mut Vec<u8>, name: &str, t: Nanos| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":\"");
            crate::time::write_rfc3339(t, out);
            out.push(b'"');
        };
        let num = |out: &mut Vec<u8>, name: &str, v: f64| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
        };
        match self {
            Event::Subscribe {
                chat_id,
                at: t,
                expires_at,
                plan,
            } => {
                out.extend_from_slice(b"{\"type\":\"subscribe\"");
                at(out, "at", *t);
                out.extend_from_slice(b",\"chat_id\":");
                out.extend_from_slice(ints.format(*chat_id).as_bytes());
                at(out, "expires_at", *expires_at);
                if let Some(p) = plan {
                    out.extend_from_slice(b",\"plan\":");
                    write_json_string(out, p);
                }
            }
            Event::Settings {
                chat_id,
                at: t,
                patch,
            } => {
                out.extend_from_slice(b"{\"type\":\"settings\"");
                at(out, "at", *t);
                out.extend_from_slice(b",\"chat_id\":");
                out.extend_from_slice(ints.format(*chat_id).as_bytes());
                if let Some(v) = patch.min_callers {
                    out.extend_from_slice(b",\"min_callers\":");
                    out.extend_from_slice(ints.format(v).as_bytes());
                }
                if let Some(v) = patch.lookback_minutes {
                    out.extend_from_slice(b",\"lookback_minutes\":");
                    out.extend_from_slice(ints.format(v).as_bytes());
                }
                if let Some(v) = patch.min_fdv_usd {
                    num(out, "min_fdv_usd", v);
                }
                if let Some(v) = patch.max_fdv_usd {
                    num(out, "max_fdv_usd", v);
                }
                if let Some(list) = &patch.follow {
                    out.extend_from_slice(b",\"follow\":[");
                    for (i, c) in list.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(ints.format(*c).as_bytes());
                    }
                    out.push(b']');
                }
            }
            Event::Call {
                token,
                channel_id,
                fdv_usd,
                at: t,
            } => {
                out.extend_from_slice(b"{\"type\":\"call\"");
                at(out, "at", *t);
                out.extend_from_slice(b",\"token\":\"");
                token.write_to(out);
                out.extend_from_slice(b"\",\"channel_id\":");
                out.extend_from_slice(ints.format(*channel_id).as_bytes());
                num(out, "fdv_usd", *fdv_usd);
            }
            Event::Price {
                token,
                fdv_usd,
                at: t,
            } => {
                out.extend_from_slice(b"{\"type\":\"price\"");
                at(out, "at", *t);
                out.extend_from_slice(b",\"token\":\"");
                token.write_to(out);
                out.push(b'"');
                num(out, "fdv_usd", *fdv_usd);
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A JSON string literal, escaped per RFC 8259.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}
