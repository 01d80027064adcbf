//! Asking for a batch's index entries ahead of applying them, so that the
//! cache misses of a batch overlap instead of adding up.

use crate::event::Envelope;

use super::ShardState;

/// How many events ahead of the one being applied a batch should
/// [`ShardState::prefetch`]. A price that crosses nothing takes a shard
/// about 10 ns, and a miss to memory ten times that, so the entry is asked
/// for that many events early. Measured on the load test: 16 ran the
/// sharded engine about a third faster than 4 (BENCHMARKS.md).
pub const PREFETCH_AHEAD: usize = 16;

/// Slots of [`AheadHashes`]: more than [`PREFETCH_AHEAD`], and a power of
/// two, so that the slot of a position is a mask.
const AHEAD_RING: usize = 32;

/// The token hashes computed when events were prefetched, kept until the
/// events are applied: by position in the batch, in a ring longer than
/// [`PREFETCH_AHEAD`].
#[derive(Debug, Default)]
pub struct AheadHashes([(usize, Option<u64>); AHEAD_RING]);

impl AheadHashes {
    /// Before the item at `position` of a batch is applied: asks `state`
    /// for what the event [`PREFETCH_AHEAD`] positions later will read, and
    /// at the batch's start for the events before it too, keeping their
    /// hashes. `event(j)` is the event at position `j`, if one is there.
    pub fn prefetch<'a>(
        &mut self,
        state: &ShardState,
        position: usize,
        event: impl Fn(usize) -> Option<&'a Envelope>,
    ) {
        let mut ask = |j: usize| {
            if let Some(env) = event(j) {
                self.put(j, state.prefetch(env));
            }
        };
        if position == 0 {
            (0..PREFETCH_AHEAD).for_each(&mut ask);
        }
        ask(position + PREFETCH_AHEAD);
    }

    /// Keeps the hash of the event at `position` (`None`: no token).
    fn put(&mut self, position: usize, hash: Option<u64>) {
        const { assert!(PREFETCH_AHEAD < AHEAD_RING) };
        self.0[position % AHEAD_RING] = (position, hash);
    }

    /// The hash kept for the event at `position`, if any.
    pub fn take(&self, position: usize) -> Option<u64> {
        match self.0[position % AHEAD_RING] {
            (p, hash) if p == position => hash,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AHEAD_RING, AheadHashes, PREFETCH_AHEAD};
    use crate::config::Rules;
    use crate::event::{Envelope, Event};
    use crate::shard::ShardState;
    use crate::token::Token;

    #[test]
    fn ahead_hashes_prefetch_a_batchs_start_at_once_then_one_event_a_step() {
        let state = ShardState::new(Rules::default());
        let envs: Vec<Envelope> = (0..40u8)
            .map(|n| Envelope {
                seq: u64::from(n) + 1,
                clock: 0,
                event: Event::Price {
                    token: Token::solana([n; 32]),
                    fdv_usd: 1.0,
                    at: 0,
                },
            })
            .collect();
        let hash = |j: usize| state.prefetch(&envs[j]);
        let mut ahead = AheadHashes::default();
        ahead.prefetch(&state, 0, |j| envs.get(j));
        for j in 0..=PREFETCH_AHEAD {
            assert_eq!(ahead.take(j), hash(j), "position {j}, at the start");
        }
        assert_eq!(ahead.take(PREFETCH_AHEAD + 1), None);
        ahead.prefetch(&state, 1, |j| envs.get(j));
        assert_eq!(ahead.take(PREFETCH_AHEAD + 1), hash(PREFETCH_AHEAD + 1));
        assert_eq!(ahead.take(PREFETCH_AHEAD + 2), None, "one event a step");
        // Past the batch's end nothing is asked for, and positions without
        // an event keep nothing.
        ahead.prefetch(&state, envs.len(), |j| envs.get(j));
        ahead.prefetch(&state, 2, |_| None);
        assert_eq!(ahead.take(PREFETCH_AHEAD + 2), None);
    }

    #[test]
    fn ahead_hashes_give_back_only_the_position_they_were_kept_for() {
        let mut ahead = AheadHashes::default();
        let same_slot = 4 + AHEAD_RING;
        assert_eq!(ahead.take(0), None, "nothing kept yet");
        ahead.put(4, Some(44));
        ahead.put(5, None);
        assert_eq!(ahead.take(4), Some(44));
        assert_eq!(ahead.take(5), None, "an event without a token");
        assert_eq!(ahead.take(same_slot), None, "same slot, another position");
        ahead.put(same_slot, Some(1212));
        assert_eq!((ahead.take(4), ahead.take(same_slot)), (None, Some(1212)));
    }
}
