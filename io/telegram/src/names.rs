//! Channel names for alert messages: an in-process cache over the
//! `channel:{id}:info` records in Redis (the predecessor's layout, 30
//! minutes to live).
//!
//! The in-process level is a `moka` cache: bounded (least recently used
//! goes first, O(1)), each entry expiring on its own (a name after `ttl`, a
//! known absence sooner, after `miss_ttl`). A lookup reads the cache, then
//! asks Redis for all the misses in one MGET, with a short timeout: an alert
//! never waits long for a name. Whatever is not found, or not found in
//! time, shows as the channel's numeric id.
//!
//! Redis failures are not cached (the next lookup tries again) and, after
//! `failures_to_open` in a row, the circuit breaker keeps lookups off Redis
//! for a while, so an outage costs alerts their names, not their latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callwatch_streams::Conn;
use engine::event::ChannelId;
use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use parking_lot::Mutex;

use callwatch_common::breaker::{Breaker, BreakerConfig};
use callwatch_common::keys::{CHANNEL_INFO_TTL_SECS, channel_info_key};

/// A channel's name, shared by every alert that shows it.
pub type Name = Arc<str>;

/// How names are cached.
#[derive(Debug, Clone)]
pub struct NamesConfig {
    /// Channels held in process at most. Default: 10,000.
    pub capacity: u64,
    /// How long a name read from Redis is used before it is read again.
    /// Default: 5 minutes (Redis keeps it 30), so a rename shows soon.
    pub ttl: Duration,
    /// How long "Redis has no name" is remembered, so a nameless channel
    /// costs one Redis read per this period rather than one per alert.
    /// Default: 30 s.
    pub miss_ttl: Duration,
    /// The longest a lookup waits for Redis; then it shows ids. Default:
    /// 250 ms.
    pub lookup_timeout: Duration,
    /// Keys per MGET. Default: 512.
    pub batch_keys: usize,
    /// Put before every key; empty in production, a test's own prefix in
    /// tests.
    pub key_prefix: String,
    pub breaker: BreakerConfig,
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            capacity: 10_000,
            ttl: Duration::from_secs(5 * 60),
            miss_ttl: Duration::from_secs(30),
            lookup_timeout: Duration::from_millis(250),
            batch_keys: 512,
            key_prefix: String::new(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl NamesConfig {
    /// The defaults, for the keys under `key_prefix`.
    pub fn under(key_prefix: &str) -> NamesConfig {
        NamesConfig {
            key_prefix: key_prefix.to_owned(),
            ..NamesConfig::default()
        }
    }
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamesStats {
    /// Lookups answered in process (a name or a remembered absence).
    pub cached: u64,
    /// Names read from Redis.
    pub found: u64,
    /// Channels Redis has no name for.
    pub absent: u64,
    /// Lookups that got no answer from Redis (error, timeout, breaker
    /// open) and showed ids.
    pub unanswered: u64,
    /// Entries held in process.
    pub entries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    cached: AtomicU64,
    found: AtomicU64,
    absent: AtomicU64,
    unanswered: AtomicU64,
}

/// Each entry's time to live: a name's, or an absence's.
struct Lifetimes {
    name: Duration,
    absent: Duration,
}

impl Lifetimes {
    fn of(&self, value: &Option<Name>) -> Option<Duration> {
        Some(if value.is_some() {
            self.name
        } else {
            self.absent
        })
    }
}

impl Expiry<ChannelId, Option<Name>> for Lifetimes {
    fn expire_after_create(
        &self,
        _: &ChannelId,
        value: &Option<Name>,
        _: Instant,
    ) -> Option<Duration> {
        self.of(value)
    }

    fn expire_after_update(
        &self,
        _: &ChannelId,
        value: &Option<Name>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.of(value)
    }
}

/// The two-level cache. Cheap to share behind an `Arc`.
pub struct ChannelNames {
    cache: Cache<ChannelId, Option<Name>>,
    con: Conn,
    config: NamesConfig,
    breaker: Mutex<Breaker>,
    counters: Counters,
}

impl std::fmt::Debug for ChannelNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelNames")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChannelNames {
    pub fn new(config: NamesConfig, con: Conn) -> ChannelNames {
        assert!(config.capacity > 0 && config.batch_keys > 0);
        let cache = Cache::builder()
            .max_capacity(config.capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(Lifetimes {
                name: config.ttl,
                absent: config.miss_ttl,
            })
            .build();
        ChannelNames {
            cache,
            con,
            breaker: Mutex::new(Breaker::new(config.breaker.clone())),
            config,
            counters: Counters::default(),
        }
    }

    /// The names of `ids`, in order; `None` where there is none (the
    /// message then shows the id).
    pub async fn resolve(&self, ids: &[ChannelId]) -> Vec<Option<Name>> {
        let c = &self.counters;
        let mut names = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match self.cache.get(id).await {
                Some(held) => {
                    c.cached.fetch_add(1, Ordering::Relaxed);
                    names.push(held);
                }
                None => {
                    names.push(None);
                    missing.push(i);
                }
            }
        }
        for chunk in missing.chunks(self.config.batch_keys) {
            let chunk_ids: Vec<ChannelId> = chunk.iter().map(|&i| ids[i]).collect();
            let Some(found) = self.read(&chunk_ids).await else {
                c.unanswered
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                continue;
            };
            for ((&i, id), name) in chunk.iter().zip(chunk_ids).zip(found) {
                if name.is_some() {
                    c.found.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.absent.fetch_add(1, Ordering::Relaxed);
                }
                self.cache.insert(id, name.clone()).await;
                names[i] = name;
            }
        }
        names
    }

    /// One MGET; `None` when Redis did not answer in time (or the breaker
    /// is open).
    async fn read(&self, ids: &[ChannelId]) -> Option<Vec<Option<Name>>> {
        if self.breaker.lock().wait(Instant::now()) > Duration::ZERO {
            return None;
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(*id)).collect();
        let mut con = self.con.clone();
        let reply = tokio::time::timeout(
            self.config.lookup_timeout,
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut con),
        )
        .await;
        let error = match reply {
            Ok(Ok(values)) => {
                self.breaker.lock().success();
                return Some(
                    values
                        .iter()
                        .map(|v| v.as_deref().and_then(parse_info).map(Name::from))
                        .collect(),
                );
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.config.lookup_timeout),
        };
        let mut breaker = self.breaker.lock();
        let before = breaker.opened();
        breaker.failure(Instant::now());
        if breaker.opened() > before {
            tracing::warn!(%error, "channel names: Redis failing; showing channel ids for a while");
        } else {
            tracing::debug!(%error, "channel names: Redis lookup failed; showing ids");
        }
        None
    }

    /// [`ChannelNames::resolve`], each name as a `String`.
    pub async fn resolve_owned(&self, ids: &[ChannelId]) -> Vec<Option<String>> {
        self.resolve(ids)
            .await
            .into_iter()
            .map(|n| n.map(|n| n.to_string()))
            .collect()
    }

    /// Records a channel's name: in Redis for 30 minutes (as the
    /// predecessor did, `{"title": …}`) and in process.
    pub async fn put(&self, id: ChannelId, title: &str) -> redis::RedisResult<()> {
        let value = serde_json::json!({ "title": title }).to_string();
        let mut con = self.con.clone();
        let () = redis::cmd("SET")
            .arg(self.key(id))
            .arg(value)
            .arg("EX")
            .arg(CHANNEL_INFO_TTL_SECS)
            .query_async(&mut con)
            .await?;
        self.cache.insert(id, Some(Name::from(title))).await;
        Ok(())
    }

    /// Forgets what the process holds for `id` (the next lookup reads
    /// Redis).
    pub async fn forget(&self, id: ChannelId) {
        self.cache.invalidate(&id).await;
    }

    pub fn stats(&self) -> NamesStats {
        let c = &self.counters;
        NamesStats {
            cached: c.cached.load(Ordering::Relaxed),
            found: c.found.load(Ordering::Relaxed),
            absent: c.absent.load(Ordering::Relaxed),
            unanswered: c.unanswered.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
        }
    }

    fn key(&self, id: ChannelId) -> String {
        format!("{}{}", self.config.key_prefix, channel_info_key(id))
    }
}

/// The name in a `channel:{id}:info` value. The predecessor stored what
/// the Bot API's getChat returned, so the JSON object's `title` comes
/// first, then `name`, then `@username`; a JSON string or plain text is the
/// name itself. Blank is none.
pub fn parse_info(value: &[u8]) -> Option<String> {
    let name = match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(info)) => {
            let field = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::trim);
            field("title")
                .filter(|s| !s.is_empty())
                .or_else(|| field("name").filter(|s| !s.is_empty()))
                .map(str::to_owned)
                .or_else(|| {
                    field("username")
                        .filter(|s| !s.is_empty())
                        .map(|u| format!("@{}", u.trim_start_matches('@')))
                })?
        }
        Ok(serde_json::Value::String(s)) => s,
        Ok(_) => return None,
        Err(_) => std::str::from_utf8(value).ok()?.to_owned(),
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_every_shape_the_predecessor_wrote() {
        assert_eq!(
            parse_info(br#"{"id":-1001,"title":" Alpha <Calls> ","username":"alpha"}"#).as_deref(),
            Some("Alpha <Calls>")
        );
        assert_eq!(parse_info(br#"{"name":"Beta"}"#).as_deref(), Some("Beta"));
        assert_eq!(
            parse_info(br#"{"title":"","username":"gamma"}"#).as_deref(),
            Some("@gamma")
        );
        assert_eq!(parse_info(br#""Delta""#).as_deref(), Some("Delta"));
        assert_eq!(
            parse_info(b"Plain & simple").as_deref(),
            Some("Plain & simple")
        );
        assert_eq!(parse_info(br#"{"id":5}"#), None);
        assert_eq!(parse_info(b"  "), None);
        assert_eq!(parse_info(b"[1,2]"), None);
        assert_eq!(parse_info(&[0xff, 0xfe]), None);
    }
}
