//! The feed against the machine's Redis (database 6, a key prefix of each
//! test's own) and fakes of DexScreener and GeckoTerminal: posts become
//! calls with their value, an edit calls only what it adds, prices follow
//! and are published only when they change, a dead source holds calls
//! back until it returns or their wait runs out (then they are set aside
//! with the reason), and no source is asked past its limit.

use std::time::{Duration, Instant};

use callwatch_common::keys::{dead_letter_key, posts_key, source_calls_key};
use callwatch_feed::posts::Post;
use callwatch_feed::{Feed, FeedConfig};
use callwatch_ingest::stream::Route;
use callwatch_testkit::fake_dex::{Api, FakeDex};
use engine::event::Event;
use engine::parse::LineParser;
use engine::time::NANOS_PER_SEC;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
const BONK: &str = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
const PEPE: &str = "0x6982508145454ce325ddbe47a25d4ec3d2311933";
const PARTITIONS: u32 = 2;

fn config(dex: &FakeDex, gecko: Option<&FakeDex>, per_minute: u32) -> FeedConfig {
    let mut c = FeedConfig::default();
    c.dexscreener.url = dex.url();
    c.dexscreener.requests_per_minute = per_minute;
    c.dexscreener.timeout_ms = 2_000;
    match gecko {
        Some(g) => {
            c.geckoterminal.url = g.url();
            c.geckoterminal.timeout_ms = 2_000;
        }
        None => c.geckoterminal.enabled = false,
    }
    c.schedule.urgent_interval_secs = 1;
    c.schedule.ceiling_secs = 2;
    c
}

/// A running feed: its stop, and its task.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), callwatch_feed::FeedError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

async fn start(config: FeedConfig, prefix: &str) -> Running {
    let con = callwatch_streams::connection::managed_connection(
        &callwatch_testkit::redis_url(6),
        &Default::default(),
    )
    .unwrap();
    let feed = Feed::new(config, prefix, PARTITIONS, 168 * 3600 * NANOS_PER_SEC, con).unwrap();
    let (stop, rx) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(feed.run(rx)),
    }
}

async fn post(con: &mut MultiplexedConnection, prefix: &str, post: &Post) {
    let _: String = redis::cmd("XADD")
        .arg(posts_key(prefix))
        .arg("*")
        .arg("post")
        .arg(post.encode())
        .query_async(con)
        .await
        .unwrap();
}

/// A post dated a second ago by Redis's clock (the one that stamps its
/// entry).
async fn a_post(message_id: i64, text: &str) -> Post {
    let mut con = callwatch_testkit::connect_redis(6).await;
    Post {
        chat_id: -1_001_234,
        message_id,
        date: callwatch_testkit::redis_now(&mut con).await - NANOS_PER_SEC,
        text: text.to_owned(),
        links: Vec::new(),
        edited: false,
        chat_title: Some("Alpha Calls".to_owned()),
        chat_username: None,
    }
}

/// Every event published so far, parsed.
async fn events(con: &mut MultiplexedConnection, prefix: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut parser = LineParser::new();
    for p in 0..PARTITIONS {
        let key = callwatch_common::keys::stream_key(prefix, Route::Partition(p));
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(con)
            .await
            .unwrap();
        for (_, fields) in entries {
            out.push(parser.parse(fields[0].1.as_bytes()).unwrap());
        }
    }
    out.sort_by_key(Event::at);
    out
}

fn calls(events: &[Event]) -> Vec<(String, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Call { token, fdv_usd, .. } => Some((token.to_string(), *fdv_usd)),
            _ => None,
        })
        .collect()
}

fn prices(events: &[Event]) -> Vec<(String, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Price { token, fdv_usd, .. } => Some((token.to_string(), *fdv_usd)),
            _ => None,
        })
        .collect()
}

async fn xlen(con: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(con).await.unwrap()
}

/// Waits up to `secs` for `check` to hold.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_becomes_a_call_with_its_value_and_then_prices_follow_their_changes() {
    let keys = callwatch_testkit::OwnPrefix::new("cw-test-feed", 6);
    let prefix = keys.prefix.clone();
    let dex = FakeDex::start(Api::DexScreener, 300).await.unwrap();
    dex.set("solana", JUP, Some(125_000.0));
    let mut con = callwatch_testkit::connect_redis(6).await;
    post(
        &mut con,
        &prefix,
        &a_post(1, &format!("CA: {JUP} 🚀")).await,
    )
    .await;
    let feed = start(config(&dex, None, 300), &prefix).await;

    eventually(10, "the call", || {
        let (mut con, prefix) = (con.clone(), prefix.clone());
        async move { !calls(&events(&mut con, &prefix).await).is_empty() }
    })
    .await;
    let all = events(&mut con, &prefix).await;
    assert_eq!(
        calls(&all),
        [(JUP.to_owned(), 125_000.0)],
        "the deep pair's fdv"
    );
    let Event::Call { channel_id, .. } = all[0] else {
        panic!("{all:?}")
    };
    assert_eq!(channel_id, -1_001_234);
    eventually(5, "the post acknowledged and deleted", || {
        let (mut con, key) = (con.clone(), posts_key(&prefix));
        async move { xlen(&mut con, &key).await == 0 }
    })
    .await;
    assert_eq!(xlen(&mut con, &source_calls_key(&prefix)).await, 1);
    let name: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}channel:-1001234:info"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(name.unwrap().contains("Alpha Calls"));

    // The value moves: a price event; then it stays: no more of them.
    dex.set("solana", JUP, Some(260_000.0));
    eventually(10, "the price", || {
        let (mut con, prefix) = (con.clone(), prefix.clone());
        async move { !prices(&events(&mut con, &prefix).await).is_empty() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = dex.requests();
    assert!(asked >= 3, "polled again and again: {asked}");
    feed.stop().await;
    assert_eq!(
        prices(&events(&mut con, &prefix).await),
        [(JUP.to_owned(), 260_000.0)],
        "an unchanged value is not published again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_calls_only_the_addresses_it_adds_and_bad_posts_are_set_aside() {
    let keys = callwatch_testkit::OwnPrefix::new("cw-test-feed", 6);
    let prefix = keys.prefix.clone();
    let dex = FakeDex::start(Api::DexScreener, 300).await.unwrap();
    dex.set("solana", JUP, Some(1_000.0));
    dex.set("solana", BONK, Some(2_000.0));
    let mut con = callwatch_testkit::connect_redis(6).await;
    post(&mut con, &prefix, &a_post(7, &format!("CA {JUP}")).await).await;
    let mut edit = a_post(7, &format!("CA {JUP}, and {BONK} too")).await;
    edit.edited = true;
    post(&mut con, &prefix, &edit).await;
    let mut future = a_post(8, BONK).await;
    future.date += 3_600 * NANOS_PER_SEC;
    post(&mut con, &prefix, &future).await;
    let _: String = redis::cmd("XADD")
        .arg(posts_key(&prefix))
        .arg("*")
        .arg("post")
        .arg("{not json")
        .query_async(&mut con)
        .await
        .unwrap();
    let feed = start(config(&dex, None, 300), &prefix).await;
    eventually(10, "every post handled", || {
        let (mut con, key) = (con.clone(), posts_key(&prefix));
        async move { xlen(&mut con, &key).await == 0 }
    })
    .await;
    feed.stop().await;
    let mut got = calls(&events(&mut con, &prefix).await);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [(BONK.to_owned(), 2_000.0), (JUP.to_owned(), 1_000.0)],
        "each address called once, the edit's new one included"
    );
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(dead_letter_key(&prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let reasons: Vec<&str> = dead
        .iter()
        .flat_map(|(_, f)| {
            f.iter()
                .filter(|(k, _)| k == "reason")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("dated in the future")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not a post")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_source_holds_calls_back_until_it_returns_and_the_other_stands_in() {
    let keys = callwatch_testkit::OwnPrefix::new("cw-test-feed", 6);
    let prefix = keys.prefix.clone();
    let dex = FakeDex::start(Api::DexScreener, 300).await.unwrap();
    let gecko = FakeDex::start(Api::GeckoTerminal, 300).await.unwrap();
    // GeckoTerminal knows PEPE only; DexScreener knows JUP, and is down.
    gecko.set("eth", PEPE, Some(42_000.0));
    dex.set("solana", JUP, Some(5_000.0));
    dex.down().await;
    let mut con = callwatch_testkit::connect_redis(6).await;
    post(
        &mut con,
        &prefix,
        &a_post(1, &format!("{JUP} and {PEPE}")).await,
    )
    .await;
    let feed = start(config(&dex, Some(&gecko), 300), &prefix).await;
    eventually(10, "PEPE's call from GeckoTerminal", || {
        let (mut con, prefix) = (con.clone(), prefix.clone());
        async move { calls(&events(&mut con, &prefix).await).len() == 1 }
    })
    .await;
    assert_eq!(
        xlen(&mut con, &posts_key(&prefix)).await,
        1,
        "JUP still waits"
    );
    dex.up().await.unwrap();
    // Within the source's pause and a call's retry (15 s).
    eventually(60, "JUP's call once DexScreener is back", || {
        let (mut con, prefix) = (con.clone(), prefix.clone());
        async move { calls(&events(&mut con, &prefix).await).len() == 2 }
    })
    .await;
    feed.stop().await;
    assert_eq!(xlen(&mut con, &posts_key(&prefix)).await, 0);
    assert_eq!(xlen(&mut con, &dead_letter_key(&prefix)).await, 0);
    let mut got = calls(&events(&mut con, &prefix).await);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [(PEPE.to_owned(), 42_000.0), (JUP.to_owned(), 5_000.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_can_value_is_set_aside_with_the_reason_after_its_wait() {
    let keys = callwatch_testkit::OwnPrefix::new("cw-test-feed", 6);
    let prefix = keys.prefix.clone();
    let dex = FakeDex::start(Api::DexScreener, 300).await.unwrap();
    let mut c = config(&dex, None, 300);
    c.call_value_wait_secs = 3;
    let mut con = callwatch_testkit::connect_redis(6).await;
    post(&mut con, &prefix, &a_post(2, BONK).await).await;
    let feed = start(c, &prefix).await;
    eventually(20, "BONK set aside", || {
        let (mut con, key) = (con.clone(), dead_letter_key(&prefix));
        async move { xlen(&mut con, &key).await == 1 }
    })
    .await;
    feed.stop().await;
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(dead_letter_key(&prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let field = |k: &str| dead[0].1.iter().find(|(f, _)| f == k).unwrap().1.clone();
    let reason = field("reason");
    assert!(
        reason.contains(BONK) && reason.contains("within 3 s"),
        "{reason}"
    );
    assert!(field("post").contains(BONK), "the post is kept with it");
    assert_eq!(xlen(&mut con, &posts_key(&prefix)).await, 0, "acknowledged");
    assert!(calls(&events(&mut con, &prefix).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_source_is_asked_past_its_limit() {
    let keys = callwatch_testkit::OwnPrefix::new("cw-test-feed", 6);
    let prefix = keys.prefix.clone();
    // A strict fake: 20 a minute; the feed is allowed the same.
    let dex = FakeDex::start(Api::DexScreener, 20).await.unwrap();
    let mut con = callwatch_testkit::connect_redis(6).await;
    // 120 tokens, 4 requests' worth, each urgent every second: far more
    // than 20 requests a minute would serve.
    let mut text = String::new();
    for i in 0..120u8 {
        let mut bytes = [i.wrapping_add(1); 32];
        bytes[0] = 0xAB;
        let t = engine::token::Token::solana(bytes).to_string();
        dex.set("solana", &t, Some(1_000.0 + f64::from(i)));
        text.push_str(&t);
        text.push(' ');
    }
    post(&mut con, &prefix, &a_post(1, &text).await).await;
    let feed = start(config(&dex, None, 20), &prefix).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    feed.stop().await;
    assert_eq!(dex.rate_limited(), 0, "never answered 429");
    assert!(
        dex.max_in_minute() <= 20,
        "{} in a minute",
        dex.max_in_minute()
    );
    assert!(dex.requests() >= 4, "it asked: {}", dex.requests());
    assert_eq!(calls(&events(&mut con, &prefix).await).len(), 120);
}
