//! One token's processed records, by chat: a flat hash table that can be
//! asked to start loading a chat's record before it is read.
//!
//! A call reads or creates a record for each of its hundreds of followers,
//! and on a popular token the table is far larger than the cache. Knowing
//! where a record lives takes only the table's control bytes (small and
//! usually cached), so a call asks for the record a few followers ahead
//! ([`Records::prefetch`]) and finds it loaded when it gets there.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::chat::ChatIdx;
use crate::shard::Record;

type Hasher = std::hash::BuildHasherDefault<ahash::AHasher>;

fn hash(chat: ChatIdx) -> u64 {
    Hasher::default().hash_one(chat)
}

#[derive(Debug, Default)]
pub struct Records {
    table: HashTable<(ChatIdx, Record)>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, chat: ChatIdx) -> Option<&Record> {
        self.table
            .find(hash(chat), |(c, _)| *c == chat)
            .map(|(_, r)| r)
    }

    /// The chat's record, made by `new` if there is none; and whether it
    /// was made.
    pub fn get_or_insert_with(
        &mut self,
        chat: ChatIdx,
        new: impl FnOnce() -> Record,
    ) -> (&mut Record, bool) {
        match self.entry(chat) {
            Entry::Occupied(held) => (&mut held.into_mut().1, false),
            Entry::Vacant(free) => (&mut free.insert((chat, new())).into_mut().1, true),
        }
    }

    /// Sets the chat's record; returns the one it replaces.
    pub fn insert(&mut self, chat: ChatIdx, record: Record) -> Option<Record> {
        match self.entry(chat) {
            Entry::Occupied(mut held) => Some(std::mem::replace(&mut held.get_mut().1, record)),
            Entry::Vacant(free) => {
                free.insert((chat, record));
                None
            }
        }
    }

    fn entry(&mut self, chat: ChatIdx) -> Entry<'_, (ChatIdx, Record)> {
        self.table
            .entry(hash(chat), |(c, _)| *c == chat, |(c, _)| hash(*c))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Record) -> bool) {
        self.table.retain(|(_, r)| keep(r));
    }

    pub fn values(&self) -> impl Iterator<Item = &Record> {
        self.table.iter().map(|(_, r)| r)
    }

    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|(c, _)| hash(*c));
    }

    /// Starts loading the bucket that most likely holds the chat's record
    /// (the first whose control byte matches). Reads only control bytes:
    /// no key is compared, so nothing waits on the bucket itself.
    pub fn prefetch(&self, chat: ChatIdx) {
        if let Some(entry) = self
            .table
            .iter_hash_buckets(hash(chat))
            .next()
            .and_then(|i| self.table.get_bucket(i))
        {
            crate::prefetch::prefetch(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(last_check: i64) -> Record {
        Record {
            last_check,
            ..Record::new()
        }
    }

    #[test]
    fn insert_get_and_replace() {
        let mut r = Records::default();
        assert!(r.insert(7, record(1)).is_none());
        assert_eq!(r.get(7).map(|x| x.last_check), Some(1));
        let old = r.insert(7, record(2)).expect("held");
        assert_eq!(old.last_check, 1);
        assert_eq!(r.get(7).map(|x| x.last_check), Some(2));
        assert_eq!(r.len(), 1);
        assert!(r.get(8).is_none());
    }

    #[test]
    fn get_or_insert_makes_once() {
        let mut r = Records::default();
        let (_, made) = r.get_or_insert_with(3, Record::new);
        assert!(made);
        let (rec, made) = r.get_or_insert_with(3, || record(9));
        assert!(!made);
        assert_eq!(rec.last_check, Record::new().last_check);
    }

    #[test]
    fn retain_and_shrink_keep_what_is_kept() {
        let mut r = Records::default();
        for c in 0..1_000 {
            r.insert(c, record(i64::from(c)));
        }
        r.retain(|x| x.last_check % 2 == 0);
        r.shrink_to_fit();
        assert_eq!(r.len(), 500);
        for c in 0..1_000 {
            assert_eq!(r.get(c).is_some(), c % 2 == 0, "chat {c}");
            r.prefetch(c);
        }
        assert_eq!(r.values().count(), 500);
    }
}
