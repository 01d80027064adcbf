//! The chats tracking one token, ordered by the price at which each next
//! crosses a threshold.
//!
//! A binary min-heap over plain 24-byte entries, keyed by
//! `fdv_at_call × next threshold`. The token keeps the smallest key (less a
//! hair, see [`Tracked::next_cross`]) in a field of its own, so a price that
//! crosses nothing costs one comparison whatever the number of chats: the
//! O(1) that the seed's 5 s / 2 % gating tried to buy by skipping updates.

use crate::chat::ChatIdx;
use crate::time::Nanos;

/// One tracked (token, chat) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub fdv_at_call: f64,
    /// When tracking started (the accepting call's `at`).
    pub started: Nanos,
    pub chat: ChatIdx,
    /// Thresholds already reached: 0 for none, `k` when `thresholds[k-1]`
    /// was the last one. So `thresholds[last]` is the next one to cross.
    pub last: u8,
}

/// Relative margin for the heap's crossing test. The contract defines a
/// crossing as `fdv / fdv_at_call >= threshold`; comparing `fdv` against a
/// precomputed product can round the other way in the last bit, so the
/// product is lowered by far more than any rounding error and every
/// candidate is then checked with the contract's exact division.
const MARGIN: f64 = 1.0 - 1e-12;

impl Entry {
    fn key(&self, thresholds: &[f64]) -> f64 {
        self.fdv_at_call * thresholds[self.last as usize]
    }
}

/// The heap of one token's tracked entries.
#[derive(Debug, Default, Clone)]
pub struct Tracked {
    heap: Vec<Entry>,
}

impl Tracked {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.heap
    }

    /// The lowest price that may cross a threshold for some entry; no price
    /// below it can. Infinity when nothing is tracked.
    pub fn next_cross(&self, thresholds: &[f64]) -> f64 {
        self.heap
            .first()
            .map_or(f64::INFINITY, |e| e.key(thresholds) * MARGIN)
    }

    pub fn push(&mut self, entry: Entry, thresholds: &[f64]) {
        debug_assert!((entry.last as usize) < thresholds.len());
        self.heap.push(entry);
        self.sift_up(self.heap.len() - 1, thresholds);
    }

    /// Pushes every entry of `entries`, leaving it empty; the heap grows
    /// at most once for them all. A call's walk gathers its entries and
    /// pushes them so (`shard::call`).
    pub fn push_all(&mut self, entries: &mut Vec<Entry>, thresholds: &[f64]) {
        self.heap.reserve(entries.len());
        for entry in entries.drain(..) {
            self.push(entry, thresholds);
        }
    }

    /// Moves every entry that `fdv_usd` may cross into `out`.
    pub fn pop_crossed(&mut self, fdv_usd: f64, thresholds: &[f64], out: &mut Vec<Entry>) {
        while let Some(top) = self.heap.first() {
            if top.key(thresholds) * MARGIN > fdv_usd {
                break;
            }
            out.push(self.pop(thresholds));
        }
    }

    fn pop(&mut self, thresholds: &[f64]) -> Entry {
        let top = self.heap.swap_remove(0);
        if !self.heap.is_empty() {
            self.sift_down(0, thresholds);
        }
        top
    }

    /// The entries of a heap [`Tracked::entries`] gave, in that order: a
    /// snapshot keeps the heap's layout, so nothing moves. Ordered again
    /// should the layout not be a heap under `thresholds`.
    pub(crate) fn from_entries(heap: Vec<Entry>, thresholds: &[f64]) -> Tracked {
        let mut t = Tracked { heap };
        for i in (0..t.heap.len() / 2).rev() {
            t.sift_down(i, thresholds);
        }
        t
    }

    pub fn shrink_to_fit(&mut self) {
        self.heap.shrink_to_fit();
    }

    /// Leaves one entry per chat, the one furthest along its thresholds,
    /// and says how many it dropped. A rebuild may restore a pair twice:
    /// Redis's SCAN hands a key over again when the server shrinks its
    /// table during the scan. `scratch` is reused between calls.
    pub fn dedup_chats(&mut self, thresholds: &[f64], scratch: &mut Vec<ChatIdx>) -> usize {
        if self.heap.len() < 2 {
            return 0;
        }
        scratch.clear();
        scratch.extend(self.heap.iter().map(|e| e.chat));
        scratch.sort_unstable();
        if scratch.windows(2).all(|w| w[0] != w[1]) {
            return 0;
        }
        let before = self.heap.len();
        self.heap
            .sort_unstable_by_key(|e| (e.chat, std::cmp::Reverse(e.last)));
        self.heap.dedup_by_key(|e| e.chat);
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i, thresholds);
        }
        before - self.heap.len()
    }

    /// Keeps the entries `keep` says yes to, then restores the heap.
    pub fn retain(&mut self, keep: impl FnMut(&Entry) -> bool, thresholds: &[f64]) {
        let before = self.heap.len();
        self.heap.retain(keep);
        if self.heap.len() != before {
            for i in (0..self.heap.len() / 2).rev() {
                self.sift_down(i, thresholds);
            }
        }
        if self.heap.capacity() > 2 * self.heap.len() + 4 {
            self.heap.shrink_to_fit();
        }
    }

    fn sift_up(&mut self, mut i: usize, t: &[f64]) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].key(t) <= self.heap[i].key(t) {
                break;
            }
            self.heap.swap(parent, i);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize, t: &[f64]) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < n && self.heap[l].key(t) < self.heap[min].key(t) {
                min = l;
            }
            if r < n && self.heap[r].key(t) < self.heap[min].key(t) {
                min = r;
            }
            if min == i {
                return;
            }
            self.heap.swap(i, min);
            i = min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [f64; 3] = [2.0, 5.0, 10.0];

    fn entry(chat: u32, fdv: f64, last: u8) -> Entry {
        Entry {
            fdv_at_call: fdv,
            started: 0,
            chat,
            last,
        }
    }

    #[test]
    fn next_cross_is_the_lowest_key() {
        let mut h = Tracked::default();
        assert_eq!(h.next_cross(&T), f64::INFINITY);
        h.push(entry(1, 100.0, 0), &T); // 200
        h.push(entry(2, 30.0, 1), &T); // 150
        h.push(entry(3, 50.0, 0), &T); // 100
        assert!((h.next_cross(&T) - 100.0).abs() < 1e-6);
        let mut out = vec![];
        h.pop_crossed(99.0, &T, &mut out);
        assert!(out.is_empty());
        h.pop_crossed(160.0, &T, &mut out);
        let mut chats: Vec<_> = out.iter().map(|e| e.chat).collect();
        chats.sort();
        assert_eq!(chats, [2, 3]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn exact_product_is_a_candidate() {
        // 0.1 * 3 rounds above 0.3; the margin must still offer the entry.
        let t = [3.0];
        let mut h = Tracked::default();
        h.push(entry(1, 0.1, 0), &t);
        let mut out = vec![];
        h.pop_crossed(0.3, &t, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn retain_keeps_heap_order() {
        let mut h = Tracked::default();
        for i in 0..100u32 {
            h.push(entry(i, f64::from((i * 37) % 101 + 1), 0), &T);
        }
        h.retain(|e| e.chat % 3 != 0, &T);
        let mut out = vec![];
        h.pop_crossed(f64::MAX, &T, &mut out);
        let keys: Vec<f64> = out.iter().map(|e| e.fdv_at_call).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(out.len(), 66);
    }
}
