//! Chats as every shard sees them: subscription, settings, and who follows
//! which channel.
//!
//! Every shard gets every chat event in input order, so each holds an
//! identical copy, and chat indices (`u32`, in order of first appearance)
//! are the same on every shard.

use crate::FlatMap;
use crate::event::{ChannelId, ChatId, SettingsPatch};
use crate::time::{NANOS_PER_SEC, Nanos};

/// A chat's index inside a shard.
pub type ChatIdx = u32;

/// One chat's state: one cache line, since a call reads the chat of each of
/// hundreds of followers, each a miss.
#[derive(Debug, Clone, PartialEq)]
#[repr(align(64))]
pub struct Chat {
    pub id: ChatId,
    /// `expires_at` of the latest `subscribe`; `Nanos::MIN` before any (an
    /// `Option` would take the chat past one cache line).
    pub expires_at: Nanos,
    pub min_callers: u32,
    pub lookback_nanos: Nanos,
    pub min_fdv_usd: f64,
    pub max_fdv_usd: f64,
    /// Sorted; `None` follows every channel.
    pub follow: Option<Box<[ChannelId]>>,
}

impl Chat {
    fn new(id: ChatId) -> Self {
        Chat {
            id,
            expires_at: Nanos::MIN,
            min_callers: 2,
            lookback_nanos: 60 * 60 * NANOS_PER_SEC,
            min_fdv_usd: 0.0,
            max_fdv_usd: f64::INFINITY,
            follow: None,
        }
    }

    /// Active at `t`: the latest subscription expires after `t`.
    pub fn is_active(&self, t: Nanos) -> bool {
        self.expires_at > t
    }

    pub fn follows(&self, channel: ChannelId) -> bool {
        self.follow
            .as_ref()
            .is_none_or(|list| list.binary_search(&channel).is_ok())
    }

    pub fn fdv_in_range(&self, fdv_usd: f64) -> bool {
        self.min_fdv_usd <= fdv_usd && fdv_usd <= self.max_fdv_usd
    }
}

/// Every chat, indexed, with the reverse index from channel to followers.
#[derive(Debug, Default)]
pub struct Chats {
    index: FlatMap<ChatId, ChatIdx>,
    list: Vec<Chat>,
    /// Chats with an empty follow list (they follow every channel).
    follow_all: Vec<ChatIdx>,
    /// For each channel, the chats that name it in their follow list.
    followers: FlatMap<ChannelId, Vec<ChatIdx>>,
}

impl Chats {
    pub fn get(&self, idx: ChatIdx) -> &Chat {
        &self.list[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn lookup(&self, id: ChatId) -> Option<ChatIdx> {
        self.index.get(&id).copied()
    }

    /// The index of chat `id`, adding it (inactive, default settings) if
    /// it is new.
    pub fn intern(&mut self, id: ChatId) -> ChatIdx {
        if let Some(&idx) = self.index.get(&id) {
            return idx;
        }
        let idx = ChatIdx::try_from(self.list.len()).expect("fewer than 2^32 chats");
        self.index.insert(id, idx);
        self.list.push(Chat::new(id));
        self.follow_all.push(idx);
        idx
    }

    pub fn subscribe(&mut self, id: ChatId, expires_at: Nanos) {
        let idx = self.intern(id);
        self.list[idx as usize].expires_at = expires_at;
    }

    pub fn apply_settings(&mut self, id: ChatId, patch: &SettingsPatch) {
        let idx = self.intern(id);
        let chat = &mut self.list[idx as usize];
        if let Some(v) = patch.min_callers {
            chat.min_callers = v;
        }
        if let Some(v) = patch.lookback_minutes {
            chat.lookback_nanos = i64::from(v) * 60 * NANOS_PER_SEC;
        }
        if let Some(v) = patch.min_fdv_usd {
            chat.min_fdv_usd = v;
        }
        if let Some(v) = patch.max_fdv_usd {
            chat.max_fdv_usd = v;
        }
        if let Some(follow) = &patch.follow {
            let new = (!follow.is_empty()).then(|| follow.clone().into_boxed_slice());
            let old = std::mem::replace(&mut chat.follow, new);
            self.unlink(idx, old.as_deref());
            self.link(idx);
        }
    }

    fn unlink(&mut self, idx: ChatIdx, follow: Option<&[ChannelId]>) {
        match follow {
            None => self.follow_all.retain(|&c| c != idx),
            Some(list) => {
                for ch in list {
                    if let Some(v) = self.followers.get_mut(ch) {
                        v.retain(|&c| c != idx);
                        if v.is_empty() {
                            self.followers.remove(ch);
                        }
                    }
                }
            }
        }
    }

    fn link(&mut self, idx: ChatIdx) {
        match &self.list[idx as usize].follow {
            None => self.follow_all.push(idx),
            Some(list) => {
                for &ch in list.iter() {
                    self.followers.entry(ch).or_default().push(idx);
                }
            }
        }
    }

    /// Starts loading chat `idx` into the cache (see [`crate::prefetch`]).
    pub(crate) fn prefetch(&self, idx: ChatIdx) {
        if let Some(chat) = self.list.get(idx as usize) {
            crate::prefetch::prefetch(chat);
        }
    }

    /// Starts loading chat `idx`'s follow list, which lives apart from the
    /// chat. Reads the chat, so it pays only once that is cached.
    pub(crate) fn prefetch_follow(&self, idx: ChatIdx) {
        if let Some(follow) = self
            .list
            .get(idx as usize)
            .and_then(|c| c.follow.as_deref())
        {
            crate::prefetch::prefetch(&follow[0]);
        }
    }

    /// Every chat that follows `channel`, in no particular order: those
    /// that name it and those that follow everything (the two never
    /// overlap).
    pub fn followers_of(&self, channel: ChannelId) -> impl Iterator<Item = ChatIdx> + '_ {
        let named = self.followers.get(&channel).map_or(&[][..], Vec::as_slice);
        named.iter().chain(self.follow_all.iter()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_is_one_cache_line() {
        assert_eq!((size_of::<Chat>(), align_of::<Chat>()), (64, 64));
    }

    #[test]
    fn a_chat_without_subscription_is_inactive() {
        let mut chats = Chats::default();
        chats.apply_settings(7, &SettingsPatch::default());
        assert!(!chats.get(0).is_active(0));
        chats.subscribe(7, 100);
        assert!(chats.get(0).is_active(99));
        assert!(!chats.get(0).is_active(100), "expires_at must be after t");
    }

    #[test]
    fn empty_follow_list_means_every_channel() {
        let mut chats = Chats::default();
        let follow = |v: Vec<i64>| SettingsPatch {
            follow: Some(v),
            ..SettingsPatch::default()
        };
        chats.apply_settings(1, &follow(vec![10, 20]));
        chats.apply_settings(2, &SettingsPatch::default());
        let mut f: Vec<_> = chats.followers_of(10).collect();
        f.sort();
        assert_eq!(f, [0, 1]);
        assert_eq!(chats.followers_of(30).collect::<Vec<_>>(), [1]);
        chats.apply_settings(1, &follow(vec![]));
        let mut f: Vec<_> = chats.followers_of(30).collect();
        f.sort();
        assert_eq!(f, [0, 1]);
        assert!(chats.get(0).follows(99));
        chats.apply_settings(2, &follow(vec![5]));
        assert_eq!(chats.followers_of(30).collect::<Vec<_>>(), [0]);
    }
}
