//! A call: the calls table, then every following chat's re-check, and
//! the call alerts it makes.

use crate::calls::Calls;
use crate::chat::{Chat, ChatIdx, Chats};
use crate::config::Rules;
use crate::effect::{CallAlert, Callers, Effect};
use crate::event::{ChannelId, limits};
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
}

impl CallScratch {
    /// Starts a slice of a call's walk: forgets the callers worked out for
    /// the last one.
    pub(super) fn start_slice(&mut self) {
        self.all_lookbacks.clear();
        self.all_callers.clear();
        self.memo.clear();
        self.alert_callers.clear();
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
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        call: &'a CallAt<'a>,
        chats: &'a Chats,
        rules: &'a Rules,
        clock: Nanos,
        pos: usize,
    ) -> Self {
        Walk {
            call,
            chats,
            rules,
            clock,
            pos,
        }
    }

    /// Where the walk is in the token's records.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The contract's step 2 for one follower `u` of the call.
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
            out.push(call_alert(self.call, self.chats.id(u), callers.for_alert()));
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
            ts.tracked.push(entry, &self.rules.thresholds);
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

/// The call alert `call` makes for the chat `chat_id`.
fn call_alert(call: &CallAt<'_>, chat_id: i64, callers: Callers) -> Effect {
    Effect::CallAlert(CallAlert {
        seq: call.seq,
        chat_id,
        token: *call.token,
        at: call.t,
        fdv_usd: call.fdv_usd,
        callers,
        channel_id: call.channel,
    })
}
