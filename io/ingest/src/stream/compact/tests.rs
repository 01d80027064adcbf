//! A run against the machine's Redis (database 10) that meets entries
//! written while it planned: their chats are left out, the rest applied.

use callwatch_testkit::{connect_redis, on_own_runtime, redis_now, unique};
use engine::time::format_rfc3339;

use super::*;

const DB: u8 = 10;

/// A stream key of this test's own, deleted at the end.
struct Key(String);

impl Drop for Key {
    fn drop(&mut self) {
        let key = self.0.clone();
        on_own_runtime(async move {
            let mut con = connect_redis(DB).await;
            let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut con).await;
        });
    }
}

async fn add(con: &mut impl ConnectionLike, key: &str, chat: ChatId, min_callers: u32) -> EntryId {
    let at = format_rfc3339(redis_now(con).await);
    let line = format!(
        r#"{{"type":"settings","at":"{at}","chat_id":{chat},"min_callers":{min_callers}}}"#
    );
    let id: String = redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg(EVENT_FIELD)
        .arg(line)
        .query_async(con)
        .await
        .unwrap();
    EntryId::parse(id.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_chat_changed_while_a_run_plans_is_left_for_the_next_run() {
    let config = StreamIngestConfig {
        prefix: format!("cw_test:{}:", unique("compact_conflict")),
        compact_horizon_secs: 0,
        ..StreamIngestConfig::default()
    };
    let compactor = ChatCompactor::new(&config);
    let key = Key(compactor.stream.clone());
    let mut con = connect_redis(DB).await;
    let mut ids = Vec::new();
    for (chat, n) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
        ids.push(add(&mut con, &key.0, chat, n).await);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (seen, work, read) = compactor.plan(&mut con).await.unwrap().unwrap();
    assert_eq!((read, work.len()), (4, 2));
    // Chat 1 changes before the work is applied: a merged entry appended
    // after this one would undo it.
    let late = add(&mut con, &key.0, 1, 3).await;
    let mut done = Compacted::default();
    compactor
        .apply(&mut con, work, seen, &mut done)
        .await
        .unwrap();
    assert_eq!((done.conflicts, done.deleted, done.merged), (1, 2, 1));
    let end = EntryId {
        ms: u64::MAX,
        seq: u64::MAX,
    };
    let left = compactor.range(&mut con, "-", end).await.unwrap();
    let left_ids: Vec<EntryId> = left.iter().map(|e| e.id).take(3).collect();
    assert_eq!(left_ids, [ids[0], ids[2], late]);
    let merged = left.last().unwrap().sole_field(EVENT_FIELD).unwrap();
    let merged = String::from_utf8(merged).unwrap();
    assert!(
        merged.contains(r#""chat_id":2,"min_callers":2,"#),
        "{merged}"
    );
    assert_eq!(left.len(), 4);
    // The next run takes chat 1 too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let done = compactor.run_once(&mut con).await.unwrap();
    assert_eq!((done.deleted, done.merged), (3, 1), "{done:?}");
}
