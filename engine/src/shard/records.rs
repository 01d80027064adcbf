//! One token's processed records, by chat: two sorted arrays that a call
//! streams through.
//!
//! A call visits its followers in ascending chat order, so with the keys
//! sorted the walk is a merge: each follower's record is found by a short
//! gallop forward from the last one, and the records read are in address
//! order, which the hardware prefetcher follows. A hash table (the
//! engine's layout before) put every record a cache miss apart, and cost
//! about 45 ns a follower with software prefetching. Records a call makes
//! after the last sorted one are appended as it goes.
//!
//! Records that would go between sorted ones (loaded from storage in no
//! order, or made by a call whose followers are a few of the token's
//! chats) wait in a hash map (`loose`), and are merged in once there are
//! a quarter as many as sorted ones: a merge moves every record after the
//! first one it inserts, so merging at every call made a popular token's
//! calls cost in proportion to all its records. A token of at most
//! `SETTLE_ANY_MAX` records merges them in at its next call instead: so
//! few move in less time than the map lookups they save.

use crate::FlatMap;
use crate::chat::ChatIdx;

use super::record::Record;

/// Loose records a token keeps before it merges them in, at the least.
const LOOSE_MIN: usize = 64;

/// Sorted records a token may hold for its loose ones to be merged in at
/// the start of any call: moving so few costs less than finding the loose
/// ones in the map, call after call (a market of a few hundred chats).
const SETTLE_ANY_MAX: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Records {
    /// Chat of each record, ascending.
    keys: Vec<ChatIdx>,
    values: Vec<Record>,
    /// Records restored out of order, not yet merged in; never a chat that
    /// is in `keys`.
    loose: FlatMap<ChatIdx, Record>,
}

impl Records {
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.loose.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, chat: &ChatIdx) -> Option<&Record> {
        match self.keys.binary_search(chat) {
            Ok(i) => Some(&self.values[i]),
            Err(_) => self.loose.get(chat),
        }
    }

    /// Sets the chat's record; returns the one it replaces.
    pub(crate) fn insert(&mut self, chat: ChatIdx, record: Record) -> Option<Record> {
        match self.keys.binary_search(&chat) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], record)),
            Err(i) if i == self.keys.len() && self.loose.is_empty() => {
                self.keys.push(chat);
                self.values.push(record);
                None
            }
            Err(_) => self.loose.insert(chat, record),
        }
    }

    /// Merges the loose records in once there are enough of them that the
    /// merge, which moves every sorted record after the first loose one,
    /// costs little per record: a quarter of the sorted ones. A token
    /// with few records merges any loose one in.
    pub(crate) fn settle_if_many(&mut self) {
        let few = self.keys.len() <= SETTLE_ANY_MAX && !self.loose.is_empty();
        if few || self.loose.len() > LOOSE_MIN.max(self.keys.len() / 4) {
            self.settle();
        }
    }

    /// The loose record of `chat`, if it has one.
    #[inline]
    pub(crate) fn loose_mut(&mut self, chat: ChatIdx) -> Option<&mut Record> {
        if self.loose.is_empty() {
            return None;
        }
        self.loose.get_mut(&chat)
    }

    /// Adds a record for a chat that has none, among the loose ones.
    pub(crate) fn insert_loose(&mut self, chat: ChatIdx, record: Record) {
        debug_assert!(self.keys.binary_search(&chat).is_err());
        self.loose.insert(chat, record);
    }

    /// Merges the records waiting in `loose` into the sorted arrays.
    pub(crate) fn settle(&mut self) {
        if self.loose.is_empty() {
            return;
        }
        let mut loose: Vec<(ChatIdx, Record)> = self.loose.drain().collect();
        loose.sort_unstable_by_key(|&(c, _)| c);
        self.merge_sorted(loose);
    }

    /// Where `chat` is, or would go, searching only from position `from`
    /// on (every chat before it is smaller): a gallop, so a call that
    /// visits most of the records steps one or two places at a time, and
    /// one that visits few of many skips ahead in logarithmic steps.
    #[inline]
    pub(crate) fn seek(&self, from: usize, chat: ChatIdx) -> Result<usize, usize> {
        let keys = &self.keys[from..];
        let mut hi = 1;
        while hi < keys.len() && keys[hi - 1] < chat {
            hi *= 2;
        }
        let lo = hi / 2;
        let hi = hi.min(keys.len());
        match keys[lo..hi].binary_search(&chat) {
            Ok(i) => Ok(from + lo + i),
            Err(i) => Err(from + lo + i),
        }
    }

    /// Records in the sorted arrays (those a walk can seek).
    #[inline]
    pub(crate) fn sorted_len(&self) -> usize {
        self.keys.len()
    }

    /// Adds a record after every one held: for a walk that has passed
    /// the last of them, whose new records go straight to the end.
    #[inline]
    pub(crate) fn push_last(&mut self, chat: ChatIdx, record: Record) {
        debug_assert!(self.keys.last().is_none_or(|&k| k < chat));
        self.keys.push(chat);
        self.values.push(record);
    }

    /// Room for `n` more records at the end.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.keys.reserve(n);
        self.values.reserve(n);
    }

    /// The record at a position [`Records::seek`] found.
    #[inline]
    pub(crate) fn at_mut(&mut self, i: usize) -> &mut Record {
        &mut self.values[i]
    }

    /// Starts loading the record at position `i`, if there is one.
    #[inline]
    pub(crate) fn prefetch_at(&self, i: usize) {
        if let Some(v) = self.values.get(i) {
            crate::prefetch::prefetch(v);
        }
    }

    /// Merges `fresh` (sorted by chat, none of them held) into the arrays
    /// in one pass from the back. Records after the first fresh chat move
    /// once.
    fn merge_sorted(&mut self, mut fresh: Vec<(ChatIdx, Record)>) {
        debug_assert!(fresh.windows(2).all(|w| w[0].0 < w[1].0));
        let n = self.keys.len();
        let m = fresh.len();
        self.keys.resize(n + m, 0);
        self.values.resize_with(n + m, Record::new);
        let (mut i, mut k) = (n, n + m);
        while let Some((chat, record)) = fresh.pop() {
            // Held records above the fresh chat move up past the room left.
            while i > 0 && self.keys[i - 1] > chat {
                i -= 1;
                k -= 1;
                self.keys[k] = self.keys[i];
                self.values.swap(k, i);
            }
            debug_assert!(i == 0 || self.keys[i - 1] != chat, "fresh chats are new");
            k -= 1;
            self.keys[k] = chat;
            self.values[k] = record;
        }
        debug_assert_eq!(i, k);
    }

    /// Keeps the records `keep` says yes to, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Record) -> bool) {
        self.settle();
        let mut w = 0;
        for r in 0..self.keys.len() {
            if keep(&self.values[r]) {
                if w != r {
                    self.keys[w] = self.keys[r];
                    self.values.swap(w, r);
                }
                w += 1;
            }
        }
        self.keys.truncate(w);
        self.values.truncate(w);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Record> {
        self.values.iter().chain(self.loose.values())
    }

    /// Every record by chat, ascending (the loose ones merged in first).
    pub(crate) fn sorted(&mut self) -> impl Iterator<Item = (ChatIdx, &Record)> {
        self.settle();
        self.keys.iter().copied().zip(&self.values)
    }

    /// Records from `keys` ascending, each with its record.
    pub(crate) fn from_sorted(keys: Vec<ChatIdx>, values: Vec<Record>) -> Records {
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        Records {
            keys,
            values,
            loose: FlatMap::default(),
        }
    }

    /// Gives back spare capacity (after a rebuild).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.settle();
        self.keys.shrink_to_fit();
        self.values.shrink_to_fit();
        self.loose = FlatMap::default();
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

    /// Operations on the records and on a std map, side by side.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, i64),
        /// A call's walk: these chats (sorted, deduplicated), each record
        /// found or made, and its `last_check` set.
        Walk(Vec<u32>, i64),
        Retain(i64),
        Settle,
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = prop_oneof![0u32..64, 0u32..5_000, Just(u32::MAX - 1)];
        prop_oneof![
            3 => (key.clone(), any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (proptest::collection::vec(key, 0..40), any::<i64>()).prop_map(|(mut ks, v)| {
                ks.sort_unstable();
                ks.dedup();
                Op::Walk(ks, v)
            }),
            1 => any::<i64>().prop_map(Op::Retain),
            1 => Just(Op::Settle),
            1 => Just(Op::Shrink),
        ]
    }

    /// A call's walk as `shard::call` makes it: each record found by
    /// `seek` or among the loose ones, or made.
    fn walk(records: &mut Records, chats: &[u32], v: i64) {
        records.settle_if_many();
        let mut pos = 0;
        for &c in chats {
            match records.seek(pos, c) {
                Ok(i) => {
                    records.prefetch_at(i + 1);
                    records.at_mut(i).last_check = v;
                    pos = i + 1;
                }
                Err(i) => {
                    pos = i;
                    if let Some(r) = records.loose_mut(c) {
                        r.last_check = v;
                    } else if i == records.sorted_len() {
                        records.push_last(c, record(v));
                        pos = i + 1;
                    } else {
                        records.insert_loose(c, record(v));
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn records_are_a_map(ops in proptest::collection::vec(op(), 1..200)) {
            let mut records = Records::default();
            let mut model = std::collections::BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(
                        records.insert(k, record(v)).map(|r| r.last_check),
                        model.insert(k, v),
                    ),
                    Op::Walk(ks, v) => {
                        walk(&mut records, &ks, v);
                        for k in ks {
                            model.insert(k, v);
                        }
                    }
                    Op::Retain(m) => {
                        records.retain(|r| r.last_check % 3 != m % 3);
                        model.retain(|_, v| *v % 3 != m % 3);
                    }
                    Op::Settle => records.settle(),
                    Op::Shrink => records.shrink_to_fit(),
                }
                prop_assert_eq!(records.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(records.get(k).map(|r| r.last_check), Some(*v));
            }
            for k in 0..64 {
                prop_assert_eq!(records.get(&k).is_some(), model.contains_key(&k));
            }
            let mut values: Vec<i64> = records.values().map(|r| r.last_check).collect();
            let mut want: Vec<i64> = model.values().copied().collect();
            values.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(values, want);
            records.settle();
            prop_assert!(records.keys.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
