//! A request budget: at most `limit` requests in any sliding window of a
//! minute, spread out rather than spent in a burst, and paused when the
//! server asks (`Retry-After`).
//!
//! Written here rather than taken from a token-bucket crate: a bucket that
//! refills at the rate and holds a burst lets through up to twice the limit
//! in some minute, and the DEX APIs count requests in a sliding minute.
//! Keeping the times of the last `limit` requests makes that bound exact.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);

/// One API's budget. Not shared across processes: give each process its
/// own share of the API's limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    spacing: Duration,
    /// Times of the requests of the last minute, oldest first.
    recent: VecDeque<Instant>,
    /// No request before this (a 429's `Retry-After`).
    paused_until: Option<Instant>,
}

impl Budget {
    /// `limit` requests a minute (at least 1).
    pub fn per_minute(limit: u32) -> Budget {
        let limit = limit.max(1);
        Budget {
            limit: limit as usize,
            spacing: MINUTE / limit,
            recent: VecDeque::with_capacity(limit as usize),
            paused_until: None,
        }
    }

    /// When the next request may go: after the pause, one spacing after the
    /// last request, and a minute after the request `limit` back.
    pub fn next_at(&self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(p) = self.paused_until {
            at = at.max(p);
        }
        if let Some(&last) = self.recent.back() {
            at = at.max(last + self.spacing);
        }
        if self.recent.len() >= self.limit {
            let oldest = self.recent[self.recent.len() - self.limit];
            // Strictly after: the oldest must have left the window.
            at = at.max(oldest + MINUTE + Duration::from_millis(1));
        }
        at
    }

    /// Waits until a request may go and counts it as sent.
    pub async fn acquire(&mut self) {
        let at = self.next_at(Instant::now());
        tokio::time::sleep_until(at).await;
        self.take(Instant::now());
    }

    /// Counts a request sent at `now`, if the budget allows it then.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.next_at(now) > now {
            return false;
        }
        self.take(now);
        true
    }

    fn take(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }

    /// The server said wait: nothing goes before `now + wait`.
    pub fn pause(&mut self, now: Instant, wait: Duration) {
        let until = now + wait;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Requests sent in the minute before `now`.
    pub fn used(&self, now: Instant) -> usize {
        self.recent
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < MINUTE)
            .count()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_sliding_minute_holds_more_than_the_limit() {
        let mut b = Budget::per_minute(30);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..200 {
            b.acquire().await;
            sent.push(Instant::now());
        }
        for (i, &t) in sent.iter().enumerate() {
            let in_minute = sent[i..]
                .iter()
                .take_while(|&&u| u.duration_since(t) < MINUTE)
                .count();
            assert!(
                in_minute <= 30,
                "{in_minute} in the minute from {:?}",
                t - start
            );
        }
        // And it is spread: about one every two seconds.
        assert!(sent[1] - sent[0] >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request_back() {
        let mut b = Budget::per_minute(600);
        let now = Instant::now();
        b.pause(now, Duration::from_secs(7));
        assert!(!b.try_take(now));
        b.acquire().await;
        assert!(Instant::now() - now >= Duration::from_secs(7));
        assert_eq!(b.used(Instant::now()), 1);
    }
}
