//! Fairness between chats in the sender, against the fake Bot API: a chat
//! that floods fills its own share of a lane and no more, a group is sent
//! no more than its limit a window, and a group's 429s pause that group
//! alone.

use std::time::{Duration, Instant};

use callwatch_telegram::sender::{Message, Rejected, Report};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Fault, max_in_window};

mod common;
use common::{TOKEN, alert, reports_until, start};

/// A chat that sends more than its cap is refused at once, counted, and
/// holds no more of the lane than its cap: another chat's reply still
/// gets in, without waiting, while the lane has room for only a few.
#[tokio::test]
async fn a_flooding_chat_fills_its_own_share_and_no_more() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (sender, mut reports, task) = start(&fake, |c| {
        c.reply_capacity = 8;
        c.chat_reply_cap = 3;
        c.chat_alert_cap = 2;
    })
    .await;
    let mut refused = 0;
    for i in 0..100 {
        match sender.try_send(Message::reply(1, i, format!("flood {i}"))) {
            Ok(()) => {}
            Err(Rejected::ChatFull(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 97);
    // `send` never waits on a full chat either: it would hold up every
    // chat the producer serves.
    let flood = tokio::time::timeout(
        Duration::from_millis(200),
        sender.send(Message::reply(1, 100, "flood".into())),
    )
    .await
    .expect("refused at once, not waited on");
    assert!(matches!(flood, Err(Rejected::ChatFull(_))));
    sender
        .try_send(Message::reply(2, 1, "the other chat".into()))
        .unwrap();
    for i in 0..3 {
        let r = sender.try_send(alert(1, i));
        assert_eq!(r.is_ok(), i < 2, "alert {i}: {r:?}");
    }
    assert_eq!(sender.stats().rejected_chat_full, 99);
    let got = reports_until(&mut reports, Duration::from_secs(20), |r| r.len() == 6).await;
    let first_to_2 = got
        .iter()
        .position(|r| matches!(r, Report::Sent { chat_id: 2, .. }))
        .unwrap();
    assert!(first_to_2 <= 1, "chat 2 waited for chat 1: {got:?}");
    // Its share comes back as its messages go.
    sender
        .try_send(Message::reply(1, 200, "again".into()))
        .unwrap();
    let closed = task.close(Duration::from_secs(10)).await;
    assert!(closed.unsent.is_empty());
    assert_eq!(closed.stats.sent, 7);
}

/// A group is sent at most `group_limit` messages per `group_window`
/// (Telegram: 20 a minute), counted on the fake's clock, while a private
/// chat goes at its own interval meanwhile.
#[tokio::test]
async fn a_group_is_sent_no_more_than_its_limit_per_window() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let window = Duration::from_secs(2);
    let (sender, mut reports, task) = start(&fake, |c| {
        c.chat_interval = Duration::from_millis(50);
        c.group_limit = 3;
        c.group_window = window;
    })
    .await;
    for i in 0..9 {
        sender.try_send(alert(-1001, i)).unwrap();
        sender.try_send(alert(5, i)).unwrap();
    }
    reports_until(&mut reports, Duration::from_secs(30), |r| r.len() == 18).await;
    let received = fake.received();
    let times = |chat: i64| {
        received
            .iter()
            .filter(move |r| r.chat_id == chat)
            .map(|r| r.at)
    };
    assert_eq!(max_in_window(times(-1001), window), 3);
    let group_span = times(-1001).next_back().unwrap() - times(-1001).next().unwrap();
    assert!(group_span >= window * 2, "9 in {group_span:?}");
    let private_span = times(5).next_back().unwrap() - times(5).next().unwrap();
    assert!(
        private_span < window,
        "the private chat waited: {private_span:?}"
    );
    task.close(Duration::from_secs(5)).await;
}

/// 429s for two groups at once are each group's own limit: those groups
/// wait their `retry_after`, and every other chat goes on (before, two
/// chats' 429s paused every chat).
#[tokio::test]
async fn a_group_429_pauses_that_group_alone() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let retry = Fault::TooManyRequests {
        retry_after_secs: 3,
    };
    fake.fail_chat(-11, retry, 1);
    fake.fail_chat(-12, retry, 1);
    let (sender, mut reports, task) = start(&fake, |c| {
        c.chat_interval = Duration::from_millis(100);
    })
    .await;
    let started = Instant::now();
    for i in 0..2 {
        sender.try_send(alert(-11, i)).unwrap();
        sender.try_send(alert(-12, i)).unwrap();
    }
    for i in 0..10 {
        sender.try_send(alert(7, i)).unwrap();
    }
    let sent_to_7 = |r: &[Report]| {
        r.iter()
            .filter(|r| matches!(r, Report::Sent { chat_id: 7, .. }))
            .count()
    };
    reports_until(&mut reports, Duration::from_secs(10), |r| {
        sent_to_7(r) == 10
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "chat 7 waited out the groups' 429s: {:?}",
        started.elapsed()
    );
    reports_until(&mut reports, Duration::from_secs(10), |r| r.len() == 4).await;
    let refused = fake
        .received()
        .iter()
        .filter(|r| r.answer == Answer::Refused { status: 429 })
        .count();
    assert_eq!(refused, 2);
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.rate_limited, stats.flood_pauses), (2, 0));
}
