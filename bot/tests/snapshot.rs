//! `callwatch serve` restarted from its own snapshot, as a process: after
//! a graceful stop and after a SIGKILL, every alert the engine decides
//! arrives, with the engine's state in Redis deleted before the restart,
//! so only the snapshot and the entries applied again after it can carry
//! it.

mod common;

use std::time::{Duration, Instant};

use callwatch_ingest::stream::publish;
use callwatch_testkit::fake_bot::FakeBotApi;
use common::*;

/// Deletes every string key under `prefix`: the engine's state as the
/// write-behind keeps it (records, calls), not the streams.
async fn delete_state(con: &mut redis::aio::MultiplexedConnection, prefix: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .unwrap();
    let mut deleted = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(con).await.unwrap();
        if kind == "string" {
            let _: i64 = redis::cmd("DEL").arg(&key).query_async(con).await.unwrap();
            deleted += 1;
        }
    }
    deleted
}

/// The snapshots in `dir` (not a temporary file being written), oldest
/// first.
fn files(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().ends_with(".cws"))
                .collect()
        },
    );
    names.sort();
    names
}

/// Runs a market through `serve` in two halves with a restart between,
/// killed (`kill`) or stopped; returns the messages beyond the expected
/// ones, and checks that none of the expected is missing.
async fn restart_run(kind: &str, kill: bool) -> usize {
    let scratch = Scratch::new(kind);
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let lines = market_lines(20_000, 150, 20);
    let expected = expected_messages(&lines);
    assert!(
        expected.len() > 100,
        "the market alerts: {}",
        expected.len()
    );
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let mut con = connect().await;
    let path = config(&prefix, &schema, 2, &[], "only", Some(&fake.url()));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "[telegram]\n",
        "[telegram]\nper_chat_per_sec = 100.0\nglobal_per_sec = 400.0\n",
    );
    text = text.replace("[snapshot]\n", "[snapshot]\nevery_secs = 1\n");
    std::fs::write(&path, text).unwrap();
    let dir = snapshot_dir(&prefix, "only");

    let head = lines.len() / 2;
    publish(&mut con, &prefix, 2, &lines[..head]).await.unwrap();
    let first = spawn_serve(&path);
    wait_sent(&mut con, &prefix, &fake, 1, Some(2)).await;
    let sent_before = if kill {
        // A periodic snapshot at the first half, then more entries read
        // and acknowledged after it, and the kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        while files(&dir).is_empty() {
            assert!(Instant::now() < deadline, "no snapshot was written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // As if the kill came before any later snapshot: this one is put
        // back alone, so the restart must apply what was acknowledged
        // after it.
        let kept = files(&dir).pop().expect("a snapshot file");
        let bytes = std::fs::read(dir.join(&kept)).unwrap();
        let third = head + (lines.len() - head) / 3;
        publish(&mut con, &prefix, 2, &lines[head..third])
            .await
            .unwrap();
        wait_sent(&mut con, &prefix, &fake, 1, Some(2)).await;
        let sent = fake.count();
        first.kill9();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&kept), bytes).unwrap();
        publish(&mut con, &prefix, 2, &lines[third..])
            .await
            .unwrap();
        sent
    } else {
        let exit = stop(first).await;
        assert!(exit.success(), "{exit:?}");
        publish(&mut con, &prefix, 2, &lines[head..]).await.unwrap();
        fake.count()
    };
    assert!(sent_before < expected.len(), "the restart lands mid-market");
    assert!(!files(&dir).is_empty(), "a snapshot is on disk");
    let deleted = delete_state(&mut con, &prefix).await;
    assert!(
        deleted > 50,
        "the engine's state was in Redis: {deleted} keys"
    );

    let second = spawn_serve(&path);
    wait_sent(&mut con, &prefix, &fake, expected.len(), Some(2)).await;
    let exit = stop(second).await;
    assert!(exit.success(), "{exit:?}");

    let mut rest: Vec<(i64, String)> = fake
        .received()
        .into_iter()
        .map(|r| (r.chat_id, r.text))
        .collect();
    let mut missing = 0;
    for w in &expected {
        match rest.iter().position(|r| r == w) {
            Some(i) => {
                rest.swap_remove(i);
            }
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "alerts lost across the restart");
    for extra in &rest {
        assert!(
            expected.contains(extra),
            "a message that is no alert: {extra:?}"
        );
    }
    rest.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_and_a_start_from_the_snapshot_send_every_alert_once() {
    let duplicates = restart_run("snapstop", false).await;
    assert_eq!(duplicates, 0, "a graceful stop sends nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_snapshot_it_applies_what_came_after_and_loses_no_alert() {
    let duplicates = restart_run("snapkill", true).await;
    // Everything read before the kill was acknowledged and sent: entries
    // applied again after the snapshot have their alerts dropped.
    assert_eq!(
        duplicates, 0,
        "alerts of entries applied again were sent again"
    );
}
