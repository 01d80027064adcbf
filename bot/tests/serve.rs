//! `callwatch serve` end to end, as a process: events published to the
//! Redis streams come out as Telegram messages (at a fake Bot API the test
//! runs), Redis records and PostgreSQL audit rows; bad entries go to the
//! dead-letter stream; SIGTERM stops it with every entry acknowledged.
//!
//! Uses the machine's Redis (database 8, a key prefix of its own) and
//! PostgreSQL (a schema of its own), removed at the end; `scripts/test`
//! starts both if needed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

use callwatch_ingest::stream::{input_drained, publish};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Limits, Received};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_alerts_out_state_kept_and_a_clean_stop() {
    let scratch = Scratch::new("serve");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));

    // The quickstart's events: two chats, one token called by three
    // channels, two price moves, and two bad lines; moved to end an hour
    // ago, since the service keeps its state in Redis for a week from the
    // events' own times (the file's fixed dates would expire at once).
    let lines: Vec<String> = include_str!("../../examples/quickstart.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| dated_to_end_an_hour_ago(l, "2026-11-25T11:02:00Z"))
        .collect();
    let (good, bad): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .partition(|l| engine::parse::LineParser::new().parse(l.as_bytes()).is_ok());
    assert_eq!(bad.len(), 2, "the quickstart has two bad lines");
    let mut con = connect().await;
    publish(&mut con, &prefix, 2, &good).await.unwrap();
    // Bad entries can only come from producers that skip the check.
    for line in &bad {
        let _: String = redis::cmd("XADD")
            .arg(format!("{prefix}events:0"))
            .arg("*")
            .arg("event")
            .arg(line.as_str())
            .query_async(&mut con)
            .await
            .unwrap();
    }

    let running = spawn_serve(&config);

    // Five alerts (CONTRACT.md's worked example): chat 42 gets 1 call and
    // 2 multiplier alerts, chat 7 one of each.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.count() < 5 {
        assert!(
            Instant::now() < deadline,
            "only {} messages arrived",
            fake.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = fake.received();
    let per_chat = |chat: i64| -> Vec<String> {
        received
            .iter()
            .filter(|r| r.chat_id == chat)
            .map(|r| r.text.clone())
            .collect()
    };
    let (c42, c7) = (per_chat(42), per_chat(7));
    assert_eq!((c42.len(), c7.len()), (3, 2), "{received:#?}");
    assert!(
        c42[0].contains("JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"),
        "{}",
        c42[0]
    );
    assert!(c42[1].contains("2x") && c42[2].contains("10x"), "{c42:#?}");
    assert!(c7[1].contains("5x"), "{c7:#?}");
    assert!(
        received
            .iter()
            .all(|r| r.parse_mode.as_deref() == Some("HTML"))
    );

    // Its metrics, from the address in its settings.
    let listen = listen_of(&config);
    let scrape = move || callwatch_service::ops::get(&listen, "/metrics").unwrap().1;
    let wanted = [
        "callwatch_alerts_total{kind=\"call\"} 2",
        "callwatch_alerts_total{kind=\"multiplier\"} 3",
        "callwatch_postgres_up 1",
        "callwatch_redis_up 1",
        "callwatch_shard_inbox_depth{shard=\"1\"}",
        "callwatch_telegram_messages_total{outcome=\"sent\"} 5",
        // Histograms: every alert observed; the input's lag and the
        // sender's queue wait too.
        "callwatch_alert_latency_seconds_count 5",
        "callwatch_alert_latency_seconds_bucket{le=\"+Inf\"} 5",
        "# TYPE callwatch_ingest_lag_seconds histogram",
        "callwatch_telegram_queue_wait_seconds_count 5",
        // The set-aside paths are counted, and nothing was set aside.
        "callwatch_write_behind_set_aside_total 0",
        "callwatch_audit_entries_total{outcome=\"set_aside\"} 0",
        "callwatch_rebuild_skipped_keys 0",
        "callwatch_payments_dropped_total 0",
        // Counts collected and shown: retries, pauses, what was skipped.
        "callwatch_ingest_reconnects_total 0",
        "callwatch_ingest_skipped_total 0",
        "callwatch_telegram_flood_pauses_total 0",
        "callwatch_ingest_acked_total",
        "callwatch_build_info{version=",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ];
    // The sender's reports are read a moment after Telegram answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = scrape.clone();
        let metrics = tokio::task::spawn_blocking(scrape).await.unwrap();
        let missing: Vec<_> = wanted.iter().filter(|l| !metrics.contains(*l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} missing from:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every metric the Grafana dashboard in examples/ queries is exported.
    let metrics = tokio::task::spawn_blocking(scrape).await.unwrap();
    let lag = callwatch_service::ops::histogram_quantiles(
        &metrics,
        "callwatch_ingest_lag_seconds",
        &[1.0],
    );
    assert!(lag[0].is_some(), "the input's lag was observed:\n{metrics}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/grafana/callwatch.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = ["callwatch_", "process_"]
                .iter()
                .filter_map(|p| rest.find(p))
                .min()
            {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() > 20, "the dashboard queries: {queried:?}");
    // A counter's samples end in `_total` and a histogram's in `_bucket`,
    // `_sum` or `_count`; their family (`# TYPE`) has the bare name.
    let exported = |name: &str| {
        let family = |suffix: &str, kind: &str| {
            name.strip_suffix(suffix)
                .is_some_and(|f| metrics.contains(&format!("# TYPE {f} {kind}\n")))
        };
        metrics.contains(&format!("# TYPE {name} gauge\n"))
            || family("_total", "counter")
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| family(s, "histogram"))
    };
    let unknown: Vec<_> = queried.iter().filter(|name| !exported(name)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics serve does not export: {unknown:?}"
    );

    // A clean stop: SIGTERM, exit 0.
    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");

    // Redis: the tracking records of both chats; nothing left pending; the
    // two bad entries dead-lettered with their reasons.
    let multipliers: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}multiplier:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(multipliers.len(), 2, "{multipliers:?}");
    let calls: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}calls:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(calls.len(), 3, "one per channel that called: {calls:?}");
    for p in 0..2 {
        let pending: XPendingSummary = redis::cmd("XPENDING")
            .arg(format!("{prefix}events:{p}"))
            .arg("callwatch")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(pending.0, 0, "partition {p}: every entry acknowledged");
    }
    let dead: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}events:dead"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(dead, 2);
    let outbox: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}callwatch:outbox"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        outbox, 0,
        "every alert answered and deleted from the outbox"
    );

    // PostgreSQL: one audit row per alert.
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".alert_audit"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 5);
    drop(scratch);
}

/// Now by Redis's clock, the one that stamps stream entries: the service
/// sets aside an event dated ahead of its entry, and the tests also run
/// with this machine's clock moved far ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_half_the_partitions_each_alert_as_one() {
    let id = format!("{}_{}", std::process::id(), free_port());
    // A simulated market, as JSON lines.
    let lines = market_lines(20_000, 300, 30);
    let mut con = connect().await;
    let run = |name: &str| {
        (
            format!("cw-test-scale-{name}-{id}:"),
            format!("cw_test_scale_{name}_{id}"),
        )
    };

    // One process, every partition.
    let (prefix1, schema1) = run("one");
    let _one = Scratch {
        prefix: prefix1.clone(),
        schema: schema1.clone(),
    };
    publish(&mut con, &prefix1, 4, &lines).await.unwrap();
    let single = spawn_serve(&config(&prefix1, &schema1, 4, &[], "solo", None));
    // Two processes, half each, on their own copy of the same events.
    let (prefix2, schema2) = run("two");
    let _two = Scratch {
        prefix: prefix2.clone(),
        schema: schema2.clone(),
    };
    publish(&mut con, &prefix2, 4, &lines).await.unwrap();
    let a = spawn_serve(&config(&prefix2, &schema2, 4, &[0, 1], "a", None));
    let b = spawn_serve(&config(&prefix2, &schema2, 4, &[2, 3], "b", None));

    let deadline = Instant::now() + Duration::from_secs(60);
    while !(input_drained(&mut con, &prefix1, 4).await
        && input_drained(&mut con, &prefix2, 4).await)
    {
        assert!(
            Instant::now() < deadline,
            "the services did not work through the events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in [single, a, b] {
        let exit = stop(child).await;
        assert!(exit.success(), "{exit:?}");
    }
    let (one, two) = (audit_rows(&schema1).await, audit_rows(&schema2).await);
    assert!(one.len() > 100, "the market alerted: {}", one.len());
    assert_eq!(one.len(), two.len());
    assert!(one == two, "the same alerts from one process and from two");
}

/// Telegram's limits are the bot's: two processes with half the partitions
/// each and one bot token send to the same chats, through a fake that
/// refuses anything over 1 message a second to a chat or 30 overall. They
/// share the limits in Redis (`telegram.limits`, by default `redis`), so
/// the fake refuses none, and every alert arrives once. (Each keeping its
/// own, 6 of 94 broke the limit.) About 8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_bot_keep_its_limits_together() {
    let _cleanup = Scratch::new("bot");
    let (prefix, schema) = (_cleanup.prefix.clone(), _cleanup.schema.clone());
    // 64 alerts to 30 chats, at most 5 to one.
    let lines = market_lines(1_000, 100, 30);
    let mut expected = expected_messages(&lines);
    assert!(expected.len() > 50, "the market alerts: {}", expected.len());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.enforce(Limits::default());
    // Database 8, or the server the environment names, as redis_url().
    let mut con = callwatch_testkit::servers::connect_redis(8).await;
    publish(&mut con, &prefix, 4, &lines).await.unwrap();
    let a = spawn_serve(&config(
        &prefix,
        &schema,
        4,
        &[0, 1],
        "a",
        Some(&fake.url()),
    ));
    // One process receives the bot's updates; both send.
    let path = config(&prefix, &schema, 4, &[2, 3], "b", Some(&fake.url()));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[telegram]\n", "[telegram]\nupdates = \"off\"\n"),
    )
    .unwrap();
    let b = spawn_serve(&path);

    let taken = || {
        let mut got: Vec<(i64, String)> = fake
            .received()
            .into_iter()
            .filter(|r| matches!(r.answer, Answer::Sent { .. }))
            .map(|r| (r.chat_id, r.text))
            .collect();
        got.sort();
        got
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(input_drained(&mut con, &prefix, 4).await && taken().len() >= expected.len()) {
        assert!(
            Instant::now() < deadline,
            "not done: {} of {} taken, {} refused over the limit",
            taken().len(),
            expected.len(),
            fake.over_limit()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in [a, b] {
        let exit = stop(child).await;
        assert!(exit.success(), "{exit:?}");
    }
    expected.sort();
    assert!(taken() == expected, "every alert once, nothing else");
    assert_eq!(fake.over_limit(), 0, "the strict fake refused none");
    assert_eq!(fake.max_in_window(Duration::from_secs(1)).per_chat, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_it_loses_no_alert() {
    let _cleanup = Scratch::new("kill");
    let (prefix, schema) = (_cleanup.prefix.clone(), _cleanup.schema.clone());
    let lines = market_lines(30_000, 200, 20);
    let expected = expected_messages(&lines);
    assert!(
        expected.len() > 100,
        "the market alerts: {}",
        expected.len()
    );

    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let mut con = connect().await;
    // A third of the market (the chats' setup first) is read and
    // acknowledged before the rest arrives, while the service runs; the
    // kill lands with entries of the rest read and not acknowledged. So the
    // restart must apply those again against the state it rebuilt, with
    // chat settings that only the chats stream holds.
    let head = lines.len() / 3;
    publish(&mut con, &prefix, 2, &lines[..head]).await.unwrap();
    let path = config(&prefix, &schema, 2, &[], "only", Some(&fake.url()));
    // Fast limits: the fake does not enforce Telegram's, and the test
    // wants the kill to land while alerts are flowing.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "[telegram]\n",
        "[telegram]\nper_chat_per_sec = 100.0\nglobal_per_sec = 400.0\n",
    );
    std::fs::write(&path, text).unwrap();
    let mut proc = spawn_serve(&path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !input_drained(&mut con, &prefix, 2).await {
        assert!(
            Instant::now() < deadline,
            "the first third never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publisher = {
        let (rest, prefix) = (lines[head..].to_vec(), prefix.clone());
        let mut con = con.clone();
        tokio::spawn(async move {
            for chunk in rest.chunks(100) {
                publish(&mut con, &prefix, 2, chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Killed (SIGKILL) once more alerts flow and entries are pending;
    // started and killed again if the kill happened to land between reads.
    let mut kills = 0;
    let before_restart = loop {
        assert!(kills < 5, "no kill landed with entries pending");
        let sent = fake.count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while fake.count() < sent + 20 || partitions_pending(&mut con, &prefix, 2).await == 0 {
            assert!(
                Instant::now() < deadline && !publisher.is_finished(),
                "no moment to kill: {} sent, publisher done: {}",
                fake.count(),
                publisher.is_finished()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proc.kill9();
        kills += 1;
        if partitions_pending(&mut con, &prefix, 2).await > 0 {
            break fake.count();
        }
        proc = spawn_serve(&path);
    };
    assert!(
        before_restart < expected.len(),
        "the kill landed mid-stream"
    );
    publisher.await.unwrap();

    let second = spawn_serve(&path);
    let outbox_key = format!("{prefix}callwatch:outbox");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let outbox: u64 = redis::cmd("XLEN")
            .arg(&outbox_key)
            .query_async(&mut con)
            .await
            .unwrap();
        if input_drained(&mut con, &prefix, 2).await
            && outbox == 0
            && fake.count() >= expected.len()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done: {} of {} sent, outbox {outbox}",
            fake.count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = stop(second).await;
    assert!(exit.success(), "{exit:?}");

    // Every alert arrived; nothing arrived that was not an alert; the
    // duplicates are those the first process had sent and not yet struck
    // off, bounded by what it had read and not acknowledged.
    let mut received: Vec<(i64, String)> = fake
        .received()
        .into_iter()
        .map(|r| (r.chat_id, r.text))
        .collect();
    let mut want = expected.clone();
    want.sort();
    received.sort();
    let mut missing = Vec::new();
    let mut rest = received.clone();
    for w in &want {
        match rest.iter().position(|r| r == w) {
            Some(i) => {
                rest.remove(i);
            }
            None => missing.push(w.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} alerts lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for extra in &rest {
        assert!(
            want.contains(extra),
            "a message that is no alert: {extra:?}"
        );
    }
    assert!(
        rest.len() <= before_restart,
        "{} duplicates, more than the {before_restart} sent before the kill",
        rest.len()
    );
    // The audit: one row per alert, exactly.
    assert_eq!(audit_rows(&schema).await.len(), expected.len());
}

/// A chat that floods the bot with commands delays no other chat's reply
/// by more than 2 s: over its rate its commands cost a lookup each and are
/// dropped (the first one told to slow down), and its replies fill its own
/// share of the sender's lane, not the lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_flooding_commands_delays_no_other_chats_reply() {
    let scratch = Scratch::new("flood");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));
    let running = spawn_serve(&config);
    let r = command(&fake, 42, 42, "/help").await;
    assert!(r.contains("/status"), "{r}");

    const FLOOD: i64 = 666;
    for _ in 0..3_000 {
        fake.push_text(FLOOD, FLOOD, "/status");
    }
    let asked = Instant::now();
    let r = command(&fake, 43, 43, "/help").await;
    let waited = asked.elapsed();
    assert!(r.contains("/status"), "{r}");
    eprintln!("during the flood, chat 43's /help was answered in {waited:?}");
    assert!(waited < Duration::from_secs(2), "chat 43 waited {waited:?}");

    // The flooder: its burst of 10 answered, then told once to slow down
    // (at one message a second to it), and nothing more.
    let to_flooder = || -> Vec<String> {
        fake.received()
            .into_iter()
            .filter(|r| r.chat_id == FLOOD)
            .map(|r| r.text)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while to_flooder().len() < 11 {
        assert!(Instant::now() < deadline, "{:#?}", to_flooder());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to_flooder = to_flooder();
    let told = to_flooder
        .iter()
        .filter(|t| t.contains("faster than I answer"))
        .count();
    assert_eq!((to_flooder.len(), told), (11, 1), "{to_flooder:#?}");
    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    drop(scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_change_settings_through_the_stream_and_answer_from_the_engine() {
    let scratch = Scratch::new("cmd");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));
    let mut con = connect().await;
    let now = redis_clock_now();
    let at = |secs: i64| engine::time::format_rfc3339(now + secs * 1_000_000_000);
    let token = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
    let running = spawn_serve(&config);

    // Settings are for subscribers: an admin's grant subscribes the chat
    // (a subscribe event on the chats stream, and the copy commands read).
    let r = command(&fake, ADMIN, ADMIN, "/grant 42 1").await;
    assert!(r.contains("Granted 1 day to <code>42</code>"), "{r}");

    // Settings: one caller is enough, and only channel -1001 counts.
    let r = command(&fake, 42, 42, "/min_callers 1").await;
    assert!(r.contains("Done"), "{r}");
    let r = command(&fake, 42, 42, "/follow -1001").await;
    assert!(r.contains("You follow 1 channel"), "{r}");
    let r = command(&fake, 42, 42, "/lookback 0").await;
    assert!(r.contains("Usage: <code>/lookback MINUTES</code>"), "{r}");

    // A call by a channel the chat does not follow alerts nothing; one by
    // -1001 alerts at once (one caller), and the price then triples.
    let event = |kind: &str, channel: Option<i64>, fdv: f64, secs: i64| {
        let channel = channel.map_or(String::new(), |c| format!(r#","channel_id":{c}"#));
        format!(
            r#"{{"type":"{kind}","at":"{}","token":"{token}"{channel},"fdv_usd":{fdv}}}"#,
            at(secs)
        )
    };
    publish(
        &mut con,
        &prefix,
        2,
        &[
            event("call", Some(-1002), 90_000.0, 0),
            event("call", Some(-1001), 100_000.0, 1),
            event("price", None, 300_000.0, 2),
        ],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.received().iter().filter(|r| r.chat_id == 42).count() < 5 {
        assert!(Instant::now() < deadline, "{:#?}", fake.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerts: Vec<String> = fake
        .received()
        .into_iter()
        .filter(|r| r.chat_id == 42)
        .skip(3)
        .map(|r| r.text)
        .collect();
    assert!(
        alerts[0].contains(token) && alerts[1].contains("2x"),
        "{alerts:#?}"
    );

    // Questions for the engine.
    let r = command(&fake, 42, 42, "/tracked").await;
    assert!(r.contains("$100K → $300K <b>3x</b>"), "{r}");
    let r = command(&fake, 42, 42, "/top").await;
    assert!(
        r.contains("2. -1001 (<code>-1001</code>): 1 · 100% · 3x"),
        "{r}"
    );
    assert!(
        r.contains("1. -1002 (<code>-1002</code>): 1 · 100% · 3.3x"),
        "{r}"
    );
    let r = command(&fake, 42, 42, "/status").await;
    assert!(
        r.contains("Tracked tokens: 1") && r.contains("Callers needed: 1"),
        "{r}"
    );

    // Admin commands: refused to others; a grant is a payment of record
    // and a subscribe event.
    let r = command(&fake, 42, 42, "/grant 99 30").await;
    assert!(r.contains("for the bot's admins"), "{r}");
    let r = command(&fake, ADMIN, ADMIN, "/grant 99 30").await;
    assert!(r.contains("Granted 30 days to <code>99</code>"), "{r}");
    let r = command(&fake, ADMIN, ADMIN, "/stats").await;
    assert!(r.contains("tracked keys: <b>1</b>"), "{r}");

    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");

    // The chats stream holds the settings as engine events.
    let chats: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}events:chats"))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let lines: Vec<&str> = chats.iter().map(|(_, f)| f[0].1.as_str()).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[1].contains(r#""type":"settings""#) && lines[1].contains(r#""min_callers":1"#));
    assert!(lines[2].contains(r#""follow":[-1001]"#), "{lines:#?}");
    assert!(
        lines[3].contains(r#""type":"subscribe""#) && lines[3].contains(r#""chat_id":99"#),
        "{lines:#?}"
    );

    // PostgreSQL: the grant with its admin, and every command logged.
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let grant = client
        .query_one(
            &format!(
                "SELECT chat_id, payment_method, granted_by, days FROM \"{schema}\".payments \
                 WHERE chat_id = 99"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            grant.get::<_, i64>(0),
            grant.get::<_, String>(1),
            grant.get::<_, Option<i64>>(2),
            grant.get::<_, i32>(3)
        ),
        (99, "grant".to_owned(), Some(ADMIN), 30)
    );
    let logged: Vec<String> = client
        .query(
            &format!("SELECT activity_type FROM \"{schema}\".activity_log ORDER BY created_at"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 10, "{logged:?}");
    assert!(
        logged.contains(&"command:grant".to_owned())
            && logged.contains(&"command:invalid".to_owned()),
        "{logged:?}"
    );
    drop(scratch);
}

/// Waits for a message to `chat` that contains `needle`; returns it.
async fn message_with(fake: &FakeBotApi, chat: i64, needle: &str) -> String {
    received_with(fake, chat, needle).await.text
}

/// The first message to `chat` whose text (or caption) holds `needle`, as
/// the fake received it, waited for up to 30 s.
async fn received_with(fake: &FakeBotApi, chat: i64, needle: &str) -> Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = fake
            .received()
            .into_iter()
            .find(|r| r.chat_id == chat && r.text.contains(needle))
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no message with {needle:?} to {chat}: {:#?}",
            fake.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_paid_in_sol_is_confirmed_and_turns_alerts_on() {
    use callwatch_testkit::fake_rpc::{FakeRpc, pubkey, transfer};

    let scratch = Scratch::new("pay");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let rpc = FakeRpc::start().await.unwrap();
    let (us, payer) = (pubkey(1), pubkey(2));
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[payments]\nrpc_url = \"{}\"\nreceiving_address = \"{us}\"\npoll_interval_ms = 100\nretry_min_ms = 50\n",
        rpc.url()
    ));
    std::fs::write(&config, text).unwrap();
    let running = spawn_serve(&config);

    let r = command(&fake, 42, 42, "/subscribe").await;
    assert!(r.contains("<b>week</b>: 7 days for 0.25 SOL"), "{r}");
    let r = command(&fake, 42, 42, "/subscribe week").await;
    let reference = r
        .split("reference key\n<code>")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .unwrap_or_else(|| panic!("no reference in {r}"))
        .to_owned();
    assert!(r.contains(&format!("<code>{us}</code>")), "{r}");
    let r = command(&fake, 42, 42, "/min_callers 1").await;
    assert!(r.contains("Settings are for subscribers"), "{r}");

    // Paid in full: credited, confirmed, and the engine alerts the chat.
    let signature = rpc.add(transfer(&payer, &us, 250_000_000).reference(&reference));
    let r = message_with(&fake, 42, "Payment received").await;
    assert!(r.contains("0.25 SOL for <b>week</b> (7 days)"), "{r}");
    let r = command(&fake, 42, 42, "/min_callers 1").await;
    assert!(r.contains("Done"), "{r}");
    let now = redis_clock_now();
    let mut con = connect().await;
    publish(
        &mut con,
        &prefix,
        2,
        &[format!(
            r#"{{"type":"call","at":"{}","token":"JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN","channel_id":-1001,"fdv_usd":50000}}"#,
            engine::time::format_rfc3339(now)
        )],
    )
    .await
    .unwrap();
    message_with(&fake, 42, "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN").await;

    // A transfer that names no quote: kept, the admin told, then resolved.
    let stray = rpc.add(transfer(&payer, &us, 800_000_000));
    let r = message_with(&fake, ADMIN, "Unmatched payment").await;
    assert!(r.contains(&stray), "{r}");
    let r = command(&fake, ADMIN, ADMIN, "/unmatched").await;
    assert!(r.contains(&format!("<code>{stray}</code>\n0.8 SOL")), "{r}");
    let r = command(&fake, ADMIN, ADMIN, &format!("/resolve {stray} 43 month")).await;
    assert!(r.contains("Credited to <code>43</code> as month"), "{r}");
    let r = command(&fake, ADMIN, ADMIN, &format!("/resolve {stray} 43 month")).await;
    assert!(r.contains("already resolved by 7"), "{r}");

    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT chat_id, signature, plan FROM \"{schema}\".payments ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (42, signature, "week".to_owned()),
            (43, stray, "month".to_owned())
        ]
    );
    drop(scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webhook_mode_only_updates_with_the_secret_are_answered() {
    use callwatch_testkit::fake_bot::{deliver_update, text_update};

    let scratch = Scratch::new("hook");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let secret = "hook_Secret-1";
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("admins = [{ADMIN}]\n"),
        &format!(
            "admins = [{ADMIN}]\nupdates = \"webhook\"\nwebhook_url = \"https://bot.example.test/tg\"\n\
             webhook_listen = \"{listen}\"\nwebhook_secret = \"{secret}\"\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let running = spawn_serve(&config);

    // serve tells Telegram where to post, with the secret.
    let deadline = Instant::now() + Duration::from_secs(20);
    let hook = loop {
        if let Some(hook) = fake.webhook() {
            break hook;
        }
        assert!(Instant::now() < deadline, "setWebhook never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hook.url, "https://bot.example.test/tg");
    assert_eq!(hook.secret_token.as_deref(), Some(secret));

    // Without the secret, or with a wrong one: refused, and never answered.
    let forged = text_update(1, 42, 42, "/min_callers 1");
    assert_eq!(
        deliver_update(listen, "/tg", None, &forged).await.unwrap(),
        401
    );
    assert_eq!(
        deliver_update(listen, "/tg", Some("guess"), &forged)
            .await
            .unwrap(),
        401
    );
    // With it: answered.
    let real = text_update(2, 42, 42, "/help");
    assert_eq!(
        deliver_update(listen, "/tg", Some(secret), &real)
            .await
            .unwrap(),
        200
    );
    let r = message_with(&fake, 42, "Commands").await;
    assert!(r.contains("/min_callers N"), "{r}");

    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    let to_42: Vec<String> = fake
        .received()
        .into_iter()
        .filter(|r| r.chat_id == 42)
        .map(|r| r.text)
        .collect();
    assert_eq!(
        to_42.len(),
        1,
        "only the update with the secret: {to_42:#?}"
    );
    assert_eq!(fake.webhook(), None, "the webhook is deleted at stop");
    drop(scratch);
}

/// [2.2] end to end: a channel posts an address; the bot, which is in the
/// channel, receives the post; the sources value the token at DexScreener
/// (a fake with a strict limit) and publish the call; it alerts a chat
/// whose settings match; the fake's value then moves and the sources'
/// price becomes a multiplier alert in that chat. The fake never had to
/// refuse a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_post_becomes_a_call_and_the_dex_price_a_multiplier_alert_with_its_chart() {
    use callwatch_testkit::fake_dex::{Api, FakeDex};
    let scratch = Scratch::new("src");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let dex = FakeDex::start(Api::DexScreener, 30).await.unwrap();
    let token = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
    dex.set("solana", token, Some(100_000.0));
    // A debug build draws a chart in about 0.2 s: the wait for charts
    // (`charts.wait_ms`) is made long enough for a busy machine.
    let path = std::env::temp_dir().join(format!("callwatch-{prefix}sources.toml"));
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n\
             [postgres]\nurl = \"{}\"\nschema = \"{schema}\"\n\
             [telegram]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\n\
             [ingest]\npartitions = 2\nblock_ms = 50\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\
             [engine]\nshards = 2\npin_threads = false\n\
             [sources]\nconsumer = \"e2e\"\n\
             [sources.schedule]\nurgent_interval_secs = 1\nceiling_secs = 5\n\
             [sources.dexscreener]\nurl = \"{}\"\nrequests_per_minute = 30\n\
             [sources.geckoterminal]\nenabled = false\n\
             [snapshot]\nenabled = false\n\
             [charts]\nwait_ms = 5000\n",
            redis_url(),
            database_url(),
            fake.url(),
            free_port(),
            dex.url(),
        ),
    )
    .unwrap();
    let mut con = connect().await;
    // Dated by Redis's clock, as Telegram's posts and the sources' prices
    // are (the clock that stamps the streams' entries).
    let now = callwatch_testkit::redis_now(&mut con).await;
    let at = |secs: i64| engine::time::format_rfc3339(now + secs * 1_000_000_000);
    publish(
        &mut con,
        &prefix,
        2,
        &[
            format!(
                r#"{{"type":"subscribe","at":"{}","chat_id":42,"expires_at":"{}"}}"#,
                at(-60),
                at(86_400)
            ),
            format!(
                r#"{{"type":"settings","at":"{}","chat_id":42,"min_callers":1}}"#,
                at(-60)
            ),
        ],
    )
    .await
    .unwrap();
    let running = spawn_serve(&path);

    fake.push_post(
        -1_001_777,
        "Alpha Calls",
        now / 1_000_000_000,
        &format!("New gem 🚀 CA: {token}"),
        &[],
        None,
    );
    let call = message_with(&fake, 42, token).await;
    assert!(call.contains("Alpha Calls"), "the channel's name: {call}");
    dex.set("solana", token, Some(260_000.0));
    let multiple = received_with(&fake, 42, "2x").await;
    assert!(
        multiple.text.contains(token) || multiple.text.contains("2.6"),
        "{multiple:?}"
    );
    // The multiplier alert came as a photo: its chart, captioned by it.
    let chart = multiple
        .photo
        .as_deref()
        .expect("the alert carries its chart");
    assert_eq!(
        png_size(chart),
        (callwatch_charts::WIDTH, callwatch_charts::HEIGHT)
    );
    assert!(matches!(multiple.answer, Answer::Sent { .. }));
    // Turned off, the next one comes as text.
    let reply = command(&fake, 42, 42, "/charts off").await;
    assert!(reply.contains("without a chart"), "{reply}");
    dex.set("solana", token, Some(600_000.0));
    let five = received_with(&fake, 42, "5x").await;
    assert!(
        five.photo.is_none(),
        "charts are off for the chat, yet a photo came: {}",
        five.text
    );

    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(dex.rate_limited(), 0, "the sources kept to the limit");
    assert!(dex.max_in_minute() <= 30);
    let metrics_seen = dex.requests();
    assert!(
        metrics_seen >= 2,
        "asked for the call and the price: {metrics_seen}"
    );
    let _ = std::fs::remove_file(&path);
}

/// Width and height of a PNG, decoding it whole.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(bytes).read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG pixel data");
    (info.width, info.height)
}

/// `callwatch feed` runs the sources alone: a post a reader appended to the
/// raw-posts stream becomes a call event in the input streams, and SIGTERM
/// stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_alone_turns_raw_posts_into_call_events() {
    use callwatch_testkit::fake_dex::{Api, FakeDex};
    let scratch = Scratch::new("feed");
    let prefix = scratch.prefix.clone();
    let dex = FakeDex::start(Api::DexScreener, 60).await.unwrap();
    let token = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
    dex.set("solana", token, Some(77_000.0));
    let path = std::env::temp_dir().join(format!("callwatch-{prefix}feed.toml"));
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n[ingest]\npartitions = 2\n\
             [sources.dexscreener]\nurl = \"{}\"\n[sources.geckoterminal]\nenabled = false\n",
            redis_url(),
            dex.url()
        ),
    )
    .unwrap();
    let mut con = connect().await;
    let date = callwatch_testkit::redis_now(&mut con).await / 1_000_000_000;
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}posts:raw"))
        .arg("*")
        .arg("post")
        .arg(format!(
            r#"{{"chat_id":-1009,"message_id":3,"date":{date},"text":"CA {token}"}}"#
        ))
        .query_async(&mut con)
        .await
        .unwrap();
    let running = Proc(Some(
        Command::new(env!("CARGO_BIN_EXE_callwatch"))
            .args(["feed", "--config"])
            .arg(&path)
            .env("CALLWATCH_LOG_LEVEL", "warn")
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let mut found = None;
        for p in 0..2 {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(format!("{prefix}events:{p}"))
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await
                .unwrap();
            found = found.or(entries.into_iter().next().map(|(_, f)| f[0].1.clone()));
        }
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no call event from callwatch feed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        event.contains(r#""type":"call""#) && event.contains(token) && event.contains("77000"),
        "{event}"
    );
    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_file(&path);
}

/// Every Redis key of `prefix` that matches `pattern` (after the prefix).
async fn keys_matching(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    pattern: &str,
) -> std::collections::HashSet<String> {
    let mut keys = std::collections::HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}{pattern}"))
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// [2.3]: a change the write-behind had no room for used to be dropped,
/// and its input acknowledged all the same. Now the keeper waits for room,
/// and the reader behind it: every state key the engine decided lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_behind_holds_the_input_back_and_loses_no_state() {
    let scratch = Scratch::new("wbfull");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let lines = market_lines(6_000, 100, 20);
    // What the engine decides: a tracking and a processed record per call
    // alert, a calls record per (token, channel) called.
    let (mut tracked, mut called) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    {
        let mut ingest = engine::ingest::Ingest::new();
        let config = engine::EngineConfig {
            shards: 1,
            pin_threads: false,
            ..engine::EngineConfig::default()
        };
        let (mut router, mut effects, workers) = engine::router::start(&config).unwrap();
        let collect = std::thread::spawn(move || {
            let mut pairs = Vec::new();
            while let Some(batch) = effects.next_batch().unwrap() {
                for e in batch {
                    if let engine::effect::Effect::CallAlert(a) = e {
                        pairs.push(format!("{}:{}", a.token, a.chat_id));
                    }
                }
            }
            pairs
        });
        for line in &lines {
            if let engine::ingest::Outcome::Event(env) = ingest.line(line) {
                if let engine::Event::Call {
                    token, channel_id, ..
                } = &env.event
                {
                    called.insert(format!("{prefix}calls:{token}:{channel_id}"));
                }
                router.submit(env).unwrap();
            }
        }
        router.finish().unwrap();
        workers.join().unwrap();
        for pair in collect.join().unwrap() {
            tracked.insert(pair);
        }
    }
    assert!(tracked.len() > 50, "the market alerts: {}", tracked.len());

    let mut con = connect().await;
    publish(&mut con, &prefix, 2, &lines).await.unwrap();
    // Room for 8 keys: a call alert to every follower of a channel is more.
    let path = config(&prefix, &schema, 2, &[], "only", None);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[write_behind]\ncapacity = 8\nbatch_keys = 4\n");
    std::fs::write(&path, text).unwrap();
    let proc = spawn_serve(&path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !input_drained(&mut con, &prefix, 2).await {
        assert!(Instant::now() < deadline, "the input never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = stop(proc).await;
    assert!(exit.success(), "{exit:?}");

    let with_prefix = |kind: &str, pairs: &std::collections::HashSet<String>| {
        pairs
            .iter()
            .map(|p| format!("{prefix}{kind}:{p}"))
            .collect::<std::collections::HashSet<_>>()
    };
    let multiplier = keys_matching(&mut con, &prefix, "multiplier:*").await;
    let processed = keys_matching(&mut con, &prefix, "processed_token:*").await;
    let calls = keys_matching(&mut con, &prefix, "calls:*").await;
    assert_eq!(
        multiplier.len(),
        tracked.len(),
        "tracking records: {} of {}",
        multiplier.len(),
        tracked.len()
    );
    assert_eq!(multiplier, with_prefix("multiplier", &tracked));
    assert_eq!(processed, with_prefix("processed_token", &tracked));
    assert_eq!(calls, called);
}

/// [2.3]: the chats stream grew with every command ever sent, and every
/// start read all of it. `serve` compacts it at start: 300 settings changes
/// of one chat leave its subscribe and one merged entry, the engine decides
/// with the settings the chat had, and `/metrics` counts what went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_compacts_the_chats_stream_at_start_and_each_chat_keeps_its_settings() {
    let scratch = Scratch::new("compact");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let config = config(&prefix, &schema, 2, &[], "one", None);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "block_ms = 50\n",
        "block_ms = 50\ncompact_horizon_secs = 0\n",
    );
    std::fs::write(&config, text).unwrap();
    let now = redis_clock_now();
    let at = |secs: i64| engine::time::format_rfc3339(now + secs * 1_000_000_000);
    // Last set: one caller is enough, and only channel -1001 counts.
    let mut lines = vec![format!(
        r#"{{"type":"subscribe","at":"{}","chat_id":42,"expires_at":"{}"}}"#,
        at(0),
        at(86_400)
    )];
    lines.extend((0..300).map(|i| {
        let change = match i % 3 {
            0 => r#""min_callers":3"#.to_owned(),
            1 => format!(r#""follow":[{}]"#, -1001 - i % 2),
            _ => r#""min_callers":1"#.to_owned(),
        };
        format!(
            r#"{{"type":"settings","at":"{}","chat_id":42,{change}}}"#,
            at(0)
        )
    }));
    let mut con = connect().await;
    publish(&mut con, &prefix, 2, &lines).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let running = spawn_serve(&config);

    // Compacted before anything is read: a subscribe and the settings.
    let chats = redis::cmd("XLEN")
        .arg(format!("{prefix}events:chats"))
        .clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let len @ 3.. = chats.query_async::<usize>(&mut con).await.unwrap() {
        assert!(Instant::now() < deadline, "{len} entries left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = |token: &str, channel: i64| {
        format!(
            r#"{{"type":"call","at":"{}","token":"{token}","channel_id":{channel},"fdv_usd":50000}}"#,
            at(1)
        )
    };
    let (followed, other) = (
        "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN",
        "So11111111111111111111111111111111111111112",
    );
    publish(
        &mut con,
        &prefix,
        2,
        &[call(other, -1002), call(followed, -1001)],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys_matching(&mut con, &prefix, "processed_token:*")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no call alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listen = listen_of(&config);
    let metrics = tokio::task::spawn_blocking(move || {
        callwatch_service::ops::get(&listen, "/metrics").unwrap().1
    })
    .await
    .unwrap();
    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        keys_matching(&mut con, &prefix, "processed_token:*").await,
        [format!("{prefix}processed_token:{followed}:42")].into()
    );
    for line in [
        "callwatch_chats_compacted_total{entries=\"deleted\"} 300",
        "callwatch_chats_compacted_total{entries=\"merged\"} 1",
        "callwatch_chats_compactions_total{outcome=\"done\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    drop(scratch);
}
