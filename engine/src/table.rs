//! A flat hash table that can be asked to start loading an entry before
//! it is read.
//!
//! The shard's big maps (the token index, and a popular token's processed
//! records) are far larger than the cache, so the first read of an entry is
//! a miss. Where an entry lives follows from the table's control bytes
//! alone (small, and usually cached), so a caller that knows which keys
//! come next asks for them a few steps ahead ([`Table::prefetch`]) and
//! finds them loaded when it gets there.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::chat::ChatIdx;
use crate::shard::Record;

/// One token's processed records, by chat.
pub type Records = Table<ChatIdx, Record>;

fn hash<K: Hash>(key: &K) -> u64 {
    crate::FlatHasher::default().hash_one(key)
}

#[derive(Debug)]
pub struct Table<K, V> {
    table: HashTable<(K, V)>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            table: HashTable::new(),
        }
    }
}

impl<K: Hash + Eq + Copy, V> Table<K, V> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.table
            .find(hash(key), |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The hash the table files `key` under, to look it up more than once
    /// for the price of one hashing.
    pub fn hash_of(key: &K) -> u64 {
        hash(key)
    }

    /// [`Table::get_mut`] with `key`'s hash already known.
    pub fn get_mut_hashed(&mut self, hash: u64, key: &K) -> Option<&mut V> {
        debug_assert_eq!(hash, Self::hash_of(key));
        self.table.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.get_mut_hashed(hash(key), key)
    }

    /// The key's value, made by `new` if there is none; and whether it
    /// was made.
    pub fn get_or_insert_with(&mut self, key: K, new: impl FnOnce() -> V) -> (&mut V, bool) {
        match self.entry(&key) {
            Entry::Occupied(held) => (&mut held.into_mut().1, false),
            Entry::Vacant(free) => (&mut free.insert((key, new())).into_mut().1, true),
        }
    }

    /// Sets the key's value; returns the one it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entry(&key) {
            Entry::Occupied(mut held) => Some(std::mem::replace(&mut held.get_mut().1, value)),
            Entry::Vacant(free) => {
                free.insert((key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        match self.entry(key) {
            Entry::Occupied(held) => Some(held.remove().0.1),
            Entry::Vacant(_) => None,
        }
    }

    fn entry(&mut self, key: &K) -> Entry<'_, (K, V)> {
        self.table
            .entry(hash(key), |(k, _)| k == key, |(k, _)| hash(k))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.table.retain(|(_, v)| keep(v));
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|(k, _)| hash(k));
    }

    /// Starts loading the bucket that most likely holds `key` (the first
    /// whose control byte matches). Reads only control bytes: no key is
    /// compared, so nothing waits on the bucket itself.
    pub fn prefetch(&self, key: &K) {
        self.prefetch_hashed(hash(key));
    }

    /// [`Table::prefetch`] with the key's hash already known.
    pub fn prefetch_hashed(&self, hash: u64) {
        if let Some(entry) = self
            .table
            .iter_hash_buckets(hash)
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
        assert_eq!(r.get(&7).map(|x| x.last_check), Some(1));
        let old = r.insert(7, record(2)).expect("held");
        assert_eq!(old.last_check, 1);
        assert_eq!(r.get(&7).map(|x| x.last_check), Some(2));
        assert_eq!(r.len(), 1);
        assert!(r.get(&8).is_none());
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
        assert_eq!(r.remove(&0).map(|x| x.last_check), Some(0));
        assert!(r.remove(&0).is_none());
        r.insert(0, record(0));
        for c in 0..1_000 {
            assert_eq!(r.get(&c).is_some(), c % 2 == 0, "chat {c}");
            r.prefetch(&c);
        }
        assert_eq!(r.values().count(), 500);
    }
}
