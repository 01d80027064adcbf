//! The one retry pause of the I/O side: exponential, capped, with jitter.
//!
//! Every loop that retries a server (Redis, PostgreSQL, the Bot API, the
//! Solana RPC) waits through a [`Backoff`]. The pause doubles from `min` to
//! `max`; each wait is drawn from the upper half of the current step
//! ("equal jitter"), so processes that lost the same server at the same
//! moment do not come back in step, and no wait is shorter than half the
//! step. See AWS's "Exponential Backoff and Jitter" for the trade-offs.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// An exponential backoff with jitter. Not shared: each retry loop owns one.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    attempts: u32,
    rng: u64,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max` (a `max` below `min` is
    /// taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        // A seed of the process's random keys and the backoff's own address:
        // different in every process and every loop.
        let seed = RandomState::new().hash_one(std::ptr::from_ref(&min) as usize);
        Backoff::with_seed(min, max, seed)
    }

    /// As [`Backoff::new`], with the jitter drawn from `seed`: for tests.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: min,
            attempts: 0,
            // SplitMix64's finish: nearby seeds give unrelated streams, and
            // xorshift needs a state other than zero.
            rng: splitmix64(seed) | 1,
        }
    }

    /// The pause before the next attempt: half the current step plus a
    /// random share of the other half. The step then doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        self.jittered(step)
    }

    /// The pause after the `attempt`-th failure in a row (from 1) of one of
    /// many things retried apart (each message of a queue): the step
    /// `min × 2^(attempt-1)`, capped at `max`, with the same jitter. Leaves
    /// the backoff's own step alone.
    pub fn delay_for_attempt(&mut self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let step = self.min.saturating_mul(1 << doublings).min(self.max);
        self.jittered(step)
    }

    fn jittered(&mut self, step: Duration) -> Duration {
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            self.random() % (spread + 1)
        };
        half + Duration::from_nanos(extra)
    }

    /// The step the next pause is drawn from (its upper bound).
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Pauses taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.step = self.min;
        self.attempts = 0;
    }

    /// xorshift64*: enough spread for jitter, no shared state.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_double_up_to_the_cap_each_in_the_upper_half_of_its_step() {
        let mut b = Backoff::with_seed(100 * MS, 1_000 * MS, 7);
        for step in [100, 200, 400, 800, 1_000, 1_000] {
            let d = b.next_delay();
            assert!(
                (step / 2 * MS..=step * MS).contains(&d),
                "{d:?} not in the upper half of {step} ms"
            );
        }
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!((b.step(), b.attempts()), (100 * MS, 0));
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn an_attempts_pause_doubles_per_attempt_up_to_the_cap() {
        let mut b = Backoff::with_seed(100 * MS, 1_000 * MS, 9);
        for (attempt, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let d = b.delay_for_attempt(attempt);
            assert!(
                (step / 2 * MS..=step * MS).contains(&d),
                "attempt {attempt}: {d:?}"
            );
        }
        assert_eq!(b.step(), 100 * MS, "its own step is untouched");
    }

    #[test]
    fn the_jitter_spreads_the_pauses() {
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|seed| Backoff::with_seed(100 * MS, 100 * MS, seed).next_delay())
            .collect();
        assert!(delays.len() > 40, "{} distinct pauses of 50", delays.len());
    }

    #[test]
    fn two_backoffs_made_alike_do_not_move_in_step() {
        let (mut a, mut b) = (Backoff::new(MS, MS * 64), Backoff::new(MS, MS * 64));
        let same = (0..8).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 8);
    }

    #[test]
    fn a_zero_or_inverted_range_is_safe() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(),
            Duration::ZERO
        );
        let mut b = Backoff::with_seed(50 * MS, MS, 3);
        assert!(b.next_delay() <= 50 * MS);
        assert_eq!(b.step(), 50 * MS);
    }
}
