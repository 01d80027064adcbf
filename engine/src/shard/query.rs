//! What commands ask a shard (a scan each: not the hot path), and views
//! of its state for inspection and tests.

use crate::event::ChannelId;
use crate::time::Nanos;
use crate::token::Token;

use super::record::current;
use super::{ShardState, TokenState};
use crate::tracked::Entry;

/// A read-only view of one tracked entry, for inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedView {
    pub token: Token,
    pub chat_id: i64,
    pub fdv_at_call: f64,
    pub started: Nanos,
    /// The last threshold reached, if any.
    pub last_threshold: Option<f64>,
}

/// A chat's tracked entry with its token's current value, for commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holding {
    pub tracked: TrackedView,
    /// The token's current FDV (its latest call or price).
    pub fdv_usd: f64,
}

impl Holding {
    /// The current multiple of the value at the call.
    pub fn multiple(&self) -> f64 {
        self.fdv_usd / self.tracked.fdv_at_call
    }
}

/// How one channel's latest call of a token has done so far, for the
/// channel leaderboard ([`crate::board`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallOutcome {
    pub token: Token,
    pub channel_id: ChannelId,
    /// `calls[token][channel_id]`.
    pub at: Nanos,
    /// The FDV at that call (finite and > 0).
    pub fdv_at_call: f64,
    /// The highest FDV of the token since that call, counting every later
    /// call and price; never below `fdv_at_call`.
    pub peak_fdv: f64,
}

/// A token valued close to the value at which it next crosses a
/// threshold, for the price sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub token: Token,
    /// Its current value.
    pub fdv_usd: f64,
    /// The value at which some chat's tracking of it next crosses a
    /// threshold.
    pub next_cross: f64,
}

impl ShardState {
    /// The tokens whose current value is at least `share` of the value at
    /// which they next cross a threshold. A scan of every token: for the
    /// sources now and then, not the hot path.
    pub fn near(&self, share: f64) -> Vec<Near> {
        let thresholds = &self.rules.thresholds;
        self.index
            .iter()
            .filter_map(|(token, hot)| {
                let next_cross = self.slots[hot.slot as usize].tracked.next_cross(thresholds);
                (next_cross.is_finite() && hot.fdv_usd >= share * next_cross).then_some(Near {
                    token: *token,
                    fdv_usd: hot.fdv_usd,
                    next_cross,
                })
            })
            .collect()
    }

    /// Every live tracked entry, for inspection and tests (not a hot path).
    pub fn tracked(&self) -> Vec<TrackedView> {
        self.live_entries(|_| true).map(|(_, v)| v).collect()
    }

    /// The live entries that `keep` accepts, each with its token's slot.
    fn live_entries(
        &self,
        keep: impl Fn(&Entry) -> bool,
    ) -> impl Iterator<Item = (&TokenState, TrackedView)> {
        self.slots
            .iter()
            .filter(|ts| ts.live)
            .flat_map(move |ts| ts.tracked.entries().iter().map(move |e| (ts, e)))
            .filter(move |(ts, e)| {
                keep(e)
                    && self.clock < e.started.saturating_add(self.rules.ttl_nanos)
                    && current(&ts.records, e)
            })
            .map(|(ts, e)| {
                let view = TrackedView {
                    token: ts.token,
                    chat_id: self.chats.id(e.chat),
                    fdv_at_call: e.fdv_at_call,
                    started: e.started,
                    last_threshold: e
                        .last
                        .checked_sub(1)
                        .map(|k| self.rules.thresholds[k as usize]),
                };
                (ts, view)
            })
    }

    /// One chat's live tracked entries on this shard, with their tokens'
    /// current values. A scan of every entry: for commands, not the hot
    /// path.
    pub fn tracked_by(&self, chat_id: i64) -> Vec<Holding> {
        let Some(chat) = self.chats.lookup(chat_id) else {
            return Vec::new();
        };
        self.live_entries(|e| e.chat == chat)
            .map(|(ts, tracked)| Holding {
                tracked,
                fdv_usd: self.index.get(&ts.token).map_or(0.0, |h| h.fdv_usd),
            })
            .collect()
    }

    /// Every call on this shard made at or after `since` whose value at the
    /// call is known, with its peak so far. A scan of every token's calls:
    /// for commands, not the hot path.
    pub fn call_outcomes(&self, since: Nanos) -> Vec<CallOutcome> {
        self.slots
            .iter()
            .filter(|ts| ts.live)
            .flat_map(|ts| {
                ts.calls
                    .as_slice()
                    .iter()
                    .filter(move |c| c.at >= since && c.known())
                    .map(|c| CallOutcome {
                        token: ts.token,
                        channel_id: c.channel,
                        at: c.at,
                        fdv_at_call: c.fdv_at_call,
                        peak_fdv: c.peak_fdv,
                    })
            })
            .collect()
    }
}
