//! Talking to Redis through outages: a connection with explicit timeouts and
//! reconnect backoff, and a health check that measures latency.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// Where Redis is and how long to wait for it: the `[redis]` section of the
/// service's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` [default: `redis://127.0.0.1:6379/0`].
    pub url: String,
    /// Put before every key and stream the service reads or writes; empty
    /// in production, the predecessor's layout [default: empty].
    pub key_prefix: String,
    /// Giving up on one connection attempt [default: 2000].
    pub connect_timeout_ms: u64,
    /// Giving up on one reply [default: 5000].
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: String::new(),
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
        }
    }
}

impl RedisConfig {
    /// The connection's timeouts, with the default reconnect policy.
    pub fn timeouts(&self) -> RedisTimeouts {
        RedisTimeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            response: Duration::from_millis(self.response_timeout_ms),
            ..RedisTimeouts::default()
        }
    }

    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if redis::Client::open(self.url.as_str()).is_err() {
            problems.push("redis.url is not a Redis URL".to_owned());
        }
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            problems.push("redis timeouts must be positive".to_owned());
        }
        problems
    }

    /// A managed connection to it.
    pub fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        managed_connection(&self.url, &self.timeouts())
    }
}

/// Timeouts and backoff of a Redis connection.
#[derive(Debug, Clone, PartialEq)]
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
