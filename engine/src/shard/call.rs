//! A call: the calls table, then every following chat's re-check, and
//! the call alerts it makes.

use crate::calls::Calls;
use crate::chat::{Chat, ChatIdx, Chats};
use crate::config::Rules;
use crate::effect::{CallAlert, Callers, Effect};
use crate::event::{ChannelId, ChatId, limits};
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::Entry;

use super::fanout::Fanout;
use super::record::{Checked, CheckedMemo, Record, Status, merge_checked};
use super::{ShardState, ShardStats, TokenState};

/// One call, as every follower's check reads it.
#[derive(Clone, Copy)]
pub(super) struct CallAt<'a> {
    pub(super) seq: u64,
    pub(super) token: &'a Token,
    pub(super) channel: ChannelId,
    pub(super) fdv_usd: f64,
    pub(super) t: Nanos,
}

impl TokenState {
    /// The call in the calls table, and the sweep told when what it
    /// touches can first expire.
    fn take_call(&mut self, channel: ChannelId, t: Nanos, fdv_usd: f64, ttl: Nanos) {
        // The call is a new current FDV for the calls before it, then a
        // call of its own (whose peak starts at its value).
        self.calls.raise_peaks(fdv_usd);
        self.calls.record(channel, t, fdv_usd, fdv_usd);
        // Records checked by the call get `last_check = t` and entries
        // `started = t`: nothing it touches expires before the earlier of
        // these.
        self.next_sweep = self
            .next_sweep
            .min(t.saturating_add(ttl.min(limits::MAX_LOOKBACK_NANOS)));
    }
}

impl ShardState {
    /// A call: the calls table at once, then its followers decided, all of
    /// them now or slice by slice ([`super::fanout`]).
    pub(super) fn on_call(
        &mut self,
        seq: u64,
        token: &Token,
        channel: ChannelId,
        fdv_usd: f64,
        t: Nanos,
        clock: Nanos,
    ) {
        self.stats.calls += 1;
        let slot = self.intern(token);
        super::cut::save(&mut self.cut, &mut self.slots, slot);
        let ts = &mut self.slots[slot];
        ts.take_call(channel, t, fdv_usd, self.rules.ttl_nanos);
        // The followers ascending, and the token's records sorted by chat:
        // the walk is a merge of the two, reading chats and records in
        // address order.
        ts.records.settle_if_many();
        ts.deciding = true;
        let mut followers = self.pending.take_followers();
        self.chats.followers_of(channel, t, &mut followers);
        if ts.records.is_empty() {
            // A token's first call makes a record for every follower.
            ts.records.reserve(followers.len());
        }
        self.stats.followers_visited += followers.len() as u64;
        self.pending.calls.push_back(Fanout {
            seq,
            token: *token,
            channel,
            fdv_usd,
            t,
            clock,
            slot,
            followers,
            next: 0,
            pos: 0,
        });
        let hot = self.index.get_mut(token).expect("interned above");
        hot.fdv_usd = fdv_usd;
    }
}

/// How many tracked entries a walk gathers before it pushes them onto the
/// token's heap. Pushed one by one from the walk, the heap's growth and
/// sift cost a call that alerts every follower about a sixth of its
/// time; a chunk keeps the buffer in the cache (BENCHMARKS.md "[2.4]").
const TRACK_CHUNK: usize = 4096;

/// Buffers a call's walk reuses from call to call.
#[derive(Debug, Default)]
pub(super) struct CallScratch {
    /// The callers of a chat that names its channels.
    callers: Vec<(ChannelId, Nanos)>,
    /// The callers of chats that follow every channel depend only on the
    /// lookback: one list per lookback met in this call, `(lookback
    /// minutes, start, end, group)` in `all_callers`. Lookbacks whose
    /// callers are the same (every call of the token is recent) share the
    /// list and the group, so their followers' re-checks are shared too.
    all_lookbacks: Vec<(u32, usize, usize, usize)>,
    all_callers: Vec<(ChannelId, Nanos)>,
    merged: Vec<(ChannelId, Nanos)>,
    /// The re-checks of chats that follow every channel, shared by those
    /// with the same lookback and list before.
    memo: CheckedMemo,
    /// By group: the callers of its alerts, made at the first, so that
    /// thousands of alerts share one list instead of each copying it.
    alert_callers: Vec<Option<Callers>>,
    /// The tracked entries of the slice's latest alerts, pushed onto the
    /// token's heap [`TRACK_CHUNK`] at a time and when the slice ends.
    tracked: Vec<Entry>,
    /// The slice's alerts, as the chat and its callers, once one came out
    /// of chat order: put in order and output when the slice ends
    /// ([`CallScratch::emit`]).
    alerts: Vec<Gathered>,
    /// By chat rank ([`Chats::ranks`]), which of `alerts` is that chat's;
    /// [`NOT_PLACED`] everywhere between slices.
    placed: Vec<u32>,
    /// Which of `alerts` go out, in order.
    order: Vec<u32>,
}

/// A call alert held back to be put in chat order.
#[derive(Debug)]
struct Gathered {
    idx: ChatIdx,
    chat_id: ChatId,
    callers: Callers,
}

/// How many alerts ahead [`CallScratch::emit`] asks for one it will read.
const GATHERED_AHEAD: usize = 8;

/// No alert in this place of [`CallScratch::placed`].
const NOT_PLACED: u32 = u32::MAX;

/// Gathered alerts are placed by rank when there are at least one for
/// every `PLACE_SPAN` chats (the placing scans a `u32` a chat), and
/// sorted by id when fewer.
const PLACE_SPAN: usize = 32;

/// When chats have joined since the ranks were last brought up to date,
/// placing costs that first, a pass over every chat worth sorting a
/// quarter as many alerts: gathered alerts are then placed only when
/// there are at least one for every `RERANK_SPAN` chats.
const RERANK_SPAN: usize = 4;

impl CallScratch {
    /// Starts a slice of a call's walk: forgets the callers worked out for
    /// the last one.
    pub(super) fn start_slice(&mut self) {
        self.all_lookbacks.clear();
        self.all_callers.clear();
        self.memo.clear();
        self.alert_callers.clear();
        debug_assert!(self.tracked.is_empty(), "tracked when the last slice ended");
        debug_assert!(self.alerts.is_empty(), "output when the last slice ended");
    }

    /// Takes the alerts of the slice back from `out[from..]`, to be put
    /// in order with the rest of the slice's.
    #[cold]
    fn gather(&mut self, out: &mut Vec<Effect>, from: usize, chats: &Chats) {
        self.alerts.extend(out.drain(from..).map(|e| match e {
            Effect::CallAlert(a) => Gathered {
                idx: chats.lookup(a.chat_id).expect("an alerted chat is held"),
                chat_id: a.chat_id,
                callers: a.callers,
            },
            _ => unreachable!("a slice outputs call alerts only"),
        }));
    }

    /// Ends a slice: its alerts in `out` by chat, the output's order.
    ///
    /// The walk visits followers by index, which is the order chats came
    /// in, not their ids' order. While its alerts happen to ascend by
    /// chat they go straight to `out`; from the first that does not, the
    /// slice's alerts are gathered here as a chat and its callers
    /// ([`CallScratch::gather`]), and put in order: placed at their
    /// chats' ranks by id when they are many, sorted when few. Sorting
    /// the alerts once made, as before, took 1.8 times as long as the
    /// walk that made them (BENCHMARKS.md "[2.4]").
    pub(super) fn emit(&mut self, call: &CallAt<'_>, chats: &mut Chats, out: &mut Vec<Effect>) {
        let k = self.alerts.len();
        if k == 0 {
            return;
        }
        out.reserve(k);
        let alert = |out: &mut Vec<Effect>, a: &Gathered| {
            push_call_alert(out, call, a.chat_id, a.callers.clone());
        };
        let span = if chats.ranked() {
            PLACE_SPAN
        } else {
            RERANK_SPAN
        };
        if k.saturating_mul(span) < chats.len() {
            self.alerts.sort_unstable_by_key(|a| a.chat_id);
            for a in &self.alerts {
                alert(out, a);
            }
        } else {
            let ranks = chats.ranks();
            self.placed.resize(ranks.len(), NOT_PLACED);
            for (i, a) in self.alerts.iter().enumerate() {
                self.placed[ranks[a.idx as usize] as usize] = i as u32;
            }
            // The alerts' order first, then the alerts, each asked for a
            // few ahead: read in that order they are scattered.
            self.order.clear();
            for p in &mut self.placed {
                if *p != NOT_PLACED {
                    self.order.push(*p);
                    *p = NOT_PLACED;
                    if self.order.len() == k {
                        break;
                    }
                }
            }
            for (j, &i) in self.order.iter().enumerate() {
                if let Some(&ahead) = self.order.get(j + GATHERED_AHEAD) {
                    crate::prefetch::prefetch(&self.alerts[ahead as usize]);
                }
                alert(out, &self.alerts[i as usize]);
            }
        }
        self.alerts.clear();
    }

    /// The entries gathered onto the token's heap, once there are
    /// [`TRACK_CHUNK`] of them.
    #[inline]
    pub(super) fn track_if_full(&mut self, ts: &mut TokenState, thresholds: &[f64]) {
        if self.tracked.len() >= TRACK_CHUNK {
            self.track(ts, thresholds);
        }
    }

    /// Ends a slice: its alerts' entries onto the token's heap.
    pub(super) fn track(&mut self, ts: &mut TokenState, thresholds: &[f64]) {
        ts.tracked.push_all(&mut self.tracked, thresholds);
    }

    /// The callers of `chat` in `calls` since `since`, worked out once per
    /// call for all the chats that follow every channel with one lookback.
    #[inline]
    fn callers(&mut self, chat: &Chat, calls: &Calls, since: Nanos) -> CallersOf<'_> {
        if !chat.follow.is_empty() {
            callers_of(chat, calls, since, &mut self.callers);
            return CallersOf {
                callers: &self.callers,
                group: None,
                merged: &mut self.merged,
                memo: &mut self.memo,
                alert_callers: &mut self.alert_callers,
            };
        }
        let lookback = chat.lookback_minutes;
        let found = self.all_lookbacks.iter().position(|m| m.0 == lookback);
        let (start, end, group) = match found {
            Some(i) => {
                let (_, start, end, group) = self.all_lookbacks[i];
                (start, end, group)
            }
            None => {
                let start = self.all_callers.len();
                self.all_callers.extend(
                    calls
                        .as_slice()
                        .iter()
                        .filter(|c| c.at >= since)
                        .map(|c| (c.channel, c.at)),
                );
                let end = self.all_callers.len();
                // Each list is the same calls filtered by `at >= since`,
                // so of two lists the longer holds the shorter: equally
                // long, they are the same.
                let same = self.all_lookbacks.iter().find(|m| m.2 - m.1 == end - start);
                let found = match same {
                    Some(&(_, s, e, group)) => {
                        debug_assert_eq!(self.all_callers[s..e], self.all_callers[start..end]);
                        self.all_callers.truncate(start);
                        (s, e, group)
                    }
                    None => (start, end, self.all_lookbacks.len()),
                };
                self.all_lookbacks
                    .push((lookback, found.0, found.1, found.2));
                found
            }
        };
        CallersOf {
            callers: &self.all_callers[start..end],
            group: Some(group),
            merged: &mut self.merged,
            memo: &mut self.memo,
            alert_callers: &mut self.alert_callers,
        }
    }
}

/// A chat's callers, with the merge scratch beside them (borrowed from
/// one [`CallScratch`] together).
struct CallersOf<'a> {
    callers: &'a [(ChannelId, Nanos)],
    /// Which of the slice's shared callers lists `callers` is, if it is
    /// one (the chat follows every channel).
    group: Option<usize>,
    merged: &'a mut Vec<(ChannelId, Nanos)>,
    memo: &'a mut CheckedMemo,
    alert_callers: &'a mut Vec<Option<Callers>>,
}

impl CallersOf<'_> {
    /// The re-check of `checked` against these callers.
    #[inline]
    fn merge(&mut self, checked: &mut Checked) -> bool {
        match self.group {
            Some(g) => self.memo.merge(checked, g, self.callers, self.merged),
            None => merge_checked(checked, self.callers, self.merged),
        }
    }

    /// The callers as an alert names them: a group's made once and
    /// shared by its alerts.
    #[inline]
    fn for_alert(&mut self) -> Callers {
        let Some(g) = self.group else {
            return Callers::from_channels(self.callers, |c| c.0);
        };
        if self.alert_callers.len() <= g {
            self.alert_callers.resize(g + 1, None);
        }
        self.alert_callers[g]
            .get_or_insert_with(|| Callers::from_channels(self.callers, |c| c.0))
            .clone()
    }
}

/// A call's walk through its followers, ascending.
pub(super) struct Walk<'a> {
    call: &'a CallAt<'a>,
    chats: &'a Chats,
    rules: &'a Rules,
    /// The stream clock, against which records expire.
    clock: Nanos,
    /// Position in the token's records from which the next follower's is
    /// sought (the followers ascend, and so do the records).
    pos: usize,
    /// Where the slice's alerts start in the output.
    out_from: usize,
    /// The chat of the last alert, while every alert so far came after
    /// the one before it, by chat; `None` once one did not.
    last_alert: Option<ChatId>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        call: &'a CallAt<'a>,
        chats: &'a Chats,
        rules: &'a Rules,
        clock: Nanos,
        pos: usize,
        out_from: usize,
    ) -> Self {
        Walk {
            call,
            chats,
            rules,
            clock,
            pos,
            out_from,
            last_alert: Some(ChatId::MIN),
        }
    }

    /// Where the walk is in the token's records.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The contract's step 2 for one follower `u` of the call: its alert,
    /// if any, to `out` or gathered (see [`CallScratch::emit`]).
    #[inline]
    pub(super) fn decide(
        &mut self,
        u: ChatIdx,
        ts: &mut TokenState,
        scratch: &mut CallScratch,
        lapsed: &mut Vec<ChatIdx>,
        stats: &mut ShardStats,
        out: &mut Vec<Effect>,
    ) {
        let chat = self.chats.get(u);
        let t = self.call.t;
        if !chat.is_active(t) {
            // Expired at the call's time, so not a retired chat (those
            // walked are active at `t`): out of the index after the walk.
            lapsed.push(u);
            return;
        }
        let since = t.saturating_sub(chat.lookback_nanos());
        let found = ts.records.seek(self.pos, u);
        let mut callers = scratch.callers(chat, &ts.calls, since);
        let accepted = match found {
            Ok(i) => {
                self.pos = i + 1;
                ts.records.prefetch_at(i + RECORD_AHEAD);
                self.check(ts.records.at_mut(i), chat, &mut callers)
            }
            Err(i) => {
                self.pos = i;
                if let Some(rec) = ts.records.loose_mut(u) {
                    self.check(rec, chat, &mut callers)
                } else {
                    // A record made now: the call's own channel is among
                    // the callers, so the check always finds something
                    // new and the record is kept. Past the last sorted
                    // record it goes straight to the end (every later
                    // follower is greater); before it, into the loose
                    // ones, merged in once there are enough of them.
                    let mut rec = Record::new();
                    let accepted = self.check(&mut rec, chat, &mut callers);
                    if i == ts.records.sorted_len() {
                        ts.records.push_last(u, rec);
                        self.pos = i + 1;
                    } else {
                        ts.records.insert_loose(u, rec);
                    }
                    stats.records += 1;
                    accepted
                }
            }
        };
        if accepted {
            let chat_id = self.chats.id(u);
            let callers = callers.for_alert();
            if let Some(last) = self.last_alert
                && chat_id > last
            {
                self.last_alert = Some(chat_id);
                push_call_alert(out, self.call, chat_id, callers);
            } else {
                // The first out of order takes back those written before.
                if self.last_alert.take().is_some() {
                    scratch.gather(out, self.out_from, self.chats);
                }
                scratch.alerts.push(Gathered {
                    idx: u,
                    chat_id,
                    callers,
                });
            }
            stats.call_alerts += 1;
            // A restart leaves any earlier entry of this chat in the
            // heap: `tracking_started` now names the new one, and the
            // old one is dropped unseen when it next surfaces
            // (`current`). Finding it now would mean a scan of the
            // token's heap, on a popular token thousands of entries.
            let entry = Entry {
                fdv_at_call: self.call.fdv_usd,
                started: t,
                chat: u,
                last: 0,
            };
            scratch.tracked.push(entry);
            stats.tracked += 1;
        }
    }

    /// The re-check of one record against the chat's `callers`; whether
    /// it accepts the call now (an alert, and tracking starts).
    #[inline]
    fn check(&self, rec: &mut Record, chat: &Chat, callers: &mut CallersOf<'_>) -> bool {
        if rec.expired(self.clock, self.rules.ttl_nanos) {
            rec.status = Status::None;
            if !rec.checked.is_empty() {
                rec.checked = Checked::new();
            }
        }
        if !callers.merge(&mut rec.checked) {
            return false;
        }
        let t = self.call.t;
        rec.last_check = t;
        if rec.status == Status::Accepted {
            return false;
        }
        if callers.callers.len() >= chat.min_callers as usize
            && chat.fdv_in_range(self.call.fdv_usd)
        {
            rec.status = Status::Accepted;
            rec.tracking_started = t;
            true
        } else {
            rec.status = Status::Rejected;
            false
        }
    }
}

/// How many records past the one just found a walk asks for: records are
/// read in address order, but a call that visits few of a token's many
/// records skips between them.
const RECORD_AHEAD: usize = 4;

/// The channels `chat` follows that called the token at or after `since`,
/// with their call times, sorted by channel, into `callers`. Walks
/// whichever list is shorter: a chat naming 3 channels need not look at
/// the hundreds that called a popular token. Both lists are sorted by
/// channel, so callers come out sorted.
#[inline]
fn callers_of(chat: &Chat, calls: &Calls, since: Nanos, callers: &mut Vec<(ChannelId, Nanos)>) {
    callers.clear();
    match &chat.follow {
        follow if !follow.is_empty() && follow.len() < calls.len() => {
            callers.extend(follow.iter().filter_map(|&c| {
                let at = calls.at(c)?;
                (at >= since).then_some((c, at))
            }));
        }
        _ => callers.extend(
            calls
                .as_slice()
                .iter()
                .filter(|c| c.at >= since && chat.follows(c.channel))
                .map(|c| (c.channel, c.at)),
        ),
    }
}

/// Appends the call alert `call` makes for the chat `chat_id`, written
/// straight into `out`'s spare room ([`crate::push_in_place`]): built on
/// the stack, with its token's last byte and its callers' length stored a
/// few bytes at a time, every alert of a call stalled on its copy.
#[inline(always)]
fn push_call_alert(out: &mut Vec<Effect>, call: &CallAt<'_>, chat_id: ChatId, callers: Callers) {
    let alert = CallAlert {
        seq: call.seq,
        chat_id,
        token: *call.token,
        at: call.t,
        fdv_usd: call.fdv_usd,
        callers,
        channel_id: call.channel,
    };
    crate::push_in_place(out, Effect::CallAlert(alert));
}
