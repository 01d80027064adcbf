//! A call: the calls table, then every following chat's re-check, and
//! the call alerts it makes.

use crate::calls::Calls;
use crate::chat::{Chat, ChatIdx, Chats};
use crate::effect::{CallAlert, Effect};
use crate::event::{ChannelId, limits};
use crate::table::Records;
use crate::time::Nanos;
use crate::token::Token;
use crate::tracked::Entry;

use super::record::{Record, Status, merge_checked};
use super::{ShardState, TokenState};

/// How many followers ahead a call asks for a chat and the home bucket of
/// its processed record to be loaded, and then for its follow list and
/// the record itself (which need those, so they come later).
const CHAT_AHEAD: usize = 16;
const FOLLOW_AHEAD: usize = 8;

/// One call, as every follower's check reads it.
#[derive(Clone, Copy)]
struct CallAt<'a> {
    seq: u64,
    token: &'a Token,
    channel: ChannelId,
    fdv_usd: f64,
    t: Nanos,
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
    pub(super) fn on_call(
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
        let call = CallAt {
            seq,
            token,
            channel,
            fdv_usd,
            t,
        };
        let ShardState {
            rules,
            chats,
            index,
            slots,
            callers,
            merged,
            fanout,
            lapsed,
            stats,
            clock,
            ..
        } = self;
        let ts = &mut slots[slot];
        let ttl = rules.ttl_nanos;
        ts.take_call(channel, t, fdv_usd, ttl);
        // Each follower's chat, follow list and record are a cache miss
        // apart from the last one's: ask for them a few followers ahead, so
        // that the misses overlap instead of adding up.
        fanout.clear();
        fanout.extend(chats.followers_of(channel, t));
        stats.followers_visited += fanout.len() as u64;
        prefetch_first(chats, &ts.records, fanout);
        for (i, &u) in fanout.iter().enumerate() {
            prefetch_ahead(chats, &ts.records, fanout, i);
            let chat = chats.get(u);
            if !chat.is_active(t) {
                // Expired at the call's time, so not a retired chat (those
                // walked are active at `t`): out of the index after the walk.
                lapsed.push(u);
                continue;
            }
            callers_of(
                chat,
                &ts.calls,
                t.saturating_sub(chat.lookback_nanos()),
                callers,
            );
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
                rec.tracking_started = t;
                out.push(call_alert(&call, chats.id(u), callers));
                stats.call_alerts += 1;
                // A restart leaves any earlier entry of this chat in the
                // heap: `tracking_started` now names the new one, and the
                // old one is dropped unseen when it next surfaces
                // (`current`). Finding it now would mean a scan of the
                // token's heap, on a popular token thousands of entries.
                let entry = Entry {
                    fdv_at_call: fdv_usd,
                    started: t,
                    chat: u,
                    last: 0,
                };
                ts.tracked.push(entry, &rules.thresholds);
                stats.tracked += 1;
            } else {
                rec.status = Status::Rejected;
            }
        }
        chats.retire(lapsed);
        lapsed.clear();
        let hot = index.get_mut(token).expect("interned above");
        hot.fdv_usd = fdv_usd;
        hot.next_change = ts.next_change(&rules.thresholds);
    }
}

/// Asks for the chats and record homes of the first `CHAT_AHEAD`
/// followers together, before the first is decided.
#[inline]
fn prefetch_first(chats: &Chats, records: &Records, fanout: &[ChatIdx]) {
    for &u in fanout.iter().take(CHAT_AHEAD) {
        chats.prefetch(u);
        records.prefetch_home(&u);
    }
}

/// Asks for the chat and record home of the follower `CHAT_AHEAD` after
/// the `i`-th, and for the follow list and record of the one
/// `FOLLOW_AHEAD` after it.
#[inline]
fn prefetch_ahead(chats: &Chats, records: &Records, fanout: &[ChatIdx], i: usize) {
    if let Some(&ahead) = fanout.get(i + CHAT_AHEAD) {
        chats.prefetch(ahead);
        records.prefetch_home(&ahead);
    }
    if let Some(&ahead) = fanout.get(i + FOLLOW_AHEAD) {
        chats.prefetch_follow(ahead);
        records.prefetch(&ahead);
    }
}

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
fn call_alert(call: &CallAt<'_>, chat_id: i64, callers: &[(ChannelId, Nanos)]) -> Effect {
    Effect::CallAlert(CallAlert {
        seq: call.seq,
        chat_id,
        token: *call.token,
        at: call.t,
        fdv_usd: call.fdv_usd,
        callers: callers.iter().map(|&(c, _)| c).collect(),
        channel_id: call.channel,
    })
}
