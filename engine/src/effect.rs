//! What the engine decides: alerts, in the output format of CONTRACT.md.
//!
//! Effects are plain data; the io side turns them into Telegram messages,
//! Redis writes and audit rows. `write_json` is the JSON Lines form that
//! `replay` prints, written by hand (itoa, ryu) because it is on the output
//! path of every alert.

use std::sync::Arc;

use crate::event::{ChannelId, ChatId};
use crate::time::{self, Nanos};
use crate::token::{Token, TokenText};

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
    pub callers: Callers,
    /// The channel whose call completed the conditions (the seed's
    /// `channel_id` of the tracking record). Not part of the output.
    pub channel_id: ChannelId,
}

/// A call alert's callers, sorted ascending: a slice to read. One or two
/// are held inline and more are shared, so that the alerts of one call,
/// often thousands with the same callers, allocate nothing each
/// (BENCHMARKS.md "[2.4]"). Built from a `Vec` or a slice.
pub struct Callers(CallersRepr);

enum CallersRepr {
    /// `ids[..len]`, `len` at most 2.
    Inline {
        len: u8,
        ids: [ChannelId; 2],
    },
    Shared(Arc<[ChannelId]>),
}

impl Callers {
    /// No caller.
    pub const fn new() -> Callers {
        Callers(CallersRepr::Inline {
            len: 0,
            ids: [0; 2],
        })
    }

    /// The channels of `items`, in their order.
    pub fn from_channels<T>(items: &[T], channel: impl Fn(&T) -> ChannelId) -> Callers {
        match items {
            [] => Callers::new(),
            [a] => Callers(CallersRepr::Inline {
                len: 1,
                ids: [channel(a), 0],
            }),
            [a, b] => Callers(CallersRepr::Inline {
                len: 2,
                ids: [channel(a), channel(b)],
            }),
            _ => Callers(CallersRepr::Shared(items.iter().map(channel).collect())),
        }
    }

    pub fn as_slice(&self) -> &[ChannelId] {
        self
    }
}

impl Clone for Callers {
    #[inline]
    fn clone(&self) -> Callers {
        match &self.0 {
            CallersRepr::Shared(ids) => Callers(CallersRepr::Shared(Arc::clone(ids))),
            // Copied whole: a clone field by field stored the tag and the
            // length as single bytes, and the next move of the copy read
            // them back within a word, a load the CPU cannot take from its
            // store buffer; at a call that alerts every follower, that
            // stall was an eighth of the call or more (BENCHMARKS.md
            // "[2.4]").
            // SAFETY: an inline list is integers and owns nothing, so a
            // copy of its bytes is a clone.
            CallersRepr::Inline { .. } => unsafe { std::ptr::read(self) },
        }
    }
}

impl Default for Callers {
    fn default() -> Self {
        Callers::new()
    }
}

impl std::ops::Deref for Callers {
    type Target = [ChannelId];

    #[inline]
    fn deref(&self) -> &[ChannelId] {
        match &self.0 {
            CallersRepr::Inline { len, ids } => &ids[..*len as usize],
            CallersRepr::Shared(ids) => ids,
        }
    }
}

impl From<&[ChannelId]> for Callers {
    fn from(ids: &[ChannelId]) -> Callers {
        Callers::from_channels(ids, |&c| c)
    }
}

impl From<Vec<ChannelId>> for Callers {
    fn from(ids: Vec<ChannelId>) -> Callers {
        Callers::from(ids.as_slice())
    }
}

impl<const N: usize> From<[ChannelId; N]> for Callers {
    fn from(ids: [ChannelId; N]) -> Callers {
        Callers::from(ids.as_slice())
    }
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Callers {
    fn eq(&self, other: &Callers) -> bool {
        self[..] == other[..]
    }
}

impl<const N: usize> PartialEq<[ChannelId; N]> for Callers {
    fn eq(&self, other: &[ChannelId; N]) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Vec<ChannelId>> for Callers {
    fn eq(&self, other: &Vec<ChannelId>) -> bool {
        self[..] == other[..]
    }
}

impl<'a> IntoIterator for &'a Callers {
    type Item = &'a ChannelId;
    type IntoIter = std::slice::Iter<'a, ChannelId>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
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
    /// [`Progress`] is not an alert and appends nothing. To print many
    /// alerts, [`JsonLines`] renders each token once per run of alerts.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if let Some(token) = self.alert_token() {
            self.write_json_as(token.text().as_bytes(), out);
        }
    }

    /// The token an alert names; `None` for a [`Progress`], which prints
    /// nothing.
    fn alert_token(&self) -> Option<&Token> {
        match self {
            Effect::CallAlert(a) => Some(&a.token),
            Effect::MultiplierAlert(a) => Some(&a.token),
            Effect::Progress(_) => None,
        }
    }

    /// `write_json` with the token's text already rendered.
    fn write_json_as(&self, token: &[u8], out: &mut Vec<u8>) {
        let mut ints = itoa::Buffer::new();
        match self {
            Effect::CallAlert(a) => {
                out.extend_from_slice(b"{\"type\":\"call_alert\"");
                head(out, &mut ints, a.seq, a.chat_id, token, a.at);
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
                head(out, &mut ints, a.seq, a.chat_id, token, a.at);
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

/// Writes alerts as JSON Lines, the same bytes as [`Effect::write_json`],
/// but renders a token's text once for a run of alerts that name it.
/// Every alert of one event names its token, and output order keeps them
/// together, so this renders a token once per event instead of once per
/// chat alerted (base58 was the writer's largest cost on call-heavy input).
#[derive(Debug, Default)]
pub struct JsonLines {
    /// The token of the last alert written, and its text.
    last: Option<(Token, TokenText)>,
}

impl JsonLines {
    pub fn new() -> JsonLines {
        JsonLines::default()
    }

    /// Appends `effect` as [`Effect::write_json`] does.
    pub fn write(&mut self, effect: &Effect, out: &mut Vec<u8>) {
        let Some(token) = effect.alert_token() else {
            return;
        };
        if self.last.as_ref().is_none_or(|(last, _)| last != token) {
            self.last = Some((*token, token.text()));
        }
        let (_, text) = self.last.as_ref().expect("set above");
        effect.write_json_as(text.as_bytes(), out);
    }
}

fn head(
    out: &mut Vec<u8>,
    ints: &mut itoa::Buffer,
    seq: u64,
    chat: ChatId,
    token: &[u8],
    at: Nanos,
) {
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(ints.format(seq).as_bytes());
    out.extend_from_slice(b",\"chat_id\":");
    out.extend_from_slice(ints.format(chat).as_bytes());
    out.extend_from_slice(b",\"token\":\"");
    out.extend_from_slice(token);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";
    const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
    const EVM: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    fn call(seq: u64, chat_id: ChatId, token: &str) -> Effect {
        Effect::CallAlert(CallAlert {
            seq,
            chat_id,
            token: token.parse().unwrap(),
            at: 1_795_600_800_000_000_000,
            fdv_usd: 125_000.0,
            callers: vec![-1002, -1001].into(),
            channel_id: -1001,
        })
    }

    fn multiplier(seq: u64, chat_id: ChatId, token: &str) -> Effect {
        Effect::MultiplierAlert(MultiplierAlert {
            seq,
            chat_id,
            token: token.parse().unwrap(),
            at: 1_795_604_400_000_000_000,
            threshold: 10.0,
            multiplier: 12.5,
            fdv_at_call: 125_000.0,
            fdv_usd: 1_562_500.0,
            tracking_started: 1_795_600_800_000_000_000,
        })
    }

    #[test]
    fn json_lines_writes_what_write_json_writes() {
        let progress = Effect::Progress(Progress {
            seq: 4,
            chat_id: 3,
            token: SOL.parse().unwrap(),
            threshold: 2.0,
            tracking_started: 0,
        });
        // Runs of one token, a token that comes back after another, both
        // chains, and a progress (which prints nothing) inside a run.
        let effects = [
            call(1, 1, SOL),
            call(1, 2, SOL),
            call(2, 1, JUP),
            multiplier(3, 1, SOL),
            progress,
            multiplier(4, 2, SOL),
            call(5, 1, EVM),
            multiplier(6, 1, JUP),
        ];
        let (mut each, mut once) = (Vec::new(), Vec::new());
        let mut json = JsonLines::new();
        for e in &effects {
            e.write_json(&mut each);
            json.write(e, &mut once);
        }
        assert_eq!(
            String::from_utf8(once).unwrap(),
            String::from_utf8(each).unwrap()
        );
    }

    #[test]
    fn callers_read_as_the_list_they_were_made_from() {
        for n in 0..6 {
            let ids: Vec<ChannelId> = (0..n).map(|i| -1000 - i).collect();
            let callers = Callers::from(ids.clone());
            assert_eq!(callers.as_slice(), ids.as_slice());
            assert_eq!(callers, ids);
            assert_eq!(format!("{callers:?}"), format!("{ids:?}"));
            let copy = callers.clone();
            assert_eq!(copy, callers);
            // A clone stands on its own: inline, or holding the list too.
            drop(callers);
            assert_eq!(copy, ids);
            assert_eq!(copy.clone().as_slice(), ids.as_slice());
        }
        assert_ne!(Callers::from([1, 2]), Callers::from([1, 2, 3]));
        assert_ne!(Callers::from([1, 2]), Callers::from([2, 1]));
        assert!(Callers::default().is_empty());
    }

    #[test]
    fn json_lines_prints_each_alerts_own_token() {
        let mut out = Vec::new();
        let mut json = JsonLines::new();
        json.write(&call(1, 1, SOL), &mut out);
        json.write(&call(2, 1, EVM), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(SOL), "{}", lines[0]);
        assert!(lines[1].contains(&EVM.to_lowercase()), "{}", lines[1]);
    }
}
