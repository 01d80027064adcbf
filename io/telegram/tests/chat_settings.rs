//! Settings commands against the machine's Redis (database 12, or
//! `CALLWATCH_TEST_REDIS_URL`): the event lands on the chats stream in the
//! engine's own input format, and the chat's settings beside it. Each test
//! works under a key prefix of its own and deletes its keys at the end.

use callwatch_common::keys::stream_key;
use callwatch_common::route::Route;
use callwatch_telegram::commands::{ChatSettings, SettingsStore};
use engine::event::{Event, SettingsPatch};
use engine::parse::LineParser;
use redis::aio::MultiplexedConnection;

/// XRANGE's reply: entry ids with their fields.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn entries(con: &mut MultiplexedConnection, stream: &str) -> Vec<Vec<u8>> {
    let reply: Entries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE");
    reply
        .into_iter()
        .map(|(_, mut fields)| fields.remove(0).1)
        .collect()
}

async fn cleanup(con: &mut MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(keys)
            .query_async(con)
            .await
            .expect("DEL");
    }
}

#[tokio::test]
async fn a_saved_setting_is_an_engine_event_on_the_chats_stream_and_reads_back() {
    let mut con = callwatch_testkit::connect_redis(12).await;
    let prefix = format!("{}:", callwatch_testkit::unique("chat_settings"));
    let store = SettingsStore::new(&prefix);
    assert_eq!(
        store.get(&mut con, 42).await.expect("get"),
        ChatSettings::default()
    );

    let patch = SettingsPatch {
        min_fdv_usd: Some(50_000.0),
        max_fdv_usd: Some(f64::MAX),
        follow: Some(vec![-1002, -1001]),
        ..SettingsPatch::default()
    };
    let settings = ChatSettings::default().patched(&patch);
    assert_eq!(
        settings.max_fdv_usd, None,
        "the largest value reads as unbounded"
    );
    let before = callwatch_streams::clock::server_now(&mut con)
        .await
        .unwrap();
    store
        .save(&mut con, 42, &settings, &patch)
        .await
        .expect("save");
    let after = callwatch_streams::clock::server_now(&mut con)
        .await
        .unwrap();
    assert_eq!(store.get(&mut con, 42).await.expect("get"), settings);

    let lines = entries(&mut con, &stream_key(&prefix, Route::Chats)).await;
    cleanup(&mut con, &prefix).await;
    assert_eq!(lines.len(), 1);
    let event = LineParser::new()
        .parse(&lines[0])
        .expect("the engine reads it");
    let at = event.at();
    assert!((before..=after).contains(&at), "stamped by Redis's clock");
    assert_eq!(
        event,
        Event::Settings {
            chat_id: 42,
            at,
            patch: Box::new(patch)
        }
    );
}

#[tokio::test]
async fn unreadable_stored_settings_are_reported_not_replaced_by_defaults() {
    let mut con = callwatch_testkit::connect_redis(12).await;
    let prefix = format!("{}:", callwatch_testkit::unique("chat_settings"));
    let () = redis::cmd("SET")
        .arg(format!("{prefix}chat_settings:7"))
        .arg("{not json")
        .query_async(&mut con)
        .await
        .expect("SET");
    let err = SettingsStore::new(&prefix).get(&mut con, 7).await;
    cleanup(&mut con, &prefix).await;
    let err = err.expect_err("an unreadable value is an error");
    assert!(err.to_string().contains("chat_settings:7"), "{err}");
}
