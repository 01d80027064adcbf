//! Talking to Redis through outages: a connection with explicit timeouts and
//! reconnect backoff, and a health check that measures latency. Every
//! connection is made from a [`RedisEndpoint`], so TLS (`rediss://`, with
//! the CA of `redis.ca_file`) applies to all of them alike.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use callwatch_common::secret::SecretUrl;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// Where Redis is and how long to wait for it: the `[redis]` section of the
/// service's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://host:port/db` for TLS (the
    /// server's certificate and host name verified); a password as
    /// `redis://user:password@host…`. Never printed unmasked [default:
    /// `redis://127.0.0.1:6379/0`].
    pub url: SecretUrl,
    /// With `rediss://`: a PEM file of the CA certificates to trust instead
    /// of the public (webpki) roots, for a server whose certificate a
    /// private CA signed [default: empty, the public roots].
    pub ca_file: String,
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
            url: SecretUrl::new("redis://127.0.0.1:6379/0"),
            ca_file: String::new(),
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
        if redis::Client::open(self.url.expose()).is_err() {
            problems.push("redis.url is not a Redis URL".to_owned());
        } else if !self.ca_file.is_empty() {
            if !self.url.expose().starts_with("rediss://") {
                problems.push(
                    "redis.ca_file is set but redis.url is not a rediss:// (TLS) URL".to_owned(),
                );
            } else if let Err(e) = self.endpoint().client() {
                problems.push(e.to_string());
            }
        }
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            problems.push("redis timeouts must be positive".to_owned());
        }
        problems
    }

    /// Where it is and how to trust it.
    pub fn endpoint(&self) -> RedisEndpoint {
        RedisEndpoint {
            url: self.url.clone(),
            ca_file: (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file)),
        }
    }

    /// A managed connection to it.
    pub fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        self.endpoint().managed(&self.timeouts())
    }
}

/// One Redis to connect to: its URL and, for `rediss://`, the CA file to
/// trust. Every Redis client of the service is made by
/// [`RedisEndpoint::client`]. `Debug` masks the URL's password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisEndpoint {
    pub url: SecretUrl,
    /// PEM CA certificates trusted instead of the public roots.
    pub ca_file: Option<PathBuf>,
}

impl RedisEndpoint {
    /// The Redis at `url`, trusting the public roots if it is `rediss://`.
    pub fn new(url: impl Into<SecretUrl>) -> RedisEndpoint {
        RedisEndpoint {
            url: url.into(),
            ca_file: None,
        }
    }

    /// A client of it (no connection yet). With a CA file, the file is
    /// read here and only its certificates are trusted.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let Some(path) = &self.ca_file else {
            return redis::Client::open(self.url.expose());
        };
        let pem = std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read redis.ca_file",
                format!("{}: {e}", path.display()),
            ))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(self.url.expose(), certificates)
    }

    /// `e`, from connecting to it, with what a `rediss://` timeout most
    /// likely means: a server that does not speak TLS on that port reads
    /// the handshake as the start of a command and never answers it.
    pub fn explain(&self, e: redis::RedisError) -> redis::RedisError {
        if !self.url.expose().starts_with("rediss://") || !e.is_timeout() {
            return e;
        }
        let hint = format!(
            "{e}: no answer to the TLS handshake from {} (redis.url is rediss://: does the \
             server speak TLS on that port?)",
            self.url
        );
        std::io::Error::new(std::io::ErrorKind::TimedOut, hint).into()
    }

    /// A managed connection to it (see [`managed_connection`]).
    pub fn managed(&self, timeouts: &RedisTimeouts) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(timeouts.retries)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(timeouts.max_backoff);
        ConnectionManager::new_lazy_with_config(self.client()?, config)
    }
}

impl From<&str> for RedisEndpoint {
    fn from(url: &str) -> RedisEndpoint {
        RedisEndpoint::new(url)
    }
}

impl From<String> for RedisEndpoint {
    fn from(url: String) -> RedisEndpoint {
        RedisEndpoint::new(url)
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

/// A connection that reconnects by itself, to the Redis at `url` (public
/// roots for `rediss://`). It is made lazily, so a service can start (and
/// serve from memory) while Redis is still down.
pub fn managed_connection(
    url: &str,
    timeouts: &RedisTimeouts,
) -> redis::RedisResult<ConnectionManager> {
    RedisEndpoint::new(url).managed(timeouts)
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
