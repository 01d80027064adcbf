//! The service's command backend against real Redis and PostgreSQL and
//! the fake Bot API: who may change a group (asked of `getChatMember`),
//! a grant whose `subscribe` event failed after its commit finished by the
//! same command without a second credit, and a resolved payment's chat
//! told. Each test has a PostgreSQL schema, a Redis key prefix and a fake
//! Bot API of its own, and removes them.

use std::sync::Arc;
use std::time::Duration;

use callwatch_ledger::subscriptions::SubscriptionStore;
use callwatch_payments::Ledger;
use callwatch_payments::config::PaymentsConfig;
use callwatch_service::commands::{EngineAsk, ServiceBackend};
use callwatch_streams::connection::{RedisTimeouts, managed_connection};
use callwatch_telegram::BotToken;
use callwatch_telegram::commands::{CANNOT_CHECK, Commands, NOT_AN_ADMIN, SettingsStore};
use callwatch_telegram::config::TelegramConfig;
use callwatch_telegram::members::ChatMembers;
use callwatch_telegram::names::{ChannelNames, NamesConfig};
use callwatch_telegram::sender::{Sender, SenderTask};
use callwatch_telegram::updates::Incoming;
use callwatch_testkit::fake_bot::{FakeBotApi, MemberStatus};
use callwatch_testkit::fake_rpc::pubkey;
use callwatch_testkit::{OwnPrefix, Schema, connect_redis, database_url, own_schema, redis_url};
use tokio::sync::{Mutex, mpsc};

const TOKEN: &str = "123456789:AAH-test_token_SECRET-part-0123456789";
const ADMIN: i64 = 7;
const GROUP: i64 = -1_001_500;
const REDIS_DB: u8 = 14;

/// The commands over a `ServiceBackend` of the test's own.
struct Setup {
    commands: Commands<ServiceBackend>,
    fake: FakeBotApi,
    redis: redis::aio::MultiplexedConnection,
    pg: tokio_postgres::Client,
    keys: OwnPrefix,
    schema: Schema,
    _sender: SenderTask,
    /// Kept so that the engine's channel stays open (no query is asked).
    _engine: mpsc::Receiver<callwatch_service::commands::EngineQuery>,
}

async fn setup(test: &str) -> Setup {
    let (schema, pg) = own_schema(test).await;
    let keys = OwnPrefix::new("cw-test-cmd", REDIS_DB);
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let token = BotToken::new(TOKEN);
    let telegram = TelegramConfig {
        token: TOKEN.into(),
        api_url: fake.url(),
        ..TelegramConfig::default()
    };
    let (sender, mut reports, task) = Sender::start(token.clone(), telegram.sender()).unwrap();
    tokio::spawn(async move { while reports.recv().await.is_some() {} });
    let redis = managed_connection(&redis_url(REDIS_DB), &RedisTimeouts::default()).unwrap();
    let payments = PaymentsConfig {
        rpc_url: "http://127.0.0.1:1".into(),
        receiving_address: pubkey(1),
        ..PaymentsConfig::default()
    };
    let (engine, queries) = mpsc::channel(1);
    let backend = ServiceBackend {
        redis: redis.clone(),
        prefix: keys.prefix.clone(),
        settings: SettingsStore::new(&keys.prefix),
        subscriptions: SubscriptionStore::new(&schema.0, &keys.prefix),
        database: Some(database_url().parse().unwrap()),
        pg: Mutex::new(None),
        engine: Arc::new(EngineAsk::new(engine)),
        names: Arc::new(ChannelNames::new(NamesConfig::default(), redis)),
        dashboard: None,
        stats: Box::new(Vec::new),
        payments: Some(Ledger::new(payments, &schema.0, &keys.prefix).unwrap()),
        members: ChatMembers::new(&fake.url().parse().unwrap(), &token).unwrap(),
        notices: sender,
        counters: Arc::default(),
    };
    Setup {
        commands: Commands::new(backend, vec![ADMIN], None),
        fake,
        redis: connect_redis(REDIS_DB).await,
        pg,
        keys,
        schema,
        _sender: task,
        _engine: queries,
    }
}

impl Setup {
    /// The reply to `text` from `user` in `chat`, as message `message_id`.
    async fn ask(&self, chat: i64, user: i64, message_id: i32, text: &str) -> String {
        let req = Incoming {
            chat_id: chat,
            user_id: Some(user),
            sender_chat_id: None,
            message_id,
            text: text.to_owned(),
        };
        let now = callwatch_common::clock::now();
        let (_, reply) = self.commands.handle(&req, now).await.expect("a reply");
        reply.text
    }

    fn chats_stream(&self) -> String {
        format!("{}events:chats", self.keys.prefix)
    }

    /// The lines on the chats stream.
    async fn chat_events(&mut self) -> Vec<String> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(self.chats_stream())
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .unwrap();
        entries.into_iter().map(|(_, f)| f[0].1.clone()).collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &format!("\"{}\"", self.schema.0));
        self.pg.query_one(&sql, &[]).await.unwrap().get(0)
    }

    /// The first message the fake received for `chat` containing `needle`.
    async fn message_to(&self, chat: i64, needle: &str) -> String {
        for _ in 0..400 {
            let found = self
                .fake
                .received()
                .into_iter()
                .find(|r| r.chat_id == chat && r.text.contains(needle));
            if let Some(r) = found {
                return r.text;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no message with {needle:?} to {chat}: {:#?}",
            self.fake.received()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_telegram_is_asked_who_administers_it_and_a_failure_refuses() {
    let mut s = setup("cmd_rights").await;
    // Settings are for subscribed chats: the group is granted a month.
    let granted = s.ask(ADMIN, ADMIN, 90, &format!("/grant {GROUP} 30")).await;
    assert!(granted.contains("Granted"), "{granted}");
    s.fake.set_member(GROUP, 20, MemberStatus::Administrator);
    s.fake.set_member(GROUP, 21, MemberStatus::Creator);
    s.fake.set_member(GROUP, 22, MemberStatus::Left);
    assert_eq!(s.ask(GROUP, 23, 1, "/min_callers 3").await, NOT_AN_ADMIN);
    assert_eq!(s.ask(GROUP, 22, 2, "/min_callers 3").await, NOT_AN_ADMIN);
    assert!(s.ask(GROUP, 20, 3, "/min_callers 3").await.contains("Done"));
    assert!(s.ask(GROUP, 21, 4, "/lookback 30").await.contains("Done"));
    assert_eq!(s.fake.member_lookups(), 4);
    // Asked again within the minute: the answers are kept.
    assert!(s.ask(GROUP, 20, 5, "/min_callers 4").await.contains("Done"));
    assert_eq!(s.ask(GROUP, 23, 6, "/min_callers 4").await, NOT_AN_ADMIN);
    assert_eq!(s.fake.member_lookups(), 4);
    // Telegram failing: refused, with a word to try again.
    s.fake.fail_member_lookups(1);
    assert_eq!(s.ask(GROUP, 24, 7, "/min_callers 5").await, CANNOT_CHECK);
    // The grant's subscribe event, then the administrators' three.
    assert_eq!(
        s.chat_events().await.len(),
        4,
        "the grant and the administrators' three"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_event_failed_after_the_commit_is_finished_by_its_repeat_and_credits_once() {
    let mut s = setup("cmd_grant").await;
    // The chats stream is not a stream: the subscribe event cannot be
    // published, after the credit has committed.
    let _: () = redis::cmd("SET")
        .arg(s.chats_stream())
        .arg("in the way")
        .query_async(&mut s.redis)
        .await
        .unwrap();
    let first = s.ask(ADMIN, ADMIN, 41, "/grant 99 30").await;
    assert!(
        first.contains("Granted 30 days to <code>99</code>")
            && first.contains(&format!("<code>/grant 99 30 {ADMIN}:41</code>")),
        "{first}"
    );
    assert_eq!(s.count("SELECT count(*) FROM {s}.payments").await, 1);

    // Redis is back; Telegram delivers the same update again.
    let _: i64 = redis::cmd("DEL")
        .arg(s.chats_stream())
        .query_async(&mut s.redis)
        .await
        .unwrap();
    let again = s.ask(ADMIN, ADMIN, 41, "/grant 99 30").await;
    assert!(
        again.contains("Granted 30 days") && !again.contains("could not"),
        "{again}"
    );
    // The admin sends the command the first reply gave: still nothing more.
    let by_id = s
        .ask(ADMIN, ADMIN, 42, &format!("/grant 99 30 {ADMIN}:41"))
        .await;
    assert!(by_id.contains("Granted 30 days"), "{by_id}");
    assert_eq!(s.count("SELECT count(*) FROM {s}.payments").await, 1);
    let events = s.chat_events().await;
    assert_eq!(events.len(), 2, "{events:#?}");
    for e in &events {
        assert!(
            e.contains(r#""type":"subscribe""#) && e.contains(r#""chat_id":99"#),
            "{e}"
        );
    }
    assert_eq!(
        expiry_of(&events[0]),
        expiry_of(&events[1]),
        "the one credit's expiry, twice"
    );
    // The same id for another grant is refused, not credited.
    let other = s
        .ask(ADMIN, ADMIN, 43, &format!("/grant 98 30 {ADMIN}:41"))
        .await;
    assert!(other.contains("was recorded as 30 days to 99"), "{other}");
    assert_eq!(s.count("SELECT count(*) FROM {s}.payments").await, 1);
}

/// The `expires_at` of a `subscribe` event line.
fn expiry_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["expires_at"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_payment_is_claimed_once_and_its_chat_is_told() {
    let s = setup("cmd_resolve").await;
    let signature = "4".repeat(88);
    s.pg.execute(
        &format!(
            "INSERT INTO \"{}\".unmatched_payments (signature, reason, received, seen_at) \
                 VALUES ($1, 'unknown_reference', 800000000, now())",
            s.schema.0
        ),
        &[&signature],
    )
    .await
    .unwrap();
    let r = s
        .ask(ADMIN, ADMIN, 1, &format!("/resolve {signature} 43 month"))
        .await;
    assert!(r.contains("Credited to <code>43</code> as month"), "{r}");
    let told = s.message_to(43, "was applied by an admin").await;
    assert!(
        told.contains(&format!("<code>{signature}</code>"))
            && told.contains("<b>month</b>")
            && told.contains("subscribed until"),
        "{told}"
    );
    let r = s
        .ask(ADMIN, ADMIN, 2, &format!("/resolve {signature} 44 month"))
        .await;
    assert!(r.contains("already resolved by 7, for chat 43"), "{r}");
    assert_eq!(s.count("SELECT count(*) FROM {s}.payments").await, 1);
    let to_44 = s.fake.received().iter().filter(|m| m.chat_id == 44).count();
    assert_eq!(to_44, 0, "the refused resolve told nobody");
}
