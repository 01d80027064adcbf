//! One shard's state and the rules of CONTRACT.md, as a pure function:
//! [`ShardState::apply`] takes an event and appends the alerts it causes.
//!
//! A shard owns every token that hashes to it: the calls table, the
//! processed records and the tracked entries, interned to a `u32` slot and
//! kept in flat maps. Chat state is a full copy (every shard sees every
//! chat event). Nothing here blocks, allocates per price update, reads a
//! clock (but to time a snapshot's steps, `cut`) or logs.
//!
//! # Layout
//! - `record`: a (token, chat) processed record ([`Record`]), and the
//!   contract's re-check.
//! - `call`: a call decided for every following chat.
//! - `price`: a price, and the thresholds it crosses.
//! - `restore`: state loaded back from storage.
//! - `image`, `cut`: a snapshot's section, written while events go on.
//! - `sweep`: expired state dropped a few slots at a time.
//! - `query`: what commands ask (scans, off the hot path).
//! - `ahead`: a batch's index entries asked for ahead of use.

use crate::calls::Calls;
use crate::chat::{ChatIdx, Chats};
use crate::config::Rules;
use crate::effect::Effect;
use crate::event::{Envelope, Event};
use crate::table::Table;
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::{Entry, Tracked};

use records::Records;

mod ahead;
mod call;
mod cut;
mod fanout;
mod image;
mod price;
mod query;
mod record;
mod records;
mod restore;
mod sweep;

pub use ahead::{AheadHashes, PREFETCH_AHEAD};
pub use cut::STEP_RECORDS;
pub use image::ImageCounts;
pub use query::{CallOutcome, Holding, Near, TrackedView};
pub use record::{Checked, Record, Status};
pub use restore::{Restore, RestoreCall, RestoreRecord};

/// What a price update needs of a token, kept in the token index itself so
/// that an update which crosses nothing touches one cache line: the index
/// bucket, not the token's slot.
#[derive(Debug, Clone, Copy)]
struct Hot {
    slot: u32,
    /// Copy of `TokenState::next_change()`: a price below it crosses no
    /// threshold and raises no call's peak.
    next_change: f64,
    /// The current FDV (latest call or price).
    fdv_usd: f64,
}

/// Everything a shard knows of one token.
#[derive(Debug)]
struct TokenState {
    token: Token,
    live: bool,
    calls: Calls,
    records: Records,
    tracked: Tracked,
    /// A call of this token is deciding its followers ([`fanout`]): the
    /// token's events wait, and the sweep leaves it alone.
    deciding: bool,
    /// No call, record or entry of this token can expire before this
    /// stream time (a lower bound, tightened by each sweep), so a sweep
    /// that comes earlier skips the token at the cost of one comparison.
    next_sweep: Nanos,
}

impl TokenState {
    fn new(token: Token) -> Self {
        TokenState {
            token,
            next_sweep: Nanos::MAX,
            live: true,
            calls: Calls::default(),
            records: Records::default(),
            tracked: Tracked::default(),
            deciding: false,
        }
    }

    /// The lowest price that has more to do than set the current FDV: the
    /// next threshold crossing or the lowest call peak, whichever is lower.
    /// One field for both keeps the quiet price update at one comparison.
    fn next_change(&self, thresholds: &[f64]) -> f64 {
        self.tracked
            .next_cross(thresholds)
            .min(self.calls.peak_floor())
    }
}

/// Counters the io side samples; plain integers, updated as events apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub events: u64,
    pub calls: u64,
    pub prices: u64,
    pub call_alerts: u64,
    pub multiplier_alerts: u64,
    pub tokens: u64,
    pub records: u64,
    pub tracked: u64,
    /// Tracked entries dropped because their TTL ran out or a restart
    /// replaced them.
    pub expired_tracked: u64,
    /// Chats calls looked at, over every call: the followers of each
    /// call's channel in the follower index, active at its time or not.
    /// Per call that is the chats active then plus those expired since a
    /// call or the sweep last met them (`crate::followers`), not every
    /// chat ever seen.
    pub followers_visited: u64,
}

/// One shard: its tokens, its copy of the chats, its clock.
#[derive(Debug)]
pub struct ShardState {
    rules: Rules,
    chats: Chats,
    index: Table<Token, Hot>,
    slots: Vec<TokenState>,
    free: Vec<u32>,
    /// The stream clock: the latest `Envelope::clock` seen.
    clock: Nanos,
    sweep_cursor: usize,
    /// Buffers a call's walk reuses.
    scratch: call::CallScratch,
    /// Followers a call or the sweep found expired, to retire.
    lapsed: Vec<ChatIdx>,
    crossed: Vec<Entry>,
    stats: ShardStats,
    /// Calls deciding and the events waiting for them.
    pending: fanout::Pending,
    /// Followers a call decides per slice.
    fanout_slice: usize,
    /// A snapshot being written, and the records it writes a step.
    cut: Option<Box<cut::Cut>>,
    step_records: u64,
}

impl ShardState {
    /// A shard that applies `rules`, which must be valid.
    pub fn new(rules: Rules) -> Self {
        rules
            .validate()
            .expect("the engine starts from checked rules");
        ShardState {
            rules,
            chats: Chats::default(),
            index: Table::default(),
            slots: Vec::new(),
            free: Vec::new(),
            clock: Nanos::MIN,
            sweep_cursor: 0,
            scratch: call::CallScratch::default(),
            lapsed: Vec::new(),
            crossed: Vec::new(),
            stats: ShardStats::default(),
            pending: fanout::Pending::default(),
            fanout_slice: usize::MAX,
            cut: None,
            step_records: STEP_RECORDS,
        }
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    pub fn chats(&self) -> &Chats {
        &self.chats
    }

    /// Starts loading the token index entry `env` will read first. A price
    /// that crosses nothing reads only that entry, and in a shard of
    /// 100,000 tokens it is a cache miss; asked for [`PREFETCH_AHEAD`]
    /// events early, the misses of a batch overlap instead of adding up.
    /// Returns the token's hash, which [`ShardState::apply_hashed`] can
    /// use instead of hashing it again.
    pub fn prefetch(&self, env: &Envelope) -> Option<u64> {
        let token = env.event.token()?;
        let hash = Table::<Token, Hot>::hash_of(token);
        self.index.prefetch_hashed(hash);
        Some(hash)
    }

    /// Decides at most `n` followers of a call before the shard applies
    /// the next event ([`fanout`]); by default a call decides all of them
    /// at once. The output is the same for any `n`.
    pub fn set_fanout_slice(&mut self, n: usize) {
        assert!(n > 0, "a slice decides at least one follower");
        self.fanout_slice = n;
    }

    /// Writes at least `n` records of a snapshot at one go (at least one
    /// token): see [`crate::config::EngineConfig::snapshot_step_records`].
    pub fn set_snapshot_step(&mut self, n: u64) {
        assert!(n > 0, "a step writes at least one record");
        self.step_records = n;
    }

    /// Applies `envs` in order, as a shard thread applies a batch: each
    /// event's index entry asked for [`PREFETCH_AHEAD`] events early (the
    /// first ones all at once, before the first is applied). Every call
    /// is decided in full before it returns, so `out` holds every alert of
    /// `envs`, in output order.
    pub fn apply_all(&mut self, envs: &[Envelope], out: &mut Vec<Effect>) {
        let start = out.len();
        let mut ahead = AheadHashes::default();
        for (i, env) in envs.iter().enumerate() {
            ahead.prefetch(self, i, |j| envs.get(j));
            self.apply_hashed(env, ahead.take(i), out);
        }
        self.finish_fanouts(out);
        out[start..].sort_by_key(Effect::order_key);
    }

    /// Applies one event and appends its alerts to `out`, sorted by chat.
    /// With a slice size set, the alerts of a call with more followers
    /// than that come out over later events too (see
    /// [`ShardState::apply_hashed`]).
    pub fn apply(&mut self, env: &Envelope, out: &mut Vec<Effect>) {
        self.apply_hashed(env, None, out);
    }

    /// [`ShardState::apply`] with the hash of the event's token, if
    /// [`ShardState::prefetch`] gave it. While a call is deciding slice by
    /// slice, `out` gets alerts of earlier events too (each carries its
    /// `seq`) and an event of the deciding token is held until the call
    /// ends; [`ShardState::unfinished_from`] says how far the output is
    /// complete.
    pub fn apply_hashed(&mut self, env: &Envelope, hash: Option<u64>, out: &mut Vec<Effect>) {
        let start = out.len();
        let in_order = if self.pending.is_empty() {
            self.apply_now(env, hash, self.clock, out);
            // A call appends nothing until its walk, whose alerts are
            // then all there is.
            let alone = out.len() == start;
            !self.pending.calls.is_empty() && self.slice_in_order(self.fanout_slice, out) && alone
        } else {
            self.apply_in_turn(env, hash, out)
        };
        if out.len() - start > 1 && !in_order {
            out[start..].sort_unstable_by_key(Effect::order_key);
        }
    }

    /// Applies one event now, whatever is deciding. `before` is the stream
    /// clock as the events before it in input order left it: the shard's
    /// clock, unless the event waited for a call ([`fanout`]) while later
    /// ones moved that on. Inlined into `apply_hashed`: out of line, the
    /// call cost a price that crosses nothing a tenth of its time.
    #[inline(always)]
    fn apply_now(
        &mut self,
        env: &Envelope,
        hash: Option<u64>,
        before: Nanos,
        out: &mut Vec<Effect>,
    ) {
        let now = before.max(env.clock);
        self.clock = self.clock.max(now);
        self.stats.events += 1;
        match &env.event {
            Event::Subscribe {
                chat_id,
                expires_at,
                ..
            } => self.chats.subscribe(*chat_id, *expires_at),
            Event::Settings { chat_id, patch, .. } => self.chats.apply_settings(*chat_id, patch),
            Event::Call {
                token,
                channel_id,
                fdv_usd,
                at,
            } => self.on_call(env.seq, token, *channel_id, *fdv_usd, *at, now),
            Event::Price { token, fdv_usd, at } => {
                let price = price::PriceAt {
                    seq: env.seq,
                    token,
                    fdv_usd: *fdv_usd,
                    t: *at,
                    clock: now,
                };
                self.on_price(&price, hash, out);
            }
        }
    }

    fn intern(&mut self, token: &Token) -> usize {
        if let Some(h) = self.index.get(token) {
            return h.slot as usize;
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = TokenState::new(*token);
                i
            }
            None => {
                self.slots.push(TokenState::new(*token));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 tokens a shard")
            }
        };
        self.index.insert(
            *token,
            Hot {
                slot,
                next_change: f64::INFINITY,
                fdv_usd: 0.0,
            },
        );
        self.stats.tokens += 1;
        slot as usize
    }

    /// The processed record of (token, chat), if one is held.
    pub fn record(&self, token: &Token, chat_id: i64) -> Option<&Record> {
        let slot = self.index.get(token)?.slot;
        let chat = self.chats.lookup(chat_id)?;
        self.slots[slot as usize].records.get(&chat)
    }

    /// The current FDV of a token this shard holds.
    pub fn fdv_usd(&self, token: &Token) -> Option<f64> {
        Some(self.index.get(token)?.fdv_usd)
    }

    /// Tokens held now (called, and not yet expired).
    pub fn token_count(&self) -> usize {
        self.index.len()
    }
}
