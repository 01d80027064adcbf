//! The service's command backend against real Redis and PostgreSQL and
//! the fake Bot API: who may change a group (asked of `getChatMember`).
//! Each test has a PostgreSQL schema, a Redis key prefix and a fake Bot API
//! of its own, and removes them.

use std::sync::Arc;

use callwatch_ledger::subscriptions::SubscriptionStore;
use callwatch_payments::Ledger;
use callwatch_payments::config::PaymentsConfig;
use callwatch_service::commands::ServiceBackend;
use callwatch_streams::connection::{RedisTimeouts, managed_connection};
use callwatch_telegram::BotToken;
use callwatch_telegram::commands::{CANNOT_CHECK, Commands, NOT_AN_ADMIN, SettingsStore};
use callwatch_telegram::members::ChatMembers;
use callwatch_telegram::names::{ChannelNames, NamesConfig};
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
    keys: OwnPrefix,
    _schema: Schema,
    /// Kept so that the engine's channel stays open (no query is asked).
    _engine: mpsc::Receiver<callwatch_service::commands::EngineQuery>,
}

async fn setup(test: &str) -> Setup {
    let (schema, _) = own_schema(test).await;
    let keys = OwnPrefix::new("cw-test-cmd", REDIS_DB);
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let token = BotToken::new(TOKEN);
    let redis = managed_connection(&redis_url(REDIS_DB), &RedisTimeouts::default()).unwrap();
    let payments = PaymentsConfig {
        rpc_url: "http://127.0.0.1:1".to_owned(),
        receiving_address: pubkey(1),
        ..PaymentsConfig::default()
    };
    let (engine, queries) = mpsc::channel(1);
    let backend = ServiceBackend {
        redis: redis.clone(),
        prefix: keys.prefix.clone(),
        settings: SettingsStore::new(&keys.prefix),
        subscriptions: SubscriptionStore::new(&schema.0, &keys.prefix),
        database_url: Some(database_url()),
        pg: Mutex::new(None),
        engine,
        names: Arc::new(ChannelNames::new(NamesConfig::default(), redis)),
        stats: Box::new(Vec::new),
        payments: Some(Ledger::new(payments, &schema.0, &keys.prefix).unwrap()),
        members: ChatMembers::new(&fake.url().parse().unwrap(), &token).unwrap(),
    };
    Setup {
        commands: Commands::new(backend, vec![ADMIN], None),
        fake,
        redis: connect_redis(REDIS_DB).await,
        keys,
        _schema: schema,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_telegram_is_asked_who_administers_it_and_a_failure_refuses() {
    let mut s = setup("cmd_rights").await;
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
    assert_eq!(s.chat_events().await.len(), 3, "the administrators' three");
}
