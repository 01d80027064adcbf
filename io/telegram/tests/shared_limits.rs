//! Telegram's limits are the bot's: two senders with one bot token, each
//! with a Redis connection of its own (as two `serve` processes have),
//! sending to the same chats through one fake Bot API that refuses
//! anything over the limits. Sharing the limits in Redis, they keep them
//! together; the same two without sharing break them. Then Redis going
//! away: nothing leaves until it is back. The machine's Redis (database
//! 12, a key prefix per test: its keys expire within a minute, and are
//! deleted at the end) or one of the test's own.

use std::collections::HashMap;
use std::time::Duration;

use callwatch_streams::connection::{RedisTimeouts, managed_connection};
use callwatch_telegram::BotToken;
use callwatch_telegram::sender::{
    Report, Sender, SenderConfig, SenderStats, SenderTask, SharedLimits,
};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Limits, max_in_window};
use callwatch_testkit::own_redis::OwnRedis;
use callwatch_testkit::servers::{connect_redis, redis_url, unique};
use tokio::sync::mpsc;

mod common;
use common::{TOKEN, alert, reports_until};

const DB: u8 = 12;

type Started = (Sender, mpsc::Receiver<Report>, SenderTask);

/// A sender of the bot at `url`'s Redis, sharing its limits under
/// `prefix`, or keeping them alone when `prefix` is `None`.
fn sender(fake: &FakeBotApi, url: &str, prefix: Option<&str>, config: &SenderConfig) -> Started {
    let config = SenderConfig {
        api_url: fake.url(),
        ..config.clone()
    };
    let token = BotToken::new(TOKEN);
    let Some(prefix) = prefix else {
        return Sender::start(token, config).unwrap();
    };
    let con = managed_connection(url, &RedisTimeouts::default()).unwrap();
    let shared = SharedLimits::new(con, prefix, &token);
    Sender::start_shared(token, config, shared).unwrap()
}

/// Two senders of one bot: `rounds` alerts to each of `chats` from each,
/// the first's numbered from 0, the second's from 1,000. Every report is
/// read; the stats of each, once closed.
async fn two_send(
    fake: &FakeBotApi,
    prefix: Option<&str>,
    config: &SenderConfig,
    chats: &[i64],
    rounds: usize,
) -> [SenderStats; 2] {
    let url = redis_url(DB);
    let senders = [0, 1000].map(|base| (base, sender(fake, &url, prefix, config)));
    let mut stats = Vec::new();
    let mut running = Vec::new();
    for (base, (s, mut reports, task)) in senders {
        for i in 0..rounds {
            for &chat in chats {
                s.try_send(alert(chat, base + i)).unwrap();
            }
        }
        let n = rounds * chats.len();
        running.push(tokio::spawn(async move {
            let got = reports_until(&mut reports, Duration::from_secs(60), |r| r.len() >= n).await;
            assert!(
                got.iter().all(|r| matches!(r, Report::Sent { .. })),
                "{got:?}"
            );
            task.close(Duration::from_secs(5)).await
        }));
    }
    for r in running {
        let closed = r.await.unwrap();
        assert!(closed.unsent.is_empty());
        stats.push(closed.stats);
    }
    [stats[0], stats[1]]
}

/// Each alert the two sent reached the fake exactly once (taken), and each
/// sender's alerts to a chat arrived in the order queued.
fn each_once_in_order(fake: &FakeBotApi, chats: &[i64], rounds: usize) {
    let received = fake.received();
    let mut taken: HashMap<i64, Vec<String>> = HashMap::new();
    for r in received
        .iter()
        .filter(|r| matches!(r.answer, Answer::Sent { .. }))
    {
        taken.entry(r.chat_id).or_default().push(r.text.clone());
    }
    for &chat in chats {
        let got = &taken[&chat];
        for base in [0, 1000] {
            let mine: Vec<&String> = got
                .iter()
                .filter(|t| (base..base + rounds).any(|i| **t == format!("alert {i} to {chat}")))
                .collect();
            let want: Vec<String> = (base..base + rounds)
                .map(|i| format!("alert {i} to {chat}"))
                .collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "chat {chat}");
        }
        assert_eq!(
            got.len(),
            2 * rounds,
            "chat {chat}: nothing else, nothing twice"
        );
    }
}

/// Every key of the shared limits expires, within the longest time one can
/// hold a send back: the lease (the request timeout and 2 s) or the group
/// window. Then they are deleted.
async fn keys_expire(prefix: &str, config: &SenderConfig) {
    let mut con = connect_redis(DB).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the limits were kept under {prefix}");
    let lease = config.request_timeout + Duration::from_secs(3);
    let longest = lease.max(config.group_window).as_millis() as i64;
    for key in keys {
        assert!(
            key.starts_with(&format!("{prefix}telegram:limits:{{")),
            "{key}"
        );
        assert!(!key.contains(TOKEN) && !key.contains("123456789"), "{key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= longest, "{key}: PTTL {ttl}");
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
    }
}

/// Two senders sharing the bot's limits, against a fake enforcing
/// `limits`: `rounds` alerts each to each of `chats`. The fake refuses
/// none, every alert arrives once and each sender's in order, both send,
/// and the keys expire. The fake and the senders' stats, for more checks.
async fn shared_run(
    test: &str,
    limits: Limits,
    config: &SenderConfig,
    chats: &[i64],
    rounds: usize,
) -> (FakeBotApi, [SenderStats; 2]) {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.enforce(limits);
    let prefix = format!("{}:", unique(test));
    let stats = two_send(&fake, Some(&prefix), config, chats, rounds).await;
    assert_eq!(fake.over_limit(), 0, "the strict fake refused none");
    assert_eq!(fake.too_many_requests(), 0);
    each_once_in_order(&fake, chats, rounds);
    assert!(stats.iter().all(|s| s.sent > 0), "both sent: {stats:?}");
    assert!(stats.iter().all(|s| s.shared_unavailable == 0), "{stats:?}");
    keys_expire(&prefix, config).await;
    (fake, stats)
}

const PRIVATE_AND_GROUP: [i64; 8] = [1, 2, 3, 4, 5, 6, 7, -1001];
const SECOND: Duration = Duration::from_secs(1);

/// The fake refuses more than `per_chat` to a chat or `overall` in any
/// second.
fn per_second(per_chat: usize, overall: usize) -> Limits {
    Limits {
        per_chat,
        overall,
        window: SECOND,
    }
}

/// Telegram's own limits (1 per chat per second, 30 overall) and a fake
/// that refuses anything over them: two senders sharing the bot's limits,
/// 2 alerts each to each of 8 chats, break none of them. About 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_sharing_the_bots_limits_keep_one_a_second_per_chat() {
    let config = SenderConfig::default();
    let chats = &PRIVATE_AND_GROUP;
    let (fake, stats) = shared_run("tg_chat", Limits::default(), &config, chats, 2).await;
    assert_eq!(fake.max_in_window(SECOND).per_chat, 1);
    assert!(
        stats.iter().any(|s| s.shared_waits > 0),
        "the shared limits held some back: {stats:?}"
    );
}

/// The same two senders keeping their limits each alone break the strict
/// fake's: what the test above would see without the shared limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_two_keeping_their_limits_alone_break_them() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.enforce(Limits::default());
    two_send(&fake, None, &SenderConfig::default(), &PRIVATE_AND_GROUP, 1).await;
    assert!(
        fake.over_limit() > 0,
        "two senders, each at the limit alone"
    );
    each_once_in_order(&fake, &PRIVATE_AND_GROUP, 1);
}

/// A group's limit (here 4 a second, Telegram's 20 a minute scaled down)
/// holds across the two: 6 alerts each to each of two groups, at most 4 to
/// a group in any second on the fake's clock (the fake refuses a fifth).
/// About 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_keep_a_groups_limit_together() {
    // The groups are the only chats: the fake's per-chat limit is theirs.
    let config = SenderConfig {
        chat_interval: Duration::from_millis(20),
        group_limit: 4,
        group_window: SECOND,
        global_limit: 1_000,
        ..SenderConfig::default()
    };
    let groups = [-1001, -1002];
    let (fake, _) = shared_run("tg_group", per_second(4, 1_000), &config, &groups, 6).await;
    let received = fake.received();
    for group in groups {
        let times = received.iter().filter(|r| r.chat_id == group).map(|r| r.at);
        assert_eq!(max_in_window(times, SECOND), 4, "group {group}");
    }
}

/// The bot's overall limit (here 10 a second) holds across the two: one
/// alert each to 15 chats, at most 10 in any second (the fake refuses an
/// eleventh), and not starved (at least half of it). About 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_keep_the_bots_overall_limit_together() {
    let config = SenderConfig {
        global_limit: 10,
        window: SECOND,
        ..SenderConfig::default()
    };
    let chats: Vec<i64> = (1..=15).collect();
    let (fake, _) = shared_run("tg_global", per_second(1, 10), &config, &chats, 1).await;
    let most = fake.max_in_window(SECOND).overall;
    assert!((5..=10).contains(&most), "{most} in the busiest second");
}

/// Redis away: no message leaves (a process cannot know what the others
/// send), each failed reservation counted; back, the held messages go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_nothing_leaves_until_it_is_back() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let mut redis = OwnRedis::start("tg_shared_outage");
    let config = SenderConfig {
        chat_interval: Duration::from_millis(50),
        ..SenderConfig::default()
    };
    let (s, mut reports, task) = sender(&fake, &redis.url(), Some("t:"), &config);
    s.try_send(alert(1, 0)).unwrap();
    reports_until(&mut reports, Duration::from_secs(10), |r| r.len() == 1).await;

    redis.kill();
    for i in 1..=3 {
        s.try_send(alert(i, i as usize)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(fake.count(), 1, "nothing left while Redis was away");
    let stats = s.stats();
    assert!(stats.shared_unavailable >= 2, "{stats:?}");
    assert_eq!(stats.queued, 3);

    redis.spawn();
    let got = reports_until(&mut reports, Duration::from_secs(20), |r| r.len() == 3).await;
    assert!(
        got.iter().all(|r| matches!(r, Report::Sent { .. })),
        "{got:?}"
    );
    assert_eq!(fake.count(), 4);
    assert!(task.close(Duration::from_secs(5)).await.unsent.is_empty());
}
