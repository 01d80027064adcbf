//! What the sender's test files share: the token, an alert, a sender
//! started against the fake, and reports read with a deadline.
#![allow(dead_code)]

use std::time::Duration;

use callwatch_common::records::AlertKind;
use callwatch_telegram::BotToken;
use callwatch_telegram::sender::{
    AlertKey, Message, Report, Sender, SenderConfig, SenderTask, Tag,
};
use callwatch_testkit::fake_bot::FakeBotApi;
use tokio::sync::mpsc;

pub const TOKEN: &str = "123456789:AAH-test_token_SECRET-part-0123456789";
pub const SOL: &str = "So11111111111111111111111111111111111111112";

pub fn alert(chat_id: i64, i: usize) -> Message {
    Message {
        chat_id,
        tag: Tag::Alert(AlertKey {
            token: SOL.parse().unwrap(),
            kind: AlertKind::CallAlert,
            threshold: 0.0,
            at: i as i64,
        }),
        text: format!("alert {i} to {chat_id}"),
        buttons: Vec::new(),
        photo: None,
    }
}

pub async fn start(
    fake: &FakeBotApi,
    tune: impl FnOnce(&mut SenderConfig),
) -> (Sender, mpsc::Receiver<Report>, SenderTask) {
    let mut config = SenderConfig {
        api_url: fake.url(),
        ..SenderConfig::default()
    };
    tune(&mut config);
    Sender::start(BotToken::new(TOKEN), config).unwrap()
}

/// Reads reports until `enough` says so; panics with what came after
/// `limit` (a hang is a failure, not a wait forever).
pub async fn reports_until(
    rx: &mut mpsc::Receiver<Report>,
    limit: Duration,
    mut enough: impl FnMut(&[Report]) -> bool,
) -> Vec<Report> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !enough(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => got.push(r),
            Ok(None) => panic!("report channel closed after {got:?}"),
            Err(_) => panic!("not enough reports within {limit:?}: {got:?}"),
        }
    }
    got
}
