//! Chats as every shard sees them: subscription, settings, and who follows
//! which channel.
//!
//! Every shard gets every chat event in input order, so each holds an
//! identical copy, and chat indices (`u32`, in order of first appearance)
//! are the same on every shard. Only subscribed chats are in the follower
//! index ([`crate::followers`]), and a chat found expired leaves it when
//! a call or the sweep meets it, which differs from shard to shard and
//! changes no output.

use smallvec::SmallVec;

use crate::FlatMap;
use crate::event::{ChannelId, ChatId, SettingsPatch};
use crate::followers::Followers;
use crate::snapshot::{Decoder, Encoder, SnapshotError};
use crate::time::{NANOS_PER_SEC, Nanos};

/// A chat's index inside a shard.
pub type ChatIdx = u32;

/// A chat's follow list: sorted, and empty when it follows every channel.
/// Up to three channels are kept inline, in the chat's own cache line.
pub type Follow = SmallVec<[ChannelId; 3]>;

/// What a call reads of each follower, in one cache line: a call reads it
/// for each of hundreds of followers, each a miss, and a follow list of up
/// to three channels comes with it. The chat's id, needed only for an
/// alert, is kept apart ([`Chats::id`]).
#[derive(Debug, Clone, PartialEq)]
#[repr(align(64))]
pub struct Chat {
    /// `expires_at` of the latest `subscribe`; `Nanos::MIN` before any (an
    /// `Option` would take the chat past one cache line).
    pub expires_at: Nanos,
    pub min_fdv_usd: f64,
    pub max_fdv_usd: f64,
    pub lookback_minutes: u32,
    pub min_callers: u32,
    pub follow: Follow,
}

impl Chat {
    fn new() -> Self {
        Chat {
            expires_at: Nanos::MIN,
            min_fdv_usd: 0.0,
            max_fdv_usd: f64::INFINITY,
            lookback_minutes: 60,
            min_callers: 2,
            follow: Follow::new(),
        }
    }

    pub fn lookback_nanos(&self) -> Nanos {
        i64::from(self.lookback_minutes) * 60 * NANOS_PER_SEC
    }

    /// Active at `t`: the latest subscription expires after `t`.
    pub fn is_active(&self, t: Nanos) -> bool {
        self.expires_at > t
    }

    pub fn follows(&self, channel: ChannelId) -> bool {
        self.follow.is_empty() || self.follow.binary_search(&channel).is_ok()
    }

    pub fn fdv_in_range(&self, fdv_usd: f64) -> bool {
        self.min_fdv_usd <= fdv_usd && fdv_usd <= self.max_fdv_usd
    }
}

/// Every chat, indexed, with the reverse index from channel to the
/// followers a call can alert ([`crate::followers`]).
#[derive(Debug, Default)]
pub struct Chats {
    index: FlatMap<ChatId, ChatIdx>,
    list: Vec<Chat>,
    /// Each chat's id, by index.
    ids: Vec<ChatId>,
    followers: Followers,
    order: IdOrder,
}

/// The chats in the order of their ids: a call meets its followers by
/// index, and puts its alerts in chat order by placing each at its
/// chat's rank rather than by comparing ids (`shard::call`). Brought up
/// to date when asked: chats only ever join, at the end of the index.
#[derive(Debug, Default)]
struct IdOrder {
    /// Every chat ranked so far, by id, with its id: merging newcomers
    /// in then reads one array in order, where looking each id up took
    /// six times as long at a million chats.
    by_id: Vec<(ChatId, ChatIdx)>,
    /// By chat index: its place in `by_id`.
    rank: Vec<u32>,
}

impl Chats {
    pub fn get(&self, idx: ChatIdx) -> &Chat {
        &self.list[idx as usize]
    }

    pub fn id(&self, idx: ChatIdx) -> ChatId {
        self.ids[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Chats in the follower index now: subscribed, and not yet found
    /// expired by a call or the sweep.
    pub fn followed_len(&self) -> usize {
        self.followers.linked_len()
    }

    /// Each chat's place among all chats by id, by index: two chats'
    /// ranks compare as their ids do. Chats that joined since the last
    /// call are merged in first, in time linear in the number of chats
    /// (about 11 ms for a million) and the newcomers' sort.
    pub(crate) fn ranks(&mut self) -> &[u32] {
        let n = self.ids.len();
        let IdOrder { by_id, rank } = &mut self.order;
        if by_id.len() < n {
            let from = by_id.len();
            let joined = (from..n).map(|i| (self.ids[i], i as ChatIdx));
            by_id.extend(joined);
            by_id[from..].sort_unstable_by_key(|p| p.0);
            // Two sorted runs, which the stable sort merges in one pass.
            by_id.sort_by_key(|p| p.0);
            rank.resize(n, 0);
            for (r, &(_, i)) in by_id.iter().enumerate() {
                rank[i as usize] = r as u32;
            }
        }
        rank
    }

    /// Whether [`Chats::ranks`] is up to date: no chat joined since.
    pub(crate) fn ranked(&self) -> bool {
        self.order.by_id.len() == self.ids.len()
    }

    pub fn lookup(&self, id: ChatId) -> Option<ChatIdx> {
        self.index.get(&id).copied()
    }

    /// The index of chat `id`, adding it (inactive, default settings) if
    /// it is new. A new chat is in no follower list until it subscribes.
    pub fn intern(&mut self, id: ChatId) -> ChatIdx {
        if let Some(&idx) = self.index.get(&id) {
            return idx;
        }
        let idx = ChatIdx::try_from(self.list.len()).expect("fewer than 2^32 chats");
        self.index.insert(id, idx);
        self.list.push(Chat::new());
        self.ids.push(id);
        self.followers.push_chat();
        idx
    }

    pub fn subscribe(&mut self, id: ChatId, expires_at: Nanos) {
        let idx = self.intern(id);
        let chat = &mut self.list[idx as usize];
        let old = std::mem::replace(&mut chat.expires_at, expires_at);
        self.followers.subscribed(idx, old, chat);
    }

    pub fn apply_settings(&mut self, id: ChatId, patch: &SettingsPatch) {
        let idx = self.intern(id);
        let chat = &mut self.list[idx as usize];
        if let Some(v) = patch.min_callers {
            chat.min_callers = v;
        }
        if let Some(v) = patch.lookback_minutes {
            chat.lookback_minutes = v;
        }
        if let Some(v) = patch.min_fdv_usd {
            chat.min_fdv_usd = v;
        }
        if let Some(v) = patch.max_fdv_usd {
            chat.max_fdv_usd = v;
        }
        if let Some(follow) = &patch.follow {
            let old = std::mem::replace(&mut chat.follow, Follow::from_slice(follow));
            self.followers.refollowed(idx, &old, &chat.follow);
        }
    }

    /// Takes the chats `idxs` (no repeats), found expired, out of the
    /// follower lists: calls dated after their expiry no longer walk them.
    pub(crate) fn retire(&mut self, idxs: &[ChatIdx]) {
        self.followers.retire(&self.list, idxs);
    }

    /// The sweep: up to `budget` chats of the follower lists looked at,
    /// and those expired at `clock` retired. `scratch` is reused.
    pub(crate) fn sweep(&mut self, clock: Nanos, budget: usize, scratch: &mut Vec<ChatIdx>) {
        scratch.clear();
        self.followers.expired(&self.list, clock, budget, scratch);
        self.retire(scratch);
        scratch.clear();
    }

    /// Starts loading chat `idx` into the cache (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, idx: ChatIdx) {
        if let Some(chat) = self.list.get(idx as usize) {
            crate::prefetch::prefetch(chat);
        }
    }

    /// The chats a call on `channel` at `t` must look at, ascending, into
    /// `out` (cleared first): every chat active at `t` that follows
    /// `channel` is among them. They are the followers in the index (some
    /// perhaps expired since a call or the sweep last met them) and, for a
    /// call dated before expiries already passed, the retired chats active
    /// at `t`.
    pub fn followers_of(&self, channel: ChannelId, t: Nanos, out: &mut Vec<ChatIdx>) {
        out.clear();
        self.followers.of_sorted(channel, out);
        let linked = out.len();
        out.extend(
            self.followers
                .retired_active(t)
                .filter(|&idx| self.list[idx as usize].follows(channel)),
        );
        if out.len() > linked {
            // Retired chats are never linked: the two parts are disjoint.
            out.sort_unstable();
        }
    }

    /// The chats into a snapshot, in index order, so that the indices
    /// records and entries hold mean the same chats when loaded.
    pub(crate) fn encode(&self, e: &mut Encoder) {
        e.len(self.list.len());
        for (chat, &id) in self.list.iter().zip(&self.ids) {
            e.i64(id);
            e.i64(chat.expires_at);
            e.f64(chat.min_fdv_usd);
            e.f64(chat.max_fdv_usd);
            e.u32(chat.lookback_minutes);
            e.u32(chat.min_callers);
            e.len(chat.follow.len());
            for &c in &chat.follow {
                e.i64(c);
            }
        }
    }

    /// The chats [`Chats::encode`] wrote, added to these: one already held
    /// (by id) keeps its state, which is the same on every shard that
    /// holds it. Returns each written chat's index here, in the order
    /// written. The follower index takes every chat with a subscription;
    /// one that has expired leaves when a call or the sweep meets it, as
    /// it would have (which changes no output).
    pub(crate) fn decode_into(
        &mut self,
        d: &mut Decoder<'_>,
    ) -> Result<Vec<ChatIdx>, SnapshotError> {
        let n = d.len(41)?;
        let mut map = Vec::with_capacity(n);
        let mut seen = crate::FlatMap::<ChatId, ()>::default();
        for _ in 0..n {
            let id = d.i64()?;
            if seen.insert(id, ()).is_some() {
                return Err(d.bad(format!("chat {id} appears twice")));
            }
            let mut chat = Chat {
                expires_at: d.i64()?,
                min_fdv_usd: d.f64()?,
                max_fdv_usd: d.f64()?,
                lookback_minutes: d.u32()?,
                min_callers: d.u32()?,
                follow: Follow::new(),
            };
            let follows = d.len(8)?;
            for _ in 0..follows {
                let c = d.i64()?;
                if chat.follow.last().is_some_and(|&last| last >= c) {
                    return Err(d.bad(format!("chat {id} follows channels out of order")));
                }
                chat.follow.push(c);
            }
            if let Some(&idx) = self.index.get(&id) {
                map.push(idx);
                continue;
            }
            let idx = self.intern(id);
            self.list[idx as usize] = chat;
            self.followers
                .subscribed(idx, Nanos::MIN, &self.list[idx as usize]);
            map.push(idx);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: Nanos = Nanos::MAX;

    fn follow(list: Vec<i64>) -> SettingsPatch {
        SettingsPatch {
            follow: Some(list),
            ..SettingsPatch::default()
        }
    }

    #[test]
    fn ranks_order_the_chats_by_id_as_they_join() {
        let mut chats = Chats::default();
        let mut rng = crate::sim::Rng::new(5);
        for joining in [1, 100, 0, 37, 1_000] {
            for _ in 0..joining {
                chats.intern(rng.next_u64() as i64);
            }
            let ranks = chats.ranks().to_vec();
            let mut by_rank = vec![None; chats.len()];
            for (idx, &r) in ranks.iter().enumerate() {
                assert!(
                    by_rank[r as usize].replace(idx as ChatIdx).is_none(),
                    "rank {r} twice"
                );
            }
            let ids: Vec<ChatId> = by_rank.iter().map(|i| chats.id(i.unwrap())).collect();
            assert!(ids.is_sorted(), "{} chats", chats.len());
        }
    }

    fn followers_at(chats: &Chats, channel: ChannelId, t: Nanos) -> Vec<ChatIdx> {
        let mut f = Vec::new();
        chats.followers_of(channel, t, &mut f);
        assert!(f.windows(2).all(|w| w[0] < w[1]), "ascending: {f:?}");
        f
    }

    fn followers(chats: &Chats, channel: ChannelId) -> Vec<ChatIdx> {
        followers_at(chats, channel, 200)
    }

    #[test]
    fn a_chat_is_one_cache_line() {
        assert_eq!((size_of::<Chat>(), align_of::<Chat>()), (64, 64));
    }

    #[test]
    fn a_chat_without_subscription_is_inactive_and_no_follower() {
        let mut chats = Chats::default();
        chats.apply_settings(7, &SettingsPatch::default());
        assert!(!chats.get(0).is_active(0));
        assert_eq!(followers(&chats, 1), [] as [ChatIdx; 0]);
        chats.subscribe(7, 100);
        assert!(chats.get(0).is_active(99));
        assert!(!chats.get(0).is_active(100), "expires_at must be after t");
        assert_eq!(followers(&chats, 1), [0]);
    }

    #[test]
    fn empty_follow_list_means_every_channel() {
        let mut chats = Chats::default();
        chats.apply_settings(1, &follow(vec![10, 20]));
        chats.apply_settings(2, &SettingsPatch::default());
        chats.subscribe(1, FOREVER);
        chats.subscribe(2, FOREVER);
        assert_eq!(followers(&chats, 10), [0, 1]);
        assert_eq!(followers(&chats, 30), [1]);
        chats.apply_settings(1, &follow(vec![]));
        assert_eq!(followers(&chats, 30), [0, 1]);
        assert!(chats.get(0).follows(99));
        chats.apply_settings(2, &follow(vec![5]));
        assert_eq!(followers(&chats, 30), [0]);
    }

    #[test]
    fn long_follow_lists_live_apart_and_read_the_same() {
        let mut chats = Chats::default();
        chats.apply_settings(7, &follow(vec![1, 2, 3, 4, 5]));
        chats.subscribe(7, FOREVER);
        assert!(chats.get(0).follow.spilled());
        assert_eq!(chats.id(0), 7);
        assert!((1..=5).all(|c| chats.get(0).follows(c)) && !chats.get(0).follows(6));
        assert_eq!(followers(&chats, 5), [0]);
        chats.apply_settings(7, &follow(vec![2, 6]));
        assert!(!chats.get(0).follow.spilled());
        assert_eq!(followers(&chats, 5), [] as [ChatIdx; 0]);
        assert_eq!(followers(&chats, 6), [0]);
        assert!(chats.get(0).follows(2) && !chats.get(0).follows(1));
    }

    #[test]
    fn retired_chats_leave_the_lists_and_come_back_when_renewed() {
        let mut chats = Chats::default();
        chats.apply_settings(1, &follow(vec![10, 20]));
        chats.subscribe(1, 100);
        chats.subscribe(2, 100);
        chats.subscribe(3, FOREVER);
        let mut scratch = Vec::new();
        chats.sweep(100, 10, &mut scratch);
        assert_eq!(chats.followed_len(), 1);
        assert_eq!(followers(&chats, 10), [2], "retired, and not active at 200");
        let late = followers_at(&chats, 10, 99);
        assert_eq!(late.len(), 3, "active at 99: {late:?}");
        let late = followers_at(&chats, 30, 99);
        assert_eq!(late, [1, 2], "chat 1 follows 10 and 20 only");
        assert_eq!(followers_at(&chats, 10, 100).len(), 1);
        chats.subscribe(1, 500);
        assert_eq!(chats.followed_len(), 2);
        assert_eq!(followers(&chats, 20), [0, 2]);
        // A follow list changed while retired is the one linked back.
        chats.apply_settings(2, &follow(vec![30]));
        chats.subscribe(2, 500);
        assert_eq!(followers(&chats, 30), [1, 2]);
        assert_eq!(followers(&chats, 20), [0, 2]);
    }
}
