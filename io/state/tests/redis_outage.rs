//! The write-behind through a Redis outage. The test runs a `redis-server`
//! of its own on another port (append-only file, fsync always, in a
//! temporary folder), drives a simulated market through the sharded engine,
//! kills the server with SIGKILL while writes flow, restarts it on the same
//! port and data, and checks that Redis ends equal to the engine's state.

use std::collections::HashMap;
use std::time::Duration;

use callwatch_common::keys::parse_pair_key;
use callwatch_common::records::{MultiplierRecord, ProcessedRecord};
use callwatch_state::writebehind::{self, WriteBehindConfig};
use callwatch_streams::connection::{self as health, RedisTimeouts};
use callwatch_testkit::OwnRedis;
use engine::EngineConfig;
use engine::ingest::{Ingest, Outcome};
use engine::router;
use engine::shard::Status;
use engine::sim::{Market, MarketConfig};
use engine::time;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_ends_equal_to_the_engine() {
    let mut redis = OwnRedis::start("outage");
    let con = health::managed_connection(
        &redis.url(),
        &RedisTimeouts {
            connect: Duration::from_millis(200),
            response: Duration::from_secs(2),
            retries: 1,
            max_backoff: Duration::from_millis(50),
        },
    )
    .unwrap();
    let config = EngineConfig {
        shards: 2,
        pin_threads: false,
        report_silent: true,
        ..EngineConfig::default()
    };
    let (wb, flusher) = writebehind::start(
        WriteBehindConfig {
            batch_keys: 500,
            ttl_nanos: config.ttl_nanos,
            ..WriteBehindConfig::default()
        },
        con.clone(),
    );

    // A market whose stream time is now, so that records expire in a week
    // from now, as in production; 60 chunks of events, 15 ms apart.
    let market = Market::new(MarketConfig {
        tokens: 300,
        chats: 40,
        channels: 30,
        call_share: 0.05,
        step_nanos: 1_000_000,
        start: callwatch_common::clock::now(),
        ..MarketConfig::default()
    });
    let (mut engine, mut effects, workers) = router::start(&config).unwrap();
    let consumer = {
        let wb = wb.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while let Some(batch) = effects.next_batch().unwrap() {
                for e in &batch {
                    wb.record(e);
                }
                n += batch.len() as u64;
            }
            n
        })
    };
    let mut ingest = Ingest::new();
    let mut events = market.take(60 * 2_000);
    let mut saw_failures_while_down = false;
    for chunk in 0..60 {
        for event in events.by_ref().take(2_000) {
            if let Outcome::Event(env) = ingest.event(event) {
                engine.submit(env).unwrap();
            }
        }
        engine.flush().unwrap();
        if chunk == 20 {
            redis.kill();
        }
        if chunk == 40 {
            saw_failures_while_down = wb.stats().failed_pipelines > 0;
            redis.spawn();
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    engine.finish().unwrap();
    let effects_seen = consumer.join().unwrap();
    let stats = flusher
        .close(Duration::from_secs(60))
        .await
        .expect("everything written after the restart");
    let shards = workers.join().unwrap();

    assert!(
        effects_seen > 1_000,
        "the market raised alerts: {effects_seen}"
    );
    assert!(
        saw_failures_while_down,
        "writes failed during the outage: {stats:?}"
    );
    assert!(stats.breaker_opened >= 1, "{stats:?}");
    assert_eq!(stats.overflowed, 0, "{stats:?}");
    assert_eq!(stats.pending, 0, "{stats:?}");

    // Redis now, keys and values.
    let mut con = con;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    let values: Vec<Option<Vec<u8>>> = if keys.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .unwrap()
    };
    let mut multipliers = HashMap::new();
    let mut processed = HashMap::new();
    for (key, value) in keys.iter().zip(values) {
        let value = value.expect("no key expires within the test");
        if let Some(pair) = parse_pair_key("multiplier", key) {
            let rec: MultiplierRecord = serde_json::from_slice(&value).unwrap();
            multipliers.insert(pair, rec);
        } else if let Some(pair) = parse_pair_key("processed_token", key) {
            let rec: ProcessedRecord = serde_json::from_slice(&value).unwrap();
            processed.insert(pair, rec);
        } else {
            panic!("unexpected key {key}");
        }
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl > 6 * 24 * 3600, "records keep the week's TTL: {ttl}");

    // The engine's state: every live tracked entry is in Redis as it is.
    let top = *config.thresholds.last().unwrap();
    let mut live = 0;
    for shard in &shards {
        for view in shard.tracked() {
            live += 1;
            let rec = multipliers
                .remove(&(view.token, view.chat_id))
                .unwrap_or_else(|| panic!("{view:?} is missing from Redis"));
            assert_eq!(rec.fdv_at_call, view.fdv_at_call, "{view:?}");
            assert_eq!(
                time::parse_rfc3339(&rec.timestamp).unwrap(),
                view.started,
                "{view:?}"
            );
            assert_eq!(rec.last_threshold, view.last_threshold, "{view:?}");
        }
    }
    assert!(live > 100, "the test tracked enough entries: {live}");
    // What is left in Redis is tracking that reached the top threshold,
    // which the engine no longer holds.
    for (pair, rec) in &multipliers {
        assert_eq!(
            rec.last_threshold,
            Some(top),
            "{pair:?} {rec:?} is not in the engine"
        );
    }
    // Every accepted record is in Redis, and nothing else is.
    let mut accepted = 0;
    for ((token, chat), rec) in &processed {
        assert_eq!(rec.status, "accepted");
        let held = shards.iter().find_map(|s| s.record(token, *chat));
        assert_eq!(
            held.map(|r| r.status),
            Some(Status::Accepted),
            "{token}:{chat}"
        );
        accepted += 1;
    }
    let engine_accepted = shards
        .iter()
        .flat_map(|s| s.tracked())
        .filter(|v| processed.contains_key(&(v.token, v.chat_id)))
        .count();
    assert_eq!(
        engine_accepted, live,
        "each live entry has its accepted record"
    );
    assert!(accepted >= live);
}
