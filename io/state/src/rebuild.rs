//! Rebuilding the engine's state from Redis on start: every
//! `multiplier:{token}:{chat_id}` and `processed_token:{token}:{chat_id}`
//! key with its value, in the predecessor's format, loaded as [`Restore`]s
//! and [`RestoreRecord`]s.
//!
//! The seed scanned keys only, 1,000 at a time, and read each value later,
//! one round trip per user. Here one SCAN pass finds both kinds (a second
//! pass would cost the server as much again), and each round trip is one
//! pipeline, the MGET of the last SCAN batch's keys and the next SCAN, sent
//! by a reader task that runs ahead of the parsing, so every value arrives
//! with its key and the server is kept busy. Other keys (subscriptions,
//! channel descriptions) are passed over.
//!
//! Nothing in Redis stops a rebuild, and so a start: a key of a loaded kind
//! that is not UTF-8, holds another type than a string, or whose key or
//! value does not parse is skipped, counted in [`Loaded::skipped`] and
//! reported (the key's bytes escaped where they are not printable ASCII),
//! and the rebuild goes on.

use engine::EngineConfig;
use engine::router::{self, EngineStopped};
use engine::shard::{Restore, RestoreCall, RestoreRecord, ShardState, Status};
use engine::time;
use redis::aio::MultiplexedConnection;

use callwatch_common::keys::parse_pair_key;
use callwatch_common::records::{MultiplierRecord, ProcessedRecord};

/// What a load found.
///
/// Redis's SCAN may hand a key over twice when the server shrinks its
/// table during the scan (keys deleted or expiring meanwhile): such a key
/// counts, and is reported as skipped, twice here, while the engine keeps
/// its record once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Records loaded: multiplier and processed.
    pub keys: u64,
    /// Of those, processed records.
    pub processed: u64,
    /// Of those, calls (`calls:{token}:{channel_id}`, callwatch's own).
    pub calls: u64,
    /// Keys that matched but could not be used (bad key, bad JSON, bad
    /// time); each is also reported to the `skipped` callback.
    pub skipped: u64,
}

/// Why a key was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The key, prefix included; a key that is not UTF-8 has its bytes
    /// escaped (`\xff`).
    pub key: String,
    pub reason: String,
}

/// The start time of a record: RFC 3339, or the seed's `isoformat()`
/// without an offset, which it wrote for UTC.
fn started(timestamp: &str) -> Result<i64, String> {
    time::parse_rfc3339(timestamp)
        .or_else(|_| time::parse_rfc3339(&format!("{timestamp}Z")))
        .map_err(|e| format!("timestamp `{timestamp}`: {e}"))
}

/// One record loaded from Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    Entry(Restore),
    Record(RestoreRecord),
    Call(RestoreCall),
}

/// Whether a key (without the prefix) is one a rebuild loads.
pub(crate) fn wanted(key: &[u8]) -> bool {
    key.starts_with(b"multiplier:")
        || key.starts_with(b"processed_token:")
        || key.starts_with(b"calls:")
}

/// Turns one key and value into an entry or a processed record.
pub fn restored_from(key: &str, value: &[u8]) -> Result<Restored, String> {
    if key.starts_with("processed_token:") {
        record_from(key, value).map(Restored::Record)
    } else if key.starts_with("calls:") {
        let (token, channel_id) =
            parse_pair_key("calls", key).ok_or("not a calls:{token}:{channel_id} key")?;
        let (at, fdv_at_call) = call_from(value)?;
        // The peak before the restart is not kept: it starts again at the
        // value at the call.
        Ok(Restored::Call(RestoreCall {
            token,
            channel_id,
            at,
            fdv_at_call,
            peak_fdv: f64::NAN,
        }))
    } else {
        restore_from(key, value).map(Restored::Entry)
    }
}

/// A `calls:` value: `{"at": …, "fdv_usd": …}`, or the bare time an
/// earlier version wrote (value unknown: NaN, off the leaderboard).
fn call_from(value: &[u8]) -> Result<(time::Nanos, f64), String> {
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        at: &'a str,
        fdv_usd: f64,
    }
    let text = std::str::from_utf8(value).map_err(|_| "the call is not text".to_owned())?;
    if text.trim_start().starts_with('{') {
        let stored: Stored<'_> =
            serde_json::from_str(text).map_err(|e| format!("the call is not valid JSON: {e}"))?;
        Ok((started(stored.at)?, stored.fdv_usd))
    } else {
        Ok((started(text)?, f64::NAN))
    }
}

/// Turns one `processed_token` key and value into a record. Channels the
/// seed listed as checked without a call time count as seen at the check.
pub fn record_from(key: &str, value: &[u8]) -> Result<RestoreRecord, String> {
    let (token, chat_id) = parse_pair_key("processed_token", key)
        .ok_or("not a processed_token:{token}:{chat_id} key")?;
    let rec: ProcessedRecord =
        serde_json::from_slice(value).map_err(|e| format!("value is not a record: {e}"))?;
    let status = match rec.status.as_str() {
        "accepted" => Status::Accepted,
        "rejected" => Status::Rejected,
        other => return Err(format!("status `{other}` is neither accepted nor rejected")),
    };
    let last_check = started(&rec.timestamp)?;
    let mut checked = Vec::with_capacity(rec.channels_checked.len());
    for (channel, at) in &rec.channels_called_at {
        let channel: i64 = channel
            .parse()
            .map_err(|_| format!("channel `{channel}` is not a number"))?;
        checked.push((channel, started(at)?));
    }
    for &channel in &rec.channels_checked {
        if !rec.channels_called_at.contains_key(&channel.to_string()) {
            checked.push((channel, last_check));
        }
    }
    Ok(RestoreRecord {
        token,
        chat_id,
        status,
        last_check,
        checked,
    })
}

/// Turns one `multiplier` key and value into an entry.
pub fn restore_from(key: &str, value: &[u8]) -> Result<Restore, String> {
    let (token, chat_id) =
        parse_pair_key("multiplier", key).ok_or("not a multiplier:{token}:{chat_id} key")?;
    let rec: MultiplierRecord =
        serde_json::from_slice(value).map_err(|e| format!("value is not a record: {e}"))?;
    if !(rec.fdv_at_call.is_finite() && rec.fdv_at_call > 0.0) {
        return Err(format!(
            "fdv_at_call {} is not a positive number",
            rec.fdv_at_call
        ));
    }
    Ok(Restore {
        token,
        chat_id,
        fdv_at_call: rec.fdv_at_call,
        started: started(&rec.timestamp)?,
        last_threshold: rec.last_threshold,
    })
}

/// What a key held when the loader asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetched {
    Value(Vec<u8>),
    /// It expired between SCAN and MGET.
    Gone,
    /// It holds this type, not a string (MGET answers nil for it).
    Type(String),
}

/// SCAN's COUNT hint for a rebuild, in keys: the best of 300, 1,000, 3,000
/// and 10,000 measured on Redis 7.0 with the MGET of a batch right behind
/// its SCAN (BENCHMARKS.md, [2.5]; 300 did as well).
/// The server's work per key is mostly cache misses in its key tables, and
/// a batch this small is still in its caches when the MGET reads it again:
/// at 10,000 the same load cost the server about a fifth more CPU.
pub const SCAN_COUNT: usize = 1_000;

/// SCAN batches read and not yet parsed: the reader goes on asking while
/// the loader parses, so Redis is not left waiting for the client; at the
/// bound the reader waits. Each holds one batch's keys and values (at
/// [`SCAN_COUNT`], about 200 kB).
const BATCHES_AHEAD: usize = 8;

/// Keys a rebuild restores between two chances for the reader to run (on
/// a runtime of one thread it shares the loader's): it must answer each
/// SCAN promptly, or the server idles.
const KEYS_BETWEEN_YIELDS: usize = 256;

/// One SCAN batch as the reader hands it to the loader.
#[derive(Debug, Default)]
struct Batch {
    /// Keys of a loaded kind that are not UTF-8, to skip.
    not_utf8: Vec<Vec<u8>>,
    /// Keys of a loaded kind, with MGET's answer for each.
    keys: Vec<String>,
    values: Vec<Option<Vec<u8>>>,
}

/// Keeps the keys of a SCAN batch a rebuild loads, as text; those of a
/// loaded kind that are not UTF-8 go to the batch's `not_utf8`.
fn sort_found(prefix: &str, found: Vec<Vec<u8>>) -> Batch {
    let mut batch = Batch {
        keys: Vec::with_capacity(found.len()),
        ..Batch::default()
    };
    for key in found {
        if !key.strip_prefix(prefix.as_bytes()).is_some_and(wanted) {
            continue;
        }
        match String::from_utf8(key) {
            Ok(key) => batch.keys.push(key),
            Err(e) => batch.not_utf8.push(e.into_bytes()),
        }
    }
    batch
}

/// Reads every key under `prefix` with its value and hands them on in
/// SCAN batches, in SCAN order. Each round trip is one pipeline: the MGET
/// of the last batch's keys, then the SCAN for the next batch. The server
/// runs them back to back, so the MGET finds what the SCAN just walked
/// still in its caches, and the next pipeline goes out as soon as this one
/// answers. Ends when the SCAN does, or when the loader stops listening.
async fn read_batches(
    mut con: MultiplexedConnection,
    prefix: String,
    scan_count: usize,
    batches: tokio::sync::mpsc::Sender<redis::RedisResult<Batch>>,
) {
    let mut cursor = Some(0u64);
    let mut found = Batch::default();
    loop {
        let mut pipe = redis::pipe();
        if !found.keys.is_empty() {
            pipe.cmd("MGET").arg(&found.keys);
        }
        if let Some(cursor) = cursor {
            pipe.cmd("SCAN").arg(cursor).arg("COUNT").arg(scan_count);
        }
        let answer = if found.keys.is_empty() && cursor.is_none() {
            Ok(Vec::new())
        } else {
            pipe.query_async::<Vec<redis::Value>>(&mut con).await
        };
        let answer = answer.and_then(|mut answers| {
            let next = match cursor {
                Some(_) => {
                    let scanned = answers.pop().expect("one answer per command");
                    Some(redis::from_redis_value::<(u64, Vec<Vec<u8>>)>(scanned)?)
                }
                None => None,
            };
            if let Some(values) = answers.pop() {
                found.values = redis::from_redis_value(values)?;
            }
            Ok(next)
        });
        let next = match answer {
            Ok(next) => next,
            Err(e) => {
                let _ = batches.send(Err(e)).await;
                return;
            }
        };
        let done = std::mem::take(&mut found);
        if (!done.keys.is_empty() || !done.not_utf8.is_empty())
            && batches.send(Ok(done)).await.is_err()
        {
            return;
        }
        match next {
            Some((next, keys)) => {
                found = sort_found(&prefix, keys);
                cursor = (next != 0).then_some(next);
            }
            None => return,
        }
    }
}

/// The keys a batch's MGET answered nil for, asked their TYPE in one
/// pipeline: a key gone from one of another type.
async fn fetched(
    con: &MultiplexedConnection,
    keys: &[String],
    values: Vec<Option<Vec<u8>>>,
) -> redis::RedisResult<Vec<Fetched>> {
    let mut pipe = redis::pipe();
    let mut nil = 0;
    for (key, _) in keys.iter().zip(&values).filter(|(_, v)| v.is_none()) {
        pipe.cmd("TYPE").arg(key);
        nil += 1;
    }
    let mut types = Vec::<String>::new().into_iter();
    if nil > 0 {
        types = pipe
            .query_async::<Vec<String>>(&mut con.clone())
            .await?
            .into_iter();
    }
    Ok(values
        .into_iter()
        .map(|v| match v {
            Some(v) => Fetched::Value(v),
            None => match types.next() {
                Some(t) if t != "none" => Fetched::Type(t),
                _ => Fetched::Gone,
            },
        })
        .collect())
}

/// Turns a batch of keys and their values into entries (kept in `held`)
/// or skips, letting the reader run every [`KEYS_BETWEEN_YIELDS`] keys.
async fn absorb(
    prefix: &str,
    keys: Vec<String>,
    values: Vec<Fetched>,
    loaded: &mut Loaded,
    held: &mut Vec<Restored>,
    skipped: &mut impl FnMut(Skipped),
) {
    for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
        if i % KEYS_BETWEEN_YIELDS == KEYS_BETWEEN_YIELDS - 1 {
            tokio::task::yield_now().await;
        }
        let used = match value {
            Fetched::Gone => continue,
            Fetched::Type(t) => Err(format!("the key holds a {t}, not a string")),
            Fetched::Value(v) => restored_from(key.strip_prefix(prefix).unwrap_or(&key), &v),
        };
        match used {
            Ok(r) => {
                loaded.keys += 1;
                loaded.processed += u64::from(matches!(r, Restored::Record(_)));
                loaded.calls += u64::from(matches!(r, Restored::Call(_)));
                held.push(r);
            }
            Err(reason) => {
                loaded.skipped += 1;
                skipped(Skipped { key, reason });
            }
        }
    }
}

/// Records a load holds before it hands them on together. The engine's
/// shards wait for work by yielding their core for a while before they
/// sleep; records handed on a thousand at a time would keep them at that
/// all along, on the cores Redis and the loader need (profiled at 2.5 M
/// keys: half the loading process's CPU time). In bursts they work, then
/// sleep (a sixth of it).
const RESTORES_PER_BURST: usize = 16 * 1024;

/// Hands every held record to `restore`, in order, letting the reader run
/// every [`KEYS_BETWEEN_YIELDS`] records.
async fn hand_on(held: &mut Vec<Restored>, restore: &mut impl FnMut(Restored)) {
    for (i, r) in held.drain(..).enumerate() {
        if i % KEYS_BETWEEN_YIELDS == KEYS_BETWEEN_YIELDS - 1 {
            tokio::task::yield_now().await;
        }
        restore(r);
    }
}

/// The reader's task, aborted if the load stops first (an error, or the
/// caller gave up).
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Loads every multiplier and processed record: `restore` gets each,
/// `skipped` each key it could not use, `progress` the running count after
/// each batch. `scan_count` is SCAN's COUNT hint ([`SCAN_COUNT`] is a good
/// size). Only keys under `key_prefix` are read (empty in production; a
/// test's own prefix in tests), and the prefix is not part of the layout.
///
/// The server is the bottleneck, so Redis is read by a task of its own
/// ([`read_batches`]) that keeps asking while this one parses, up to
/// [`BATCHES_AHEAD`] batches ahead. Records are restored in SCAN order.
pub async fn load_state(
    con: &MultiplexedConnection,
    key_prefix: &str,
    scan_count: usize,
    mut restore: impl FnMut(Restored),
    mut skipped: impl FnMut(Skipped),
    mut progress: impl FnMut(u64),
) -> redis::RedisResult<Loaded> {
    let (tx, mut batches) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    let mut reader = Reader(tokio::spawn(read_batches(
        con.clone(),
        key_prefix.to_owned(),
        scan_count,
        tx,
    )));
    let mut loaded = Loaded::default();
    let mut held = Vec::new();
    while let Some(batch) = batches.recv().await {
        let Batch {
            not_utf8,
            keys,
            values,
        } = batch?;
        for key in not_utf8 {
            loaded.skipped += 1;
            skipped(Skipped {
                key: key.escape_ascii().to_string(),
                reason: "the key is not UTF-8".to_owned(),
            });
        }
        let values = fetched(con, &keys, values).await?;
        absorb(
            key_prefix,
            keys,
            values,
            &mut loaded,
            &mut held,
            &mut skipped,
        )
        .await;
        if held.len() >= RESTORES_PER_BURST {
            hand_on(&mut held, &mut restore).await;
        }
        progress(loaded.keys);
    }
    hand_on(&mut held, &mut restore).await;
    // The reader hung up: it has handed on every batch, or it panicked.
    if let Err(e) = (&mut reader.0).await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    Ok(loaded)
}

/// Connection settings for bulk work: a FLUSHDB of millions of keys or an
/// MGET of ten thousand takes far longer than the client's default 500 ms
/// response timeout.
pub fn bulk_connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
        .set_response_timeout(Some(std::time::Duration::from_secs(60)))
}

/// Why a rebuild into a fresh engine failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("invalid engine configuration: {0}")]
    Config(#[from] engine::config::ConfigError),
    #[error("reading from Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Engine(#[from] EngineStopped),
}

/// Loads every multiplier and processed record into a fresh sharded engine, trims its
/// spare capacity, stops it, and returns what was loaded with the shards'
/// final states. The engine's back-pressure reaches the loader: a full
/// inbox blocks this task, which is all that runs on its thread.
pub async fn into_fresh_engine(
    con: &MultiplexedConnection,
    key_prefix: &str,
    config: &EngineConfig,
    scan_count: usize,
    skipped: impl FnMut(Skipped),
    progress: impl FnMut(u64),
) -> Result<(Loaded, Vec<ShardState>), RebuildError> {
    let (mut router, mut effects, workers) = router::start(config)?;
    // Restores make no alerts, but every batch has an output to take.
    let drain = std::thread::spawn(move || while let Ok(Some(_)) = effects.next_batch() {});
    let loaded = load_into(con, key_prefix, &mut router, scan_count, skipped, progress).await;
    let finished = router.finish();
    drain.join().expect("the drain thread does not panic");
    let states = workers.join()?;
    let loaded = loaded?;
    finished?;
    Ok((loaded, states))
}

/// Loads every multiplier and processed record into a running engine (as
/// the service does before it reads events), then has the shards trim
/// their spare capacity. Whoever drains the engine's effects must be
/// running: restores make no alerts, but their batches pass through.
pub async fn load_into(
    con: &MultiplexedConnection,
    key_prefix: &str,
    router: &mut router::Router,
    scan_count: usize,
    skipped: impl FnMut(Skipped),
    progress: impl FnMut(u64),
) -> Result<Loaded, RebuildError> {
    let mut stopped = None;
    let loaded = load_state(
        con,
        key_prefix,
        scan_count,
        |r| {
            let queued = match r {
                Restored::Entry(r) => router.restore(r),
                Restored::Record(r) => router.restore_record(r),
                Restored::Call(r) => router.restore_call(r),
            };
            if stopped.is_none()
                && let Err(e) = queued
            {
                stopped = Some(e);
            }
        },
        skipped,
        progress,
    )
    .await?;
    if let Some(e) = stopped {
        return Err(e.into());
    }
    router.compact()?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";

    #[test]
    fn seed_records_become_entries() {
        let r = restore_from(
            &format!("multiplier:{SOL}:-42"),
            br#"{"channel_id": -1001, "fdv_at_call": 125000.0, "timestamp": "2026-11-25T10:05:00.123456+00:00"}"#,
        )
        .unwrap();
        assert_eq!(r.chat_id, -42);
        assert_eq!(r.fdv_at_call, 125_000.0);
        assert_eq!(r.last_threshold, None);
        assert_eq!(
            time::format_rfc3339(r.started),
            "2026-11-25T10:05:00.123456Z"
        );
        // A naive isoformat is UTC.
        let naive = restore_from(
            &format!("multiplier:{SOL}:1"),
            br#"{"channel_id": 1, "fdv_at_call": 1, "timestamp": "2026-11-25T10:05:00", "last_threshold": 5}"#,
        )
        .unwrap();
        assert_eq!(time::format_rfc3339(naive.started), "2026-11-25T10:05:00Z");
        assert_eq!(naive.last_threshold, Some(5.0));
    }

    #[test]
    fn unusable_records_say_why() {
        let key = format!("multiplier:{SOL}:1");
        for (k, v, why) in [
            ("multiplier:bad:1", &b"{}"[..], "not a multiplier"),
            (key.as_str(), b"not json", "not a record"),
            (
                key.as_str(),
                br#"{"channel_id":1,"fdv_at_call":0,"timestamp":"2026-11-25T10:05:00Z"}"#,
                "positive",
            ),
            (
                key.as_str(),
                br#"{"channel_id":1,"fdv_at_call":1,"timestamp":"yesterday"}"#,
                "timestamp",
            ),
        ] {
            let err = restore_from(k, v).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn seed_processed_records_become_records() {
        let Restored::Record(r) = restored_from(
            &format!("processed_token:{SOL}:7"),
            br#"{"status": "rejected", "timestamp": "2026-11-25T10:05:00+00:00", "channels_checked": [-1, -2], "channels_called_at": {"-1": "2026-11-25T10:00:00+00:00"}}"#,
        )
        .unwrap() else {
            panic!("a processed record")
        };
        assert_eq!((r.chat_id, r.status), (7, Status::Rejected));
        let at = |s| time::parse_rfc3339(s).unwrap();
        assert_eq!(r.last_check, at("2026-11-25T10:05:00Z"));
        assert_eq!(
            r.checked,
            [
                (-1, at("2026-11-25T10:00:00Z")),
                (-2, at("2026-11-25T10:05:00Z"))
            ],
            "-2 has no call time: seen at the check"
        );
        let err = restored_from(
            &format!("processed_token:{SOL}:7"),
            br#"{"status": "maybe", "timestamp": "2026-11-25T10:05:00+00:00"}"#,
        )
        .unwrap_err();
        assert!(err.contains("maybe"), "{err}");
        assert!(!wanted(b"subscription:7") && !wanted(b"channel:1:info"));
        let Restored::Call(c) =
            restored_from(&format!("calls:{SOL}:-1001"), b"2026-11-25T10:00:00Z").unwrap()
        else {
            panic!("a call")
        };
        assert_eq!(
            (c.channel_id, c.at),
            (-1001, time::parse_rfc3339("2026-11-25T10:00:00Z").unwrap())
        );
        assert!(c.fdv_at_call.is_nan(), "an old bare time has no value");
        let Restored::Call(c) = restored_from(
            &format!("calls:{SOL}:-1001"),
            br#"{"at":"2026-11-25T10:00:00Z","fdv_usd":125000.0}"#,
        )
        .unwrap() else {
            panic!("a call")
        };
        assert_eq!((c.at % 1_000_000_000, c.fdv_at_call), (0, 125_000.0));
        assert!(restored_from(&format!("calls:{SOL}:-1001"), b"{\"at\":1}").is_err());
    }
}
