//! The audit sink's fault paths. One test runs a PostgreSQL cluster of its
//! own on another port (made with `pg_createcluster`), stops it with
//! `-m immediate` while rows flow, starts it again and checks that every
//! row landed exactly once. The others use the machine's PostgreSQL
//! (`CALLWATCH_TEST_DATABASE_URL`, as in `pg_migrate.rs`, each in a schema of
//! its own, dropped at the end) and prove that entries delivered twice, or
//! read by a consumer that died before acknowledging them, land once, and
//! that rows PostgreSQL refuses are set aside while the rest land.
//!
//! Streams live in Redis at `CALLWATCH_TEST_REDIS_URL`, by default
//! `redis://127.0.0.1:6379/11`, under keys no other test or run uses,
//! deleted at the end (also when a test fails).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callwatch_ledger::audit::{
    Activity, AlertKind, AuditQueue, AuditRow, AuditSink, QueueRow, SinkConfig, SinkEvent,
    SinkStats,
};
use callwatch_ledger::migrate::migrate;
use callwatch_streams::log::DeadLetters;
use callwatch_testkit::{
    OwnPostgres, connect_pg, database_url, on_own_runtime, own_schema, unique,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio_postgres::Client;

fn redis_url() -> String {
    callwatch_testkit::redis_url(11)
}

async fn connect_redis() -> MultiplexedConnection {
    callwatch_testkit::connect_redis(11).await
}

/// A stream key no other test or run uses, deleted on drop.
struct StreamKey(String);

impl StreamKey {
    fn new(test: &str) -> StreamKey {
        StreamKey(format!("cw_test:{}:audit", unique(test)))
    }
}

impl Drop for StreamKey {
    fn drop(&mut self) {
        let key = self.0.clone();
        on_own_runtime(async move {
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut con) = client.get_multiplexed_async_connection().await
            {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut con).await;
            }
        });
    }
}

/// Alert `i`: unique on its natural key (its time is `i` seconds after a
/// fixed start), every third a call alert.
fn audit_row(i: u64) -> AuditRow {
    let call = i.is_multiple_of(3);
    AuditRow {
        chat_id: (i % 997) as i64 + 1,
        token: format!("Tok{:040}", i % 101),
        kind: if call {
            AlertKind::CallAlert
        } else {
            AlertKind::MultiplierAlert
        },
        threshold: if call { 0.0 } else { 2.0 },
        alert_at: (1_795_000_000 + i as i64) * 1_000_000_000,
        fdv_usd: 1_000.0 + i as f64,
        fdv_at_call: (!call).then_some(500.0),
        multiplier: (!call).then_some(2.0 + i as f64 / 1e6),
        callers: if call { vec![-1001, -1002] } else { vec![] },
    }
}

fn audit_rows(range: std::ops::Range<u64>) -> Vec<QueueRow> {
    range.map(|i| QueueRow::Audit(audit_row(i))).collect()
}

fn activity(i: u64) -> QueueRow {
    QueueRow::Activity(Activity {
        chat_id: i as i64 + 1,
        activity_type: "command".to_owned(),
        metadata: serde_json::json!({ "command": "/start", "n": i }),
        created_at: 1_795_000_000_000_000_000 + i as i64,
    })
}

fn sink_config(stream: &str, schema: &str, consumer: &str) -> SinkConfig {
    SinkConfig {
        stream: stream.to_owned(),
        consumer: consumer.to_owned(),
        schema: schema.to_owned(),
        block: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(2),
        batch_timeout: Duration::from_secs(20),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        ..SinkConfig::default()
    }
}

/// A sink running in a task, with what it reported.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<SinkStats, callwatch_ledger::audit::AuditError>>,
    events: Arc<Mutex<Vec<SinkEvent>>>,
    counters: Arc<callwatch_ledger::audit::SinkCounters>,
}

fn start_sink(config: SinkConfig, postgres_url: &str) -> Running {
    let mut sink = AuditSink::new(config, redis_url(), postgres_url.parse().unwrap()).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let events = Arc::new(Mutex::new(Vec::new()));
    let counters = sink.counters();
    let task = {
        let events = events.clone();
        tokio::spawn(async move { sink.run(stop_rx, |e| events.lock().unwrap().push(e)).await })
    };
    Running {
        stop,
        task,
        events,
        counters,
    }
}

/// Waits, with a deadline, until `check` holds.
async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits, with a deadline, until the stream's length satisfies `check`.
async fn wait_for_len(
    con: &mut MultiplexedConnection,
    key: &str,
    what: &str,
    secs: u64,
    check: impl Fn(u64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check(stream_len(con, key).await) {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream_len(con: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(con).await.unwrap()
}

/// Entries read by the group and not acknowledged.
async fn pending(con: &mut MultiplexedConnection, key: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(con)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XPENDING count: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// Runs a sink until its stream is empty, stops it and returns its stats.
async fn drain(config: SinkConfig, postgres_url: &str) -> (SinkStats, Vec<SinkEvent>) {
    let (key, group) = (config.stream.clone(), config.group.clone());
    let running = start_sink(config, postgres_url);
    let mut con = connect_redis().await;
    wait_for_len(&mut con, &key, "the stream to empty", 60, |n| n == 0).await;
    running.stop.send(true).unwrap();
    let stats = running.task.await.unwrap().unwrap();
    assert_eq!(pending(&mut con, &key, &group).await, 0, "nothing pending");
    let events = running.events.lock().unwrap().clone();
    (stats, events)
}

/// Every alert row, by time: (seconds, chat_id), and the number of rows
/// whose natural key is distinct.
async fn landed(client: &Client, schema: &str) -> (Vec<(i64, i64)>, i64) {
    let rows = client
        .query(
            &format!(
                "SELECT extract(epoch FROM alert_at)::bigint, chat_id FROM \"{schema}\".alert_audit \
                 ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .unwrap();
    let distinct: i64 = client
        .query_one(
            &format!(
                "SELECT count(DISTINCT (chat_id, token, kind, threshold, alert_at)) \
                 FROM \"{schema}\".alert_audit"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        distinct,
    )
}

fn expected(range: std::ops::Range<u64>) -> Vec<(i64, i64)> {
    range
        .map(|i| {
            let r = audit_row(i);
            (r.alert_at / 1_000_000_000, r.chat_id)
        })
        .collect()
}

async fn activity_count(client: &Client, schema: &str) -> (i64, i64) {
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT event_id) FROM \"{schema}\".activity_log"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Adds entries with the ids given, as another stream would carry them.
async fn xadd_with_ids(con: &mut MultiplexedConnection, key: &str, entries: &[(String, QueueRow)]) {
    let mut pipe = redis::pipe();
    for (id, row) in entries {
        let (field, json) = row.encode().unwrap();
        pipe.cmd("XADD")
            .arg(key)
            .arg(id)
            .arg(field)
            .arg(json)
            .ignore();
    }
    let () = pipe.query_async(con).await.unwrap();
}

#[tokio::test]
async fn entries_delivered_twice_land_once() {
    let (schema, client) = own_schema("twice").await;
    let (first, second) = (StreamKey::new("twice_a"), StreamKey::new("twice_b"));
    let mut con = connect_redis().await;
    // 1,000 alerts and 10 activities under fixed ids; the first 100
    // alerts pushed twice more under ids of their own.
    let mut entries: Vec<(String, QueueRow)> = audit_rows(0..1_000)
        .into_iter()
        .chain((0..10).map(activity))
        .enumerate()
        .map(|(i, row)| (format!("1-{}", i + 1), row))
        .collect();
    entries.extend(
        audit_rows(0..100)
            .into_iter()
            .enumerate()
            .map(|(i, row)| (format!("2-{}", i + 1), row)),
    );
    xadd_with_ids(&mut con, &first.0, &entries).await;
    let (stats, _) = drain(sink_config(&first.0, &schema.0, "a"), &database_url()).await;
    assert_eq!(
        (stats.rows_committed, stats.rows_inserted, stats.duplicates),
        (1_110, 1_010, 100)
    );
    // The same entries, ids and all, delivered again through another stream.
    xadd_with_ids(&mut con, &second.0, &entries).await;
    let (stats, _) = drain(sink_config(&second.0, &schema.0, "b"), &database_url()).await;
    assert_eq!((stats.rows_inserted, stats.duplicates), (0, 1_110));

    let (rows, distinct) = landed(&client, &schema.0).await;
    assert_eq!(rows, expected(0..1_000));
    assert_eq!(distinct, 1_000);
    assert_eq!(activity_count(&client, &schema.0).await, (10, 10));
    // The columns carry what was queued.
    let call = client
        .query_one(
            &format!(
                "SELECT kind, callers, fdv_at_call, multiplier FROM \"{}\".alert_audit \
                 WHERE alert_at = to_timestamp(1795000003)",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(call.get::<_, String>(0), "call_alert");
    assert_eq!(call.get::<_, Option<Vec<i64>>>(1), Some(vec![-1001, -1002]));
    assert_eq!(call.get::<_, Option<f64>>(2), None);
    let metadata: String = client
        .query_one(
            &format!(
                "SELECT metadata::text FROM \"{}\".activity_log WHERE event_id = '1-1003'",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(metadata, r#"{"n": 2, "command": "/start"}"#);
}

#[tokio::test]
async fn a_consumer_that_died_before_acknowledging_is_delivered_again() {
    let (schema, client) = own_schema("died").await;
    let key = StreamKey::new("died");
    let mut con = connect_redis().await;
    let queue = AuditQueue::new(&key.0);
    queue
        .push_batch(&mut con, &audit_rows(0..2_000))
        .await
        .unwrap();
    // A consumer reads 1,500 entries and dies before acknowledging; it had
    // committed the first 500 of them.
    let config = sink_config(&key.0, &schema.0, "worker-7");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key.0)
        .arg(&config.group)
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&config.group)
        .arg("worker-7")
        .arg("COUNT")
        .arg(1_500)
        .arg("STREAMS")
        .arg(&key.0)
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pending(&mut con, &key.0, &config.group).await, 1_500);
    for i in 0..500 {
        let r = audit_row(i);
        client
            .execute(
                &format!(
                    "INSERT INTO \"{}\".alert_audit \
                     (chat_id, token, kind, threshold, alert_at, fdv_usd, fdv_at_call, multiplier, callers) \
                     VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7, $8, $9)",
                    schema.0
                ),
                &[
                    &r.chat_id,
                    &r.token,
                    &r.kind.as_str(),
                    &r.threshold,
                    &((r.alert_at / 1_000_000_000) as f64),
                    &r.fdv_usd,
                    &r.fdv_at_call,
                    &r.multiplier,
                    &(!r.callers.is_empty()).then_some(r.callers.clone()),
                ],
            )
            .await
            .unwrap();
    }
    // The same consumer, restarted: its pending entries first, then the rest.
    let (stats, events) = drain(config, &database_url()).await;
    assert_eq!(
        (stats.rows_committed, stats.rows_inserted, stats.duplicates),
        (2_000, 1_500, 500)
    );
    assert!(events.is_empty(), "{events:?}");
    let (rows, distinct) = landed(&client, &schema.0).await;
    assert_eq!(rows, expected(0..2_000));
    assert_eq!(distinct, 2_000);
}

/// Regression: a row PostgreSQL refuses (a NUL in a text) failed its batch
/// for good, and the sink retried that batch forever while the stream grew
/// behind it.
#[tokio::test]
async fn rows_postgres_refuses_are_set_aside_and_the_rest_land() {
    let (schema, client) = own_schema("poison").await;
    let (key, dead) = (StreamKey::new("poison"), StreamKey::new("poison_dead"));
    let mut con = connect_redis().await;
    // 600 alerts and 10 activities, three of which PostgreSQL refuses: an
    // alert whose token holds a NUL (22021), an activity whose type does,
    // and one whose JSON does (22P05).
    let mut rows = audit_rows(0..600);
    let QueueRow::Audit(poisoned) = &mut rows[250] else {
        unreachable!()
    };
    poisoned.token.push_str("\0bad");
    rows.extend((0..10).map(activity));
    let QueueRow::Activity(a) = &mut rows[603] else {
        unreachable!()
    };
    a.activity_type = "command:start\0".to_owned();
    let QueueRow::Activity(a) = &mut rows[607] else {
        unreachable!()
    };
    a.metadata = serde_json::json!({ "text": "/start \0" });
    AuditQueue::new(&key.0)
        .push_batch(&mut con, &rows)
        .await
        .unwrap();
    let config = SinkConfig {
        batch_rows: 200,
        dead_letters: DeadLetters {
            stream: dead.0.clone(),
            max_len: 1_000,
        },
        ..sink_config(&key.0, &schema.0, "poison")
    };
    let (stats, events) = drain(config, &database_url()).await;
    assert_eq!(
        (stats.set_aside, stats.rows_committed, stats.rows_inserted),
        (3, 607, 607),
        "{stats:?}"
    );
    let (landed_rows, _) = landed(&client, &schema.0).await;
    let mut want = expected(0..600);
    want.remove(250);
    assert_eq!(landed_rows, want, "every alert but the refused one");
    assert_eq!(activity_count(&client, &schema.0).await, (8, 8));

    // Each refused row is in the dead-letter stream, with its entry, its
    // value as queued and PostgreSQL's reason, and was reported.
    let letters: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&dead.0)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let found: Vec<(&str, &str, &str)> = letters
        .iter()
        .map(|(_, f)| {
            let value = f.get("audit").or(f.get("activity")).expect("the row");
            assert_eq!(f["stream"], key.0);
            (value.as_str(), &f["reason"][..], &f["id"][..])
        })
        .collect();
    assert_eq!(found.len(), 3, "{letters:?}");
    assert!(found[0].0.contains("\\u0000bad") && found[0].1.contains("(22021)"));
    assert!(found[1].0.contains("command:start\\u0000") && found[1].1.contains("(22021)"));
    assert!(found[2].0.contains("/start \\u0000") && found[2].1.contains("(22P05)"));
    let set_aside: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            SinkEvent::SetAside { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(set_aside, found.iter().map(|f| f.2).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_sink_stopped_while_postgres_is_unreachable_leaves_its_entries_pending() {
    let (schema, client) = own_schema("unreachable").await;
    let key = StreamKey::new("unreachable");
    let mut con = connect_redis().await;
    AuditQueue::new(&key.0)
        .push_batch(&mut con, &audit_rows(0..3_000))
        .await
        .unwrap();
    let config = SinkConfig {
        batch_rows: 1_000,
        ..sink_config(&key.0, &schema.0, "worker-1")
    };
    // Nothing listens on port 1.
    let running = start_sink(
        config.clone(),
        "host=127.0.0.1 port=1 dbname=test user=postgres",
    );
    wait_for("the sink to retry", 60, || {
        running.counters.stats().postgres_retries >= 2
    })
    .await;
    running.stop.send(true).unwrap();
    let stats = running.task.await.unwrap().unwrap();
    assert_eq!(stats.rows_committed, 0);
    assert!(stats.left_pending > 0, "{stats:?}");
    assert_eq!(
        pending(&mut con, &key.0, &config.group).await,
        stats.left_pending,
        "what it read and could not land is pending, not acknowledged"
    );
    assert_eq!(stream_len(&mut con, &key.0).await, 3_000);
    // The same consumer, with PostgreSQL back, lands everything once.
    let (stats, _) = drain(config, &database_url()).await;
    assert_eq!((stats.rows_inserted, stats.duplicates), (3_000, 0));
    let (rows, distinct) = landed(&client, &schema.0).await;
    assert_eq!(rows, expected(0..3_000));
    assert_eq!(distinct, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_exactly_once_across_a_postgres_outage() {
    const ROWS: u64 = 50_000;
    const CHUNK: u64 = 500;
    const SCHEMA: &str = "audit_outage";
    let key = StreamKey::new("outage");
    let cluster = tokio::task::spawn_blocking(|| OwnPostgres::create("cw_outage"))
        .await
        .unwrap();
    let mut client = connect_pg(&cluster.url())
        .await
        .expect("the new cluster answers");
    migrate(&mut client, SCHEMA).await.unwrap();

    let mut con = connect_redis().await;
    // One entry that is not a row: it must not wedge the queue.
    let _: String = redis::cmd("XADD")
        .arg(&key.0)
        .arg("*")
        .arg("audit")
        .arg("{not json")
        .query_async(&mut con)
        .await
        .unwrap();
    let config = SinkConfig {
        batch_rows: 1_000,
        ..sink_config(&key.0, SCHEMA, "outage")
    };
    let group = config.group.clone();
    let running = start_sink(config, &cluster.url());

    // Rows flow in chunks; every tenth chunk is pushed twice, and each
    // chunk carries one activity.
    let producer = {
        let (mut con, queue) = (connect_redis().await, AuditQueue::new(&key.0));
        tokio::spawn(async move {
            for c in 0..ROWS / CHUNK {
                let mut rows = audit_rows(c * CHUNK..(c + 1) * CHUNK);
                rows.push(activity(c));
                queue.push_batch(&mut con, &rows).await.unwrap();
                if c % 10 == 9 {
                    queue
                        .push_batch(&mut con, &rows[..CHUNK as usize])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let counters = running.counters.clone();
    wait_for("the first 5,000 rows to land", 60, || {
        counters.stats().rows_committed >= 5_000
    })
    .await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.ctl(&["stop", "-m", "immediate"]);
        cluster
    })
    .await
    .unwrap();
    let at_stop = counters.stats();
    wait_for("the sink to retry", 60, || {
        counters.stats().postgres_retries >= 3
    })
    .await;
    // Rows keep arriving meanwhile.
    wait_for_len(&mut con, &key.0, "rows to queue up", 60, |n| n >= 2_000).await;
    assert!(
        counters.stats().rows_committed - at_stop.rows_committed <= 2 * 1_000,
        "nothing but batches in flight committed while PostgreSQL was down"
    );
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.ctl(&["start"]);
        cluster
    })
    .await
    .unwrap();

    producer.await.unwrap();
    wait_for_len(&mut con, &key.0, "the stream to empty", 120, |n| n == 0).await;
    running.stop.send(true).unwrap();
    let stats = running.task.await.unwrap().unwrap();
    eprintln!("sink: {stats:?}");
    assert_eq!(pending(&mut con, &key.0, &group).await, 0);

    let client = connect_pg(&cluster.url())
        .await
        .expect("the cluster is back");
    let (rows, distinct) = landed(&client, SCHEMA).await;
    assert_eq!(rows.len() as u64, ROWS, "every row, once");
    assert_eq!(rows, expected(0..ROWS));
    assert_eq!(distinct, ROWS as i64);
    assert_eq!(activity_count(&client, SCHEMA).await, (100, 100));
    // 100 activities; 10 × 500 alerts pushed twice, maybe more delivered
    // again after a commit whose answer the outage cut off.
    let pushed = ROWS + 100 + ROWS / CHUNK / 10 * CHUNK;
    assert!(stats.rows_committed >= pushed, "{stats:?}");
    assert!(stats.duplicates >= ROWS / CHUNK / 10 * CHUNK, "{stats:?}");
    assert!(stats.postgres_retries >= 3, "{stats:?}");
    assert_eq!(stats.malformed, 1);
    let events = running.events.lock().unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, SinkEvent::Malformed { reason, .. } if reason.contains("not a row"))
        ),
        "the malformed entry is reported"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SinkEvent::PostgresRetry { .. })),
        "retries are reported"
    );
}
