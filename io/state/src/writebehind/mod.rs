//! The engine's state written behind to Redis: the engine decides from
//! memory, and this copies what changed into the predecessor's keys.
//!
//! Effects go into a bounded buffer keyed by Redis key. A key written twice
//! before a flush is written once, with its latest value (a threshold
//! reached after a tracking start folds into the start's record). A flusher
//! task takes up to `batch_keys` keys at a time and writes them in one
//! pipeline.
//!
//! # Outages
//! A failed pipeline goes back into the buffer, merged under anything newer
//! for the same keys, and is written again later; every write is idempotent,
//! so a pipeline that half-landed before the failure does no harm. After
//! `failures_to_open` failures in a row the circuit breaker opens and the
//! flusher waits out a pause that doubles up to a cap. A producer that
//! records never waits for Redis; one that keeps waits for room once the
//! buffer is full (see "The bound").
//!
//! # Keys Redis refuses
//! Every write is a `SET` (which replaces a key of any type) or the raise
//! script (which reads the key with `GET`), in a pipeline without `MULTI`:
//! each command runs and is answered on its own. A raise of a key someone
//! made a hash, a list or any other type fails with `WRONGTYPE`, and would
//! fail so forever. Such a change, and only it, is set aside (see
//! [`crate::refused`]): logged with its key, counted in
//! [`WriteBehindStats::set_aside`] and added to the dead-letter stream,
//! while the rest of its pipeline counts as written. Any other failure
//! (the connection, a transient code, an error that would refuse every key
//! alike) sends the whole pipeline back into the buffer, as above.
//!
//! # The bound
//! The buffer holds at most `capacity` distinct keys (those in a pipeline
//! count). A change to a key already held is always taken (it replaces the
//! held value). For a change to a new key while the buffer is full there
//! are two ways, the producer's choice:
//! - [`WriteBehind::keep`] and [`WriteBehind::keep_call`] wait for room:
//!   nothing is dropped, and the producer is held back while Redis is slow
//!   or away. The service keeps this way, so the input behind a change is
//!   never acknowledged without the change (the keeper waits, and the
//!   reader behind it).
//! - [`WriteBehind::record`] and [`WriteBehind::record_call`] never wait:
//!   the change is dropped and counted in [`WriteBehindStats::overflowed`],
//!   and that key's Redis copy misses it until the key changes again or the
//!   next rebuild. For producers that must not block and acknowledge
//!   nothing (`demo --persist`, the load tests).
//!
//! # What is written
//! | effect | key | write |
//! | --- | --- | --- |
//! | call alert | `multiplier:{token}:{chat}` | the record, expiring at start + ttl |
//! | call alert | `processed_token:{token}:{chat}` | `accepted`, expiring at call + ttl |
//! | multiplier alert, progress | `multiplier:{token}:{chat}` | `last_threshold` raised in place, TTL kept |
//! | a call (`record_call`) | `calls:{token}:{channel_id}` | `{"at": RFC 3339, "fdv_usd": value at the call}` of the latest call, expiring at call + ttl; callwatch's own key |
//!
//! An accepted processed record is written with a plain SET: accepted may
//! replace anything, so the upgrade-only rule holds without the script.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callwatch_streams::Conn;
use engine::effect::Effect;
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;
use parking_lot::Mutex;
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use callwatch_common::breaker::{Breaker, BreakerConfig};
use callwatch_common::keys::dead_letter_key;
use callwatch_streams::log::DeadLetters;

use crate::refused;

mod writer;
use writer::{RAISE_LUA, Writer, send};

/// How the write-behind runs: the `[write_behind]` section of the
/// service's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteBehindConfig {
    /// Distinct keys the buffer holds at most, while Redis is away or
    /// behind [default: 1,000,000].
    pub capacity: usize,
    /// Keys per pipeline [default: 4,096].
    pub batch_keys: usize,
    /// Pipelines sent before the first is answered, so Redis has the next
    /// pipeline while the client reads the last one's replies [default: 2].
    pub pipelines_in_flight: usize,
    /// The longest a change waits before a flush [default: 20].
    pub flush_interval_ms: u64,
    /// The engine's time to live: records expire at start + ttl (the
    /// engine's setting).
    #[serde(skip)]
    pub ttl_nanos: Nanos,
    /// Put before every key; empty in production (the seed's layout), a
    /// test's own prefix in tests (the `[redis]` section's).
    #[serde(skip)]
    pub key_prefix: String,
    #[serde(skip)]
    pub breaker: BreakerConfig,
    /// Where changes Redis refuses for their key are set aside (the
    /// service's dead-letter stream); `None`: `{key_prefix}events:dead`,
    /// about 1,000,000 entries.
    #[serde(skip)]
    pub dead_letters: Option<DeadLetters>,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        WriteBehindConfig {
            capacity: 1_000_000,
            batch_keys: 4096,
            pipelines_in_flight: 2,
            flush_interval_ms: 20,
            ttl_nanos: engine::config::DEFAULT_TTL_HOURS * 3600 * NANOS_PER_SEC,
            key_prefix: String::new(),
            breaker: BreakerConfig::default(),
            dead_letters: None,
        }
    }
}

impl WriteBehindConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.capacity == 0 || self.batch_keys == 0 || self.pipelines_in_flight == 0 {
            problems.push(
                "write_behind.capacity, batch_keys and pipelines_in_flight must be positive"
                    .to_owned(),
            );
        }
        if self.flush_interval_ms == 0 {
            problems.push("write_behind.flush_interval_ms must be positive".to_owned());
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Multiplier,
    Processed,
    /// `calls:{token}:{channel_id}`: the key's "chat" is the channel.
    Call,
}

type Key = (Kind, Token, i64);

/// The pending change of one key.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// The whole multiplier record.
    Tracking {
        channel_id: i64,
        fdv_at_call: f64,
        started: Nanos,
        last_threshold: Option<f64>,
    },
    /// `last_threshold` raised to at least this, in the stored record.
    Threshold(f64),
    /// An accepted processed record.
    Accepted { at: Nanos, callers: Vec<i64> },
    /// A channel's latest call of a token: its time and the value at it.
    Call { at: Nanos, fdv_usd: f64 },
}

impl Op {
    /// `self` followed by the newer `next`, as one change.
    fn then(self, next: Op) -> Op {
        match (self, next) {
            (
                Op::Tracking {
                    channel_id,
                    fdv_at_call,
                    started,
                    last_threshold,
                },
                Op::Threshold(t),
            ) => Op::Tracking {
                channel_id,
                fdv_at_call,
                started,
                last_threshold: Some(last_threshold.map_or(t, |l| l.max(t))),
            },
            (Op::Threshold(a), Op::Threshold(b)) => Op::Threshold(a.max(b)),
            // The engine keeps the latest call; at the same time, the one
            // that came later.
            (Op::Call { at: a, fdv_usd }, Op::Call { at: b, .. }) if a > b => {
                Op::Call { at: a, fdv_usd }
            }
            (_, next) => next,
        }
    }
}

type Buffer = hashbrown::HashMap<Key, Op, ahash::RandomState>;
type KeySet = hashbrown::HashSet<Key, ahash::RandomState>;

/// Counters, readable at any time.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    coalesced: AtomicU64,
    overflowed: AtomicU64,
    flushed: AtomicU64,
    pipelines: AtomicU64,
    failed_pipelines: AtomicU64,
    breaker_opened: AtomicU64,
    set_aside: AtomicU64,
    in_flight: AtomicUsize,
}

/// What the write-behind has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Changes taken into the buffer.
    pub accepted: u64,
    /// Of those, changes folded into a key already held.
    pub coalesced: u64,
    /// Changes to new keys dropped because the buffer was full.
    pub overflowed: u64,
    /// Keys written to Redis.
    pub flushed: u64,
    pub pipelines: u64,
    /// Pipelines that failed and went back into the buffer.
    pub failed_pipelines: u64,
    pub breaker_opened: u64,
    /// Changes Redis refused for their key (a key of another type), set
    /// aside in the dead-letter stream; not in `flushed`.
    pub set_aside: u64,
    /// Keys waiting, in the buffer or in a pipeline.
    pub pending: u64,
}

struct Shared {
    config: WriteBehindConfig,
    buffer: Mutex<Buffer>,
    wake: Notify,
    /// Told whenever keys land: [`WriteBehind::room`] waits for it.
    room: Notify,
    closing: std::sync::atomic::AtomicBool,
    counters: Counters,
    breaker: Mutex<Breaker>,
}

/// The producer's handle: cheap to clone; it blocks on Redis only through
/// [`WriteBehind::keep`] and [`WriteBehind::room`].
#[derive(Clone)]
pub struct WriteBehind {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The flusher task's handle: [`Flusher::close`] drains and stops it.
#[derive(Debug)]
pub struct Flusher {
    handle: WriteBehind,
    task: tokio::task::JoinHandle<()>,
}

/// Keys still unwritten when a close gave up waiting for Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unwritten} keys were not written to Redis before the close deadline")]
pub struct Unwritten {
    pub unwritten: u64,
}

/// Starts the flusher on the current tokio runtime, writing through `con`.
pub fn start(config: WriteBehindConfig, con: Conn) -> (WriteBehind, Flusher) {
    assert!(config.capacity > 0 && config.batch_keys > 0 && config.pipelines_in_flight > 0);
    let breaker = Breaker::new(config.breaker.clone());
    let shared = Arc::new(Shared {
        config,
        buffer: Mutex::new(Buffer::default()),
        wake: Notify::new(),
        room: Notify::new(),
        closing: std::sync::atomic::AtomicBool::new(false),
        counters: Counters::default(),
        breaker: Mutex::new(breaker),
    });
    let handle = WriteBehind { shared };
    let task = tokio::spawn(flush_loop(handle.clone(), con));
    (handle.clone(), Flusher { handle, task })
}

/// What a change to a new key does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// Dropped, and counted.
    Drop,
    /// Taken: the producer waited for room first.
    Take,
}

/// The most keys one effect changes (a call alert: its tracking record and
/// its processed record).
const KEYS_PER_EFFECT: usize = 2;

impl WriteBehind {
    /// Takes the Redis changes of one effect; a change to a new key while
    /// the buffer is full is dropped and counted (see the module's docs).
    pub fn record(&self, effect: &Effect) {
        self.record_as(effect, Full::Drop);
    }

    /// Takes the Redis changes of `effects`, waiting for room in the
    /// buffer as it goes: nothing is dropped. Chunks of effects wait for
    /// room for all their keys, so the buffer goes over `capacity` only
    /// when one effect alone would (a capacity of 1).
    pub async fn keep(&self, effects: &[Effect]) {
        let chunk = (self.shared.config.capacity / KEYS_PER_EFFECT / 2).max(1);
        for effects in effects.chunks(chunk) {
            self.room(effects.len() * KEYS_PER_EFFECT).await;
            for effect in effects {
                self.record_as(effect, Full::Take);
            }
        }
    }

    /// [`WriteBehind::record_call`], waiting for room rather than dropping.
    pub async fn keep_call(&self, token: Token, channel_id: i64, at: Nanos, fdv_usd: f64) {
        self.room(1).await;
        self.put(
            (Kind::Call, token, channel_id),
            Op::Call { at, fdv_usd },
            Full::Take,
        );
    }

    /// Waits until the buffer has room for `keys` more (or is empty).
    pub async fn room(&self, keys: usize) {
        let capacity = self.shared.config.capacity;
        loop {
            // Registered before the check, so a landing in between wakes it.
            let landed = self.shared.room.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            let used = self.shared.buffer.lock().len()
                + self.shared.counters.in_flight.load(Ordering::Relaxed);
            if used == 0 || used + keys <= capacity {
                return;
            }
            self.shared.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(100), landed).await;
        }
    }

    fn record_as(&self, effect: &Effect, full: Full) {
        match effect {
            Effect::CallAlert(a) => {
                self.put(
                    (Kind::Multiplier, a.token, a.chat_id),
                    Op::Tracking {
                        channel_id: a.channel_id,
                        fdv_at_call: a.fdv_usd,
                        started: a.at,
                        last_threshold: None,
                    },
                    full,
                );
                self.put(
                    (Kind::Processed, a.token, a.chat_id),
                    Op::Accepted {
                        at: a.at,
                        callers: a.callers.to_vec(),
                    },
                    full,
                );
            }
            Effect::MultiplierAlert(a) => {
                self.put(
                    (Kind::Multiplier, a.token, a.chat_id),
                    Op::Threshold(a.threshold),
                    full,
                );
            }
            Effect::Progress(p) => {
                self.put(
                    (Kind::Multiplier, p.token, p.chat_id),
                    Op::Threshold(p.threshold),
                    full,
                );
            }
        }
    }

    /// Takes a call (as it arrived, whether or not it alerted anyone): the
    /// calls table is state too, and a restart needs it to count earlier
    /// callers. It lives as long as tracking does.
    pub fn record_call(&self, token: Token, channel_id: i64, at: Nanos, fdv_usd: f64) {
        self.put(
            (Kind::Call, token, channel_id),
            Op::Call { at, fdv_usd },
            Full::Drop,
        );
    }

    fn put(&self, key: Key, op: Op, full: Full) {
        let c = &self.shared.counters;
        let mut buffer = self.shared.buffer.lock();
        let len = buffer.len();
        match buffer.entry(key) {
            hashbrown::hash_map::Entry::Occupied(mut held) => {
                let old = std::mem::replace(held.get_mut(), Op::Threshold(0.0));
                *held.get_mut() = old.then(op);
                c.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            hashbrown::hash_map::Entry::Vacant(slot) => {
                if full == Full::Drop
                    && len + c.in_flight.load(Ordering::Relaxed) >= self.shared.config.capacity
                {
                    c.overflowed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                slot.insert(op);
            }
        }
        c.accepted.fetch_add(1, Ordering::Relaxed);
        let full = buffer.len() >= self.shared.config.batch_keys;
        drop(buffer);
        if full {
            self.shared.wake.notify_one();
        }
    }

    pub fn stats(&self) -> WriteBehindStats {
        let c = &self.shared.counters;
        let held = self.shared.buffer.lock().len();
        WriteBehindStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            flushed: c.flushed.load(Ordering::Relaxed),
            pipelines: c.pipelines.load(Ordering::Relaxed),
            failed_pipelines: c.failed_pipelines.load(Ordering::Relaxed),
            breaker_opened: c.breaker_opened.load(Ordering::Relaxed),
            set_aside: c.set_aside.load(Ordering::Relaxed),
            pending: (held + c.in_flight.load(Ordering::Relaxed)) as u64,
        }
    }

    /// Takes up to `n` held keys for a pipeline, leaving those of
    /// pipelines still in flight: pipelines in flight together then touch
    /// different keys, and the order they land in does not matter.
    fn take(&self, n: usize, in_flight: &KeySet) -> Vec<(Key, Op)> {
        let mut buffer = self.shared.buffer.lock();
        let batch: Vec<(Key, Op)> = if buffer.len() <= n && in_flight.is_empty() {
            buffer.drain().collect()
        } else {
            // Stops after `n`: the rest stay, unvisited.
            buffer
                .extract_if(|k, _| !in_flight.contains(k))
                .take(n)
                .collect()
        };
        self.shared
            .counters
            .in_flight
            .fetch_add(batch.len(), Ordering::Relaxed);
        batch
    }

    /// A taken batch has landed, but for `refused` of its keys, set aside.
    fn landed(&self, keys: usize, refused: usize) {
        let c = &self.shared.counters;
        c.flushed
            .fetch_add((keys - refused) as u64, Ordering::Relaxed);
        c.set_aside.fetch_add(refused as u64, Ordering::Relaxed);
        c.in_flight.fetch_sub(keys, Ordering::Relaxed);
        self.shared.room.notify_waiters();
    }

    /// Puts a failed batch back, each key under anything newer (which the
    /// buffer may hold since: `Op::then` folds them).
    fn put_back(&self, batch: Vec<(Key, Op)>) {
        let keys = batch.len();
        let mut buffer = self.shared.buffer.lock();
        for (key, op) in batch {
            match buffer.remove(&key) {
                Some(newer) => buffer.insert(key, op.then(newer)),
                None => buffer.insert(key, op),
            };
        }
        self.shared
            .counters
            .in_flight
            .fetch_sub(keys, Ordering::Relaxed);
    }
}

/// Flushes forever (until closed and empty), with up to
/// `pipelines_in_flight` pipelines sent at once. Pipelines in flight
/// together hold different keys (see [`WriteBehind::take`]), so any order
/// of landing gives the same state; a key changed again while its pipeline
/// is in flight waits in the buffer for the next one.
async fn flush_loop(handle: WriteBehind, con: Conn) {
    let shared = Arc::clone(&handle.shared);
    let config = &shared.config;
    let writer = Writer {
        con,
        raise: Script::new(RAISE_LUA),
        prefix: config.key_prefix.clone(),
        ttl_nanos: config.ttl_nanos,
        dead_letters: config.dead_letters.clone().unwrap_or_else(|| DeadLetters {
            stream: dead_letter_key(&config.key_prefix),
            max_len: refused::DEAD_LETTERS_MAX_LEN,
        }),
    };
    let c = &shared.counters;
    type Sent = tokio::task::JoinHandle<redis::RedisResult<Vec<(usize, String)>>>;
    let mut window: std::collections::VecDeque<(Vec<(Key, Op)>, Sent)> = Default::default();
    let mut in_flight = KeySet::default();
    loop {
        let wait = shared.breaker.lock().wait(Instant::now());
        if wait > Duration::ZERO {
            tokio::time::sleep(wait).await;
        }
        while window.len() < config.pipelines_in_flight {
            let batch = handle.take(config.batch_keys, &in_flight);
            if batch.is_empty() {
                break;
            }
            in_flight.extend(batch.iter().map(|(k, _)| *k));
            let pipe = writer.pipeline(&batch);
            c.pipelines.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::spawn(send(pipe, writer.con.clone(), writer.raise.clone()));
            window.push_back((batch, sent));
        }
        let Some((batch, sent)) = window.pop_front() else {
            if shared.closing.load(Ordering::Acquire) && shared.buffer.lock().is_empty() {
                return;
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(config.flush_interval()) => {}
            }
            continue;
        };
        let result = sent
            .await
            .unwrap_or_else(|e| Err(redis::RedisError::from(std::io::Error::other(e))));
        for (k, _) in &batch {
            in_flight.remove(k);
        }
        handle.settle(&writer, batch, result).await;
    }
}

impl WriteBehind {
    /// Settles a sent batch by Redis's answer: landed; landed but for the
    /// changes Redis refused for their own key, which are set aside; or,
    /// for any other failure, put back to be sent again.
    async fn settle(
        &self,
        writer: &Writer,
        batch: Vec<(Key, Op)>,
        result: redis::RedisResult<Vec<(usize, String)>>,
    ) {
        let refused = match result {
            Ok(errors) if errors.is_empty() => Vec::new(),
            Ok(errors) => writer.refused(&batch, errors),
            Err(e) => return self.failed(batch, &e),
        };
        refused::set_aside(&mut writer.con.clone(), &writer.dead_letters, &refused).await;
        self.landed(batch.len(), refused.len());
        self.shared.breaker.lock().success();
    }

    /// A pipeline failed: its batch goes back into the buffer, and the
    /// breaker counts the failure.
    fn failed(&self, batch: Vec<(Key, Op)>, e: &redis::RedisError) {
        let c = &self.shared.counters;
        c.failed_pipelines.fetch_add(1, Ordering::Relaxed);
        let keys = batch.len();
        self.put_back(batch);
        let mut breaker = self.shared.breaker.lock();
        let before = breaker.opened();
        breaker.failure(Instant::now());
        if breaker.opened() > before {
            c.breaker_opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, keys, "Redis write-behind failing; breaker open, writes wait in the buffer");
        } else {
            tracing::debug!(error = %e, keys, "Redis pipeline failed; will retry");
        }
    }
}

impl Flusher {
    /// Writes everything held, then stops. Gives up after `deadline` (Redis
    /// still down) and says how many keys were left unwritten.
    pub async fn close(self, deadline: Duration) -> Result<WriteBehindStats, Unwritten> {
        let shared = &self.handle.shared;
        shared.closing.store(true, Ordering::Release);
        shared.wake.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
            let stats = self.handle.stats();
            return Err(Unwritten {
                unwritten: stats.pending,
            });
        }
        Ok(self.handle.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_is_associative_so_batches_can_go_back_in_any_grouping() {
        let ops = [
            Op::Tracking {
                channel_id: -1,
                fdv_at_call: 10.0,
                started: 5,
                last_threshold: None,
            },
            Op::Tracking {
                channel_id: -2,
                fdv_at_call: 20.0,
                started: 6,
                last_threshold: Some(5.0),
            },
            Op::Threshold(2.0),
            Op::Threshold(10.0),
        ];
        for a in &ops {
            for b in &ops {
                for c in &ops {
                    let left = a.clone().then(b.clone()).then(c.clone());
                    let right = a.clone().then(b.clone().then(c.clone()));
                    assert_eq!(left, right, "{a:?} {b:?} {c:?}");
                }
            }
        }
    }

    #[test]
    fn changes_fold_into_the_latest_value() {
        let start = |c| Op::Tracking {
            channel_id: c,
            fdv_at_call: 10.0,
            started: 5,
            last_threshold: None,
        };
        assert_eq!(
            start(-1).then(Op::Threshold(2.0)).then(Op::Threshold(5.0)),
            Op::Tracking {
                channel_id: -1,
                fdv_at_call: 10.0,
                started: 5,
                last_threshold: Some(5.0)
            }
        );
        assert_eq!(
            Op::Threshold(10.0).then(Op::Threshold(5.0)),
            Op::Threshold(10.0)
        );
        assert_eq!(
            Op::Threshold(10.0).then(start(-2)),
            start(-2),
            "a restart replaces what came before"
        );
        // A failed batch put back under a newer change keeps both.
        assert_eq!(
            start(-1).then(Op::Threshold(20.0)),
            Op::Tracking {
                channel_id: -1,
                fdv_at_call: 10.0,
                started: 5,
                last_threshold: Some(20.0)
            }
        );
        // Calls keep the latest, as the engine does; a tie goes to the newer.
        let call = |at, fdv_usd| Op::Call { at, fdv_usd };
        assert_eq!(call(9, 1.0).then(call(7, 2.0)), call(9, 1.0));
        assert_eq!(call(7, 1.0).then(call(9, 2.0)), call(9, 2.0));
        assert_eq!(call(9, 1.0).then(call(9, 3.0)), call(9, 3.0));
    }
}
