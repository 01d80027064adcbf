//! Receiving the bot's messages against the fake Bot API: by long polling,
//! each once and in order per chat, a slow chat not holding back another,
//! non-text updates ignored, a prompt graceful shutdown that confirms what
//! was taken; by webhook, `setWebhook` with the URL and secret, requests
//! without the right secret refused, bodies over 64 KiB refused (413), a
//! full queue answered 429 and counted, `deleteWebhook` at shutdown; a bad
//! secret refused; and the token in no error and no log line.
//!
//! Every wait is bounded: a hang fails the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callwatch_telegram::BotToken;
use callwatch_telegram::updates::{self, Incoming, Mode, UpdatesError, WORKER_QUEUE};
use callwatch_telegram::webhook::WebhookCounters;
use callwatch_testkit::fake_bot::{FakeBotApi, Webhook, deliver_update, text_update};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const TOKEN: &str = "123456789:AAH-test_token_SECRET-part-0123456789";
const SECRET_PART: &str = "AAH-test_token_SECRET-part-0123456789";
const LIMIT: Duration = Duration::from_secs(20);

/// `run` in a task of its own, with the handler and the shutdown switch.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), UpdatesError>>,
}

impl Running {
    /// Starts `run` with `handler`.
    fn start<H, F>(api_url: &str, token: &str, mode: Mode, handler: H) -> Running
    where
        H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ()> + Send,
    {
        let api_url = url::Url::parse(api_url).unwrap();
        let token = BotToken::new(token);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task =
            tokio::spawn(
                async move { updates::run(&api_url, &token, mode, handler, shutdown).await },
            );
        Running { stop, task }
    }

    /// Starts `run` with a handler that passes every message on.
    fn forwarding(api_url: &str, mode: Mode) -> (Running, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |m: Incoming| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(m);
            }
        };
        (Running::start(api_url, TOKEN, mode, handler), rx)
    }

    /// The error `run` returns by itself, within `LIMIT`.
    async fn error(self) -> UpdatesError {
        let result = timeout(LIMIT, self.task)
            .await
            .expect("run did not return")
            .expect("run panicked");
        result.expect_err("run failed")
    }

    /// Shuts it down; what `run` returned, within `LIMIT`.
    async fn stop(self) -> Result<(), UpdatesError> {
        let _ = self.stop.send(());
        timeout(LIMIT, self.task)
            .await
            .expect("run did not return after shutdown")
            .expect("run panicked")
    }
}

/// Receives `n` messages, each within `LIMIT`.
async fn receive(rx: &mut mpsc::UnboundedReceiver<Incoming>, n: usize) -> Vec<Incoming> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match timeout(LIMIT, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => panic!("handler gone after {got:?}"),
            Err(_) => panic!("only {} of {n} messages: {got:?}", got.len()),
        }
    }
    got
}

/// Texts by chat, in the order the handler saw them.
fn by_chat(got: &[Incoming]) -> HashMap<i64, Vec<String>> {
    let mut chats: HashMap<i64, Vec<String>> = HashMap::new();
    for m in got {
        chats.entry(m.chat_id).or_default().push(m.text.clone());
    }
    chats
}

fn texts(chat: i64, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("/cmd {i} in {chat}")).collect()
}

#[tokio::test]
async fn polling_delivers_each_message_once_and_in_order_per_chat() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let chats = [11_i64, 22, -33];
    // Half queued before it starts, half while it long-polls.
    for i in 0..10 {
        for chat in chats {
            fake.push_text(chat, 500 + chat.abs(), &format!("/cmd {i} in {chat}"));
        }
    }
    let (running, mut rx) = Running::forwarding(&fake.url(), Mode::Polling);
    let first = receive(&mut rx, 30).await;
    for i in 10..20 {
        for chat in chats {
            fake.push_text(chat, 500 + chat.abs(), &format!("/cmd {i} in {chat}"));
        }
    }
    let mut got = first;
    got.extend(receive(&mut rx, 30).await);
    running.stop().await.unwrap();
    // `run` has returned: every handler has finished, so nothing more can
    // come.
    while let Ok(extra) = rx.try_recv() {
        got.push(extra);
    }

    assert_eq!(got.len(), 60, "each message exactly once");
    let seen = by_chat(&got);
    for chat in chats {
        assert_eq!(seen[&chat], texts(chat, 0..20), "chat {chat}");
    }
    let group = got.iter().find(|m| m.chat_id == -33).unwrap();
    assert_eq!(group.user_id, Some(533));
    assert!(group.message_id > 0);
    assert_eq!(fake.unconfirmed(), 0, "shutdown confirmed what it took");
}

/// At start the bot sets its "/" menu (`setMyCommands`), which the fake
/// checks as Telegram does.
#[tokio::test]
async fn receiving_sets_the_command_menu() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (running, _rx) = Running::forwarding(&fake.url(), Mode::Polling);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.menu().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no setMyCommands");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    let names: Vec<String> = fake.menu().into_iter().map(|(n, _)| n).collect();
    for name in [
        "status",
        "settings",
        "charts",
        "tracked",
        "top",
        "subscribe",
        "help",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

#[tokio::test]
async fn updates_that_are_not_text_messages_are_ignored() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let chat = json!({"id": 7, "type": "private", "first_name": "u"});
    let from = json!({"id": 7, "is_bot": false, "first_name": "u"});
    fake.push(json!({"message": {
        "message_id": 900, "date": 1_700_000_000, "chat": chat, "from": from,
        "sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular",
                    "width": 1, "height": 1, "is_animated": false, "is_video": false}
    }}));
    fake.push(json!({"edited_message": {
        "message_id": 901, "date": 1_700_000_000, "edit_date": 1_700_000_001,
        "chat": chat, "from": from, "text": "/edited"
    }}));
    fake.push_text(7, 7, "/after");
    let (running, mut rx) = Running::forwarding(&fake.url(), Mode::Polling);
    // Updates of a chat come in order: once "/after" is here, the two
    // before it have been passed over.
    let got = receive(&mut rx, 1).await;
    running.stop().await.unwrap();
    assert_eq!(got[0].text, "/after");
    assert!(rx.try_recv().is_err(), "nothing else reached the handler");
    assert_eq!(fake.unconfirmed(), 0);
}

#[tokio::test]
async fn a_slow_chat_does_not_hold_back_another_and_waits_its_turn() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handler = {
        let started = Arc::clone(&started);
        move |m: Incoming| {
            let (started, done_tx, mut gate) =
                (Arc::clone(&started), done_tx.clone(), gate_rx.clone());
            async move {
                started.lock().unwrap().push(m.text.clone());
                if m.chat_id == 1 {
                    // Chat 1's handler waits for the test to open the gate.
                    let _ = gate.wait_for(|open| *open).await;
                }
                let _ = done_tx.send(m);
            }
        }
    };
    fake.push_text(1, 1, "slow 0");
    fake.push_text(1, 1, "slow 1");
    for i in 0..3 {
        fake.push_text(2, 2, &format!("fast {i}"));
    }
    let running = Running::start(&fake.url(), TOKEN, Mode::Polling, handler);

    let fast = receive(&mut done, 3).await;
    assert_eq!(
        fast.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["fast 0", "fast 1", "fast 2"],
        "chat 2 went on while chat 1's handler was stuck"
    );
    assert!(
        !started.lock().unwrap().contains(&"slow 1".to_owned()),
        "chat 1's second message waits for its first: {:?}",
        started.lock().unwrap()
    );
    gate_tx.send(true).unwrap();
    let slow = receive(&mut done, 2).await;
    assert_eq!(
        slow.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["slow 0", "slow 1"]
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_is_prompt_during_a_long_poll_and_lets_handlers_finish() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = {
        let finished = Arc::clone(&finished);
        move |m: Incoming| {
            let (finished, entered_tx) = (Arc::clone(&finished), entered_tx.clone());
            async move {
                let _ = entered_tx.send(());
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.lock().unwrap().push(m.text);
            }
        }
    };
    fake.push_text(5, 5, "/busy");
    let running = Running::start(&fake.url(), TOKEN, Mode::Polling, handler);
    timeout(LIMIT, entered.recv())
        .await
        .expect("the handler started");
    // The handler is running and the next long poll (10 s) is waiting.
    // Shutdown must cut the poll short, yet wait for the handler.
    let stopped = timeout(Duration::from_secs(5), running.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "run stopped within the poll's 10 s: {stopped:?}"
    );
    assert_eq!(*finished.lock().unwrap(), ["/busy"]);
    assert_eq!(fake.unconfirmed(), 0);
}

#[tokio::test]
async fn a_shutdown_during_start_up_returns_at_once() {
    // An API that accepts connections and never answers: start-up hangs
    // on its first request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (running, _rx) = Running::forwarding(&url, Mode::Polling);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = timeout(Duration::from_secs(5), running.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

/// A free port on 127.0.0.1 (bound, then let go).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// POSTs an update to the webhook; the answer's status.
async fn post_update(addr: SocketAddr, path: &str, secret: Option<&str>, body: &str) -> u16 {
    let update: serde_json::Value = serde_json::from_str(body).unwrap();
    timeout(LIMIT, deliver_update(addr, path, secret, &update))
        .await
        .expect("the webhook answered")
        .unwrap()
}

fn update_json(update_id: i64, chat: i64, text: &str) -> String {
    text_update(update_id, chat, chat, text).to_string()
}

/// The webhook `run` set at the fake, once it has (within `LIMIT`).
async fn webhook_set(fake: &FakeBotApi) -> Option<Webhook> {
    for _ in 0..(LIMIT.as_millis() / 25) {
        if let Some(set) = fake.webhook() {
            return Some(set);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

const HOOK_SECRET: &str = "s3cret_Hook-token";

/// `run` in webhook mode at a free address, with `handler`, a queue of
/// `queue` and the secret [`HOOK_SECRET`]; once the webhook is set.
async fn webhook_running<H, F>(
    fake: &FakeBotApi,
    queue: usize,
    handler: H,
) -> (Running, SocketAddr, Arc<WebhookCounters>)
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
{
    let listen = free_addr();
    let url = url::Url::parse(&format!("http://{listen}/hook")).unwrap();
    let hook = updates::Webhook {
        queue,
        ..updates::Webhook::new(listen, url, HOOK_SECRET)
    };
    let counters = Arc::clone(&hook.counters);
    let running = Running::start(&fake.url(), TOKEN, Mode::Webhook(hook), handler);
    assert!(webhook_set(fake).await.is_some(), "setWebhook never came");
    (running, listen, counters)
}

#[tokio::test]
async fn the_webhook_refuses_a_body_over_64_kib_with_413_and_handles_nothing_of_it() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |m: Incoming| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(m);
        }
    };
    let (running, listen, counters) = webhook_running(&fake, 16, handler).await;
    // A well-formed update, 100 KiB of it: an old server would take it.
    let huge = update_json(1, 9, &format!("/min_callers {}", "9".repeat(100 * 1024)));
    assert!(huge.len() > 100 * 1024);
    assert_eq!(
        post_update(listen, "/hook", Some(HOOK_SECRET), &huge).await,
        413
    );
    let small = update_json(2, 9, "/status");
    assert_eq!(
        post_update(listen, "/hook", Some(HOOK_SECRET), &small).await,
        200
    );
    let got = receive(&mut rx, 1).await;
    assert_eq!(
        got[0].text, "/status",
        "the large one never reached the handler"
    );
    assert_eq!(counters.too_large.load(Ordering::Relaxed), 1);
    running.stop().await.unwrap();
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_full_webhook_queue_answers_429_counts_it_and_loses_nothing_it_took() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    // The chat's handler is held: the dispatcher fills the chat's worker
    // queue, then stops taking from ours, which fills in turn.
    let (open, opened) = tokio::sync::watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |m: Incoming| {
        let (tx, mut opened) = (tx.clone(), opened.clone());
        async move {
            let _ = opened.wait_for(|open| *open).await;
            let _ = tx.send(m);
        }
    };
    let (running, listen, counters) = webhook_running(&fake, 4, handler).await;
    let mut statuses = Vec::new();
    for i in 1..=100 {
        let body = update_json(i, 9, &format!("/cmd {i}"));
        statuses.push(post_update(listen, "/hook", Some(HOOK_SECRET), &body).await);
    }
    let taken = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(taken + refused, 100, "{statuses:?}");
    assert!(refused > 0, "the queue never filled: {statuses:?}");
    // The worker's queue (64), the update in the handler, at most one the
    // dispatcher holds, and ours (4).
    assert!(taken <= WORKER_QUEUE + 1 + 1 + 4, "{taken} taken");
    assert_eq!(counters.queue_full.load(Ordering::Relaxed), refused as u64);
    open.send(true).unwrap();
    let got = receive(&mut rx, taken).await;
    let expected: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == 200)
        .map(|(i, _)| format!("/cmd {}", i + 1))
        .collect();
    let texts: Vec<String> = got.into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts, expected,
        "every update taken, in order, and no other"
    );
    running.stop().await.unwrap();
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn webhook_mode_sets_the_webhook_and_takes_only_requests_with_the_secret() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let listen = free_addr();
    let public_url = url::Url::parse(&format!("http://{listen}/tg/hook")).unwrap();
    let secret = "s3cret_Hook-token";
    let hook = updates::Webhook::new(listen, public_url.clone(), secret);
    let counters = Arc::clone(&hook.counters);
    let (running, mut rx) = Running::forwarding(&fake.url(), Mode::Webhook(hook));
    let set = webhook_set(&fake).await;
    assert_eq!(
        set,
        Some(Webhook {
            url: public_url.to_string(),
            secret_token: Some(secret.to_owned()),
        })
    );

    let path = "/tg/hook";
    assert_eq!(
        post_update(listen, path, None, &update_json(1, 9, "/none")).await,
        401
    );
    assert_eq!(
        post_update(
            listen,
            path,
            Some("wrong_secret"),
            &update_json(2, 9, "/wrong")
        )
        .await,
        401
    );
    assert_eq!(
        post_update(
            listen,
            path,
            Some("bad secret!"),
            &update_json(3, 9, "/bad")
        )
        .await,
        400,
        "a header Telegram could not have sent"
    );
    assert_eq!(
        post_update(listen, path, Some(secret), &update_json(4, 9, "/right")).await,
        200
    );
    // In order within the chat: had any refused one got through, it would
    // come first.
    let got = receive(&mut rx, 1).await;
    assert_eq!(
        got[0],
        Incoming {
            chat_id: 9,
            user_id: Some(9),
            sender_chat_id: None,
            message_id: 4,
            text: "/right".to_owned(),
        }
    );

    assert_eq!(counters.refused_secret.load(Ordering::Relaxed), 3);
    assert_eq!(counters.queued.load(Ordering::Relaxed), 1);

    running.stop().await.unwrap();
    assert!(rx.try_recv().is_err(), "nothing else reached the handler");
    assert_eq!(fake.webhook(), None, "deleteWebhook at shutdown");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "the server has stopped listening"
    );
}

#[tokio::test]
async fn a_bad_webhook_secret_is_refused_before_anything_is_sent() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    for bad in [String::new(), "with space".to_owned(), "x".repeat(257)] {
        let mode = Mode::Webhook(updates::Webhook::new(
            free_addr(),
            url::Url::parse("https://bot.example/hook").unwrap(),
            &bad,
        ));
        let (running, _rx) = Running::forwarding(&fake.url(), mode);
        let error = running.error().await;
        assert!(
            matches!(error, UpdatesError::BadSecret(_)),
            "{bad:?}: {error:?}"
        );
        assert!(
            error.to_string().contains("secret token must be 1 to 256"),
            "{error}"
        );
    }
    assert_eq!(fake.webhook(), None);
}

#[tokio::test]
async fn a_busy_webhook_port_is_an_error_and_no_webhook_is_set() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let mode = Mode::Webhook(updates::Webhook::new(
        listen,
        url::Url::parse("https://bot.example/hook").unwrap(),
        "ok",
    ));
    let (running, _rx) = Running::forwarding(&fake.url(), mode);
    let error = running.error().await;
    assert!(
        matches!(error, UpdatesError::Listen { addr, .. } if addr == listen),
        "{error:?}"
    );
    assert_eq!(fake.webhook(), None);
}

#[tokio::test]
async fn the_token_is_in_no_error_and_no_log_line() {
    // A current-thread runtime: run's tasks log on this thread.
    let (logs, _guard) = callwatch_testkit::capture_logs();
    let mut texts = Vec::new();

    // A token the API does not know: getMe is refused.
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let other = "987654321:AAH-other_SECRET-part";
    let running = Running::start(&fake.url(), other, Mode::Polling, |_: Incoming| async {});
    let error = running.error().await;
    assert!(matches!(error, UpdatesError::Start(_)), "{error:?}");
    assert!(error.to_string().contains("Invalid bot token"), "{error}");
    texts.push(format!("{error:?} {error}"));

    // Nothing listening: a network error, whose text names the URL.
    let closed = free_addr();
    let running = Running::start(
        &format!("http://{closed}"),
        TOKEN,
        Mode::Polling,
        |_: Incoming| async {},
    );
    let error = running.error().await;
    assert!(matches!(error, UpdatesError::Start(_)), "{error:?}");
    assert!(
        error.to_string().contains("GetMe"),
        "the URL was there: {error}"
    );
    texts.push(format!("{error:?} {error}"));

    // The API goes away while polling: the listener's errors are logged.
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.push_text(3, 3, "/hello");
    let (running, mut rx) = Running::forwarding(&fake.url(), Mode::Polling);
    receive(&mut rx, 1).await;
    drop(fake);
    for _ in 0..200 {
        if logs.text().contains("receiving failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        logs.text().contains("receiving failed"),
        "the failed poll was logged: {}",
        logs.text()
    );
    running.stop().await.unwrap();

    texts.push(logs.text());
    for text in &texts {
        assert!(!text.contains(SECRET_PART), "token leaked: {text}");
        assert!(!text.contains("other_SECRET"), "token leaked: {text}");
    }
}
