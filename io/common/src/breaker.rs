//! A circuit breaker that stops a writer from hammering a server that is
//! down: after a run of failures it opens, and callers wait out a pause
//! that grows with every failed trial ([`Backoff`], with jitter).

use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub failures_to_open: u32,
    /// The first pause once open; each failed trial doubles it.
    pub open_for: Duration,
    /// The longest pause.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_to_open: 3,
            open_for: Duration::from_millis(250),
            max_open_for: Duration::from_secs(5),
        }
    }
}

/// The breaker's state, as health reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls wait until the pause is over.
    Open,
    /// The pause is over: the next call is a trial.
    HalfOpen,
}

/// A circuit breaker: after `failures_to_open` failures in a row it opens,
/// and calls wait out a pause that about doubles with every failed trial
/// (a [`Backoff`] from `open_for` to `max_open_for`); one success closes it.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    failures: u32,
    pauses: Backoff,
    open_until: Option<Instant>,
    opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            failures_to_open: config.failures_to_open,
            failures: 0,
            pauses: Backoff::new(config.open_for, config.max_open_for),
            open_until: None,
            opened: 0,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How long a caller must wait before it may try (zero when it may).
    pub fn wait(&self, now: Instant) -> Duration {
        self.open_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.pauses.reset();
        self.open_until = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let trial_failed = self.open_until.is_some();
        if trial_failed || self.failures >= self.failures_to_open {
            if !trial_failed {
                self.opened += 1;
            }
            self.open_until = Some(now + self.pauses.next_delay());
        }
    }

    /// How many times it has opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_failures_backs_off_and_closes_on_success() {
        const MS: Duration = Duration::from_millis(1);
        let mut b = Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_for: 100 * MS,
            max_open_for: 300 * MS,
        });
        let t0 = Instant::now();
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(
            b.state(t0),
            BreakerState::Closed,
            "one failure is not enough"
        );
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        let first = b.wait(t0);
        assert!((50 * MS..=100 * MS).contains(&first), "{first:?}");
        let t1 = t0 + 100 * MS;
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.failure(t1);
        let second = b.wait(t1);
        assert!(
            (100 * MS..=200 * MS).contains(&second),
            "a failed trial about doubles: {second:?}"
        );
        let t2 = t1 + 200 * MS;
        b.failure(t2);
        b.failure(t2 + 300 * MS);
        let capped = b.wait(t2 + 300 * MS);
        assert!(
            (150 * MS..=300 * MS).contains(&capped),
            "capped: {capped:?}"
        );
        b.success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.opened(), 1);
        b.failure(t2);
        assert_eq!(b.state(t2), BreakerState::Closed, "the count restarts");
        b.failure(t2);
        assert!(
            b.wait(t2) <= 100 * MS,
            "the pause starts again from open_for"
        );
    }
}
