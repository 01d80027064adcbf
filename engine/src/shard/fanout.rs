//! A call decided for its followers in bounded slices, interleaved with
//! the events after it.
//!
//! A call to 100,000 followers takes milliseconds; worked through at once
//! it would hold every other token of the shard back for that long. So a
//! call that [`ShardState::on_call`] starts is queued here as a
//! [`Fanout`], and the shard works a slice of at most
//! `EngineConfig::fanout_slice` followers of the oldest one after each
//! event it applies (and while its inbox is empty). Every order CONTRACT.md
//! fixes is kept, so the output is the same for any slice size:
//!
//! - The fan-out reads only state that nothing else changes while it runs:
//!   its token (calls, records, tracked entries), which no other event
//!   touches until it ends, and the chats, which no chat event changes
//!   until it ends. It judges records against the stream clock of its own
//!   event, not the clock of the events applied meanwhile; so does an
//!   event that waited for it.
//! - An event of a token whose call is still deciding is held, in order,
//!   and applied as soon as the call ends: a later price sees the whole
//!   call's effects.
//! - A chat event, a query or a restore first finishes every fan-out and
//!   held event: chat events keep their place.
//! - Alerts carry their event's `seq`; the router's merge releases them in
//!   `seq` order, and no further than the oldest unfinished event of any
//!   shard ([`ShardState::unfinished_from`]).

use std::collections::VecDeque;

use crate::chat::ChatIdx;
use crate::effect::Effect;
use crate::event::{ChannelId, Envelope};
use crate::time::Nanos;
use crate::token::Token;

use super::ShardState;
use super::call::{CallAt, Walk};

/// How many followers ahead a walk asks for a chat.
const CHAT_AHEAD: usize = 16;

/// A call whose followers are still being decided.
#[derive(Debug)]
pub(super) struct Fanout {
    pub(super) seq: u64,
    pub(super) token: Token,
    pub(super) channel: ChannelId,
    pub(super) fdv_usd: f64,
    pub(super) t: Nanos,
    /// The stream clock when the call was applied.
    pub(super) clock: Nanos,
    pub(super) slot: usize,
    /// The followers, ascending; those before `next` are decided.
    pub(super) followers: Vec<ChatIdx>,
    pub(super) next: usize,
    /// Where the walk is in the token's records.
    pub(super) pos: usize,
}

/// The fan-outs in progress and the events waiting for them.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) calls: VecDeque<Fanout>,
    /// Events of tokens whose call is deciding, in input order, each with
    /// the stream clock as the events before it left it.
    held: VecDeque<(Envelope, Nanos)>,
    /// Emptied follower lists, for the next calls.
    spare_followers: Vec<Vec<ChatIdx>>,
}

impl Pending {
    pub(super) fn take_followers(&mut self) -> Vec<ChatIdx> {
        self.spare_followers.pop().unwrap_or_default()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.held.is_empty()
    }
}

impl ShardState {
    /// Applies `env`, or holds it while a call of its token is deciding,
    /// then works a slice of the oldest call still deciding. Whether what
    /// it appended to `out` is in output order already (see
    /// [`ShardState::slice_in_order`]).
    pub(super) fn apply_in_turn(
        &mut self,
        env: &Envelope,
        hash: Option<u64>,
        out: &mut Vec<Effect>,
    ) -> bool {
        let start = out.len();
        match env.event.token() {
            None => {
                self.finish_fanouts(out);
                self.apply_now(env, hash, self.clock, out);
            }
            Some(token) if self.is_deciding(token) => {
                self.pending.held.push_back((env.clone(), self.clock));
            }
            Some(_) => self.apply_now(env, hash, self.clock, out),
        }
        let alone = out.len() == start;
        self.slice_in_order(self.fanout_slice, out) && alone
    }

    fn is_deciding(&self, token: &Token) -> bool {
        self.index
            .get(token)
            .is_some_and(|h| self.slots[h.slot as usize].deciding)
    }

    /// Whether a call is still being decided or an event waits for one.
    pub fn has_unfinished(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The `seq` of the oldest event not yet fully applied (a call still
    /// deciding, or an event held for one), if any: every alert of an
    /// earlier event has been output.
    pub fn unfinished_from(&self) -> Option<u64> {
        let calls = self.pending.calls.iter().map(|f| f.seq);
        calls
            .chain(self.pending.held.iter().map(|(e, _)| e.seq))
            .min()
    }

    /// Finishes every call still deciding and applies every event held
    /// for one: before a chat event, a query or a restore.
    pub fn finish_fanouts(&mut self, out: &mut Vec<Effect>) {
        while !self.pending.calls.is_empty() {
            self.work_slice(usize::MAX, out);
        }
        debug_assert!(self.pending.held.is_empty(), "held events follow a call");
    }

    /// Decides up to `budget` followers of the oldest call still deciding,
    /// and ends it if that was the last of them.
    pub fn work_slice(&mut self, budget: usize, out: &mut Vec<Effect>) {
        self.slice_in_order(budget, out);
    }

    /// [`ShardState::work_slice`], and whether what it appended is in
    /// output order already. The slice's alerts, all of one call, come out
    /// by chat ([`super::call::CallScratch::emit`]); those of the events
    /// held for the call, applied when it ends, may not.
    pub(super) fn slice_in_order(&mut self, budget: usize, out: &mut Vec<Effect>) -> bool {
        let ShardState {
            rules,
            chats,
            slots,
            scratch,
            lapsed,
            stats,
            pending,
            cut,
            ..
        } = self;
        let Some(f) = pending.calls.front_mut() else {
            return true;
        };
        // A snapshot finishes every call before its cut, so the token of
        // a call deciding now was written when the call began (`on_call`).
        debug_assert!(!super::cut::is_unwritten(cut, f.slot));
        let ts = &mut slots[f.slot];
        let call = CallAt {
            seq: f.seq,
            token: &f.token,
            channel: f.channel,
            fdv_usd: f.fdv_usd,
            t: f.t,
        };
        scratch.start_slice();
        let mut walk = Walk::new(&call, chats, rules, f.clock, f.pos, out.len());
        let end = f.next.saturating_add(budget).min(f.followers.len());
        for k in f.next..end {
            // Followers are ascending but, for a channel few chats name,
            // far apart: each chat is asked for a few followers ahead.
            if let Some(&ahead) = f.followers.get(k + CHAT_AHEAD) {
                chats.prefetch(ahead);
            }
            walk.decide(f.followers[k], ts, scratch, lapsed, stats, out);
            scratch.track_if_full(ts, &rules.thresholds);
        }
        scratch.track(ts, &rules.thresholds);
        let pos = walk.pos();
        scratch.emit(&call, chats, out);
        f.pos = pos;
        f.next = end;
        chats.retire(lapsed);
        lapsed.clear();
        if end == f.followers.len() {
            let before = out.len();
            self.end_call(out);
            // The held events' alerts come after, each event's unsorted.
            return out.len() == before;
        }
        true
    }

    /// The oldest call has decided every follower: its token free again,
    /// and the events held for it applied.
    fn end_call(&mut self, out: &mut Vec<Effect>) {
        let mut f = self.pending.calls.pop_front().expect("a call is deciding");
        let ts = &mut self.slots[f.slot];
        ts.deciding = false;
        let hot = self
            .index
            .get_mut(&f.token)
            .expect("a deciding token is held");
        hot.next_change = ts.next_change(&self.rules.thresholds);
        f.followers.clear();
        self.pending.spare_followers.push(f.followers);
        self.release_held(&f.token, out);
    }

    /// Applies the events held for `token`, in order, until one of them
    /// is a call that has to decide in turn.
    fn release_held(&mut self, token: &Token, out: &mut Vec<Effect>) {
        if self.pending.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.pending.held);
        for (env, before) in held {
            if env.event.token() == Some(token) && !self.is_deciding(token) {
                self.apply_now(&env, None, before, out);
            } else {
                self.pending.held.push_back((env, before));
            }
        }
    }
}
