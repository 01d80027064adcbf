//! One shard's state and the rules of CONTRACT.md, as a pure function:
//! [`ShardState::apply`] takes an event and appends the alerts it causes.
//!
//! A shard owns every token that hashes to it: the calls table, the
//! processed records and the tracked entries, interned to a `u32` slot and
//! kept in flat maps. Chat state is a full copy (every shard sees every
//! chat event). Nothing here blocks, allocates per price update, reads a
//! clock or logs.

use crate::calls::Calls;
use crate::chat::{ChatIdx, Chats};
use crate::config::Rules;
use crate::effect::{CallAlert, Effect, MultiplierAlert, Progress};
use crate::event::{ChannelId, Envelope, Event, limits};
use crate::table::{Records, Table};
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::{Entry, Tracked};
use smallvec::SmallVec;

/// Where a processed record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No check has decided yet (a fresh or expired record).
    None,
    Rejected,
    Accepted,
}

/// The processed record of one (token, chat) pair: one cache line, since a
/// call reads one of these for each of hundreds of followers, each a miss.
#[derive(Debug, Clone, PartialEq)]
#[repr(align(64))]
pub struct Record {
    pub status: Status,
    /// `at` of the latest check that found new channels.
    pub last_check: Nanos,
    /// See [`Record::tracking_started`]; `Nanos::MIN` for none (an `Option`
    /// would take the record past one cache line).
    tracking_started: Nanos,
    /// Channels checked so far, with the call time seen for each; sorted by
    /// channel, so a re-check is one merge with the (sorted) callers.
    pub checked: Checked,
}

/// A record's checked channels. Most records name one or two, and a call
/// reads the list of each of hundreds of followers: kept inline, it comes
/// with the record's own cache line instead of a miss of its own.
pub type Checked = SmallVec<[(ChannelId, Nanos); 2]>;

impl Default for Record {
    fn default() -> Self {
        Record::new()
    }
}

impl Record {
    pub(crate) fn new() -> Self {
        Record {
            status: Status::None,
            last_check: Nanos::MIN,
            tracking_started: Nanos::MIN,
            checked: Checked::new(),
        }
    }

    /// When the tracking that this record started began, if it did. Kept
    /// across an expiry of the record itself, so that a restart can find
    /// the entry it replaces.
    pub fn tracking_started(&self) -> Option<Nanos> {
        (self.tracking_started != Nanos::MIN).then_some(self.tracking_started)
    }

    /// The record counts as absent once `ttl` has passed since its last
    /// check.
    fn expired(&self, clock: Nanos, ttl: Nanos) -> bool {
        clock >= self.last_check.saturating_add(ttl)
    }

    /// Nothing in it can matter any more: the record has expired and so has
    /// the tracking it started.
    fn dead(&self, clock: Nanos, ttl: Nanos) -> bool {
        clock >= self.dead_at(ttl)
    }

    /// The stream time from which the record is dead.
    fn dead_at(&self, ttl: Nanos) -> Nanos {
        let newest = self.last_check.max(self.tracking_started);
        newest.saturating_add(ttl)
    }
}

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

/// How many events ahead of the one being applied a batch should
/// [`ShardState::prefetch`]. A price that crosses nothing takes a shard
/// about 10 ns, and a miss to memory ten times that, so the entry is asked
/// for that many events early. Measured on the load test: 16 ran the
/// sharded engine about a third faster than 4 (BENCHMARKS.md).
pub const PREFETCH_AHEAD: usize = 16;

/// Slots of [`AheadHashes`]: more than [`PREFETCH_AHEAD`], and a power of
/// two, so that the slot of a position is a mask.
const AHEAD_RING: usize = 32;

/// The token hashes computed when events were prefetched, kept until the
/// events are applied: by position in the batch, in a ring longer than
/// [`PREFETCH_AHEAD`].
#[derive(Debug, Default)]
pub struct AheadHashes([(usize, Option<u64>); AHEAD_RING]);

impl AheadHashes {
    /// Before the item at `position` of a batch is applied: asks `state`
    /// for what the event [`PREFETCH_AHEAD`] positions later will read, and
    /// at the batch's start for the events before it too, keeping their
    /// hashes. `event(j)` is the event at position `j`, if one is there.
    pub fn prefetch<'a>(
        &mut self,
        state: &ShardState,
        position: usize,
        event: impl Fn(usize) -> Option<&'a Envelope>,
    ) {
        let mut ask = |j: usize| {
            if let Some(env) = event(j) {
                self.put(j, state.prefetch(env));
            }
        };
        if position == 0 {
            (0..PREFETCH_AHEAD).for_each(&mut ask);
        }
        ask(position + PREFETCH_AHEAD);
    }

    /// Keeps the hash of the event at `position` (`None`: no token).
    fn put(&mut self, position: usize, hash: Option<u64>) {
        const { assert!(PREFETCH_AHEAD < AHEAD_RING) };
        self.0[position % AHEAD_RING] = (position, hash);
    }

    /// The hash kept for the event at `position`, if any.
    pub fn take(&self, position: usize) -> Option<u64> {
        match self.0[position % AHEAD_RING] {
            (p, hash) if p == position => hash,
            _ => None,
        }
    }
}

/// How many followers ahead a call asks for a chat and the home bucket of
/// its processed record to be loaded, and then for its follow list and
/// the record itself (which need those, so they come later).
const CHAT_AHEAD: usize = 16;
const FOLLOW_AHEAD: usize = 8;

/// Whether `e` is the chat's current tracking of this token, not one a
/// restart has replaced. The processed record names the entry it started;
/// a record that started none (or no record) means the entry was restored
/// from storage, and is current.
fn current(records: &Records, e: &Entry) -> bool {
    records
        .get(&e.chat)
        .and_then(Record::tracking_started)
        .is_none_or(|s| s == e.started)
}

/// The contract's re-check, on two lists sorted by channel: are any of
/// `callers` new to `checked` (absent, or called later than seen)? If so,
/// records every caller's call time in `checked` and says yes; if not,
/// leaves `checked` alone. One merge, O(|callers| + |checked|); `scratch`
/// keeps its allocation between calls.
fn merge_checked(
    checked: &mut Checked,
    callers: &[(ChannelId, Nanos)],
    scratch: &mut Vec<(ChannelId, Nanos)>,
) -> bool {
    scratch.clear();
    let mut new = false;
    let (mut i, mut j) = (0, 0);
    loop {
        match (checked.get(i), callers.get(j)) {
            (Some(&(k, seen)), Some(&(c, at))) if k == c => {
                new |= at > seen;
                scratch.push((c, at));
                i += 1;
                j += 1;
            }
            (Some(&(k, _)), Some(&(c, at))) if c < k => {
                new = true;
                scratch.push((c, at));
                j += 1;
            }
            (None, Some(&(c, at))) => {
                new = true;
                scratch.push((c, at));
                j += 1;
            }
            (Some(&kept), _) => {
                scratch.push(kept);
                i += 1;
            }
            (None, None) => break,
        }
    }
    if new {
        // Copied, not swapped: the record keeps an allocation sized to its
        // own list rather than inheriting the scratch's high-water mark.
        checked.clear();
        checked.extend_from_slice(scratch);
    }
    new
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
}

/// A tracked entry loaded from storage (a `multiplier:{token}:{chat}`
/// record) rather than started by a call. The caller gives each (token,
/// chat) pair at most once.
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
/// `processed_token:{token}:{chat}` record). The caller gives each (token,
/// chat) pair at most once.
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
    callers: Vec<(ChannelId, Nanos)>,
    merged: Vec<(ChannelId, Nanos)>,
    /// The followers of the channel a call is being decided for.
    fanout: Vec<ChatIdx>,
    crossed: Vec<Entry>,
    stats: ShardStats,
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
            callers: Vec::new(),
            merged: Vec::new(),
            fanout: Vec::new(),
            crossed: Vec::new(),
            stats: ShardStats::default(),
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

    /// Applies `envs` in order, as a shard thread applies a batch: each
    /// event's index entry asked for [`PREFETCH_AHEAD`] events early (the
    /// first ones all at once, before the first is applied).
    pub fn apply_all(&mut self, envs: &[Envelope], out: &mut Vec<Effect>) {
        let mut ahead = AheadHashes::default();
        for (i, env) in envs.iter().enumerate() {
            ahead.prefetch(self, i, |j| envs.get(j));
            self.apply_hashed(env, ahead.take(i), out);
        }
    }

    /// Applies one event and appends its alerts to `out`, sorted by chat.
    pub fn apply(&mut self, env: &Envelope, out: &mut Vec<Effect>) {
        self.apply_hashed(env, None, out);
    }

    /// [`ShardState::apply`] with the hash of the event's token, if
    /// [`ShardState::prefetch`] gave it.
    pub fn apply_hashed(&mut self, env: &Envelope, hash: Option<u64>, out: &mut Vec<Effect>) {
        self.clock = self.clock.max(env.clock);
        self.stats.events += 1;
        let start = out.len();
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
            } => self.on_call(env.seq, token, *channel_id, *fdv_usd, *at, out),
            Event::Price { token, fdv_usd, at } => {
                self.on_price(env.seq, token, hash, *fdv_usd, *at, out);
            }
        }
        if out.len() - start > 1 {
            out[start..].sort_unstable_by_key(Effect::chat_id);
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

    fn on_call(
        &mut self,
        seq: u64,
        token: &Token,
        channel: ChannelId,
        fdv_usd: f64,
        t: Nanos,
        out: &mut Vec<Effect>,
    ) {
        self.stats.calls += 1;
        let slot = self.intern(token);
        let ShardState {
            rules,
            chats,
            index,
            slots,
            callers,
            merged,
            fanout,
            stats,
            clock,
            ..
        } = self;
        let ts = &mut slots[slot];
        // The call is a new current FDV for the calls before it, then a
        // call of its own (whose peak starts at its value).
        ts.calls.raise_peaks(fdv_usd);
        ts.calls.record(channel, t, fdv_usd, fdv_usd);
        let ttl = rules.ttl_nanos;
        // Records checked below get `last_check = t` and entries `started =
        // t`: nothing this call touches expires before the earlier of these.
        ts.next_sweep = ts
            .next_sweep
            .min(t.saturating_add(ttl.min(limits::MAX_LOOKBACK_NANOS)));
        // Each follower's chat, follow list and record are a cache miss
        // apart from the last one's: ask for them a few followers ahead, so that the
        // misses overlap instead of adding up.
        fanout.clear();
        fanout.extend(chats.followers_of(channel));
        for &u in fanout.iter().take(CHAT_AHEAD) {
            chats.prefetch(u);
            ts.records.prefetch_home(&u);
        }
        for (i, &u) in fanout.iter().enumerate() {
            if let Some(&ahead) = fanout.get(i + CHAT_AHEAD) {
                chats.prefetch(ahead);
                ts.records.prefetch_home(&ahead);
            }
            if let Some(&ahead) = fanout.get(i + FOLLOW_AHEAD) {
                chats.prefetch_follow(ahead);
                ts.records.prefetch(&ahead);
            }
            let chat = chats.get(u);
            if !chat.is_active(t) {
                continue;
            }
            let since = t.saturating_sub(chat.lookback_nanos());
            callers.clear();
            // Walk whichever list is shorter: a chat naming 3 channels need
            // not look at the hundreds that called a popular token. Both
            // lists are sorted by channel, so callers come out sorted.
            match &chat.follow {
                follow if !follow.is_empty() && follow.len() < ts.calls.len() => {
                    callers.extend(follow.iter().filter_map(|&c| {
                        let at = ts.calls.at(c)?;
                        (at >= since).then_some((c, at))
                    }));
                }
                _ => callers.extend(
                    ts.calls
                        .as_slice()
                        .iter()
                        .filter(|c| c.at >= since && chat.follows(c.channel))
                        .map(|c| (c.channel, c.at)),
                ),
            }
            let (rec, made) = ts.records.get_or_insert_with(u, Record::new);
            stats.records += u64::from(made);
            if rec.expired(*clock, ttl) {
                rec.status = Status::None;
                rec.checked.clear();
            }
            if !merge_checked(&mut rec.checked, callers, merged) {
                continue;
            }
            rec.last_check = t;
            if rec.status == Status::Accepted {
                continue;
            }
            if callers.len() >= chat.min_callers as usize && chat.fdv_in_range(fdv_usd) {
                rec.status = Status::Accepted;
                let ids: Vec<ChannelId> = callers.iter().map(|&(c, _)| c).collect();
                out.push(Effect::CallAlert(CallAlert {
                    seq,
                    chat_id: chats.id(u),
                    token: *token,
                    at: t,
                    fdv_usd,
                    callers: ids,
                    channel_id: channel,
                }));
                stats.call_alerts += 1;
                let entry = Entry {
                    fdv_at_call: fdv_usd,
                    started: t,
                    chat: u,
                    last: 0,
                };
                // A restart leaves any earlier entry of this chat in the
                // heap: `tracking_started` now names the new one, and the
                // old one is dropped unseen when it next surfaces
                // (`current`). Finding it now would mean a scan of the
                // token's heap, on a popular token thousands of entries.
                ts.tracked.push(entry, &rules.thresholds);
                stats.tracked += 1;
                rec.tracking_started = t;
            } else {
                rec.status = Status::Rejected;
            }
        }
        let hot = index.get_mut(token).expect("interned above");
        hot.fdv_usd = fdv_usd;
        hot.next_change = ts.next_change(&rules.thresholds);
    }

    fn on_price(
        &mut self,
        seq: u64,
        token: &Token,
        hash: Option<u64>,
        fdv_usd: f64,
        t: Nanos,
        out: &mut Vec<Effect>,
    ) {
        self.stats.prices += 1;
        // A token nobody called has nothing to decide; interning it would
        // let a price feed grow the shard without bound.
        let hot = match hash {
            Some(h) => self.index.get_mut_hashed(h, token),
            None => self.index.get_mut(token),
        };
        let Some(hot) = hot else {
            return;
        };
        hot.fdv_usd = fdv_usd;
        if fdv_usd < hot.next_change {
            return;
        }
        let ts = &mut self.slots[hot.slot as usize];
        ts.calls.raise_peaks(fdv_usd);
        let thresholds = &self.rules.thresholds;
        let ttl = self.rules.ttl_nanos;
        self.crossed.clear();
        ts.tracked
            .pop_crossed(fdv_usd, thresholds, &mut self.crossed);
        for mut e in self.crossed.drain(..) {
            if self.clock >= e.started.saturating_add(ttl) {
                self.stats.tracked -= 1;
                self.stats.expired_tracked += 1;
                continue;
            }
            if !current(&ts.records, &e) {
                self.stats.tracked -= 1;
                continue;
            }
            let m = fdv_usd / e.fdv_at_call;
            if let Some(k) = thresholds.iter().rposition(|&h| m >= h)
                && k + 1 > e.last as usize
            {
                e.last = u8::try_from(k + 1).expect("at most 255 thresholds");
                let chat = self.chats.get(e.chat);
                if chat.is_active(t) {
                    out.push(Effect::MultiplierAlert(MultiplierAlert {
                        seq,
                        chat_id: self.chats.id(e.chat),
                        token: *token,
                        at: t,
                        threshold: thresholds[k],
                        multiplier: m,
                        fdv_at_call: e.fdv_at_call,
                        fdv_usd,
                        tracking_started: e.started,
                    }));
                    self.stats.multiplier_alerts += 1;
                } else if self.rules.report_silent {
                    out.push(Effect::Progress(Progress {
                        seq,
                        chat_id: self.chats.id(e.chat),
                        token: *token,
                        threshold: thresholds[k],
                        tracking_started: e.started,
                    }));
                }
            }
            if e.last as usize == thresholds.len() {
                // The top threshold is reached: nothing left to alert.
                self.stats.tracked -= 1;
            } else {
                ts.tracked.push(e, thresholds);
            }
        }
        hot.next_change = ts.next_change(thresholds);
    }

    /// Loads one tracked entry, as a rebuild from storage does. Produces no
    /// alert; the chat is added (inactive) if this shard has not seen it.
    pub fn restore(&mut self, r: &Restore) {
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
        let slot = self.intern(&r.token);
        let chat = self.chats.intern(r.chat_id);
        let ts = &mut self.slots[slot];
        ts.next_sweep = ts
            .next_sweep
            .min(r.last_check.saturating_add(self.rules.ttl_nanos));
        let mut checked = Checked::from_slice(&r.checked);
        checked.sort_unstable_by_key(|&(c, at)| (c, std::cmp::Reverse(at)));
        checked.dedup_by_key(|&mut (c, _)| c);
        let record = Record {
            status: r.status,
            last_check: r.last_check,
            tracking_started: Nanos::MIN,
            checked,
        };
        if ts.records.insert(chat, record).is_none() {
            self.stats.records += 1;
        }
    }

    /// Gives back spare capacity: after a rebuild every heap and map holds
    /// only what it needs (pushes had doubled them as they grew).
    pub fn shrink_to_fit(&mut self) {
        for ts in self.slots.iter_mut().filter(|ts| ts.live) {
            ts.tracked.shrink_to_fit();
            ts.calls.shrink_to_fit();
            ts.records.shrink_to_fit();
        }
        self.slots.shrink_to_fit();
        self.index.shrink_to_fit();
        self.free.shrink_to_fit();
    }

    /// Drops what has expired from up to `budget` token slots, continuing
    /// where the last call stopped, and frees tokens left with nothing.
    ///
    /// Invisible in the output: everything it drops is judged against the
    /// stream clock, which never goes back, so it could never have mattered
    /// again. The one exception is a call more than a week (the longest
    /// lookback) older than the clock, which only an event that much out of
    /// order could still count; ARCHITECTURE.md states that bound.
    pub fn maintain(&mut self, budget: usize) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let ttl = self.rules.ttl_nanos;
        let clock = self.clock;
        let oldest_call = clock.saturating_sub(limits::MAX_LOOKBACK_NANOS);
        for _ in 0..budget.min(n) {
            let i = self.sweep_cursor % n;
            self.sweep_cursor = (i + 1) % n;
            let ts = &mut self.slots[i];
            if !ts.live || clock < ts.next_sweep {
                continue;
            }
            let before = ts.tracked.len();
            let records = &ts.records;
            ts.tracked.retain(
                |e| clock < e.started.saturating_add(ttl) && current(records, e),
                &self.rules.thresholds,
            );
            let dropped = (before - ts.tracked.len()) as u64;
            self.stats.tracked -= dropped;
            self.stats.expired_tracked += dropped;
            let before = ts.records.len();
            ts.records.retain(|r| !r.dead(clock, ttl));
            self.stats.records -= (before - ts.records.len()) as u64;
            ts.calls.retain_since(oldest_call);
            if let Some(hot) = self.index.get_mut(&ts.token) {
                hot.next_change = ts.next_change(&self.rules.thresholds);
            }
            ts.next_sweep = ts
                .tracked
                .entries()
                .iter()
                .map(|e| e.started.saturating_add(ttl))
                .chain(ts.records.values().map(|r| r.dead_at(ttl)))
                .chain(
                    ts.calls
                        .as_slice()
                        .iter()
                        .map(|c| c.at.saturating_add(limits::MAX_LOOKBACK_NANOS)),
                )
                .min()
                .unwrap_or(Nanos::MAX);
            if ts.calls.is_empty() && ts.records.is_empty() && ts.tracked.is_empty() {
                self.index.remove(&ts.token);
                *ts = TokenState::new(ts.token);
                ts.live = false;
                self.free
                    .push(u32::try_from(i).expect("slot index fits u32"));
                self.stats.tokens -= 1;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::{
        AHEAD_RING, AheadHashes, Checked, PREFETCH_AHEAD, Record, ShardState, merge_checked,
    };
    use crate::config::Rules;
    use crate::event::{Envelope, Event};
    use crate::token::Token;

    #[test]
    fn ahead_hashes_prefetch_a_batchs_start_at_once_then_one_event_a_step() {
        let state = ShardState::new(Rules::default());
        let envs: Vec<Envelope> = (0..40u8)
            .map(|n| Envelope {
                seq: u64::from(n) + 1,
                clock: 0,
                event: Event::Price {
                    token: Token::solana([n; 32]),
                    fdv_usd: 1.0,
                    at: 0,
                },
            })
            .collect();
        let hash = |j: usize| state.prefetch(&envs[j]);
        let mut ahead = AheadHashes::default();
        ahead.prefetch(&state, 0, |j| envs.get(j));
        for j in 0..=PREFETCH_AHEAD {
            assert_eq!(ahead.take(j), hash(j), "position {j}, at the start");
        }
        assert_eq!(ahead.take(PREFETCH_AHEAD + 1), None);
        ahead.prefetch(&state, 1, |j| envs.get(j));
        assert_eq!(ahead.take(PREFETCH_AHEAD + 1), hash(PREFETCH_AHEAD + 1));
        assert_eq!(ahead.take(PREFETCH_AHEAD + 2), None, "one event a step");
        // Past the batch's end nothing is asked for, and positions without
        // an event keep nothing.
        ahead.prefetch(&state, envs.len(), |j| envs.get(j));
        ahead.prefetch(&state, 2, |_| None);
        assert_eq!(ahead.take(PREFETCH_AHEAD + 2), None);
    }

    #[test]
    fn ahead_hashes_give_back_only_the_position_they_were_kept_for() {
        let mut ahead = AheadHashes::default();
        let same_slot = 4 + AHEAD_RING;
        assert_eq!(ahead.take(0), None, "nothing kept yet");
        ahead.put(4, Some(44));
        ahead.put(5, None);
        assert_eq!(ahead.take(4), Some(44));
        assert_eq!(ahead.take(5), None, "an event without a token");
        assert_eq!(ahead.take(same_slot), None, "same slot, another position");
        ahead.put(same_slot, Some(1212));
        assert_eq!((ahead.take(4), ahead.take(same_slot)), (None, Some(1212)));
    }

    #[test]
    fn a_record_is_one_cache_line() {
        assert_eq!((size_of::<Record>(), align_of::<Record>()), (64, 64));
    }

    #[test]
    fn merge_checked_is_the_contracts_recheck() {
        let mut scratch = Vec::new();
        let mut checked = Checked::from_slice(&[(1, 10), (3, 10)]);
        // Nothing new: same channels, same or older call times.
        assert!(!merge_checked(
            &mut checked,
            &[(1, 10), (3, 9)],
            &mut scratch
        ));
        assert_eq!(checked[..], [(1, 10), (3, 10)]);
        // A later call of a checked channel is new.
        assert!(merge_checked(&mut checked, &[(3, 11)], &mut scratch));
        assert_eq!(checked[..], [(1, 10), (3, 11)]);
        // A channel not yet checked is new, and lands in order.
        assert!(merge_checked(
            &mut checked,
            &[(0, 5), (2, 5), (4, 5)],
            &mut scratch
        ));
        assert_eq!(checked[..], [(0, 5), (1, 10), (2, 5), (3, 11), (4, 5)]);
        let mut empty = Checked::new();
        assert!(!merge_checked(&mut empty, &[], &mut scratch));
    }
}
