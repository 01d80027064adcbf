//! State loaded back from storage, as a rebuild does: tracked entries,
//! calls and processed records, without deciding anything.

use crate::event::{ChannelId, limits};
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::Entry;

use super::ShardState;
use super::record::{Checked, Record, Status};

/// A tracked entry loaded from storage (a `multiplier:{token}:{chat}`
/// record) rather than started by a call. A pair given twice (SCAN may
/// hand a key over twice) is left once by [`ShardState::shrink_to_fit`],
/// which ends every rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restore {
    pub token: Token,
    pub chat_id: i64,
    pub fdv_at_call: f64,
    pub started: Nanos,
    /// The last threshold alerted, if any; a value that is no longer a
    /// configured threshold counts as the largest one below it.
    pub last_threshold: Option<f64>,
}

/// A processed record loaded from storage (a
/// `processed_token:{token}:{chat}` record). A pair given twice keeps the
/// record given last.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreRecord {
    pub token: Token,
    pub chat_id: i64,
    pub status: Status,
    /// The record's last check.
    pub last_check: Nanos,
    /// Channels checked, with the call time seen for each (any order).
    pub checked: Vec<(ChannelId, Nanos)>,
}

/// A call loaded from storage: `calls[token][channel_id] = at`, as a call
/// event would leave it, without deciding anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestoreCall {
    pub token: Token,
    pub channel_id: ChannelId,
    pub at: Nanos,
    /// The FDV at the call. A value that is not finite and > 0 means
    /// unknown: the call still counts for the contract's rules, but not on
    /// the leaderboard.
    pub fdv_at_call: f64,
    /// The highest FDV since the call; unknown (as above) or lower than
    /// `fdv_at_call` means `fdv_at_call`.
    pub peak_fdv: f64,
}

impl ShardState {
    /// Loads one tracked entry, as a rebuild from storage does. Produces no
    /// alert; the chat is added (inactive) if this shard has not seen it.
    pub fn restore(&mut self, r: &Restore) {
        self.finish_snapshot();
        let slot = self.intern(&r.token);
        let chat = self.chats.intern(r.chat_id);
        let thresholds = &self.rules.thresholds;
        let last = r
            .last_threshold
            .map_or(0, |v| thresholds.iter().take_while(|&&h| h <= v).count());
        let ts = &mut self.slots[slot];
        ts.next_sweep = ts
            .next_sweep
            .min(r.started.saturating_add(self.rules.ttl_nanos));
        if last < thresholds.len() {
            ts.tracked.push(
                Entry {
                    fdv_at_call: r.fdv_at_call,
                    started: r.started,
                    chat,
                    last: u8::try_from(last).expect("at most 255 thresholds"),
                },
                thresholds,
            );
            self.index
                .get_mut(&r.token)
                .expect("interned above")
                .next_change = ts.next_change(thresholds);
            self.stats.tracked += 1;
        }
    }

    /// Loads one call into the calls table, as a rebuild from storage does:
    /// the latest time per channel wins, as with call events.
    pub fn restore_call(&mut self, r: &RestoreCall) {
        self.finish_snapshot();
        let slot = self.intern(&r.token);
        let ts = &mut self.slots[slot];
        ts.calls
            .record(r.channel_id, r.at, r.fdv_at_call, r.peak_fdv);
        self.index
            .get_mut(&r.token)
            .expect("interned above")
            .next_change = ts.next_change(&self.rules.thresholds);
        let keep = self.rules.ttl_nanos.min(limits::MAX_LOOKBACK_NANOS);
        ts.next_sweep = ts.next_sweep.min(r.at.saturating_add(keep));
    }

    /// Loads one processed record, as a rebuild from storage does. It does
    /// not name the tracking it started, so any restored entry of the pair
    /// stays current until a new call restarts the tracking.
    pub fn restore_record(&mut self, r: &RestoreRecord) {
        self.finish_snapshot();
        let slot = self.intern(&r.token);
        let chat = self.chats.intern(r.chat_id);
        let ts = &mut self.slots[slot];
        ts.next_sweep = ts
            .next_sweep
            .min(r.last_check.saturating_add(self.rules.ttl_nanos));
        let mut checked = r.checked.clone();
        checked.sort_unstable_by_key(|&(c, at)| (c, std::cmp::Reverse(at)));
        checked.dedup_by_key(|&mut (c, _)| c);
        let record = Record {
            status: r.status,
            last_check: r.last_check,
            tracking_started: Nanos::MIN,
            checked: Checked::from_slice(&checked),
        };
        if ts.records.insert(chat, record).is_none() {
            self.stats.records += 1;
        }
    }

    /// Ends a rebuild: a (token, chat) pair restored twice is left once
    /// (the copy furthest along its thresholds), and every heap and map
    /// gives back spare capacity (pushes had doubled them as they grew).
    pub fn shrink_to_fit(&mut self) {
        self.finish_snapshot();
        let mut scratch = Vec::new();
        let thresholds = &self.rules.thresholds;
        for ts in self.slots.iter_mut().filter(|ts| ts.live) {
            let dropped = ts.tracked.dedup_chats(thresholds, &mut scratch);
            if dropped > 0 {
                self.stats.tracked -= dropped as u64;
                if let Some(hot) = self.index.get_mut(&ts.token) {
                    hot.next_change = ts.next_change(thresholds);
                }
            }
            ts.tracked.shrink_to_fit();
            ts.calls.shrink_to_fit();
            ts.records.shrink_to_fit();
        }
        self.slots.shrink_to_fit();
        self.index.shrink_to_fit();
        self.free.shrink_to_fit();
    }
}
