//! The engine's effects through `Persistence`: every alert lands as one
//! audit row, and the close waits for all of them, and for every Redis key.
//! A schema, a key prefix and an audit stream of the test's own, removed at
//! the end.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use callwatch_io::persist::{PersistConfig, Persistence};
use callwatch_io::writebehind::WriteBehindConfig;
use engine::EngineConfig;
use engine::effect::Effect;
use engine::ingest::{Ingest, Outcome};
use engine::router;
use engine::sim::{Market, MarketConfig};
use support::{database_url, own_schema, redis_url, unique};

#[test]
fn every_alert_lands_once_and_close_waits_for_all_of_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (schema, pg) = rt.block_on(own_schema("persist"));
    let prefix = format!("{}:", unique("cw-test-persist"));
    let config = EngineConfig {
        shards: 2,
        pin_threads: false,
        report_silent: true,
        ..EngineConfig::default()
    };
    let persist = Persistence::start(
        &PersistConfig {
            redis_url: redis_url(12),
            database_url: Some(database_url()),
            schema: schema.0.clone(),
            audit_stream: format!("{prefix}audit"),
            write_behind: WriteBehindConfig {
                key_prefix: prefix.clone(),
                ttl_nanos: config.ttl_nanos,
                ..WriteBehindConfig::default()
            },
            ..PersistConfig::default()
        },
        rt.handle(),
    )
    .unwrap();

    let market = Market::new(MarketConfig {
        // Now, so the records' week-long TTL has not run out.
        start: i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
        ..MarketConfig::default()
    });
    let (mut engine, mut effects, workers) = router::start(&config).unwrap();
    let (alerts, pairs) = std::thread::scope(|scope| {
        let consumer = scope.spawn(|| {
            let (mut alerts, mut pairs) = (0u64, HashSet::new());
            while let Some(batch) = effects.next_batch().unwrap() {
                for e in &batch {
                    persist.record(e).unwrap();
                    alerts += u64::from(e.is_alert());
                    if let Effect::CallAlert(a) = e {
                        pairs.insert((a.token, a.chat_id));
                    }
                }
            }
            (alerts, pairs)
        });
        let mut ingest = Ingest::new();
        for event in market.take(200_000) {
            if let Outcome::Event(env) = ingest.event(event) {
                engine.submit(env).unwrap();
            }
        }
        engine.finish().unwrap();
        consumer.join().unwrap()
    });
    workers.join().unwrap();
    let stats = persist.close(Duration::from_secs(60)).unwrap();
    assert!(alerts > 1_000, "{alerts}");
    assert_eq!(stats.audit_pushed, alerts);
    let audit = stats.audit.unwrap();
    assert_eq!(audit.rows_committed, alerts, "{audit:?}");

    let rows: i64 = rt
        .block_on(pg.query_one(
            &format!("SELECT count(*) FROM \"{}\".alert_audit", schema.0),
            &[],
        ))
        .unwrap()
        .get(0);
    assert_eq!(rows as u64, alerts, "one row per alert");
    let keys: Vec<String> = rt.block_on(async {
        let mut con = redis::Client::open(redis_url(12))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut con)
            .await
            .unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .unwrap();
        keys
    });
    let multipliers = keys.iter().filter(|k| k.contains(":multiplier:")).count();
    let processed = keys
        .iter()
        .filter(|k| k.contains(":processed_token:"))
        .count();
    assert_eq!(multipliers, pairs.len());
    assert_eq!(processed, pairs.len());
    assert!(
        keys.len() <= 2 * pairs.len() + 1,
        "nothing else but the (drained) audit stream: {}",
        keys.len()
    );
}
