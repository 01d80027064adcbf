//! The stream ingest against the machine's Redis, database 10 (or
//! `CALLWATCH_TEST_REDIS_URL`): publishing and routing, the order events
//! come out in, dead letters, acknowledgement only when told, claims from a
//! dead consumer, restarts, two processes sharing the partitions, and a
//! dropped connection (through a proxy of the test's own). Every test works
//! under a key prefix of its own and deletes its keys at the end, also when
//! it fails.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callwatch_common::keys::{dead_letter_key, stream_key};
use callwatch_ingest::stream::{
    Acker, EntryId, EventBatch, IngestCounters, IngestStats, Route, StreamError, StreamIngest,
    StreamIngestConfig, partition_of, publish,
};
use callwatch_streams::connection::RedisTimeouts;
use callwatch_testkit::{on_own_runtime, unique};
use engine::event::{Envelope, Event};
use engine::ingest::{Ingest, Outcome};
use engine::token::Token;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

fn redis_url() -> String {
    callwatch_testkit::redis_url(10)
}

async fn connect() -> MultiplexedConnection {
    callwatch_testkit::connect_redis(10).await
}

/// A key prefix no other test or run uses; its keys are deleted on drop.
struct Prefix(String);

impl Prefix {
    fn new(test: &str) -> Prefix {
        Prefix(format!("cw_test:{}:", unique(test)))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        on_own_runtime(async move {
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut con) = client.get_multiplexed_async_connection().await
                && let Ok(keys) = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async::<Vec<String>>(&mut con)
                    .await
                && !keys.is_empty()
            {
                let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut con).await;
            }
        });
    }
}

fn config(prefix: &Prefix, consumer: &str, partitions: u32, owned: &[u32]) -> StreamIngestConfig {
    StreamIngestConfig {
        prefix: prefix.0.clone(),
        partitions,
        owned: owned.to_vec(),
        consumer: consumer.to_owned(),
        batch: 64,
        block_ms: 20,
        window: 10_000,
        timeouts: RedisTimeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
            retries: 1,
            max_backoff: Duration::from_millis(200),
        },
        backoff_min_ms: 10,
        backoff_max_ms: 200,
        ..StreamIngestConfig::default()
    }
}

// Events. Tokens are EVM addresses, so any number makes one.

fn at(secs: u32) -> String {
    format!(
        "2026-11-25T{:02}:{:02}:{:02}Z",
        10 + secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn token(i: u32) -> String {
    format!("0x{:040x}", 0xabc0_0000 + i)
}

fn subscribe(chat: i64, secs: u32) -> String {
    format!(
        r#"{{"type":"subscribe","at":"{}","chat_id":{chat},"expires_at":"2026-12-25T10:00:00Z"}}"#,
        at(secs)
    )
}

fn settings(chat: i64, secs: u32, min_callers: u32) -> String {
    format!(
        r#"{{"type":"settings","at":"{}","chat_id":{chat},"min_callers":{min_callers}}}"#,
        at(secs)
    )
}

fn call(t: u32, channel: i64, fdv: f64, secs: u32) -> String {
    format!(
        r#"{{"type":"call","at":"{}","token":"{}","channel_id":{channel},"fdv_usd":{fdv}}}"#,
        at(secs),
        token(t)
    )
}

fn price(t: u32, fdv: f64, secs: u32) -> String {
    format!(
        r#"{{"type":"price","at":"{}","token":"{}","fdv_usd":{fdv}}}"#,
        at(secs),
        token(t)
    )
}

/// A market over `tokens` tokens: chat events among token events.
fn market(tokens: u32, rounds: u32) -> Vec<String> {
    let mut lines = Vec::new();
    for r in 0..rounds {
        let s = r * 10;
        if r % 4 == 0 {
            lines.push(subscribe(i64::from(r) + 1, s));
        }
        if r % 5 == 2 {
            lines.push(settings(1, s, 1 + r % 3));
        }
        for t in 0..tokens {
            lines.push(call(
                t,
                -1001 - i64::from((r + t) % 3),
                1e5 + f64::from(t),
                s + 1,
            ));
            lines.push(price(t, 1e5 * f64::from(1 + r % 7), s + 2));
        }
    }
    lines
}

/// What the engine's `Ingest` makes of `lines`, in this order.
fn ingested<L: AsRef<[u8]>>(lines: impl IntoIterator<Item = L>) -> Vec<Envelope> {
    let mut ingest = Ingest::new();
    lines
        .into_iter()
        .filter_map(|l| match ingest.line(l.as_ref()) {
            Outcome::Event(env) => Some(env),
            _ => None,
        })
        .collect()
}

/// Published `lines` in the documented order: by millisecond, then chats
/// before partitions in ascending order, then sequence (for a consumer
/// that owns every partition).
fn in_documented_order<'a>(published: &[(Route, EntryId)], lines: &'a [String]) -> Vec<&'a String> {
    assert_eq!(published.len(), lines.len());
    let stream = |r: &Route| match r {
        Route::Chats => 0,
        Route::Partition(p) => p + 1,
    };
    let mut keyed: Vec<_> = published
        .iter()
        .zip(lines)
        .map(|((r, id), line)| ((id.ms, stream(r), id.seq), line))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, line)| line).collect()
}

/// An entry's fields and values.
type Fields = Vec<(String, Vec<u8>)>;

/// Every entry of a stream: id and fields.
async fn entries(con: &mut MultiplexedConnection, key: &str) -> Vec<(EntryId, Fields)> {
    let reply: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|(id, fields)| (EntryId::parse(id.as_bytes()).unwrap(), fields))
        .collect()
}

/// Entries pending in `group` of `key`.
async fn pending(con: &mut MultiplexedConnection, key: &str, group: &str) -> i64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(con)
        .await
        .unwrap();
    match reply {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n,
            other => panic!("XPENDING: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// Waits until `f` holds (30 s at most, then fails with `what`).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An ingest running in a task.
struct Running {
    stop: watch::Sender<bool>,
    rx: mpsc::Receiver<EventBatch>,
    acker: Acker,
    counters: Arc<IngestCounters>,
    task: tokio::task::JoinHandle<Result<IngestStats, StreamError>>,
    /// The last seq received.
    last_seq: u64,
}

fn start(config: StreamIngestConfig) -> Running {
    start_at(config, &redis_url())
}

fn start_at(config: StreamIngestConfig, url: &str) -> Running {
    let ingest = StreamIngest::new(config, url).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    Running {
        acker: ingest.acker(),
        counters: ingest.counters(),
        task: tokio::spawn(ingest.run(tx, stop_rx)),
        stop,
        rx,
        last_seq: 0,
    }
}

impl Running {
    /// The next `n` events handed out.
    async fn take(&mut self, n: usize) -> Vec<Envelope> {
        let mut got = Vec::new();
        while got.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(30), self.rx.recv()).await;
            let Ok(Some(batch)) = batch else {
                panic!(
                    "{} of {n} events came; stats {:?}",
                    got.len(),
                    self.counters.stats()
                )
            };
            assert!(batch.envelopes.iter().all(|e| batch.seqs.contains(&e.seq)));
            self.last_seq = *batch.seqs.end();
            got.extend(batch.envelopes);
        }
        assert_eq!(got.len(), n, "more events than expected");
        got
    }

    /// Every event that comes until none has for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Envelope> {
        let mut got = Vec::new();
        while let Ok(Some(batch)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            self.last_seq = *batch.seqs.end();
            got.extend(batch.envelopes);
        }
        got
    }

    /// Asserts that no event comes within `wait`.
    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(batch)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("unexpected events: {:?}", batch.envelopes);
        }
    }

    /// Stops reading; acknowledges everything received first if `ack`.
    async fn finish(self, ack: bool) -> IngestStats {
        if ack && self.last_seq > 0 {
            self.acker.ack_through(self.last_seq);
        }
        self.stop.send(true).unwrap();
        drop(self.acker);
        drop(self.rx);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the ingest ends")
            .unwrap()
            .unwrap()
    }
}

#[tokio::test]
async fn publish_routes_token_events_by_route_hash_and_chat_events_to_chats() {
    let prefix = Prefix::new("routing");
    let mut con = connect().await;
    let partitions = 5;
    let lines = market(24, 3);
    let published = publish(&mut con, &prefix.0, partitions, &lines)
        .await
        .unwrap();
    assert_eq!(published.len(), lines.len());

    let mut by_stream: HashMap<Route, Vec<(EntryId, Vec<u8>)>> = HashMap::new();
    for (route, line) in published.iter().map(|p| p.0).zip(&lines) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let expected = match event["token"].as_str() {
            // Computed here from the engine's hash, not by the code under test.
            Some(t) => Route::Partition((t.parse::<Token>().unwrap().route_hash() % 5) as u32),
            None => Route::Chats,
        };
        assert_eq!(route, expected, "{line}");
    }
    for (route, _) in &published {
        by_stream.entry(*route).or_default();
    }
    assert!(by_stream.len() > 3, "the tokens spread over partitions");
    // Each stream holds exactly its lines, in order, as one `event` field.
    for (route, held) in &mut by_stream {
        for (id, fields) in entries(&mut con, &stream_key(&prefix.0, *route)).await {
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].0, "event");
            held.push((id, fields[0].1.clone()));
        }
        let expected: Vec<(EntryId, Vec<u8>)> = published
            .iter()
            .zip(&lines)
            .filter(|((r, _), _)| r == route)
            .map(|((_, id), line)| (*id, line.as_bytes().to_vec()))
            .collect();
        assert_eq!(*held, expected, "{route:?}");
    }

    // A bad line publishes nothing; blank lines are skipped.
    let other = Prefix::new("routing_bad");
    let bad = [price(1, 5.0, 0), String::new(), price(2, 0.0, 0)];
    match publish(&mut con, &other.0, partitions, &bad).await {
        Err(StreamError::BadLine { index: 2, .. }) => {}
        r => panic!("{r:?}"),
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", other.0))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let ok = publish(&mut con, &other.0, partitions, &bad[..2])
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
}

#[tokio::test]
async fn events_come_out_in_arrival_order_as_ingest_makes_them_and_are_acked_when_told() {
    let prefix = Prefix::new("order");
    let mut con = connect().await;
    let partitions = 4;
    let lines = market(6, 12);
    // Several pipelines, milliseconds apart, so that chat and token entries
    // interleave in time across streams.
    for chunk in lines.chunks(9) {
        publish(&mut con, &prefix.0, partitions, chunk)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The documented order, from what the streams hold: by millisecond,
    // then chats before partitions in ascending order, then sequence.
    let mut all = Vec::new();
    let routes = std::iter::once(Route::Chats).chain((0..partitions).map(Route::Partition));
    for (index, route) in routes.enumerate() {
        for (id, fields) in entries(&mut con, &stream_key(&prefix.0, route)).await {
            all.push(((id.ms, index, id.seq), fields[0].1.clone()));
        }
    }
    all.sort_by_key(|(key, _)| *key);
    let expected = ingested(all.iter().map(|(_, line)| line));
    assert_eq!(expected.len(), lines.len());
    assert_ne!(
        expected,
        ingested(&lines),
        "the test needs entries whose order differs from the chats-first order"
    );

    // Small reads, so that cut streams hold the others back.
    let mut ingest = start(StreamIngestConfig {
        batch: 3,
        ..config(&prefix, "a", partitions, &[])
    });
    let got = ingest.take(lines.len()).await;
    assert_eq!(got, expected);

    let group = "callwatch";
    let chats = stream_key(&prefix.0, Route::Chats);
    let chat_group = "callwatch:a";
    let part0 = stream_key(&prefix.0, Route::Partition(0));
    let total_pending = async |con: &mut MultiplexedConnection| {
        let mut n = pending(con, &chats, chat_group).await;
        for p in 0..partitions {
            n += pending(con, &stream_key(&prefix.0, Route::Partition(p)), group).await;
        }
        n
    };
    assert_eq!(total_pending(&mut con).await, lines.len() as i64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ingest.counters.stats().acked, 0, "nothing acked unasked");
    assert_eq!(total_pending(&mut con).await, lines.len() as i64);

    // Acknowledging through one seq acknowledges exactly the events up to it.
    let upto = got[9].seq;
    ingest.acker.ack_through(upto);
    until("the first ten acks", async || {
        ingest.counters.stats().acked == 10
    })
    .await;
    assert_eq!(total_pending(&mut con).await, lines.len() as i64 - 10);
    let first_part0 = got[..10]
        .iter()
        .filter(|e| {
            e.event
                .token()
                .is_some_and(|t| partition_of(t, partitions) == 0)
        })
        .count();
    let part0_total = entries(&mut con, &part0).await.len();
    assert_eq!(
        pending(&mut con, &part0, group).await,
        (part0_total - first_part0) as i64
    );

    let stats = ingest.finish(true).await;
    assert_eq!(total_pending(&mut con).await, 0);
    let n = lines.len() as u64;
    assert_eq!((stats.read, stats.events, stats.acked), (n, n, n));
    assert_eq!(
        (stats.dead_lettered, stats.left_pending, stats.in_flight),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn bad_entries_are_dead_lettered_with_a_reason_then_acked_and_counted() {
    let prefix = Prefix::new("dead");
    let mut con = connect().await;
    let chats = stream_key(&prefix.0, Route::Chats);
    let part = stream_key(&prefix.0, Route::Partition(0));
    let long_plan = "p".repeat(70_000);
    let mut not_utf8 = price(1, 5.0, 1).into_bytes();
    not_utf8[20] = 0xff;
    // (stream, fields, what the reason must say); `None` marks a good one.
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (&chats, vec![("event", subscribe(7, 0).into())], None),
        (&part, vec![("evnt", price(1, 5.0, 1).into())], Some("no `event` field")),
        (
            &part,
            vec![("event", price(1, 5.0, 1).into()), ("extra", b"1".to_vec())],
            Some("unexpected field `extra`"),
        ),
        (&part, vec![("event", not_utf8)], Some("not valid UTF-8")),
        (&part, vec![("event", b"{\"type\":\"price\",".to_vec())], Some("invalid JSON")),
        (&part, vec![("event", price(1, 0.0, 1).into())], Some("fdv_usd must be")),
        (
            &part,
            vec![("event", br#"{"type":"trade","at":"2026-11-25T10:00:01Z"}"#.to_vec())],
            Some("unknown event type `trade`"),
        ),
        (
            &chats,
            vec![(
                "event",
                format!(
                    r#"{{"type":"subscribe","at":"{}","chat_id":8,"expires_at":"{}","plan":"{long_plan}"}}"#,
                    at(1),
                    at(99)
                )
                .into(),
            )],
            Some("over the 65536-byte limit"),
        ),
        (&chats, vec![("event", b"  ".to_vec())], Some("blank")),
        (
            &chats,
            vec![("event", br#"{"type":"settings","at":"2026-11-25T10:00:02Z","chat_id":7,"max_fdv_usd":100}"#.to_vec())],
            None,
        ),
        (
            &chats,
            vec![("event", br#"{"type":"settings","at":"2026-11-25T10:00:03Z","chat_id":7,"min_fdv_usd":200}"#.to_vec())],
            Some("above max_fdv_usd"),
        ),
        (&part, vec![("event", price(2, 7.0, 4).into())], None),
    ];
    let mut ids = Vec::new();
    for (stream, fields, _) in &cases {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(*stream).arg("*");
        for (f, v) in fields {
            cmd.arg(*f).arg(v.as_slice());
        }
        let id: String = cmd.query_async(&mut con).await.unwrap();
        // Ids are unique within a stream only.
        ids.push((stream.as_bytes().to_vec(), id));
    }
    let bad = cases.iter().filter(|c| c.2.is_some()).count();
    let good_lines: Vec<&[u8]> = vec![
        cases[0].1[0].1.as_slice(),
        cases[9].1[0].1.as_slice(),
        cases[11].1[0].1.as_slice(),
    ];

    let mut ingest = start(config(&prefix, "a", 1, &[]));
    let got = ingest.take(3).await;
    let events: Vec<Event> = got.into_iter().map(|e| e.event).collect();
    let expected: Vec<Event> = ingested(&good_lines).into_iter().map(|e| e.event).collect();
    assert_eq!(events, expected);
    until("the dead letters", async || {
        ingest.counters.stats().dead_lettered == bad as u64
    })
    .await;
    // Bad entries are acknowledged; good ones wait for ack_through.
    assert_eq!(
        pending(&mut con, &chats, "callwatch:a").await
            + pending(&mut con, &part, "callwatch").await,
        3
    );
    assert_eq!(ingest.counters.stats().acked, bad as u64);

    let dead = entries(&mut con, &dead_letter_key(&prefix.0)).await;
    assert_eq!(dead.len(), bad);
    let mut seen = HashSet::new();
    for (_, fields) in dead {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
        };
        let entry = (
            field("stream").unwrap(),
            String::from_utf8(field("id").unwrap()).unwrap(),
        );
        let i = ids
            .iter()
            .position(|x| *x == entry)
            .expect("an entry's stream and id");
        let (_, entry_fields, reason) = &cases[i];
        let reason = reason.expect("only bad entries are dead-lettered");
        let said = String::from_utf8(field("reason").unwrap()).unwrap();
        assert!(said.contains(reason), "{said:?} should say {reason:?}");
        let raw = entry_fields
            .iter()
            .find(|(f, _)| *f == "event")
            .map(|(_, v)| v[..v.len().min(65_536)].to_vec());
        assert_eq!(field("event"), raw, "case {i}");
        assert!(seen.insert(i), "dead-lettered once");
    }
    let stats = ingest.finish(true).await;
    assert_eq!((stats.read, stats.events, stats.dead_lettered), (12, 3, 9));
    assert_eq!(stats.acked, 12);
}

/// CONTRACT.md, "Live input": one event dated far ahead would move the
/// engine's clock and expire every record; in the chats stream it would do
/// so again at every start.
#[tokio::test]
async fn events_dated_ahead_of_their_arrival_are_set_aside_and_never_come_back() {
    let prefix = Prefix::new("ahead");
    let mut con = connect().await;
    let chats = stream_key(&prefix.0, Route::Chats);
    let part = stream_key(&prefix.0, Route::Partition(0));
    let server_now = callwatch_streams::clock::server_now(&mut con)
        .await
        .unwrap();
    let stamp = |nanos: i64| engine::time::format_rfc3339(nanos);
    let minute = 60 * engine::time::NANOS_PER_SEC;
    let cases = [
        // (stream, event, set aside)
        (&chats, subscribe(7, 0), false),
        (
            &chats,
            r#"{"type":"subscribe","at":"2200-01-01T00:00:00Z","chat_id":8,"expires_at":"2200-02-01T00:00:00Z"}"#.to_owned(),
            true,
        ),
        (&part, price(1, 5.0, 1), false),
        (
            &part,
            format!(r#"{{"type":"price","at":"{}","token":"{}","fdv_usd":9}}"#, stamp(server_now + 10 * minute), token(2)),
            true,
        ),
        // Within the skew (the producer's clock a little ahead): applied.
        (
            &part,
            format!(r#"{{"type":"price","at":"{}","token":"{}","fdv_usd":9}}"#, stamp(server_now + minute), token(3)),
            false,
        ),
    ];
    for (stream, event, _) in &cases {
        let _: String = redis::cmd("XADD")
            .arg(*stream)
            .arg("*")
            .arg("event")
            .arg(event)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let mut a = start(config(&prefix, "a", 1, &[]));
    let got = a.take(3).await;
    let good: Vec<&String> = cases.iter().filter(|c| !c.2).map(|c| &c.1).collect();
    let expected: Vec<Event> = ingested(&good).into_iter().map(|e| e.event).collect();
    assert_eq!(
        got.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        expected
    );
    let latest = got.iter().map(|e| e.clock).max().unwrap();
    assert!(latest < server_now + 2 * minute, "the clock did not jump");
    until("the dead letters", async || {
        a.counters.stats().dead_lettered == 2
    })
    .await;
    let dead = entries(&mut con, &dead_letter_key(&prefix.0)).await;
    assert_eq!(dead.len(), 2);
    for (_, fields) in &dead {
        let reason = fields.iter().find(|(f, _)| f == "reason").unwrap();
        let reason = String::from_utf8_lossy(&reason.1);
        assert!(reason.contains("dated in the future"), "{reason}");
        assert!(reason.contains("over the 300 s allowed"), "{reason}");
    }
    a.finish(true).await;

    // A start hands the chat history out again: without the one set aside.
    let mut again = start(config(&prefix, "a", 1, &[]));
    let got = again.take(1).await;
    assert_eq!(got[0].event, expected[0]);
    again.nothing_within(Duration::from_millis(300)).await;
    let stats = again.finish(true).await;
    assert_eq!((stats.replayed, stats.dead_lettered), (1, 0));
}

#[tokio::test]
async fn a_full_window_stops_reading_until_events_are_acknowledged() {
    let prefix = Prefix::new("window");
    let mut con = connect().await;
    let lines: Vec<String> = (0..10).map(|i| price(i, 1e5, i)).collect();
    publish(&mut con, &prefix.0, 1, &lines).await.unwrap();
    let window = 4;
    let mut ingest = start(StreamIngestConfig {
        window,
        batch: 2,
        ..config(&prefix, "a", 1, &[])
    });
    let part = stream_key(&prefix.0, Route::Partition(0));
    let mut all = Vec::new();
    let mut acked = 0;
    loop {
        all.extend(ingest.drain(Duration::from_millis(200)).await);
        let stats = ingest.counters.stats();
        let in_flight = all.len() - acked;
        assert!(in_flight <= window, "{in_flight} in flight");
        assert_eq!(stats.in_flight, in_flight as u64);
        assert_eq!(stats.acked, acked as u64, "acknowledged only when told");
        assert_eq!(
            pending(&mut con, &part, "callwatch").await,
            in_flight as i64
        );
        if all.len() == lines.len() {
            break;
        }
        assert!(all.len() < lines.len(), "reading stopped at a full window");
        acked += 2.min(in_flight);
        ingest.acker.ack_through(all[acked - 1].seq);
        until("the acks", async || {
            ingest.counters.stats().acked == acked as u64
        })
        .await;
    }
    assert!(acked < all.len(), "the window filled at least once");
    assert_eq!(all, ingested(&lines));
    let stats = ingest.finish(true).await;
    assert_eq!(stats.acked, 10);
    assert_eq!(pending(&mut con, &part, "callwatch").await, 0);
}

#[test]
#[should_panic(expected = "past the last event handed out")]
fn acknowledging_what_was_never_handed_out_is_a_bug() {
    let prefix = Prefix("cw_test:never:".to_owned());
    let ingest = StreamIngest::new(config(&prefix, "a", 1, &[]), redis_url()).unwrap();
    ingest.acker().ack_through(1);
}

#[tokio::test]
async fn a_dead_consumers_entries_are_claimed_by_another_after_min_idle() {
    let prefix = Prefix::new("claim");
    let mut con = connect().await;
    let partitions = 2;
    let lines: Vec<String> = (0..8).map(|i| call(i, -1001, 1e5, i)).collect();
    publish(&mut con, &prefix.0, partitions, &lines)
        .await
        .unwrap();

    // `a` reads everything and dies without acknowledging.
    let mut a = start(config(&prefix, "a", partitions, &[]));
    let read_by_a = a.take(lines.len()).await;
    let stats = a.finish(false).await;
    assert_eq!((stats.acked, stats.left_pending), (0, 8));

    // `b` asks for entries idle for a minute: none are yet.
    let mut b = start(config(&prefix, "b", partitions, &[]));
    b.nothing_within(Duration::from_millis(300)).await;
    let stats = b.finish(true).await;
    assert_eq!((stats.claimed, stats.events), (0, 0));

    // `c` takes entries idle for 100 ms: all of `a`'s, and gets them in the
    // same order.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut c = start(StreamIngestConfig {
        claim_idle_ms: 100,
        ..config(&prefix, "c", partitions, &[])
    });
    let read_by_c = c.take(lines.len()).await;
    assert_eq!(read_by_c, read_by_a);
    let stats = c.finish(true).await;
    assert_eq!((stats.claimed, stats.acked), (8, 8));
    for p in 0..partitions {
        let key = stream_key(&prefix.0, Route::Partition(p));
        assert_eq!(pending(&mut con, &key, "callwatch").await, 0);
    }
}

#[tokio::test]
async fn a_restart_under_the_same_name_replays_the_acked_chat_history_then_reads_its_pending_entries()
 {
    let prefix = Prefix::new("restart");
    let mut con = connect().await;
    let partitions = 3;
    // Acknowledged: a subscribe, a call, a settings change. Pending: a
    // price, a settings change, more prices.
    let before: Vec<String> = [
        subscribe(1, 0),
        call(1, -5, 1e5, 1),
        settings(1, 2, 3),
        price(2, 3e5, 3),
        settings(1, 4, 4),
    ]
    .into_iter()
    .chain((5..9).map(|i| price(i, 1e5, i)))
    .collect();
    // One millisecond each, so that they come out in this order.
    for line in &before {
        publish(&mut con, &prefix.0, partitions, &[line])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut a = start(config(&prefix, "a", partitions, &[]));
    let first = a.take(before.len()).await;
    // The effects of the first three are durable; the rest never were.
    a.acker.ack_through(first[2].seq);
    until("three acks", async || a.counters.stats().acked == 3).await;
    let stats = a.finish(false).await;
    assert_eq!(stats.left_pending, 6);
    let chat_events = |events: &[Envelope]| -> Vec<Event> {
        events
            .iter()
            .map(|e| e.event.clone())
            .filter(|e| matches!(e, Event::Subscribe { .. } | Event::Settings { .. }))
            .collect()
    };

    let after: Vec<String> = (9..12).map(|i| price(i, 2e5, i)).collect();
    let published = publish(&mut con, &prefix.0, partitions, &after)
        .await
        .unwrap();
    let mut again = start(config(&prefix, "a", partitions, &[]));
    let got = again.take(2 + 6 + after.len()).await;
    let events: Vec<Event> = got.iter().map(|e| e.event.clone()).collect();
    // The chat state first: the acknowledged chat events, which no other
    // store holds, and not the pending one.
    assert_eq!(
        events[..2],
        chat_events(&first[..3]),
        "the chat history first"
    );
    let pending_events: Vec<Event> = first[3..].iter().map(|e| e.event.clone()).collect();
    assert_eq!(
        events[2..8],
        pending_events,
        "then the pending ones, in order"
    );
    let new_events: Vec<Event> = ingested(in_documented_order(&published, &after))
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events[8..], new_events);
    again.nothing_within(Duration::from_millis(300)).await;
    let stats = again.finish(true).await;
    assert_eq!(
        (stats.claimed, stats.replayed, stats.events, stats.acked),
        (0, 2, 9, 9)
    );

    // Everything acknowledged: a start replays every chat event, once.
    let mut third = start(config(&prefix, "a", partitions, &[]));
    let got = third.take(3).await;
    assert_eq!(
        got.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        chat_events(&first)
    );
    third.nothing_within(Duration::from_millis(300)).await;
    let stats = third.finish(true).await;
    assert_eq!((stats.replayed, stats.events, stats.acked), (3, 0, 0));
}

#[tokio::test]
async fn two_consumers_with_half_the_partitions_each_see_every_token_event_once_and_all_chat_events()
 {
    let prefix = Prefix::new("halves");
    let mut con = connect().await;
    let partitions = 4;
    let lines = market(16, 6);
    publish(&mut con, &prefix.0, partitions, &lines)
        .await
        .unwrap();
    let all = ingested(&lines);
    let is_chat = |e: &Envelope| e.event.token().is_none();
    let chat_events: Vec<Event> = all
        .iter()
        .filter(|e| is_chat(e))
        .map(|e| e.event.clone())
        .collect();
    let token_events = all.len() - chat_events.len();

    let mut x = start(config(&prefix, "x", partitions, &[0, 2]));
    let mut y = start(config(&prefix, "y", partitions, &[3, 1]));
    let owned = |e: &Envelope, mine: [u32; 2]| {
        e.event
            .token()
            .is_none_or(|t| mine.contains(&partition_of(t, partitions)))
    };
    let expected_x = all.iter().filter(|e| owned(e, [0, 2])).count();
    let got_x = x.take(expected_x).await;
    let got_y = y.take(all.len() - expected_x + chat_events.len()).await;
    x.nothing_within(Duration::from_millis(100)).await;
    y.nothing_within(Duration::from_millis(100)).await;
    assert!(got_x.iter().all(|e| owned(e, [0, 2])));
    assert!(got_y.iter().all(|e| owned(e, [1, 3])));
    for got in [&got_x, &got_y] {
        let chats: Vec<Event> = got
            .iter()
            .filter(|e| is_chat(e))
            .map(|e| e.event.clone())
            .collect();
        assert_eq!(chats, chat_events, "every chat event, in order");
    }
    // Every token event exactly once (events carry their time, so equal
    // ones are the same line).
    let mut tokens: Vec<String> = got_x
        .iter()
        .chain(&got_y)
        .filter(|e| !is_chat(e))
        .map(|e| format!("{:?}", e.event))
        .collect();
    let mut expected: Vec<String> = all
        .iter()
        .filter(|e| !is_chat(e))
        .map(|e| format!("{:?}", e.event))
        .collect();
    assert_eq!(tokens.len(), token_events);
    tokens.sort();
    expected.sort();
    assert_eq!(tokens, expected);
    x.finish(true).await;
    y.finish(true).await;
}

/// A TCP proxy in front of Redis whose connections the test can cut.
struct Proxy {
    url: String,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let client = redis::Client::open(redis_url()).unwrap();
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            panic!("the proxy needs Redis over TCP")
        };
        let db = info.redis_settings().db();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/{db}", listener.local_addr().unwrap());
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let links = links.clone();
            async move {
                while let Ok((mut inside, _)) = listener.accept().await {
                    let (host, port) = (host.clone(), port);
                    let link = tokio::spawn(async move {
                        if let Ok(mut outside) = tokio::net::TcpStream::connect((host, port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        });
        Proxy { url, links, accept }
    }

    /// Drops every connection through the proxy, as a network failure would.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test]
async fn a_dropped_connection_loses_nothing_and_hands_out_nothing_twice() {
    let prefix = Prefix::new("outage");
    let mut con = connect().await;
    let partitions = 2;
    let proxy = Proxy::start().await;
    let first: Vec<String> = [subscribe(3, 0)]
        .into_iter()
        .chain((0..5).map(|i| price(i, 1e5, i + 1)))
        .collect();
    let published_first = publish(&mut con, &prefix.0, partitions, &first)
        .await
        .unwrap();
    let mut ingest = start_at(config(&prefix, "a", partitions, &[]), &proxy.url);
    let got_first = ingest.take(first.len()).await;

    // Handed out, not acknowledged: the cut leaves them pending, and the
    // read after the reconnect must not hand them out again.
    proxy.cut();
    let second: Vec<String> = (5..9).map(|i| price(i, 2e5, i + 1)).collect();
    let published_second = publish(&mut con, &prefix.0, partitions, &second)
        .await
        .unwrap();
    let got_second = ingest.take(second.len()).await;
    ingest.nothing_within(Duration::from_millis(200)).await;
    let stats = ingest.counters.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.skipped, first.len() as u64, "{stats:?}");

    let mut all = got_first;
    all.extend(got_second);
    let events: Vec<Event> = all.iter().map(|e| e.event.clone()).collect();
    let in_order = in_documented_order(&published_first, &first)
        .into_iter()
        .chain(in_documented_order(&published_second, &second));
    let expected: Vec<Event> = ingested(in_order).into_iter().map(|e| e.event).collect();
    assert_eq!(events, expected);

    // Acknowledgements go through a new connection too.
    proxy.cut();
    let total = (first.len() + second.len()) as u64;
    ingest.acker.ack_through(all.last().unwrap().seq);
    until("every ack", async || ingest.counters.stats().acked == total).await;
    let stats = ingest.finish(false).await;
    assert_eq!((stats.acked, stats.left_pending), (total, 0));
    let mut left = pending(
        &mut con,
        &stream_key(&prefix.0, Route::Chats),
        "callwatch:a",
    )
    .await;
    for p in 0..partitions {
        left += pending(
            &mut con,
            &stream_key(&prefix.0, Route::Partition(p)),
            "callwatch",
        )
        .await;
    }
    assert_eq!(left, 0);
}
