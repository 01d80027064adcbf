//! Compaction of the chats stream against the machine's Redis, database 10
//! (or `CALLWATCH_TEST_REDIS_URL`): 10,000 settings changes from 10 chats
//! leave about one entry per chat and kind, and an engine that reads the
//! compacted stream (restarted, or new) has the chats it had before.
//! Events are dated by Redis's clock, so the suite runs under libfaketime.

use std::collections::BTreeMap;
use std::time::Duration;

use callwatch_common::keys::{dead_letter_key, stream_key};
use callwatch_ingest::stream::{
    ChatCompactor, IngestStats, Route, StreamIngest, StreamIngestConfig, publish,
};
use callwatch_streams::connection::RedisTimeouts;
use callwatch_testkit::{connect_redis, on_own_runtime, redis_now, redis_url, unique};
use engine::chat::{Chat, Chats};
use engine::event::{ChatId, Event};
use engine::time::{Nanos, format_rfc3339};
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

const DB: u8 = 10;
const CHATS: i64 = 10;
const CHANGES: usize = 10_000;

/// The chats stream of a prefix of this test's own, deleted at the end.
struct ChatsStream {
    prefix: String,
    key: String,
}

impl ChatsStream {
    fn new(test: &str) -> ChatsStream {
        let prefix = format!("cw_test:{}:", unique(test));
        ChatsStream {
            key: stream_key(&prefix, Route::Chats),
            prefix,
        }
    }

    fn config(&self, consumer: &str, horizon_secs: u64) -> StreamIngestConfig {
        StreamIngestConfig {
            prefix: self.prefix.clone(),
            partitions: 1,
            consumer: consumer.to_owned(),
            block_ms: 20,
            compact_horizon_secs: horizon_secs,
            timeouts: RedisTimeouts {
                response: Duration::from_secs(5),
                ..RedisTimeouts::default()
            },
            ..StreamIngestConfig::default()
        }
    }

    async fn len(&self, con: &mut MultiplexedConnection) -> usize {
        redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(con)
            .await
            .unwrap()
    }
}

impl Drop for ChatsStream {
    fn drop(&mut self) {
        let keys = [
            self.key.clone(),
            stream_key(&self.prefix, Route::Partition(0)),
            dead_letter_key(&self.prefix),
        ];
        on_own_runtime(async move {
            let mut con = connect_redis(DB).await;
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
        });
    }
}

/// The `i`-th settings change of chat `chat`: a few fields each, some
/// that leave an empty market value range (bad, set aside by the reader).
fn change(chat: ChatId, i: usize, at: Nanos) -> String {
    let mut fields = format!(r#""min_callers":{}"#, 1 + i % 7);
    match i % 5 {
        0 => fields = format!(r#""lookback_minutes":{}"#, 1 + i % 600),
        1 => fields += &format!(r#","follow":[-100{},-200{}]"#, i % 9, i % 4),
        2 => fields += &format!(r#","max_fdv_usd":{}"#, 1e6 + i as f64),
        3 => fields = format!(r#""min_fdv_usd":{}"#, (i % 3) as f64 * 6e5),
        _ => fields += r#","follow":[]"#,
    }
    format!(
        r#"{{"type":"settings","at":"{}","chat_id":{chat},{fields}}}"#,
        format_rfc3339(at)
    )
}

/// Every chat's state as an engine learns it from the chats stream through
/// a `StreamIngest` named `consumer` (a restart if that name read before),
/// acknowledged; and the ingest's counters.
async fn learnt(config: StreamIngestConfig) -> (BTreeMap<ChatId, Chat>, IngestStats) {
    let ingest = StreamIngest::new(config, redis_url(DB).as_str()).unwrap();
    let acker = ingest.acker();
    let (tx, mut rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ingest.run(tx, stop_rx));
    let mut chats = Chats::default();
    let mut last = 0;
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        for env in batch.envelopes {
            match env.event {
                Event::Subscribe {
                    chat_id,
                    expires_at,
                    ..
                } => chats.subscribe(chat_id, expires_at),
                Event::Settings { chat_id, patch, .. } => chats.apply_settings(chat_id, &patch),
                other => panic!("not a chat event: {other:?}"),
            }
        }
        last = *batch.seqs.end();
    }
    acker.ack_through(last);
    stop.send(true).unwrap();
    drop((acker, rx));
    let stats = task.await.unwrap().unwrap();
    let state = (1..=CHATS)
        .map(|id| {
            let idx = chats.lookup(id).expect("every chat seen");
            (id, chats.get(idx).clone())
        })
        .collect();
    (state, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_settings_changes_compact_to_one_entry_per_chat_with_the_same_state() {
    let stream = ChatsStream::new("compact");
    let mut con = connect_redis(DB).await;
    let now = redis_now(&mut con).await;
    let mut lines: Vec<String> = (1..=CHATS)
        .map(|chat| {
            format!(
                r#"{{"type":"subscribe","at":"{}","chat_id":{chat},"expires_at":"{}"}}"#,
                format_rfc3339(now),
                format_rfc3339(now + 30 * 86_400 * 1_000_000_000)
            )
        })
        .collect();
    lines.extend((0..CHANGES).map(|i| change(1 + (i as i64 / 7) % CHATS, i, now)));
    publish(&mut con, &stream.prefix, 1, &lines).await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream.key)
        .arg("*")
        .arg("event")
        .arg("{not an event")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stream.len(&mut con).await, CHANGES + 11);
    let (before, first) = learnt(stream.config("c1", 0)).await;
    assert!(first.dead_lettered > 1, "{first:?}");

    // The default horizon keeps what is this recent.
    let recent = ChatCompactor::new(&stream.config("c1", 3_600));
    let done = recent.run_once(&mut con).await.unwrap();
    assert_eq!((done.read, done.deleted), (CHANGES as u64 + 11, 0));

    // With none, each chat keeps its subscribe and one settings entry.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let compactor = ChatCompactor::new(&stream.config("c1", 0));
    let done = compactor.run_once(&mut con).await.unwrap();
    let left = stream.len(&mut con).await;
    assert!(left <= 2 * CHATS as usize, "{left} entries left; {done:?}");
    assert_eq!(done.merged, CHATS as u64, "{done:?}");
    assert_eq!(done.deleted as usize, CHANGES + 11 + CHATS as usize - left);
    let counters = compactor.counters();
    assert_eq!(
        counters.deleted.load(std::sync::atomic::Ordering::Relaxed),
        done.deleted
    );

    // Restarted under its name (it replays what it acknowledged and reads
    // the merged entries as new), or new: the same chats as before.
    let (restarted, stats) = learnt(stream.config("c1", 0)).await;
    assert_eq!(restarted, before);
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    let (fresh, stats) = learnt(stream.config("c2", 0)).await;
    assert_eq!(fresh, before);
    assert_eq!(stats.events as usize, left, "{stats:?}");

    // Again: nothing more to do.
    let again = compactor.run_once(&mut con).await.unwrap();
    assert_eq!((again.deleted, again.merged), (0, 0), "{again:?}");
}
