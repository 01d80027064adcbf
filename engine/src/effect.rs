//! What the engine decides: alerts, in the output format of CONTRACT.md.
//!
//! Effects are plain data; the io side turns them into Telegram messages,
//! Redis writes and audit rows. `write_json` is the JSON Lines form that
//! `replay` prints, written by hand (itoa, ryu) because it is on the output
//! path of every alert.

use crate::event::{ChannelId, ChatId};
use crate::time::{self, Nanos};
use crate::token::Token;

/// The chat met its conditions for a token: enough of the channels it
/// follows called it within its lookback window.
#[derive(Debug, Clone, PartialEq)]
pub struct CallAlert {
    pub seq: u64,
    pub chat_id: ChatId,
    pub token: Token,
    pub at: Nanos,
    pub fdv_usd: f64,
    /// Sorted ascending.
    pub callers: Vec<ChannelId>,
    /// The channel whose call completed the conditions (the seed's
    /// `channel_id` of the tracking record). Not part of the output.
    pub channel_id: ChannelId,
}

/// A tracked token reached a new threshold multiple of its value at the call.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiplierAlert {
    pub seq: u64,
    pub chat_id: ChatId,
    pub token: Token,
    pub at: Nanos,
    pub threshold: f64,
    pub multiplier: f64,
    pub fdv_at_call: f64,
    pub fdv_usd: f64,
    /// When the tracking that reached it began (the call alert's `at`).
    /// Not part of the output.
    pub tracking_started: Nanos,
}

/// A tracked entry passed a threshold while its chat was inactive: no alert,
/// but the entry's state changed. Emitted only with `report_silent`, for
/// state stores; never printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub seq: u64,
    pub chat_id: ChatId,
    pub token: Token,
    pub threshold: f64,
    pub tracking_started: Nanos,
}

/// One output of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CallAlert(CallAlert),
    MultiplierAlert(MultiplierAlert),
    Progress(Progress),
}

impl Effect {
    /// The order of the output: by input line, then by chat.
    pub fn order_key(&self) -> (u64, ChatId) {
        match self {
            Effect::CallAlert(a) => (a.seq, a.chat_id),
            Effect::MultiplierAlert(a) => (a.seq, a.chat_id),
            Effect::Progress(p) => (p.seq, p.chat_id),
        }
    }

    /// Whether this is an alert for the chat (not a state-only change).
    pub fn is_alert(&self) -> bool {
        !matches!(self, Effect::Progress(_))
    }

    pub fn chat_id(&self) -> ChatId {
        self.order_key().1
    }

    /// Appends the alert as one JSON object and a newline; a
    /// [`Progress`] is not an alert and appends nothing.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ints = itoa::Buffer::new();
        match self {
            Effect::CallAlert(a) => {
                out.extend_from_slice(b"{\"type\":\"call_alert\"");
                head(out, &mut ints, a.seq, a.chat_id, &a.token, a.at);
                out.extend_from_slice(b",\"fdv_usd\":");
                number(out, a.fdv_usd);
                out.extend_from_slice(b",\"callers\":[");
                for (i, c) in a.callers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(ints.format(*c).as_bytes());
                }
                out.extend_from_slice(b"]}\n");
            }
            Effect::MultiplierAlert(a) => {
                out.extend_from_slice(b"{\"type\":\"multiplier_alert\"");
                head(out, &mut ints, a.seq, a.chat_id, &a.token, a.at);
                out.extend_from_slice(b",\"threshold\":");
                threshold(out, a.threshold);
                out.extend_from_slice(b",\"multiplier\":");
                number(out, a.multiplier);
                out.extend_from_slice(b",\"fdv_at_call\":");
                number(out, a.fdv_at_call);
                out.extend_from_slice(b",\"fdv_usd\":");
                number(out, a.fdv_usd);
                out.extend_from_slice(b"}\n");
            }
            Effect::Progress(_) => {}
        }
    }
}

fn head(
    out: &mut Vec<u8>,
    ints: &mut itoa::Buffer,
    seq: u64,
    chat: ChatId,
    token: &Token,
    at: Nanos,
) {
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(ints.format(seq).as_bytes());
    out.extend_from_slice(b",\"chat_id\":");
    out.extend_from_slice(ints.format(chat).as_bytes());
    out.extend_from_slice(b",\"token\":\"");
    token.write_to(out);
    out.extend_from_slice(b"\",\"at\":\"");
    time::write_rfc3339(at, out);
    out.push(b'"');
}

/// A JSON number; ryu keeps the `125000.0` form of the contract's example.
/// A multiple too large for an f64 (a price divided by a tiny value at
/// call) prints as the largest finite f64, since JSON has no infinity.
fn number(out: &mut Vec<u8>, v: f64) {
    let v = if v.is_finite() {
        v
    } else {
        f64::MAX.copysign(v)
    };
    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

/// A threshold: whole ones print as integers (`10`, as in the contract's
/// example), others (a configured 1.5, say) as plain numbers.
fn threshold(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        number(out, v);
    }
}
