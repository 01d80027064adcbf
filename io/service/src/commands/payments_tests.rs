//! The teller against the fake Bot API: dust told to nobody, the admins'
//! notes gathered, and a full queue never holding the watcher up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callwatch_payments::matching::Reason;
use callwatch_payments::watcher::Outcome;
use callwatch_telegram::BotToken;
use callwatch_telegram::sender::{Sender, SenderConfig};
use callwatch_testkit::fake_bot::{FakeBotApi, Fault};
use tokio::sync::mpsc;

use super::{CommandCounters, Teller};

const TOKEN: &str = "123456789:AAH-notices_test-token-0123456789";

async fn teller(fake: &FakeBotApi, tune: impl FnOnce(&mut SenderConfig)) -> Teller {
    let mut config = SenderConfig {
        api_url: fake.url(),
        chat_interval: Duration::from_millis(10),
        ..SenderConfig::default()
    };
    tune(&mut config);
    let (sender, mut reports, task) = Sender::start(BotToken::new(TOKEN), config).unwrap();
    tokio::spawn(async move { while reports.recv().await.is_some() {} });
    std::mem::forget(task);
    Teller {
        sender,
        admins: vec![7, 8],
        counters: Arc::new(CommandCounters::default()),
        dust_lamports: 1_000_000,
        every: Duration::from_millis(500),
    }
}

fn unmatched(signature: String, lamports: u64) -> Outcome {
    Outcome::Unmatched {
        signature,
        reason: Reason::UnknownReference,
        chat_id: None,
        lamports,
    }
}

/// 20 payments that name nothing and 20 specks of dust: the dust is told
/// to nobody (counted), and each admin gets two notes, the first payment
/// at once and the other 19 gathered, not 40 messages each.
#[tokio::test]
async fn dust_is_told_to_nobody_and_admins_get_one_note_a_period() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let teller = teller(&fake, |_| {}).await;
    let counters = Arc::clone(&teller.counters);
    let (tx, rx) = mpsc::channel(64);
    let running = tokio::spawn(teller.run(rx));
    for i in 0..20 {
        tx.send(unmatched(format!("sig{i}"), 5_000_000))
            .await
            .unwrap();
        tx.send(unmatched(format!("dust{i}"), 100)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(tx);
    running.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = fake.received();
    for admin in [7, 8] {
        let texts: Vec<&str> = received
            .iter()
            .filter(|r| r.chat_id == admin)
            .map(|r| r.text.as_str())
            .collect();
        assert_eq!(texts.len(), 2, "{texts:#?}");
        assert!(
            texts[0].starts_with("Unmatched payment <code>sig0</code>"),
            "{}",
            texts[0]
        );
        assert!(
            texts[1].contains("19 unmatched payments") && texts[1].contains("…and 9 more."),
            "{}",
            texts[1]
        );
        assert!(!texts.iter().any(|t| t.contains("dust")), "dust told");
    }
    assert_eq!(counters.unmatched_dust.load(Ordering::Relaxed), 20);
}

/// With Telegram answering slowly and the reply lane holding 2, 500
/// confirmations still go through the teller's channel at once: the
/// notices with no room are dropped and counted, and the watcher never
/// waits.
#[tokio::test]
async fn a_full_queue_never_holds_the_watcher_up() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_any(Fault::Slow(Duration::from_secs(5)), 1000);
    let teller = teller(&fake, |c| c.reply_capacity = 2).await;
    let counters = Arc::clone(&teller.counters);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(teller.run(rx));
    let all = async {
        for i in 0..500_i64 {
            let credited = Outcome::Credited {
                chat_id: 1000 + i,
                plan: "week".to_owned(),
                days: 7,
                expires_at: 0,
                signature: format!("s{i}"),
                lamports: 250_000_000,
            };
            tx.send(credited).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(2), all)
        .await
        .expect("the watcher waited on the sender");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(counters.notices_dropped.load(Ordering::Relaxed) >= 490);
}
