//! The Telegram sender against the fake Bot API: limits as the fake counts
//! them on its own clock, order per chat, 429s for one chat and for all,
//! 5xx, slow answers, blocked chats, the priority lane, the bound, close,
//! and the token kept out of errors and logs. Then the alert message end to
//! end: names through the two-level cache (the machine's Redis, database
//! 12, under a prefix of its own), escaped, with its buttons.

use std::collections::HashMap;
use std::time::Duration;

use callwatch_common::records::AlertKind;
use callwatch_streams::connection::{self as health, RedisTimeouts};
use callwatch_telegram::BotToken;
use callwatch_telegram::format::{self, Links};
use callwatch_telegram::names::{ChannelNames, NamesConfig};
use callwatch_telegram::sender::{
    AlertKey, ErrorKind, Inactive, Message, Rejected, Report, Sender, SenderConfig, Tag,
};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Fault, Limits, Received};
use engine::effect::{CallAlert, Effect};
use tokio::sync::mpsc;

mod common;
use common::{SOL, TOKEN, alert, reports_until, start};

/// Alerts 0..rounds to each of `chats`, round after round.
fn queue_rounds(sender: &Sender, rounds: usize, chats: &[i64]) {
    for i in 0..rounds {
        for &chat in chats {
            sender.try_send(alert(chat, i)).unwrap();
        }
    }
}

async fn wait_sent(rx: &mut mpsc::Receiver<Report>, n: usize) -> Vec<Report> {
    reports_until(rx, Duration::from_secs(60), |r| sent_count(r) == n).await
}

fn sent_count(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r, Report::Sent { .. }))
        .count()
}

/// The fake's records by chat, in the order received.
fn by_chat(received: &[Received]) -> HashMap<i64, Vec<&Received>> {
    let mut chats: HashMap<i64, Vec<&Received>> = HashMap::new();
    for r in received {
        chats.entry(r.chat_id).or_default().push(r);
    }
    chats
}

fn delivered_texts(records: &[&Received]) -> Vec<String> {
    records
        .iter()
        .filter(|r| matches!(r.answer, Answer::Sent { .. }))
        .map(|r| r.text.clone())
        .collect()
}

/// 1,000 alerts to 50 chats with Telegram's limits (1 per chat per second,
/// 30 per second): the fake, counting on its own clock, never sees more;
/// every alert arrives once, in order per chat; each report carries the
/// message id the fake gave it. About 34 s. (With 50 chats taking turns at
/// 30 per second, each chat's turn comes every 1.7 s: the overall limit is
/// the one that binds here; the next test makes both bind.)
#[tokio::test]
async fn a_thousand_alerts_to_fifty_chats_keep_both_limits_and_order() {
    backlog_keeps_limits(1_000, |i| i as i64 % 50 + 1, Duration::from_secs(1), 30).await;
}

/// Ten times the pace (10 per chat per second, 300 overall), and half of
/// the 2,000 alerts for 10 busy chats: at first 300 chats take turns
/// under the overall limit, then the busy ones go on alone at their
/// own. About 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faster_backlog_with_busy_chats_keeps_both_limits() {
    let chat_of = |i: usize| {
        let n = (i / 2) as i64;
        if i.is_multiple_of(2) {
            n % 10 + 1
        } else {
            11 + n % 290
        }
    };
    backlog_keeps_limits(2_000, chat_of, Duration::from_millis(100), 300).await;
}

async fn backlog_keeps_limits(
    alerts: usize,
    chat_of: impl Fn(usize) -> i64,
    chat_interval: Duration,
    global_limit: u32,
) {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, mut reports, task) = start(&fake, |c| {
        c.chat_interval = chat_interval;
        c.global_limit = global_limit;
    })
    .await;
    let config = SenderConfig {
        chat_interval,
        global_limit,
        ..SenderConfig::default()
    };
    fake.enforce(Limits {
        // One per chat_interval is at most this many per window.
        per_chat: (config.window.as_nanos() / chat_interval.as_nanos()) as usize,
        overall: config.global_limit as usize,
        window: config.window,
    });
    for i in 0..alerts {
        sender.try_send(alert(chat_of(i), i)).unwrap();
    }
    let got = reports_until(&mut reports, Duration::from_secs(180), |r| {
        r.len() >= alerts
    })
    .await;
    assert_eq!(sent_count(&got), alerts, "every report is a Sent");

    assert_eq!(fake.too_many_requests(), 0, "the fake refused none");
    let overall = fake.max_in_window(config.window);
    assert!(
        overall.overall <= config.global_limit as usize,
        "{overall:?} over {} per window",
        config.global_limit
    );
    assert!(
        overall.overall >= config.global_limit as usize / 2,
        "{overall:?}: barely paced at all"
    );
    let per_chat = fake.max_in_window(config.chat_interval);
    assert_eq!(per_chat.per_chat, 1, "{per_chat:?}");

    let received = fake.received();
    assert_eq!(received.len(), alerts, "each alert reached the fake once");
    let ids: HashMap<&str, i32> = received
        .iter()
        .map(|r| match r.answer {
            Answer::Sent { message_id, .. } => (r.text.as_str(), message_id),
            Answer::Refused { status } => panic!("refused {status}: {r:?}"),
        })
        .collect();
    for (chat, records) in by_chat(&received) {
        let want: Vec<String> = (0..alerts)
            .filter(|i| chat_of(*i) == chat)
            .map(|i| format!("alert {i} to {chat}"))
            .collect();
        assert_eq!(delivered_texts(&records), want, "chat {chat}");
    }
    for r in &got {
        let Report::Sent {
            chat_id,
            tag: Tag::Alert(key),
            message_id,
        } = r
        else {
            panic!("{r:?}")
        };
        let text = format!("alert {} to {chat_id}", key.at);
        assert_eq!(ids[text.as_str()], *message_id, "{text}");
    }
    let closed = task.close(Duration::from_secs(5)).await;
    assert!(closed.unsent.is_empty());
    assert_eq!(closed.stats.sent, alerts as u64);
    assert_eq!(closed.stats.queued, 0);
    assert_eq!(sender.depth(), 0);
}

#[tokio::test]
async fn a_429_for_one_chat_pauses_that_chat_only() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(
        7,
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
        1,
    );
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    queue_rounds(&sender, 4, &[7, 8, 9]);
    wait_sent(&mut reports, 12).await;

    let received = fake.received();
    let refused = received
        .iter()
        .find(|r| r.answer == Answer::Refused { status: 429 })
        .expect("the scripted 429");
    assert_eq!(refused.chat_id, 7);
    let (paused_from, paused_to) = (refused.at, refused.at + Duration::from_secs(3));
    let chats = by_chat(&received);
    let next_to_7 = chats[&7]
        .iter()
        .find(|r| r.at > paused_from)
        .expect("chat 7 resumed");
    assert!(
        next_to_7.at >= paused_to,
        "chat 7 sent {:?} after its 429, retry_after is 3 s",
        next_to_7.at - paused_from
    );
    for other in [8, 9] {
        let during = chats[&other]
            .iter()
            .filter(|r| r.at > paused_from && r.at < paused_to)
            .count();
        assert!(during >= 1, "chat {other} was paused too");
    }
    assert_eq!(
        delivered_texts(&chats[&7]),
        (0..4)
            .map(|i| format!("alert {i} to 7"))
            .collect::<Vec<_>>()
    );
    assert_eq!(fake.max_in_window(Duration::from_secs(1)).per_chat, 1);
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.rate_limited, stats.flood_pauses), (1, 0));
}

#[tokio::test]
async fn a_flood_429_for_several_chats_pauses_every_chat() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_any(
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
        2,
    );
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    queue_rounds(&sender, 2, &[1, 2, 3, 4, 5, 6]);
    wait_sent(&mut reports, 12).await;
    let received = fake.received();
    let second = received
        .iter()
        .filter(|r| r.answer == Answer::Refused { status: 429 })
        .nth(1)
        .expect("two 429s");
    // Sends already on the wire when the 429 came back may still land;
    // after that, nothing until retry_after is over.
    let quiet_from = second.at + Duration::from_millis(500);
    let quiet_to = second.at + Duration::from_secs(3);
    let during: Vec<_> = received
        .iter()
        .filter(|r| r.at > quiet_from && r.at < quiet_to)
        .collect();
    assert!(during.is_empty(), "sent during the flood pause: {during:?}");
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.rate_limited, stats.flood_pauses), (2, 1));
    assert_eq!(stats.sent, 12);
}

/// teloxide waits 10 s inside a request that got a 5xx, so this takes
/// about 11 s.
#[tokio::test]
async fn a_5xx_then_success_is_delivered_once() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(5, Fault::ServerError(500), 1);
    let (sender, mut reports, task) = start(&fake, |c| {
        c.retry_backoff = Duration::from_millis(200);
    })
    .await;
    queue_rounds(&sender, 3, &[5, 6]);
    let got = wait_sent(&mut reports, 6).await;
    assert_eq!(got.len(), 6, "only Sent reports: {got:?}");
    let received = fake.received();
    let chats = by_chat(&received);
    assert_eq!(chats[&5][0].answer, Answer::Refused { status: 500 });
    assert_eq!(chats[&5].len(), 4, "one failure, three deliveries");
    assert_eq!(
        delivered_texts(&chats[&5]),
        (0..3)
            .map(|i| format!("alert {i} to 5"))
            .collect::<Vec<_>>()
    );
    assert_eq!(fake.max_in_window(Duration::from_secs(1)).per_chat, 1);
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.server_errors, stats.timeouts, stats.sent), (1, 0, 6));
}

#[tokio::test]
async fn slow_answers_are_retried_delivered_and_keep_the_order() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(3, Fault::Slow(Duration::from_secs(3)), 1);
    let (sender, mut reports, task) = start(&fake, |c| {
        c.request_timeout = Duration::from_secs(1);
    })
    .await;
    queue_rounds(&sender, 4, &[3]);
    let got = wait_sent(&mut reports, 4).await;
    let received = fake.received();
    let texts: Vec<&str> = received.iter().map(|r| r.text.as_str()).collect();
    // The slow one reached the fake (Telegram would have shown it), timed
    // out at the client and went again: the one duplicate there is.
    assert_eq!(
        texts,
        [
            "alert 0 to 3",
            "alert 0 to 3",
            "alert 1 to 3",
            "alert 2 to 3",
            "alert 3 to 3"
        ]
    );
    assert!(matches!(received[0].answer, Answer::Sent { delay, .. } if !delay.is_zero()));
    let Answer::Sent {
        message_id: retried,
        ..
    } = received[1].answer
    else {
        panic!("{:?}", received[1])
    };
    let first = got.iter().find_map(|r| match r {
        Report::Sent {
            tag: Tag::Alert(k),
            message_id,
            ..
        } if k.at == 0 => Some(*message_id),
        _ => None,
    });
    assert_eq!(first, Some(retried), "the report names the answered copy");
    let order: Vec<i64> = got
        .iter()
        .map(|r| match r {
            Report::Sent {
                tag: Tag::Alert(k), ..
            } => k.at,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, [0, 1, 2, 3]);
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.timeouts, stats.sent), (1, 4));
}

#[tokio::test]
async fn a_blocked_chat_is_reported_inactive_and_its_queue_dropped() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(4, Fault::Blocked, 1);
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    for i in 0..5 {
        sender.try_send(alert(4, i)).unwrap();
    }
    sender.try_send(alert(5, 0)).unwrap();
    sender.try_send(alert(5, 1)).unwrap();
    let got = reports_until(&mut reports, Duration::from_secs(30), |r| r.len() == 3).await;
    let inactive: Vec<_> = got
        .iter()
        .filter(|r| matches!(r, Report::Inactive { .. }))
        .collect();
    assert_eq!(inactive.len(), 1, "{got:?}");
    let Report::Inactive {
        chat_id,
        reason: Inactive::Unreachable(why),
        dropped,
    } = inactive[0]
    else {
        panic!("{inactive:?}")
    };
    assert_eq!((*chat_id, *dropped), (4, 5));
    assert!(why.contains("blocked"), "{why}");
    assert_eq!(sent_count(&got), 2);

    // Alerts for it are dropped on arrival, each reported; a reply (the
    // user wrote to the bot again) goes through.
    sender.try_send(alert(4, 5)).unwrap();
    for _ in 0..100 {
        if sender.depth() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sender.depth(), 0, "the alert was dropped, not queued");
    sender
        .try_send(Message::reply(4, 99, "welcome back".into()))
        .unwrap();
    let got = reports_until(&mut reports, Duration::from_secs(10), |r| r.len() == 2).await;
    assert!(
        matches!(
            got[0],
            Report::Inactive {
                chat_id: 4,
                dropped: 1,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(matches!(
        got[1],
        Report::Sent {
            chat_id: 4,
            tag: Tag::Reply(99),
            ..
        }
    ));
    let to_4: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.chat_id == 4)
        .map(|r| r.text)
        .collect();
    assert_eq!(to_4, ["alert 0 to 4", "welcome back"]);
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.inactive_chats, stats.dropped_inactive), (1, 6));
}

#[tokio::test]
async fn replies_jump_the_alert_queue_within_the_limits() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    // A backlog over 60 chats, one chat with several alerts; then replies,
    // one to that chat and one to a chat with nothing queued.
    for chat in 1..=60 {
        sender.try_send(alert(chat, 0)).unwrap();
    }
    for i in 1..5 {
        sender.try_send(alert(1, i)).unwrap();
    }
    sender
        .try_send(Message::reply(1, 1, "reply to 1".into()))
        .unwrap();
    sender
        .try_send(Message::reply(61, 2, "reply to 61".into()))
        .unwrap();
    wait_sent(&mut reports, 66).await;
    let received = fake.received();
    let at = |text: &str| received.iter().position(|r| r.text == text).unwrap();
    assert!(at("reply to 61") <= 3, "overall: {}", at("reply to 61"));
    let to_1 = delivered_texts(&by_chat(&received)[&1]);
    assert_eq!(
        to_1[..2],
        ["alert 0 to 1", "reply to 1"],
        "in its chat: {to_1:?}"
    );
    assert_eq!(fake.max_in_window(Duration::from_secs(1)).per_chat, 1);
    task.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_queue_is_bounded_per_lane_and_its_depth_is_readable() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, _reports, task) = start(&fake, |c| {
        c.alert_capacity = 3;
        c.reply_capacity = 1;
    })
    .await;
    for i in 0..3 {
        sender.try_send(alert(1, i)).unwrap();
    }
    assert!(matches!(
        sender.try_send(alert(1, 3)),
        Err(Rejected::Full(_))
    ));
    sender.try_send(Message::reply(1, 1, "r".into())).unwrap();
    assert!(matches!(
        sender.try_send(Message::reply(1, 2, "r".into())),
        Err(Rejected::Full(_))
    ));
    assert_eq!(sender.depth(), 4);
    let stats = sender.stats();
    assert_eq!(
        (stats.queued, stats.queued_replies, stats.rejected_full),
        (4, 1, 2)
    );
    // Room comes back as messages go.
    let waited = tokio::time::timeout(Duration::from_secs(10), sender.send(alert(1, 3))).await;
    assert!(matches!(waited, Ok(Ok(()))));
    let closed = task.close(Duration::from_secs(10)).await;
    assert!(closed.unsent.is_empty());
    assert_eq!(closed.stats.sent, 5);
}

#[tokio::test]
async fn close_sends_what_it_can_and_hands_back_the_rest_in_order() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, _reports, task) = start(&fake, |_| {}).await;
    for i in 0..10 {
        sender.try_send(alert(1, i)).unwrap();
    }
    let closed = task.close(Duration::from_millis(1_500)).await;
    let sent = closed.stats.sent as usize;
    assert!((1..10).contains(&sent), "{sent} sent before the deadline");
    let left: Vec<String> = closed.unsent.iter().map(|m| m.text.clone()).collect();
    assert_eq!(
        left,
        (sent..10)
            .map(|i| format!("alert {i} to 1"))
            .collect::<Vec<_>>()
    );
    assert!(matches!(
        sender.try_send(alert(1, 10)),
        Err(Rejected::Closed(_))
    ));
}

#[tokio::test]
async fn the_token_never_shows_in_errors_or_logs() {
    // A current-thread runtime: the sender's tasks log on this thread.
    let (logs, _guard) = callwatch_testkit::capture_logs();

    // Nothing listens on a port the fake just gave back: every request
    // fails with a network error, whose text names the URL (and so the
    // token).
    let closed_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let config = SenderConfig {
        api_url: closed_url,
        max_attempts: 2,
        retry_backoff: Duration::from_millis(50),
        chat_interval: Duration::from_millis(50),
        ..SenderConfig::default()
    };
    let (sender, mut reports, task) = Sender::start(BotToken::new(TOKEN), config.clone()).unwrap();
    sender.try_send(alert(1, 0)).unwrap();
    let got = reports_until(&mut reports, Duration::from_secs(30), |r| !r.is_empty()).await;
    let Report::Failed { error, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(error.kind, ErrorKind::Network);
    // teloxide redacts its URLs itself; `BotToken::scrub` is the second
    // line (its own unit test covers it).
    assert!(
        error.detail.contains("/SendMessage)"),
        "the URL was there: {error}"
    );

    // And through the fake: a blocked chat, and a slow answer retried.
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(2, Fault::Blocked, 1);
    let (sender2, mut reports2, task2) = start(&fake, |c| {
        c.request_timeout = Duration::from_millis(300);
    })
    .await;
    fake.fail_chat(3, Fault::Slow(Duration::from_secs(1)), 1);
    sender2.try_send(alert(2, 0)).unwrap();
    sender2.try_send(alert(3, 0)).unwrap();
    let got2 = reports_until(&mut reports2, Duration::from_secs(30), |r| r.len() == 2).await;

    let mut texts = vec![
        format!("{got:?}"),
        format!("{got2:?}"),
        error.to_string(),
        format!("{sender:?} {task:?} {config:?}"),
    ];
    task.close(Duration::from_secs(1)).await;
    task2.close(Duration::from_secs(5)).await;
    drop((sender, sender2));
    let logs = logs.text();
    assert!(logs.contains("will retry"), "the retry was logged: {logs}");
    assert!(logs.contains("/SendMessage"), "a URL was logged: {logs}");
    texts.push(logs);
    let secret = TOKEN.split_once(':').unwrap().1;
    for text in &texts {
        assert!(!text.contains(secret), "token leaked: {text}");
    }
}

#[tokio::test]
async fn an_alert_reaches_telegram_escaped_with_names_from_both_cache_levels() {
    let url = callwatch_testkit::redis_url(12);
    let con = health::managed_connection(&url, &RedisTimeouts::default()).unwrap();
    let mut admin = con.clone();
    let prefix = format!("cw-test:{}:", callwatch_testkit::unique("tg_names"));
    let names = ChannelNames::new(
        NamesConfig {
            key_prefix: prefix.clone(),
            ..NamesConfig::default()
        },
        con,
    );
    let key = |id: i64| format!("{prefix}channel:{id}:info");
    let _: () = redis::cmd("SET")
        .arg(key(-1001))
        .arg(r#"{"id":-1001,"title":"Alpha <b>Calls</b> & Co"}"#)
        .query_async(&mut admin)
        .await
        .unwrap();
    names.put(-1002, "Beta").await.unwrap();

    let callers = vec![-1003, -1002, -1001];
    let first = names.resolve(&callers).await;
    assert_eq!(
        first.iter().map(|n| n.as_deref()).collect::<Vec<_>>(),
        [None, Some("Beta"), Some("Alpha <b>Calls</b> & Co")]
    );
    let stats = names.stats();
    assert_eq!((stats.cached, stats.found, stats.absent), (1, 1, 1));
    let ttl: i64 = redis::cmd("TTL")
        .arg(key(-1002))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!((1..=1800).contains(&ttl), "30-minute TTL, got {ttl}");

    // A rename in Redis is not seen while the process holds the name...
    let _: () = redis::cmd("SET")
        .arg(key(-1001))
        .arg(r#"{"title":"Alpha renamed"}"#)
        .query_async(&mut admin)
        .await
        .unwrap();
    let again = names.resolve(&callers).await;
    assert_eq!(again[2].as_deref(), Some("Alpha <b>Calls</b> & Co"));
    assert_eq!(names.stats().cached, 4, "all three from process");
    // ... and is once it is forgotten (or its TTL passes).
    names.forget(-1001).await;
    assert_eq!(
        names.resolve(&[-1001]).await[0].as_deref(),
        Some("Alpha renamed")
    );

    let effect = Effect::CallAlert(CallAlert {
        seq: 1,
        chat_id: 77,
        token: SOL.parse().unwrap(),
        at: 5,
        fdv_usd: 1_234_567.0,
        callers: callers.clone().into(),
        channel_id: -1001,
    });
    let rendered = format::alert(&effect, &first, &Links::default()).unwrap();
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    sender
        .try_send(Message::alert(&effect, rendered).unwrap())
        .unwrap();
    let got = reports_until(&mut reports, Duration::from_secs(10), |r| !r.is_empty()).await;
    assert!(matches!(
        got[0],
        Report::Sent {
            chat_id: 77,
            tag: Tag::Alert(AlertKey {
                kind: AlertKind::CallAlert,
                at: 5,
                ..
            }),
            ..
        }
    ));
    let received = fake.received();
    let msg = &received[0];
    assert_eq!(msg.parse_mode.as_deref(), Some("HTML"));
    assert!(
        msg.text
            .contains("-1003, Beta, Alpha &lt;b&gt;Calls&lt;/b&gt; &amp; Co\n"),
        "{}",
        msg.text
    );
    assert!(msg.text.contains("$1.2M"));
    assert_eq!(
        msg.buttons,
        [
            (
                "📈 Chart".to_owned(),
                format!("https://dexscreener.com/solana/{SOL}")
            ),
            (
                "🔎 Explorer".to_owned(),
                format!("https://solscan.io/token/{SOL}")
            ),
        ]
    );
    task.close(Duration::from_secs(5)).await;
    let _: i64 = redis::cmd("DEL")
        .arg(key(-1001))
        .arg(key(-1002))
        .query_async(&mut admin)
        .await
        .unwrap();
}
