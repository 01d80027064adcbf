//! The write-behind's records, its in-place threshold raise, its bound, and
//! a key of another type set aside.
//! Against the machine's Redis, database 12 (or `CALLWATCH_TEST_REDIS_URL`),
//! each test under a key prefix of its own that it deletes at the end.

use std::time::Duration;

use callwatch_common::breaker::BreakerConfig;
use callwatch_common::records::MultiplierRecord;
use callwatch_state::writebehind::{self, WriteBehindConfig};
use callwatch_streams::connection::{self as health, RedisTimeouts};
use engine::effect::{CallAlert, Effect, MultiplierAlert, Progress};
use engine::time::{self, NANOS_PER_SEC};
use engine::token::Token;

const SOL: &str = "So11111111111111111111111111111111111111112";

fn url() -> String {
    callwatch_testkit::redis_url(12)
}

fn prefix(test: &str) -> String {
    format!("cw-test:{test}:{}:", std::process::id())
}

fn now() -> i64 {
    time::parse_rfc3339("2026-11-25T00:00:00Z").unwrap().max(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
    )
}

fn call(chat_id: i64, token: Token, at: i64, fdv_usd: f64) -> Effect {
    Effect::CallAlert(CallAlert {
        seq: 1,
        chat_id,
        token,
        at,
        fdv_usd,
        callers: vec![-3, -2].into(),
        channel_id: -2,
    })
}

fn reached(chat_id: i64, token: Token, started: i64, threshold: f64) -> Effect {
    Effect::MultiplierAlert(MultiplierAlert {
        seq: 2,
        chat_id,
        token,
        at: started + NANOS_PER_SEC,
        threshold,
        multiplier: threshold,
        fdv_at_call: 1.0,
        fdv_usd: threshold,
        tracking_started: started,
    })
}

/// A write-behind with the default settings under a test's key prefix.
fn start_under(
    prefix: &str,
    con: callwatch_streams::Conn,
) -> (writebehind::WriteBehind, writebehind::Flusher) {
    writebehind::start(
        WriteBehindConfig {
            key_prefix: prefix.to_owned(),
            ..WriteBehindConfig::default()
        },
        con,
    )
}

async fn cleanup(con: &mut impl redis::aio::ConnectionLike, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(con).await.unwrap();
    }
}

/// On a server of its own, since it runs `SCRIPT FLUSH`.
#[tokio::test]
async fn records_are_the_seeds_and_thresholds_rise_in_place() {
    let server = callwatch_testkit::OwnRedis::start("records");
    let url = || server.url();
    let prefix = prefix("records");
    let con = health::managed_connection(&url(), &RedisTimeouts::default()).unwrap();
    let mut check = con.clone();
    let token: Token = SOL.parse().unwrap();
    let at = now();
    let (wb, flusher) = start_under(&prefix, con);
    // Chat 1: a call and two thresholds, folded into one record.
    wb.record(&call(1, token, at, 1234.5678901234567));
    wb.record(&reached(1, token, at, 2.0));
    wb.record(&reached(1, token, at, 5.0));
    // Chat 2: a record the predecessor wrote, then a silent threshold.
    let seed = r#"{"channel_id": "-1001", "fdv_at_call": 0.30000000000000004, "timestamp": "2026-11-25T10:05:00.123456+00:00"}"#;
    let seed_key = format!("{prefix}multiplier:{SOL}:2");
    let _: () = redis::cmd("SET")
        .arg(&seed_key)
        .arg(seed)
        .arg("EX")
        .arg(1000)
        .query_async(&mut check)
        .await
        .unwrap();
    wb.record(&Effect::Progress(Progress {
        seq: 3,
        chat_id: 2,
        token,
        threshold: 10.0,
        tracking_started: at,
    }));
    let stats = flusher.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!((stats.flushed, stats.coalesced, stats.pending), (3, 2, 0));

    let reader = check.clone();
    let get = |key: String| {
        let mut con = reader.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            v
        }
    };
    let one: MultiplierRecord =
        serde_json::from_str(&get(format!("{prefix}multiplier:{SOL}:1")).await.unwrap()).unwrap();
    assert_eq!(
        one,
        MultiplierRecord {
            channel_id: -2,
            fdv_at_call: 1234.5678901234567,
            timestamp: time::format_rfc3339(at),
            last_threshold: Some(5.0),
        }
    );
    let processed = get(format!("{prefix}processed_token:{SOL}:1"))
        .await
        .unwrap();
    assert!(processed.contains(r#""status":"accepted""#), "{processed}");
    // The predecessor's text is kept as it was, with the threshold added.
    let two = get(seed_key.clone()).await.unwrap();
    assert_eq!(
        two,
        r#"{"channel_id": "-1001", "fdv_at_call": 0.30000000000000004, "timestamp": "2026-11-25T10:05:00.123456+00:00","last_threshold":10.0}"#
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&seed_key)
        .query_async(&mut check)
        .await
        .unwrap();
    assert!((990..=1000).contains(&ttl), "the TTL is kept: {ttl}");

    // A lower threshold never lowers it; after SCRIPT FLUSH the script is
    // loaded again.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut check)
        .await
        .unwrap();
    let con = health::managed_connection(&url(), &RedisTimeouts::default()).unwrap();
    let (wb, flusher) = start_under(&prefix, con);
    wb.record(&reached(2, token, at, 5.0));
    wb.record(&reached(3, token, at, 5.0));
    let stats = flusher.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats.failed_pipelines, 0, "{stats:?}");
    assert!(
        get(seed_key)
            .await
            .unwrap()
            .ends_with(r#""last_threshold":10.0}"#)
    );
    assert_eq!(
        get(format!("{prefix}multiplier:{SOL}:3")).await,
        None,
        "no record is made from a threshold alone"
    );
    cleanup(&mut check, &prefix).await;
}

/// A test's keys, deleted on drop (also when it fails).
struct Prefixed(String);

impl Drop for Prefixed {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        callwatch_testkit::on_own_runtime(async move {
            let client = redis::Client::open(url()).expect("a valid URL");
            if let Ok(con) = redis::aio::ConnectionManager::new(client).await {
                cleanup(&mut con.clone(), &prefix).await;
            }
        });
    }
}

/// Regression: a raise at a key someone had made a hash failed its whole
/// pipeline with WRONGTYPE, which went back into the buffer and failed
/// again, forever.
#[tokio::test]
async fn a_key_of_another_type_sets_aside_its_change_and_the_rest_land() {
    let prefix = prefix("wrongtype");
    let _keys = Prefixed(prefix.clone());
    let con = health::managed_connection(&url(), &RedisTimeouts::default()).unwrap();
    let mut check = con.clone();
    let token: Token = SOL.parse().unwrap();
    let at = now();
    let hash = format!("{prefix}multiplier:{SOL}:7");
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("channel_id")
        .arg(-1)
        .query_async(&mut check)
        .await
        .unwrap();
    let (logs, _guard) = callwatch_testkit::capture_logs();
    let (wb, flusher) = start_under(&prefix, con);
    wb.record(&call(1, token, at, 10.0));
    wb.record(&reached(7, token, at, 5.0));
    wb.record(&call(2, token, at, 20.0));
    let stats = flusher.close(Duration::from_secs(10)).await;
    let stats = stats.expect("the pipeline is not held up by one key");
    assert_eq!(
        (stats.flushed, stats.set_aside, stats.pending),
        (4, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.failed_pipelines, 0, "{stats:?}");
    for chat in [1, 2] {
        let kept: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}multiplier:{SOL}:{chat}"))
            .query_async(&mut check)
            .await
            .unwrap();
        assert!(kept.is_some(), "chat {chat}'s record is written");
    }
    let kind: String = redis::cmd("TYPE")
        .arg(&hash)
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(kind, "hash", "the key is left as it was");
    // Set aside with its key, what it would have written and why.
    let dead: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}events:dead"))
        .arg("-")
        .arg("+")
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let fields = &dead[0].1;
    assert_eq!(fields["key"], hash);
    assert_eq!(fields["raise_threshold"], "5.0");
    assert!(fields["reason"].contains("WRONGTYPE"), "{fields:?}");
    let logged = logs.text();
    assert!(
        logged.contains("ERROR") && logged.contains(&hash) && logged.contains("set aside"),
        "{logged}"
    );
}

#[tokio::test]
async fn a_full_buffer_drops_new_keys_and_counts_them() {
    // Nothing listens on port 1: every flush fails and keys stay held.
    let con = callwatch_testkit::unreachable_redis();
    let (wb, flusher) = writebehind::start(
        WriteBehindConfig {
            capacity: 10,
            batch_keys: 4,
            breaker: BreakerConfig {
                failures_to_open: 1,
                open_for: Duration::from_millis(10),
                max_open_for: Duration::from_millis(40),
            },
            ..WriteBehindConfig::default()
        },
        con,
    );
    let token: Token = SOL.parse().unwrap();
    let at = now();
    for chat in 0..8 {
        wb.record(&call(chat, token, at, 10.0)); // two keys each
    }
    // Changes to held keys are still taken.
    wb.record(&reached(0, token, at, 2.0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = wb.stats();
    assert_eq!(stats.pending, 10, "{stats:?}");
    assert_eq!(stats.overflowed, 6, "{stats:?}");
    assert_eq!(stats.accepted, 11, "{stats:?}");
    assert!(
        stats.failed_pipelines >= 1 && stats.breaker_opened >= 1,
        "{stats:?}"
    );
    let left = flusher.close(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(left.unwritten, 10);
}

#[tokio::test]
async fn health_check_measures_latency_and_reports_a_dead_server() {
    let mut up = health::managed_connection(&url(), &RedisTimeouts::default()).unwrap();
    let ok = health::ping(&mut up, Duration::from_secs(2)).await;
    assert!(ok.ok && ok.error.is_none(), "{ok:?}");
    assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_secs(2));
    let mut down = callwatch_testkit::unreachable_redis();
    let bad = health::ping(&mut down, Duration::from_millis(500)).await;
    assert!(!bad.ok, "{bad:?}");
    assert!(bad.error.is_some());
}
