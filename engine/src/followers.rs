//! Who follows which channel, among the chats a call can alert.
//!
//! A call is decided for every chat that is active at the call's time and
//! follows its channel (CONTRACT.md). A chat that never subscribed is never
//! active, and anyone can make one with a single `settings` event; a chat
//! whose subscription lapsed stays in the chat table for good. So the
//! index holds only chats that subscribed, and lets a lapsed one go:
//!
//! - **Linked**: the chats a call walks. A chat is linked by its first
//!   `subscribe` (and by a renewal after it was retired), into the list of
//!   chats that follow every channel or into the list of each channel it
//!   names.
//! - **Retired**: a linked chat found expired (`expires_at <= t`) by a
//!   call dated `t` that walks it, or by the sweep against the stream
//!   clock, leaves the lists and is kept in a set ordered by expiry. Input
//!   can arrive out of order, so a later call may be dated before that
//!   expiry, and the chat is active for it: such a call also walks the
//!   retired chats that expire after its time (none, for input in order),
//!   checking each one's follow list. That keeps the walk exactly the
//!   contract's set: every chat with a subscription is linked or retired.
//!
//! A call's walk is thus bounded by the chats active at its time plus the
//! linked chats that expired since a call or the sweep last met them. The
//! sweep ([`Followers::expired`]) looks at a few linked chats per batch.
//! Retiring is one pass over each list the retired chats are in, for all
//! the chats retired at once.

use std::collections::BTreeSet;
use std::ops::Bound;

use crate::FlatMap;
use crate::chat::{Chat, ChatIdx};
use crate::event::ChannelId;
use crate::time::Nanos;

/// A chat's place in [`Followers::linked`] when it is not linked.
const NOT_LINKED: u32 = u32::MAX;

/// The follower index of one shard's copy of the chats.
#[derive(Debug, Default)]
pub(crate) struct Followers {
    /// Linked chats with an empty follow list (they follow every channel),
    /// ascending.
    follow_all: Vec<ChatIdx>,
    /// For each channel, the linked chats that name it, ascending.
    named: FlatMap<ChannelId, Vec<ChatIdx>>,
    /// Every linked chat, in no order: what the sweep walks.
    linked: Vec<ChatIdx>,
    /// Each chat's position in `linked`, or `NOT_LINKED`; by chat index.
    place: Vec<u32>,
    /// Chats retired, by (`expires_at`, index).
    retired: BTreeSet<(Nanos, ChatIdx)>,
    /// Where the sweep goes on in `linked`.
    cursor: usize,
    /// Channels whose lists a retirement passes over (reused).
    channels: Vec<ChannelId>,
}

impl Followers {
    /// Makes room for a new chat, not linked.
    pub(crate) fn push_chat(&mut self) {
        self.place.push(NOT_LINKED);
    }

    pub(crate) fn is_linked(&self, idx: ChatIdx) -> bool {
        self.place[idx as usize] != NOT_LINKED
    }

    /// Linked chats now.
    pub(crate) fn linked_len(&self) -> usize {
        self.linked.len()
    }

    /// Chat `idx`, which had `old` as its expiry and now has `chat`'s,
    /// takes its place: linked if it has a subscription, out otherwise.
    /// A renewal of a linked chat changes nothing here: the walks and the
    /// sweep read the expiry from the chat itself.
    pub(crate) fn subscribed(&mut self, idx: ChatIdx, old: Nanos, chat: &Chat) {
        let has = chat.expires_at != Nanos::MIN;
        if self.is_linked(idx) {
            if !has {
                self.unlink(idx, &chat.follow);
            }
            return;
        }
        if old != Nanos::MIN {
            let was = self.retired.remove(&(old, idx));
            assert!(was, "a subscribed chat not linked is retired");
        }
        if has {
            self.link(idx, &chat.follow);
        }
    }

    /// Chat `idx`'s follow list changed from `old` to `new`.
    pub(crate) fn refollowed(&mut self, idx: ChatIdx, old: &[ChannelId], new: &[ChannelId]) {
        if self.is_linked(idx) {
            self.unlist(idx, old);
            self.list(idx, new);
        }
    }

    fn link(&mut self, idx: ChatIdx, follow: &[ChannelId]) {
        self.place[idx as usize] = u32::try_from(self.linked.len()).expect("fewer than 2^32 chats");
        self.linked.push(idx);
        self.list(idx, follow);
    }

    fn unlink(&mut self, idx: ChatIdx, follow: &[ChannelId]) {
        self.unplace(idx);
        self.unlist(idx, follow);
    }

    /// Takes `idx` out of `linked`, whose last chat takes its position.
    fn unplace(&mut self, idx: ChatIdx) {
        let at = std::mem::replace(&mut self.place[idx as usize], NOT_LINKED) as usize;
        self.linked.swap_remove(at);
        if let Some(&moved) = self.linked.get(at) {
            self.place[moved as usize] = at as u32;
        }
    }

    fn list(&mut self, idx: ChatIdx, follow: &[ChannelId]) {
        if follow.is_empty() {
            insert_sorted(&mut self.follow_all, idx);
        }
        for &ch in follow {
            insert_sorted(self.named.entry(ch).or_default(), idx);
        }
    }

    fn unlist(&mut self, idx: ChatIdx, follow: &[ChannelId]) {
        if follow.is_empty() {
            self.follow_all.retain(|&c| c != idx);
        }
        for ch in follow {
            if let Some(v) = self.named.get_mut(ch) {
                v.retain(|&c| c != idx);
                if v.is_empty() {
                    self.named.remove(ch);
                }
            }
        }
    }

    /// Retires the chats `idxs` (no repeats), all found expired: out of
    /// `linked` one by one, then one pass over each list they are in for
    /// all of them together. A chat already retired (found by two calls
    /// deciding at once) is left as it is.
    pub(crate) fn retire(&mut self, chats: &[Chat], idxs: &[ChatIdx]) {
        if idxs.is_empty() {
            return;
        }
        let mut any_all = false;
        self.channels.clear();
        for &idx in idxs {
            if !self.is_linked(idx) {
                continue;
            }
            self.unplace(idx);
            let chat = &chats[idx as usize];
            self.retired.insert((chat.expires_at, idx));
            any_all |= chat.follow.is_empty();
            self.channels.extend_from_slice(&chat.follow);
        }
        let place = &self.place;
        let linked = |c: &ChatIdx| place[*c as usize] != NOT_LINKED;
        if any_all {
            self.follow_all.retain(linked);
        }
        self.channels.sort_unstable();
        self.channels.dedup();
        for ch in &self.channels {
            if let Some(v) = self.named.get_mut(ch) {
                v.retain(linked);
                if v.is_empty() {
                    self.named.remove(ch);
                }
            }
        }
    }

    /// The sweep: looks at up to `budget` linked chats, continuing where
    /// it last stopped, and adds those expired at `clock` to `out`.
    pub(crate) fn expired(
        &mut self,
        chats: &[Chat],
        clock: Nanos,
        budget: usize,
        out: &mut Vec<ChatIdx>,
    ) {
        let n = self.linked.len();
        for _ in 0..budget.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            let idx = self.linked[i];
            if !chats[idx as usize].is_active(clock) {
                out.push(idx);
            }
        }
    }

    /// Appends the linked chats that follow `channel` to `out`, ascending:
    /// those that name it merged with those that follow everything (the
    /// two never overlap).
    pub(crate) fn of_sorted(&self, channel: ChannelId, out: &mut Vec<ChatIdx>) {
        let named = self.named.get(&channel).map_or(&[][..], Vec::as_slice);
        merge_into(named, &self.follow_all, out);
    }

    /// The retired chats active at `t` (their expiry after it): none
    /// unless `t` is earlier than an expiry that a call or the sweep has
    /// already passed, which only input out of order can be.
    pub(crate) fn retired_active(&self, t: Nanos) -> impl Iterator<Item = ChatIdx> + '_ {
        self.retired
            .range((Bound::Excluded((t, ChatIdx::MAX)), Bound::Unbounded))
            .map(|&(_, idx)| idx)
    }
}

/// Puts `idx` in its place in the ascending `list`. Chats are numbered in
/// order of first appearance, so a new chat's place is almost always the
/// end.
fn insert_sorted(list: &mut Vec<ChatIdx>, idx: ChatIdx) {
    match list.last() {
        Some(&last) if last > idx => {
            let at = list.partition_point(|&c| c < idx);
            list.insert(at, idx);
        }
        _ => list.push(idx),
    }
}

/// Appends the merge of two ascending, disjoint lists to `out`.
fn merge_into(a: &[ChatIdx], b: &[ChatIdx], out: &mut Vec<ChatIdx>) {
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}
