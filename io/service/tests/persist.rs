//! The engine's effects through `Persistence`: every alert lands as one
//! audit row, and the close waits for all of them, and for every Redis key.
//! A schema, a key prefix and an audit stream of the test's own, removed at
//! the end.

use std::collections::HashSet;
use std::time::Duration;

use callwatch_service::persist::{PersistConfig, Persistence};
use callwatch_state::writebehind::WriteBehindConfig;
use callwatch_testkit::{database_url, own_schema, redis_url, unique};
use engine::EngineConfig;
use engine::effect::Effect;
use engine::ingest::{Ingest, Outcome};
use engine::router;
use engine::sim::{Market, MarketConfig};

/// A persistence with a schema, a key prefix and an audit stream of its
/// own, and an engine and market to feed it.
struct Fixture {
    rt: tokio::runtime::Runtime,
    schema: callwatch_testkit::Schema,
    pg: tokio_postgres::Client,
    prefix: String,
    config: EngineConfig,
    persist: Persistence,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (schema, pg) = rt.block_on(own_schema(test));
        let prefix = format!("{}:", unique(&format!("cw-test-{test}")));
        let config = EngineConfig {
            shards: 2,
            pin_threads: false,
            report_silent: true,
            ..EngineConfig::default()
        };
        let persist = Persistence::start(
            &PersistConfig {
                redis: redis_url(12).into(),
                database_url: Some(database_url().into()),
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
        Fixture {
            rt,
            schema,
            pg,
            prefix,
            config,
            persist,
        }
    }
}

/// Runs `events` events of a market that starts now (so the records'
/// week-long TTL has not run out) through an engine, and hands every
/// merged batch of effects to `take`, on a thread of its own.
fn drive(config: &EngineConfig, events: usize, mut take: impl FnMut(Vec<Effect>) + Send) {
    let market = Market::new(MarketConfig {
        start: i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
        ..MarketConfig::default()
    });
    let (mut engine, mut effects, workers) = router::start(config).unwrap();
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            while let Some(batch) = effects.next_batch().unwrap() {
                take(batch);
            }
        });
        let mut ingest = Ingest::new();
        for event in market.take(events) {
            if let Outcome::Event(env) = ingest.event(event) {
                engine.submit(env).unwrap();
            }
        }
        engine.finish().unwrap();
        consumer.join().unwrap();
    });
    workers.join().unwrap();
}

/// Deletes the keys under `prefix` and returns their names.
fn delete_keys(rt: &tokio::runtime::Runtime, prefix: &str) -> Vec<String> {
    rt.block_on(async {
        let mut con = callwatch_testkit::connect_redis(12).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut con)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .unwrap();
        }
        keys
    })
}

#[test]
fn every_alert_lands_once_and_close_waits_for_all_of_it() {
    let Fixture {
        rt,
        schema,
        pg,
        prefix,
        config,
        persist,
    } = Fixture::new("persist");
    let (mut alerts, mut pairs) = (0u64, HashSet::new());
    drive(&config, 200_000, |batch| {
        for e in &batch {
            persist.record(e).unwrap();
            alerts += u64::from(e.is_alert());
            if let Effect::CallAlert(a) = e {
                pairs.insert((a.token, a.chat_id));
            }
        }
    });
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
    let keys = delete_keys(&rt, &prefix);
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

/// What a service that applies unacknowledged events again after a crash
/// needs: when `push_audit` returns, the batch's audit rows are on the
/// audit stream (or already landed), whatever the write-behind has done.
#[test]
fn push_audit_puts_a_batchs_audit_rows_on_the_stream_before_it_returns() {
    let Fixture {
        rt,
        schema,
        pg,
        prefix,
        config,
        persist,
    } = Fixture::new("persist_all");
    let stream = format!("{prefix}audit");
    let mut con = rt.block_on(callwatch_testkit::connect_redis(12));
    let count = format!("SELECT count(*) FROM \"{}\".alert_audit", schema.0);
    // Rows on the stream, or taken off it because they landed.
    let mut durable = || -> u64 {
        rt.block_on(async {
            let on_stream: u64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut con)
                .await
                .unwrap();
            let landed: i64 = pg.query_one(&count, &[]).await.unwrap().get(0);
            on_stream + landed as u64
        })
    };

    let (mut alerts, mut checks) = (0u64, 0u64);
    drive(&config, 50_000, |batch| {
        rt.block_on(persist.push_audit(&batch));
        rt.block_on(persist.record_state(&batch));
        let made = batch.iter().filter(|e| e.is_alert()).count() as u64;
        if made > 0 {
            alerts += made;
            checks += 1;
            let durable = durable();
            assert!(
                durable >= alerts,
                "{durable} rows durable of {alerts} recorded, after {checks} batches"
            );
        }
    });
    assert!(checks > 20, "{checks} batches with alerts");
    let stats = persist.close(Duration::from_secs(60)).unwrap();
    assert_eq!(stats.audit.unwrap().rows_committed, alerts);
    delete_keys(&rt, &prefix);
}
