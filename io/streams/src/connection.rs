//! Talking to Redis through outages: a connection with explicit timeouts and
//! reconnect backoff, and a health check that measures latency. Every
//! connection is made from a [`RedisEndpoint`], so TLS (`rediss://`, with
//! the CA of `redis.ca_file`) applies to all of them alike, and so does
//! the choice of one server or a Redis Cluster (`redis.cluster`): a
//! [`Conn`] is either, and routes each command to the node that holds its
//! key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use callwatch_common::secret::SecretUrl;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::cluster::{Seen, SharedSlots};
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
    /// `redis.url` is one node of a Redis Cluster: the others are found
    /// from it, and each command goes to the node that holds its key (the
    /// URL's database must be 0, the only one a cluster has) [default:
    /// false, one server].
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: SecretUrl::new("redis://127.0.0.1:6379/0"),
            ca_file: String::new(),
            key_prefix: String::new(),
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
            cluster: false,
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
        if self.cluster
            && let Ok(info) = redis::IntoConnectionInfo::into_connection_info(self.url.expose())
            && info.redis_settings().db() != 0
        {
            problems.push(
                "redis.cluster is set but redis.url names a database other than 0 \
                 (a cluster has only database 0)"
                    .to_owned(),
            );
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
            cluster: self.cluster,
        }
    }

    /// A managed connection to it.
    pub fn connect(&self) -> redis::RedisResult<Conn> {
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
    /// `url` is a node of a Redis Cluster.
    pub cluster: bool,
}

impl RedisEndpoint {
    /// The Redis at `url`, trusting the public roots if it is `rediss://`.
    pub fn new(url: impl Into<SecretUrl>) -> RedisEndpoint {
        RedisEndpoint {
            url: url.into(),
            ca_file: None,
            cluster: false,
        }
    }

    /// The Redis Cluster that the node at `url` belongs to.
    pub fn cluster(url: impl Into<SecretUrl>) -> RedisEndpoint {
        RedisEndpoint {
            cluster: true,
            ..RedisEndpoint::new(url)
        }
    }

    /// The CA certificates of `ca_file`, if one is set.
    fn certificates(&self) -> redis::RedisResult<Option<redis::TlsCertificates>> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read redis.ca_file",
                format!("{}: {e}", path.display()),
            ))
        })?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// A client of it (no connection yet). With a CA file, the file is
    /// read here and only its certificates are trusted.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match self.certificates()? {
            None => redis::Client::open(self.url.expose()),
            Some(certificates) => redis::Client::build_with_tls(self.url.expose(), certificates),
        }
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

    /// A managed connection to it (see [`managed_connection`]): to the one
    /// server, or to every node of the cluster, which it finds from `url`
    /// and finds again when slots move (a failover).
    pub fn managed(&self, timeouts: &RedisTimeouts) -> redis::RedisResult<Conn> {
        if self.cluster {
            let seen = seen_nodes(self.url.expose());
            return self
                .cluster_connection(timeouts, &seen)
                .map(|c| Conn::Cluster(c, SharedSlots::new(seen)));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(timeouts.retries)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(timeouts.max_backoff);
        ConnectionManager::new_lazy_with_config(self.client()?, config).map(Conn::Single)
    }

    /// A connection to the cluster, starting from the node at `url` or, if
    /// that one is down (a failover took its place), from any node `seen`
    /// holds; each with `url`'s scheme and credentials.
    fn cluster_connection(
        &self,
        timeouts: &RedisTimeouts,
        seen: &Seen,
    ) -> redis::RedisResult<ClusterConnection> {
        let first = self.url.expose().into_connection_info()?;
        let mut starts = vec![first.clone()];
        for (host, port) in seen.lock().iter().cloned() {
            let addr = match first.addr() {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            if &addr != first.addr() {
                starts.push(first.clone().set_addr(addr));
            }
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(starts)
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.response)
            .retries(u32::try_from(timeouts.retries).unwrap_or(u32::MAX).max(1))
            .min_retry_wait(20)
            .max_retry_wait(u64::try_from(timeouts.max_backoff.as_millis()).unwrap_or(u64::MAX));
        if let Some(certificates) = self.certificates()? {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        Ok(client.get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new()))
    }
}

/// The nodes the slot maps of the cluster reached at `url` have named so
/// far, shared by every connection made to it in this process: a
/// connection made after the node in `url` died (its replica promoted in
/// its place) starts from one of the others.
fn seen_nodes(url: &str) -> Seen {
    static SEEN: std::sync::LazyLock<Mutex<HashMap<String, Seen>>> =
        std::sync::LazyLock::new(Mutex::default);
    SEEN.lock().entry(url.to_owned()).or_default().clone()
}

/// A connection to one Redis server or to a Redis Cluster, reconnecting
/// by itself either way. Clones share the connection.
///
/// On a cluster, a command goes to the node holding its key; a pipeline
/// or transaction must keep to one hash slot (every key callwatch puts in
/// one carries the same hash tag); work that writes many keys sends them
/// grouped per master ([`crate::cluster::send_spread`]).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    /// The cluster, and which master serves each slot, as last asked.
    Cluster(ClusterConnection, SharedSlots),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(..) => "Conn::Cluster",
        })
    }
}

impl Conn {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(..))
    }

    /// On a cluster, asks it for its nodes now, so that connections made
    /// later can start from any of them; nothing on one server.
    pub async fn learn_nodes(&mut self) -> redis::RedisResult<()> {
        match self {
            Conn::Single(_) => Ok(()),
            Conn::Cluster(con, slots) => slots.learn(con).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c, slots) => Box::pin(async move {
                let result = c.req_packed_commands(cmd, offset, count).await;
                if let Err(e) = &result
                    && crate::classify::has_code(e, "MOVED")
                {
                    crate::cluster::follow_moved(c, slots, cmd).await;
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
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
pub fn managed_connection(url: &str, timeouts: &RedisTimeouts) -> redis::RedisResult<Conn> {
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
