//! A snapshot written while the shard goes on applying events.
//!
//! At the cut (the snapshot's place in the input) the shard writes what is
//! small: its chats, clock and counters, and notes each live token's slot
//! and current value. The tokens, which hold the records and tracked
//! entries, follow a step at a time between batches ([`ShardState::snapshot_step`]),
//! or while the inbox is empty. A token an event is about to change is
//! written first, as it was at the cut ([`save`]), so the section is the
//! state at the cut however the writing and the input interleave: a copy
//! on write, one token at a time.
//!
//! The input waits at most for the cut, one step (at least
//! `EngineConfig::snapshot_step_records` records, [`STEP_RECORDS`] by
//! default, and one token), or one token written before a change; never
//! for the whole shard.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::snapshot::{Encoder, ShardPart};

use super::image::{ImageCounts, encode_token};
use super::{ShardState, TokenState};

/// Records one step writes, at least: a few milliseconds of encoding.
pub const STEP_RECORDS: u64 = 16 * 1024;

/// A shard's snapshot being written.
#[derive(Debug)]
pub(crate) struct Cut {
    shard: usize,
    reply: Sender<ShardPart>,
    e: Encoder,
    /// One bit per slot: live at the cut and not written yet.
    unwritten: Vec<u64>,
    /// Each slot's current value at the cut.
    fdv: Vec<f64>,
    cursor: usize,
    left: usize,
    counts: ImageCounts,
    /// The longest the shard spent on the snapshot at one go.
    longest: Duration,
}

impl Cut {
    #[inline]
    fn is_unwritten(&self, slot: usize) -> bool {
        self.unwritten
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn write(&mut self, slot: usize, ts: &mut TokenState) {
        self.unwritten[slot / 64] &= !(1 << (slot % 64));
        encode_token(&mut self.e, ts, self.fdv[slot], &mut self.counts);
        self.left -= 1;
    }

    fn done(self) {
        debug_assert_eq!(self.left, 0);
        let Cut {
            shard,
            reply,
            e,
            counts,
            longest,
            ..
        } = self;
        // The asker may have given up; that is its business.
        let _ = reply.send(ShardPart::new(shard, e.bytes, counts, longest));
    }
}

/// Writes the token in `slot` as it was at the cut, if a snapshot is being
/// written and it is not yet: called before anything changes a token. Takes
/// the two fields rather than the shard, so that the price path can call it
/// while it holds the token's index entry.
#[inline(always)]
pub(super) fn save(cut: &mut Option<Box<Cut>>, slots: &mut [TokenState], slot: usize) {
    if let Some(c) = cut
        && c.is_unwritten(slot)
    {
        save_slow(c, slots, slot);
    }
}

/// Whether a snapshot is being written and the token in `slot` is not yet.
pub(super) fn is_unwritten(cut: &Option<Box<Cut>>, slot: usize) -> bool {
    cut.as_ref().is_some_and(|c| c.is_unwritten(slot))
}

#[cold]
#[inline(never)]
fn save_slow(c: &mut Cut, slots: &mut [TokenState], slot: usize) {
    let started = Instant::now();
    c.write(slot, &mut slots[slot]);
    c.longest = c.longest.max(started.elapsed());
}

impl ShardState {
    /// Starts this shard's part of a snapshot at this point of the input,
    /// for `reply`. Every call must have been decided. A snapshot still
    /// being written is finished first.
    pub(crate) fn begin_snapshot(&mut self, shard: usize, reply: Sender<ShardPart>) {
        assert!(!self.has_unfinished(), "a snapshot is taken between calls");
        self.finish_snapshot();
        let started = Instant::now();
        let s = &self.stats;
        let mut e = Encoder::with_capacity(
            64 + 64 * self.chats.len()
                + (s.tokens as usize) * 120
                + (s.records as usize) * 48
                + (s.tracked as usize) * 26,
        );
        self.chats.encode(&mut e);
        e.i64(self.clock);
        for v in super::image::stats_fields(&self.stats) {
            e.u64(v);
        }
        e.len(self.index.len());
        let mut unwritten = vec![0u64; self.slots.len().div_ceil(64)];
        let mut fdv = vec![0.0; self.slots.len()];
        for (_, hot) in self.index.iter() {
            let slot = hot.slot as usize;
            unwritten[slot / 64] |= 1 << (slot % 64);
            fdv[slot] = hot.fdv_usd;
        }
        let left = self.index.len();
        let cut = Box::new(Cut {
            shard,
            reply,
            e,
            unwritten,
            fdv,
            cursor: 0,
            left,
            counts: ImageCounts::default(),
            longest: started.elapsed(),
        });
        if left == 0 {
            (*cut).done();
        } else {
            self.cut = Some(cut);
        }
    }

    /// Whether a snapshot is being written.
    pub fn is_snapshotting(&self) -> bool {
        self.cut.is_some()
    }

    /// Writes a step of the snapshot being written (see
    /// [`ShardState::set_snapshot_step`]), and hands the part over once
    /// every token is.
    pub fn snapshot_step(&mut self) {
        self.write_tokens(self.step_records);
    }

    /// Writes the next tokens, until at least `records` records are (at
    /// least one token), and hands the part over once every token is.
    fn write_tokens(&mut self, records: u64) {
        let Some(c) = self.cut.as_deref_mut() else {
            return;
        };
        let started = Instant::now();
        let until = c.counts.records.saturating_add(records);
        let mut first = true;
        while c.left > 0 && (first || c.counts.records < until) {
            first = false;
            let slot = next_unwritten(&c.unwritten, c.cursor).expect("a token left is unwritten");
            c.write(slot, &mut self.slots[slot]);
            c.cursor = slot + 1;
        }
        c.longest = c.longest.max(started.elapsed());
        if c.left == 0 {
            (*self.cut.take().expect("checked above")).done();
        }
    }

    /// Writes the rest of the snapshot being written: before anything
    /// that changes tokens wholesale (a restore, a compaction).
    pub fn finish_snapshot(&mut self) {
        while self.cut.is_some() {
            self.write_tokens(u64::MAX);
        }
    }
}

/// The first set bit at or after `from`.
fn next_unwritten(bits: &[u64], from: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut word = bits.get(w)? & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        word = *bits.get(w)?;
    }
}

#[cfg(test)]
mod tests {
    use super::next_unwritten;

    #[test]
    fn the_next_set_bit_is_found_across_words() {
        let bits = [0b1010u64, 0, 1 << 63, 1];
        assert_eq!(next_unwritten(&bits, 0), Some(1));
        assert_eq!(next_unwritten(&bits, 2), Some(3));
        assert_eq!(next_unwritten(&bits, 4), Some(191));
        assert_eq!(next_unwritten(&bits, 192), Some(192));
        assert_eq!(next_unwritten(&bits, 193), None);
        assert_eq!(next_unwritten(&bits, 9_999), None);
    }
}
