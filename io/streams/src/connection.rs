//! Talking to Redis through outages: a connection with explicit timeouts and
//! reconnect backoff, a health check that measures latency, and a circuit
//! breaker that stops a writer from hammering a server that is down.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Timeouts and backoff of a Redis connection.
#[derive(Debug, Clone)]
pub struct RedisTimeouts {
    /// Giving up on one connection attempt.
    pub connect: Duration,
    /// Giving up on one reply (a pipeline counts as one).
    pub response: Duration,
    /// Reconnect attempts per failed command before it reports the error.
    pub retries: usize,
    /// Longest pause between reconnect attempts.
    pub max_backoff: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        RedisTimeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
            retries: 2,
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// A connection that reconnects by itself. It is made lazily, so a service
/// can start (and serve from memory) while Redis is still down.
pub fn managed_connection(
    url: &str,
    timeouts: &RedisTimeouts,
) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response))
        .set_number_of_retries(timeouts.retries)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(timeouts.max_backoff);
    ConnectionManager::new_lazy_with_config(client, config)
}

/// One health check: PING, with how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub ok: bool,
    pub latency: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// PINGs the server, giving up after `timeout`.
pub async fn ping(con: &mut impl redis::aio::ConnectionLike, timeout: Duration) -> Ping {
    let started = Instant::now();
    let reply = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(con)).await;
    let latency = started.elapsed();
    let error = match reply {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {timeout:?}")),
    };
    Ping {
        ok: error.is_none(),
        latency,
        error,
    }
}

/// When the breaker opens and for how long.
#[derive(Debug, Clone)]
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
/// and calls wait out a pause that doubles with every failed trial; one
/// success closes it.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    failures: u32,
    pause: Duration,
    open_until: Option<Instant>,
    opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            pause: config.open_for,
            config,
            failures: 0,
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
        self.pause = self.config.open_for;
        self.open_until = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let trial_failed = self.open_until.is_some();
        if trial_failed || self.failures >= self.config.failures_to_open {
            if trial_failed {
                self.pause = (self.pause * 2).min(self.config.max_open_for);
            } else {
                self.opened += 1;
            }
            self.open_until = Some(now + self.pause);
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
        let mut b = Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_for: Duration::from_millis(100),
            max_open_for: Duration::from_millis(300),
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
        assert_eq!(b.wait(t0), Duration::from_millis(100));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.failure(t1);
        assert_eq!(
            b.wait(t1),
            Duration::from_millis(200),
            "a failed trial doubles"
        );
        let t2 = t1 + Duration::from_millis(200);
        b.failure(t2);
        assert_eq!(b.wait(t2), Duration::from_millis(300), "capped");
        b.success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.opened(), 1);
        b.failure(t2);
        assert_eq!(b.state(t2), BreakerState::Closed, "the count restarts");
    }
}
