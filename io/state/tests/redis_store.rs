//! The processed-record upgrade against the machine's Redis. Each test
//! uses its own database number and keys of a token nobody else uses, and
//! deletes its keys at the end.
//!
//! The server comes from `CALLWATCH_TEST_REDIS_URL`, by default
//! `redis://127.0.0.1:6379/12` (`scripts/test` starts Redis if needed).

use std::sync::atomic::{AtomicU64, Ordering};

use callwatch_common::keys::processed_key;
use callwatch_common::records::ProcessedRecord;
use callwatch_state::processed::ProcessedWriter;
use engine::token::Token;
use redis::aio::MultiplexedConnection;

async fn connect() -> MultiplexedConnection {
    callwatch_testkit::connect_redis(12).await
}

/// A token no other test or run uses.
fn fresh_token() -> Token {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
    bytes[4..12].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    bytes[12..20].copy_from_slice(&nanos.to_le_bytes());
    Token::solana(bytes)
}

fn record(status: &str, checked: &[i64]) -> ProcessedRecord {
    ProcessedRecord {
        status: status.to_owned(),
        timestamp: "2026-11-25T10:00:00+00:00".to_owned(),
        channels_checked: checked.to_vec(),
        channels_called_at: Default::default(),
    }
}

async fn get(con: &mut MultiplexedConnection, key: &str) -> Option<ProcessedRecord> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

async fn del(con: &mut MultiplexedConnection, key: &str) {
    let _: i64 = redis::cmd("DEL").arg(key).query_async(con).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processed_record_is_never_downgraded_by_64_concurrent_writers() {
    let key = processed_key(&fresh_token(), 42);
    let writer = ProcessedWriter::new();
    let mut cons = Vec::new();
    for _ in 0..8 {
        cons.push(connect().await);
    }
    // A reader watches the key the whole time: once it has seen an
    // accepted record it must never see a rejected one.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let mut con = connect().await;
        let key = key.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let (mut seen_accepted, mut reads) = (false, 0u64);
            while !done.load(Ordering::Acquire) {
                if let Some(r) = get(&mut con, &key).await {
                    reads += 1;
                    if r.status == "accepted" {
                        seen_accepted = true;
                    } else {
                        assert!(!seen_accepted, "downgraded after {reads} reads");
                    }
                }
            }
            reads
        })
    };
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let mut con = cons[w as usize % cons.len()].clone();
        let key = key.clone();
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0u32;
            // Even writers keep rejecting; odd ones accept once, after a
            // few rejections, so accepts land in the middle of the storm.
            for i in 0..40u32 {
                let status = if w % 2 == 1 && i == 5 + w % 7 {
                    "accepted"
                } else {
                    "rejected"
                };
                let rec = record(status, &[-i64::from(w), -i64::from(i)]);
                if writer.write(&mut con, &key, &rec, 3600).await.unwrap() {
                    written += 1;
                }
                tokio::task::yield_now().await;
            }
            written
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    done.store(true, Ordering::Release);
    let reads = watcher.await.expect("no downgrade was seen");
    let mut con = connect().await;
    let last = get(&mut con, &key).await.expect("the record exists");
    assert_eq!(last.status, "accepted");
    assert!(written < 64 * 40, "some rejections were refused");
    assert!(reads > 0, "the watcher saw the key");
    del(&mut con, &key).await;
}

#[tokio::test]
async fn same_status_updates_and_upgrades_are_written() {
    let key = processed_key(&fresh_token(), 7);
    let writer = ProcessedWriter::new();
    let mut con = connect().await;
    assert!(
        writer
            .write(&mut con, &key, &record("rejected", &[-1]), 60)
            .await
            .unwrap()
    );
    assert!(
        writer
            .write(&mut con, &key, &record("rejected", &[-1, -2]), 60)
            .await
            .unwrap()
    );
    assert_eq!(
        get(&mut con, &key).await.unwrap().channels_checked,
        [-1, -2]
    );
    assert!(
        writer
            .write(&mut con, &key, &record("accepted", &[-1, -2, -3]), 60)
            .await
            .unwrap()
    );
    assert!(
        !writer
            .write(&mut con, &key, &record("rejected", &[-9]), 60)
            .await
            .unwrap()
    );
    assert!(
        writer
            .write(&mut con, &key, &record("accepted", &[-1, -2, -3, -4]), 60)
            .await
            .unwrap()
    );
    let last = get(&mut con, &key).await.unwrap();
    assert_eq!(
        (last.status.as_str(), last.channels_checked.len()),
        ("accepted", 4)
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "TTL is set: {ttl}");
    del(&mut con, &key).await;
}

/// On a server of its own: `SCRIPT FLUSH` on the shared one would make the
/// other tests' scripts vanish under them.
#[tokio::test]
async fn upgrade_still_works_after_the_script_cache_is_flushed() {
    let server = callwatch_testkit::OwnRedis::start("script-flush");
    let key = processed_key(&fresh_token(), 9);
    let writer = ProcessedWriter::new();
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(
        writer
            .write(&mut con, &key, &record("accepted", &[-1]), 60)
            .await
            .unwrap()
    );
    // As after a Redis restart: EVALSHA now answers NOSCRIPT.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        !writer
            .write(&mut con, &key, &record("rejected", &[-2]), 60)
            .await
            .unwrap()
    );
    assert_eq!(get(&mut con, &key).await.unwrap().status, "accepted");
    del(&mut con, &key).await;
}

#[tokio::test]
async fn rebuild_loads_seed_records_and_reports_bad_ones() {
    use callwatch_common::keys::multiplier_key;
    use callwatch_state::rebuild::{Restored, load_state};

    let mut con = connect().await;
    let token = fresh_token();
    let mut keys = Vec::new();
    for chat in 1..=25i64 {
        let key = multiplier_key(&token, chat);
        let value = format!(
            r#"{{"channel_id": -1001, "fdv_at_call": {}, "timestamp": "2026-11-25T10:00:00.000000+00:00"}}"#,
            100 * chat
        );
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.push(key);
    }
    let bad = multiplier_key(&token, 999);
    let _: () = redis::cmd("SET")
        .arg(&bad)
        .arg("{not json")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.push(bad.clone());
    // A processed record the predecessor wrote, and a key of another kind.
    let processed = processed_key(&token, 3);
    let _: () = redis::cmd("SET")
        .arg(&processed)
        .arg(r#"{"status": "accepted", "timestamp": "2026-11-25T10:00:00+00:00", "channels_checked": [-1001], "channels_called_at": {}}"#)
        .query_async(&mut con)
        .await
        .unwrap();
    keys.push(processed);
    let other = format!(
        "subscription:{}",
        9_000_000_000i64 + i64::from(std::process::id())
    );
    let _: () = redis::cmd("SET")
        .arg(&other)
        .arg("{}")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.push(other);
    let (mut mine, mut records, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    // A tiny COUNT makes the loader go round many times.
    let loaded = load_state(
        &con,
        "",
        3,
        |r| match r {
            Restored::Entry(r) if r.token == token => mine.push((r.chat_id, r.fdv_at_call)),
            Restored::Record(r) if r.token == token => records.push((r.chat_id, r.status)),
            _ => {}
        },
        |s| {
            if s.key == bad {
                skipped.push(s.reason);
            }
        },
        |_| {},
    )
    .await
    .unwrap();
    mine.sort_by_key(|&(chat, _)| chat);
    assert_eq!(mine.len(), 25, "every good record of this token, once");
    assert_eq!(mine[4], (5, 500.0));
    assert_eq!(
        skipped.len(),
        1,
        "the bad record is reported, other kinds are not"
    );
    assert_eq!(records, [(3, engine::shard::Status::Accepted)]);
    assert!(loaded.keys >= 25);
    for key in keys {
        del(&mut con, &key).await;
    }
}

/// Keys of database 9 deleted on drop, also when a test fails.
struct Db9Keys(Vec<Vec<u8>>);

/// Held by each test that scans database 9 whole, for all its run (taken
/// before its keys are made, so they are deleted before it is let go):
/// keys added or deleted meanwhile can make Redis grow or shrink the
/// table, and a SCAN across that may return a key twice.
static DB9: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for Db9Keys {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut self.0);
        callwatch_testkit::on_own_runtime(async move {
            let mut con = callwatch_testkit::connect_redis(9).await;
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(keys).query_async(&mut con).await;
        });
    }
}

/// Regression: a key that is not UTF-8 failed the SCAN's reply, and so the
/// rebuild and the start; a key of another type was passed over unseen.
/// In database 9, which no other test scans whole: a rebuild without this
/// fix stops at the key too.
#[tokio::test]
async fn rebuild_skips_and_reports_keys_not_utf8_or_of_another_type() {
    use callwatch_state::rebuild::load_state;
    let _db9 = DB9.lock().await;

    let mut con = callwatch_testkit::connect_redis(9).await;
    let prefix = format!("cw-test:rebuild-poison:{}:", std::process::id());
    let token = fresh_token();
    let record =
        r#"{"channel_id": -1001, "fdv_at_call": 100.0, "timestamp": "2026-11-25T10:00:00+00:00"}"#;
    let good = format!("{prefix}multiplier:{token}:1");
    let mut not_utf8 = format!("{prefix}multiplier:").into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe:2");
    let hash = format!("{prefix}processed_token:{token}:3");
    let _keys = Db9Keys(vec![
        good.clone().into_bytes(),
        not_utf8.clone(),
        hash.clone().into_bytes(),
    ]);
    for key in [good.as_bytes(), &not_utf8] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(record)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("status")
        .arg("accepted")
        .query_async(&mut con)
        .await
        .unwrap();
    let (mut restored, mut skipped) = (Vec::new(), Vec::new());
    let loaded = load_state(
        &con,
        &prefix,
        2,
        |r| restored.push(r),
        |s| skipped.push(s),
        |_| {},
    )
    .await
    .expect("the rebuild finishes");
    // SCAN may hand a key over twice (the database shrinking after another
    // test's keys were deleted); the counts say so, the engine keeps one.
    assert_eq!(
        (loaded.keys, loaded.skipped),
        (restored.len() as u64, skipped.len() as u64)
    );
    restored.dedup();
    skipped.sort_by(|a, b| a.key.cmp(&b.key));
    skipped.dedup();
    assert_eq!(restored.len(), 1, "{restored:?}");
    let reasons: Vec<(&str, &str)> = skipped
        .iter()
        .map(|s| (s.key.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                format!("{prefix}multiplier:\\xff\\xfe:2").as_str(),
                "the key is not UTF-8"
            ),
            (hash.as_str(), "the key holds a hash, not a string"),
        ]
    );
}

/// The loader reads Redis from a task of its own, many pipelined batches
/// ahead, and hands records on in bursts: every key must still arrive
/// with its own value, the last batch and the last burst included,
/// and bad keys among them still reported. Over more batches than it reads
/// ahead and more records than a burst, on a runtime of one thread (as
/// `callwatch rebuild` runs it). In database 9, under a prefix of its own.
#[tokio::test]
async fn rebuild_loads_every_key_across_many_batches_and_bursts() {
    use callwatch_state::rebuild::{Restored, load_state};

    const CHATS: i64 = 20_000;
    let _db9 = DB9.lock().await;
    let mut con = callwatch_testkit::connect_redis(9).await;
    let prefix = format!("cw-test:rebuild-many:{}:", std::process::id());
    let token = fresh_token();
    let mut keys = Db9Keys(Vec::new());
    let mut pipe = redis::pipe();
    for chat in 1..=CHATS {
        let key = format!("{prefix}multiplier:{token}:{chat}");
        pipe.cmd("SET").arg(&key).arg(format!(
            r#"{{"channel_id": -1001, "fdv_at_call": {chat}.5, "timestamp": "2026-11-25T10:00:00+00:00"}}"#
        )).ignore();
        keys.0.push(key.into_bytes());
        if chat % 100 == 0 {
            let key = format!("{prefix}processed_token:{token}:{chat}");
            pipe.cmd("SET").arg(&key).arg(
                r#"{"status": "accepted", "timestamp": "2026-11-25T10:00:00+00:00", "channels_checked": [-1001]}"#,
            ).ignore();
            keys.0.push(key.into_bytes());
        }
    }
    let malformed = format!("{prefix}multiplier:{token}:0");
    pipe.cmd("SET").arg(&malformed).arg("{oops").ignore();
    let hash = format!("{prefix}processed_token:{token}:0");
    pipe.cmd("HSET")
        .arg(&hash)
        .arg("status")
        .arg("accepted")
        .ignore();
    keys.0.push(malformed.clone().into_bytes());
    keys.0.push(hash.clone().into_bytes());
    let _: () = pipe.query_async(&mut con).await.unwrap();

    let (mut entries, mut records, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let loaded = load_state(
        &con,
        &prefix,
        100,
        |r| match r {
            Restored::Entry(r) => entries.push((r.chat_id, r.fdv_at_call)),
            Restored::Record(r) => records.push(r.chat_id),
            Restored::Call(_) => panic!("no calls were written"),
        },
        |s| skipped.push((s.key, s.reason)),
        |_| {},
    )
    .await
    .unwrap();
    // SCAN may hand a key over twice (the database shrinking after another
    // test's keys were deleted): the counts say so, and each key comes
    // with its own value every time.
    assert_eq!(
        (loaded.keys, loaded.processed, loaded.skipped),
        (
            (entries.len() + records.len()) as u64,
            records.len() as u64,
            skipped.len() as u64
        )
    );
    entries.sort_by(|a, b| a.partial_cmp(b).unwrap());
    entries.dedup();
    records.sort_unstable();
    records.dedup();
    skipped.sort();
    skipped.dedup();
    assert_eq!(entries.len(), CHATS as usize, "each entry");
    for (i, &(chat, fdv)) in entries.iter().enumerate() {
        assert_eq!((chat, fdv), (i as i64 + 1, chat as f64 + 0.5));
    }
    assert_eq!(
        records,
        (1..=CHATS / 100).map(|c| c * 100).collect::<Vec<_>>()
    );
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, malformed);
    assert!(skipped[0].1.contains("not a record"), "{}", skipped[0].1);
    assert_eq!(
        (skipped[1].0.as_str(), skipped[1].1.as_str()),
        (hash.as_str(), "the key holds a hash, not a string")
    );
}

/// Regression: a write that met NOSCRIPT loaded the script and sent EVALSHA
/// again, which failed when the cache was emptied in between (another
/// `SCRIPT FLUSH`, or a restart). On a server of its own, flushed over and
/// over while 16 writers write: every write must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_a_script_cache_flushed_over_and_over() {
    let server = callwatch_testkit::OwnRedis::start("script-flush-storm");
    let client = redis::Client::open(server.url()).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let done = done.clone();
        tokio::spawn(async move {
            let mut flushes = 0u64;
            while !done.load(Ordering::Acquire) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                flushes += 1;
            }
            flushes
        })
    };
    let writer = ProcessedWriter::new();
    let mut tasks = Vec::new();
    for w in 0..16i64 {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let key = processed_key(&fresh_token(), w);
            for i in 0..200 {
                writer
                    .write(&mut con, &key, &record("rejected", &[-i]), 60)
                    .await
                    .unwrap_or_else(|e| panic!("write {i} of writer {w}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(flusher.await.unwrap() > 10, "the cache was flushed often");
}
