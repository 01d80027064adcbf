//! Flat hash tables that can be asked to start loading an entry before it
//! is read.
//!
//! The shard's big maps (the token index, and a popular token's processed
//! records) are far larger than the cache, so the first read of an entry is
//! a miss. A caller that knows which keys come next asks for them a few
//! steps ahead and finds them loaded when it gets there.
//!
//! - [`Table`], over hashbrown, finds where an entry lives from its control
//!   bytes. That suits the token index: one table, whose control bytes
//!   (one per bucket) stay cached.
//! - [`ChatTable`] holds one token's processed records, keyed by chat.
//!   There is one per token, and a call reads one entry from each of
//!   hundreds of them, so control bytes would be a miss of their own, and
//!   reading them to aim a prefetch would stall on it. A key's home bucket
//!   here is a function of the key and the table's size alone:
//!   [`ChatTable::prefetch_home`] needs no read of the table at all.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::chat::ChatIdx;
use crate::shard::Record;

/// One token's processed records, by chat.
pub type Records = ChatTable<Record>;

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

/// A table keyed by chat index: open addressing with linear probing,
/// keys and values in two arrays of the same length (a power of two, at
/// most three quarters full), a key's home bucket the top bits of its
/// Fibonacci hash. Empty buckets hold `V::default()`, so nothing here is
/// unsafe.
#[derive(Debug, Clone)]
pub struct ChatTable<V> {
    /// The key in each bucket, or [`ChatTable::EMPTY`].
    keys: Box<[ChatIdx]>,
    values: Box<[V]>,
    len: usize,
    /// `64 - log2(buckets)`.
    shift: u32,
}

impl<V> Default for ChatTable<V> {
    fn default() -> Self {
        ChatTable {
            keys: Box::new([]),
            values: Box::new([]),
            len: 0,
            shift: 64,
        }
    }
}

impl<V: Default> ChatTable<V> {
    /// Marks an empty bucket, so it is the one chat index the table cannot
    /// hold (chat indices count chats from 0).
    pub const EMPTY: ChatIdx = ChatIdx::MAX;

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, key: ChatIdx) -> usize {
        // The top bits of a multiplication by 2^64 / φ: consecutive chat
        // indices land far apart. A table of 0 buckets has shift 64, and
        // is never probed.
        (u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The bucket holding `key` (`Ok`), or the empty one where it would go
    /// (`Err`). The table must have buckets.
    fn probe(&self, key: ChatIdx) -> Result<usize, usize> {
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                k if k == key => return Ok(i),
                Self::EMPTY => return Err(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn find(&self, key: ChatIdx) -> Option<usize> {
        // `EMPTY` is never held; probing for it would "find" an empty bucket.
        if self.len == 0 || key == Self::EMPTY {
            return None;
        }
        self.probe(key).ok()
    }

    pub fn get(&self, key: &ChatIdx) -> Option<&V> {
        self.find(*key).map(|i| &self.values[i])
    }

    /// The key's value, made by `new` if there is none; and whether it was
    /// made.
    pub fn get_or_insert_with(&mut self, key: ChatIdx, new: impl FnOnce() -> V) -> (&mut V, bool) {
        assert_ne!(key, Self::EMPTY, "chat indices stay below ChatIdx::MAX");
        self.reserve_one();
        match self.probe(key) {
            Ok(i) => (&mut self.values[i], false),
            Err(i) => {
                self.keys[i] = key;
                self.values[i] = new();
                self.len += 1;
                (&mut self.values[i], true)
            }
        }
    }

    /// Sets the key's value; returns the one it replaces.
    pub fn insert(&mut self, key: ChatIdx, value: V) -> Option<V> {
        let mut value = Some(value);
        let (slot, made) = self.get_or_insert_with(key, || value.take().expect("made once"));
        if made {
            None
        } else {
            Some(std::mem::replace(slot, value.take().expect("not used")))
        }
    }

    /// Room for one more key within three quarters of the buckets.
    fn reserve_one(&mut self) {
        let buckets = self.keys.len();
        if 4 * (self.len + 1) > 3 * buckets {
            self.rebuild((2 * buckets).max(4));
        }
    }

    /// Moves every entry into a table of `buckets` buckets.
    fn rebuild(&mut self, buckets: usize) {
        debug_assert!(buckets.is_power_of_two() && 4 * self.len <= 3 * buckets);
        let keys = std::mem::replace(&mut self.keys, vec![Self::EMPTY; buckets].into());
        let values = std::mem::replace(
            &mut self.values,
            std::iter::repeat_with(V::default).take(buckets).collect(),
        );
        self.shift = 64 - buckets.trailing_zeros();
        for (key, value) in keys
            .into_iter()
            .zip(values)
            .filter(|(k, _)| *k != Self::EMPTY)
        {
            let i = self.probe(key).expect_err("keys are unique");
            self.keys[i] = key;
            self.values[i] = value;
        }
    }

    /// Keeps the values `keep` says yes to. Rebuilds the table, so it is
    /// for a sweep, not for every event.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let mut dropped = 0;
        for (key, value) in self.keys.iter_mut().zip(self.values.iter_mut()) {
            if *key != Self::EMPTY && !keep(value) {
                *key = Self::EMPTY;
                *value = V::default();
                dropped += 1;
            }
        }
        if dropped > 0 {
            // Emptied buckets break the probe runs through them: every key
            // goes back in from its home.
            self.len -= dropped;
            self.rebuild(self.keys.len());
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.keys
            .iter()
            .zip(self.values.iter())
            .filter(|(k, _)| **k != Self::EMPTY)
            .map(|(_, v)| v)
    }

    /// The fewest buckets that hold the entries.
    pub fn shrink_to_fit(&mut self) {
        if self.len == 0 {
            *self = Self::default();
            return;
        }
        let buckets = (4 * self.len).div_ceil(3).next_power_of_two().max(4);
        if buckets < self.keys.len() {
            self.rebuild(buckets);
        }
    }

    /// Starts loading the key's home bucket, key and value: nothing of the
    /// table is read. The first step of a two-step prefetch, a few keys
    /// before [`ChatTable::prefetch`].
    pub fn prefetch_home(&self, key: &ChatIdx) {
        if self.len > 0 {
            let i = self.home(*key);
            crate::prefetch::prefetch(&self.keys[i]);
            crate::prefetch::prefetch(&self.values[i]);
        }
    }

    /// Starts loading the value of `key`, or the bucket an insertion of it
    /// would fill. Reads the keys from its home on, which
    /// [`ChatTable::prefetch_home`] should have brought in.
    pub fn prefetch(&self, key: &ChatIdx) {
        if self.len > 0 {
            let (Ok(i) | Err(i)) = self.probe(*key);
            crate::prefetch::prefetch(&self.values[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(last_check: i64) -> Record {
        let mut r = Record::new();
        r.last_check = last_check;
        r
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
        for c in 0..1_000 {
            r.prefetch_home(&c);
            r.prefetch(&c);
            assert_eq!(r.get(&c).is_some(), c % 2 == 0, "chat {c}");
        }
        assert_eq!(r.values().count(), 500);
        r.retain(|_| false);
        r.shrink_to_fit();
        assert!(r.is_empty() && r.get(&0).is_none());
        r.prefetch_home(&0);
        r.prefetch(&0);
    }

    /// Operations on a chat table and on a std map, side by side.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u16),
        Touch(u32, u16),
        Retain(u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys from a small range collide and repeat; some are far apart.
        let key = prop_oneof![0u32..64, 0u32..5_000, Just(ChatTable::<u16>::EMPTY - 1)];
        prop_oneof![
            4 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (key, any::<u16>()).prop_map(|(k, v)| Op::Touch(k, v)),
            1 => any::<u16>().prop_map(Op::Retain),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        #[test]
        fn chat_table_is_a_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut table = ChatTable::<u16>::default();
            let mut model = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(k, v), model.insert(k, v)),
                    Op::Touch(k, v) => {
                        let (got, made) = table.get_or_insert_with(k, || v);
                        prop_assert_eq!(made, !model.contains_key(&k));
                        let want = model.entry(k).or_insert(v);
                        prop_assert_eq!(*got, *want);
                        *got = got.wrapping_add(1);
                        *want = want.wrapping_add(1);
                    }
                    Op::Retain(m) => {
                        table.retain(|v| v % 3 != m % 3);
                        model.retain(|_, v| *v % 3 != m % 3);
                    }
                    Op::Shrink => table.shrink_to_fit(),
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(table.get(k), Some(v));
            }
            let mut values: Vec<u16> = table.values().copied().collect();
            let mut want: Vec<u16> = model.values().copied().collect();
            values.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(values, want);
            for k in (0..64).chain([ChatTable::<u16>::EMPTY]) {
                prop_assert_eq!(table.get(&k), model.get(&k));
            }
        }
    }
}
