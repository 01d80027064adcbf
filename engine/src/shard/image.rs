//! A shard's state into a snapshot and back ([`crate::snapshot`]).
//!
//! Tokens section: the shard's clock and counters, then each token with
//! its current value, calls, processed records (ascending by chat, each
//! chat as the gap from the one before) and tracked entries (in heap
//! order, so nothing moves on load).

use crate::calls::Calls;
use crate::chat::ChatIdx;
use crate::config::Rules;
use crate::router::shard_of;
use crate::snapshot::{Decoder, Encoder, Snapshot, SnapshotError};
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::{Entry, Tracked};

use super::record::{Checked, Record, Status};
use super::records::Records;
use super::{Hot, ShardState, ShardStats, TokenState};

/// What one shard's section holds, counted while it is written.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImageCounts {
    pub tokens: u64,
    pub records: u64,
    pub tracked: u64,
}

impl ShardState {
    /// Shard `shard` of `shards` from `snapshot`: its own section when
    /// the shard count is the same; otherwise every section's chats, and
    /// the tokens that route to this shard, their chats renumbered.
    pub(crate) fn from_snapshot(
        rules: Rules,
        snapshot: &Snapshot<'_>,
        shard: usize,
        shards: usize,
    ) -> Result<ShardState, SnapshotError> {
        let mut state = ShardState::new(rules);
        let same = snapshot.shards() == shards;
        let sections: Vec<&[u8]> = if same {
            vec![snapshot.shards[shard]]
        } else {
            snapshot.shards.clone()
        };
        for section in sections {
            let mut d = Decoder::new(section, "a shard's section");
            let map = state.chats.decode_into(&mut d)?;
            state.clock = state.clock.max(d.i64()?);
            let mut stats = [0u64; STATS_FIELDS];
            for v in &mut stats {
                *v = d.u64()?;
            }
            if same {
                state.stats = stats_from(stats);
            }
            let n = d.len(45)?;
            for _ in 0..n {
                let (ts, fdv_usd) = decode_token(&mut d, &map, &state.rules)?;
                if same || shard_of(&ts.token, shards) == shard {
                    state.insert_loaded(ts, fdv_usd, &mut d)?;
                }
            }
            if !d.is_empty() {
                return Err(d.bad("bytes after the last token"));
            }
        }
        state.recount();
        Ok(state)
    }

    /// A token read from a snapshot, into the index and a slot.
    fn insert_loaded(
        &mut self,
        ts: TokenState,
        fdv_usd: f64,
        d: &mut Decoder<'_>,
    ) -> Result<(), SnapshotError> {
        let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 tokens a shard");
        let hot = Hot {
            slot,
            next_change: ts.next_change(&self.rules.thresholds),
            fdv_usd,
        };
        if self.index.insert(ts.token, hot).is_some() {
            return Err(d.bad(format!("token {} appears twice", ts.token.text().as_str())));
        }
        self.slots.push(ts);
        Ok(())
    }

    /// The gauges of what is held, from what was loaded.
    fn recount(&mut self) {
        self.stats.tokens = self.index.len() as u64;
        self.stats.records = self.slots.iter().map(|t| t.records.len() as u64).sum();
        self.stats.tracked = self.slots.iter().map(|t| t.tracked.len() as u64).sum();
    }
}

/// Counters a snapshot keeps, in this order.
const STATS_FIELDS: usize = 10;

pub(super) fn stats_fields(s: &ShardStats) -> [u64; STATS_FIELDS] {
    [
        s.events,
        s.calls,
        s.prices,
        s.call_alerts,
        s.multiplier_alerts,
        s.tokens,
        s.records,
        s.tracked,
        s.expired_tracked,
        s.followers_visited,
    ]
}

fn stats_from(v: [u64; STATS_FIELDS]) -> ShardStats {
    ShardStats {
        events: v[0],
        calls: v[1],
        prices: v[2],
        call_alerts: v[3],
        multiplier_alerts: v[4],
        tokens: v[5],
        records: v[6],
        tracked: v[7],
        expired_tracked: v[8],
        followers_visited: v[9],
    }
}

pub(super) fn encode_token(
    e: &mut Encoder,
    ts: &mut TokenState,
    fdv_usd: f64,
    counts: &mut ImageCounts,
) {
    let (tag, bytes) = ts.token.to_raw();
    e.u8(tag);
    e.raw(&bytes);
    e.f64(fdv_usd);
    e.time(ts.next_sweep);
    e.len(ts.calls.len());
    for c in ts.calls.as_slice() {
        e.channel(c.channel);
        e.time(c.at);
        e.f64(c.fdv_at_call);
        e.f64(c.peak_fdv);
    }
    e.len(ts.records.len());
    let mut next: u64 = 0;
    for (chat, r) in ts.records.sorted() {
        e.var(u64::from(chat) - next);
        next = u64::from(chat) + 1;
        e.u8(match r.status {
            Status::None => 0,
            Status::Rejected => 1,
            Status::Accepted => 2,
        });
        e.time(r.last_check);
        e.time(r.tracking_started);
        e.len(r.checked.len());
        for &(c, at) in &r.checked {
            e.channel(c);
            e.time(at);
        }
        counts.records += 1;
    }
    let entries = ts.tracked.entries();
    e.len(entries.len());
    for en in entries {
        e.f64(en.fdv_at_call);
        e.time(en.started);
        e.var(u64::from(en.chat));
        e.u8(en.last);
    }
    counts.tracked += entries.len() as u64;
    counts.tokens += 1;
}

/// One token of a section, with its current value; its chats renumbered
/// by `chats` (the section's index → this shard's), and checked against
/// the thresholds.
fn decode_token(
    d: &mut Decoder<'_>,
    chats: &[ChatIdx],
    rules: &Rules,
) -> Result<(TokenState, f64), SnapshotError> {
    let tag = d.u8()?;
    let bytes: [u8; 32] = d.take(32)?.try_into().expect("32 bytes");
    let token = Token::from_raw(tag, bytes).ok_or_else(|| d.bad("not a token"))?;
    let fdv_usd = d.f64()?;
    let mut ts = TokenState::new(token);
    ts.next_sweep = d.time()?;
    let n = d.len(18)?;
    let mut calls = Calls::default();
    for _ in 0..n {
        let (channel, at) = (d.channel()?, d.time()?);
        calls.record(channel, at, d.f64()?, d.f64()?);
    }
    ts.calls = calls;
    ts.records = decode_records(d, chats)?;
    let n = d.len(11)?;
    let mut heap = Vec::with_capacity(n);
    for _ in 0..n {
        let (fdv_at_call, started, idx) = (d.f64()?, d.time()?, d.var()?);
        let entry = Entry {
            fdv_at_call,
            started,
            chat: chat_index(d, chats, idx)?,
            last: d.u8()?,
        };
        if usize::from(entry.last) >= rules.thresholds.len() {
            return Err(d.bad("a tracked entry past the last threshold"));
        }
        heap.push(entry);
    }
    ts.tracked = Tracked::from_entries(heap, &rules.thresholds);
    Ok((ts, fdv_usd))
}

/// The section's chat index `idx` as this shard's, if it names a chat.
fn chat_index(d: &Decoder<'_>, chats: &[ChatIdx], idx: u64) -> Result<ChatIdx, SnapshotError> {
    usize::try_from(idx)
        .ok()
        .and_then(|i| chats.get(i).copied())
        .ok_or_else(|| d.bad(format!("chat index {idx} of {} chats", chats.len())))
}

/// A token's records, by this shard's chat index ascending.
fn decode_records(d: &mut Decoder<'_>, chats: &[ChatIdx]) -> Result<Records, SnapshotError> {
    let n = d.len(5)?;
    let mut keys = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut next: u64 = 0;
    let mut list = Vec::new();
    for _ in 0..n {
        let written = next.saturating_add(d.var()?);
        let chat = chat_index(d, chats, written)?;
        next = written + 1;
        let status = match d.u8()? {
            0 => Status::None,
            1 => Status::Rejected,
            2 => Status::Accepted,
            s => return Err(d.bad(format!("record status {s}"))),
        };
        let last_check: Nanos = d.time()?;
        let tracking_started: Nanos = d.time()?;
        let m = d.len(2)?;
        list.clear();
        for _ in 0..m {
            let (c, at) = (d.channel()?, d.time()?);
            if list.last().is_some_and(|&(last, _)| last >= c) {
                return Err(d.bad("a record's checked channels out of order"));
            }
            list.push((c, at));
        }
        keys.push(chat);
        values.push(Record {
            status,
            last_check,
            tracking_started,
            checked: Checked::from_slice(&list),
        });
    }
    if !keys.is_sorted() {
        // Renumbered from another shard's chats.
        let mut pairs: Vec<(ChatIdx, Record)> = keys.into_iter().zip(values).collect();
        pairs.sort_unstable_by_key(|&(c, _)| c);
        (keys, values) = pairs.into_iter().unzip();
    }
    Ok(Records::from_sorted(keys, values))
}
