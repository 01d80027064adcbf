//! A flat hash table that can be asked to start loading an entry before
//! it is read: the shard's token index.
//!
//! The index is far larger than the cache, so the first read of an entry
//! is a miss. A caller that knows which keys come next asks for them a few
//! steps ahead and finds them loaded when it gets there. [`Table`], over
//! hashbrown, finds where an entry lives from its control bytes, which
//! (one per bucket) stay cached. (A token's processed records are not
//! hashed: they are sorted arrays a call streams through, in
//! `shard::records`.)

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

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

    /// Every key and value, in no order: for scans off the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
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

    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|(k, _)| hash(k));
    }

    /// Starts loading the bucket that most likely holds the key filed
    /// under `hash` (the first whose control byte matches). Reads only
    /// control bytes: no key is compared, so nothing waits on the bucket
    /// itself.
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
