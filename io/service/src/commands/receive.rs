//! Receiving the bot's commands (long polling or the webhook, as
//! configured): each is answered through the sender's reply lane and
//! written to the activity log.

use std::sync::Arc;

use anyhow::Context;
use callwatch_common::clock;
use callwatch_dashboard::Links as DashboardLinks;
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::keys::{audit_key, posts_key};
use callwatch_feed::posts::{POST_FIELD, Post};
use callwatch_ledger::audit::{Activity, AuditQueue, QueueRow};
use callwatch_ledger::subscriptions::SubscriptionStore;
use callwatch_payments::Ledger;
use callwatch_payments::watcher::WatcherCounters;
use callwatch_streams::Conn;
use callwatch_telegram::BotToken;
use callwatch_telegram::commands::{Commands, RightsCounters, SettingsStore};
use callwatch_telegram::members::ChatMembers;
use callwatch_telegram::sender::{self, Message};
use callwatch_telegram::updates::{self, Incoming, Mode, Webhook};
use callwatch_telegram::webhook::WebhookCounters;
use engine::time::NANOS_PER_SEC;
use tokio::sync::{Mutex, watch};

use super::engine_ask::EngineAsk;
use super::limit::{CommandCounters, CommandLimit, Verdict, slow_down_text};
use super::payments::{self, PaymentParts};
use super::{ServiceBackend, StatsFn};
use crate::alerts::Alerts;
use crate::settings::Settings;

/// What the service hands over to run the commands.
pub struct Parts {
    pub alerts: Alerts,
    /// The engine's questions, shared with the dashboard.
    pub engine: Arc<EngineAsk>,
    /// The dashboard's links, when it is set up.
    pub dashboard: Option<DashboardLinks>,
    pub stats: StatsFn,
    pub redis: Conn,
    /// A connection of its own for posts, so that a backlog of them never
    /// queues behind a command's reads.
    pub redis_posts: Conn,
    /// The commands' figures, which `/metrics` shows.
    pub counters: Arc<CommandCounters>,
    /// The payment watcher's counters, for `/metrics`.
    pub payment_counters: Arc<WatcherCounters>,
    /// What the receiving side counts, for `/metrics`.
    pub receiving: ReceivingCounters,
}

/// What the receiving side counts: who was refused a change to a group,
/// and what the webhook refused and took.
#[derive(Debug, Clone, Default)]
pub struct ReceivingCounters {
    pub rights: Arc<RightsCounters>,
    pub webhook: Arc<WebhookCounters>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// The task that receives commands; it ends when `stop` turns true.
pub type UpdatesTask = tokio::task::JoinHandle<Result<(), updates::UpdatesError>>;

/// Starts receiving commands, and payments when they are configured; call
/// inside the runtime.
pub fn start(
    settings: &Settings,
    parts: Parts,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<UpdatesTask> {
    let t = &settings.telegram;
    let prefix = settings.redis.key_prefix.clone();
    let database = settings.postgres.server().context("postgres.url")?;
    let payments = match &database {
        Some(server) if settings.payments_enabled() => {
            let ledger = Ledger::new(
                settings.payments.clone(),
                &settings.postgres.schema,
                &prefix,
            )
            .context("payments")?;
            payments::start(
                &PaymentParts {
                    ledger: ledger.clone(),
                    database: server.clone(),
                    redis: parts.redis.clone(),
                    sender: parts.alerts.sender.clone(),
                    admins: t.admins.clone(),
                    counters: Arc::clone(&parts.counters),
                    watcher_counters: Arc::clone(&parts.payment_counters),
                },
                stop,
            )?;
            Some(ledger)
        }
        _ => None,
    };
    let api_url: url::Url = t.api_url.parse().context("telegram.api_url")?;
    let token = BotToken::new(t.token.expose());
    let backend = ServiceBackend {
        redis: parts.redis.clone(),
        prefix: prefix.clone(),
        settings: if parts.redis.is_cluster() {
            SettingsStore::on_cluster(&prefix)
        } else {
            SettingsStore::new(&prefix)
        },
        subscriptions: SubscriptionStore::new(&settings.postgres.schema, &prefix),
        database,
        pg: Mutex::new(None),
        engine: parts.engine,
        names: Arc::clone(&parts.alerts.names),
        dashboard: parts.dashboard,
        stats: parts.stats,
        payments,
        members: ChatMembers::new(&api_url, &token).context("telegram")?,
        notices: parts.alerts.sender.clone(),
        counters: Arc::clone(&parts.counters),
    };
    let username = (!t.bot_username.is_empty()).then(|| t.bot_username.clone());
    let commands = Commands::new(backend, t.admins.clone(), username)
        .counting_rights(Arc::clone(&parts.receiving.rights));
    let commands = Arc::new(commands);
    let mode = if t.updates == "webhook" {
        Mode::Webhook(Webhook {
            listen: t
                .webhook_listen
                .parse()
                .context("telegram.webhook_listen")?,
            public_url: t.webhook_url.parse().context("telegram.webhook_url")?,
            secret_token: t.webhook_secret.clone(),
            queue: t.webhook_queue,
            counters: Arc::clone(&parts.receiving.webhook),
        })
    } else {
        Mode::Polling
    };
    let answer = Answer {
        commands,
        limit: Arc::new(CommandLimit::new(t.commands_per_minute, t.command_burst)),
        counters: parts.counters,
        replies: parts.alerts.sender.clone(),
        audit: AuditQueue::new(audit_key(&prefix)),
        redis: parts.redis,
    };
    let handler = move |msg: Incoming| answer.clone().handle(msg);
    let posts = settings.sources.calls.then(|| {
        let (con, key) = (parts.redis_posts, posts_key(&prefix));
        move |post: updates::Post| append_post(con.clone(), key.clone(), post)
    });
    let mut stop = stop.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Ok(tokio::spawn(async move {
        updates::receive(&api_url, &token, mode, handler, posts, shutdown).await
    }))
}

/// Attempts at appending a post before it is given up (logged).
const POST_ATTEMPTS: u32 = 12;

/// Appends a post the bot received to the raw-posts stream, where the
/// sources read calls; retried while Redis is away (the chat's next
/// updates wait meanwhile), given up loudly after [`POST_ATTEMPTS`].
async fn append_post(mut con: Conn, key: String, post: updates::Post) {
    let value = Post {
        chat_id: post.chat_id,
        message_id: i64::from(post.message_id),
        date: post.date.saturating_mul(NANOS_PER_SEC),
        text: post.text,
        links: post.links,
        edited: post.edited,
        chat_title: post.chat_title,
        chat_username: post.chat_username,
    }
    .encode();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    for attempt in 1..=POST_ATTEMPTS {
        let added: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(POST_FIELD)
            .arg(&value)
            .query_async(&mut con)
            .await;
        match added {
            Ok(_) => return,
            Err(e) if attempt < POST_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "a post was not stored yet; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, chat_id = post.chat_id, message_id = post.message_id, "a post was lost: Redis did not take it");
            }
        }
    }
}

/// Answers one message and logs it as an activity.
#[derive(Clone)]
struct Answer {
    commands: Arc<Commands<ServiceBackend>>,
    limit: Arc<CommandLimit>,
    counters: Arc<CommandCounters>,
    replies: sender::Sender,
    audit: AuditQueue,
    redis: Conn,
}

impl Answer {
    async fn handle(mut self, msg: Incoming) {
        if !self.commands.addressed(&msg.text) {
            return;
        }
        let id = u64::from(msg.message_id.unsigned_abs());
        match self.limit.check(msg.chat_id, &self.counters) {
            Verdict::Answer => {}
            Verdict::SlowDown(wait) => {
                tracing::info!(chat_id = msg.chat_id, "a chat over its command rate");
                self.reply(Message::reply(msg.chat_id, id, slow_down_text(wait)))
                    .await;
                return;
            }
            Verdict::Drop => return,
        }
        let now = clock::now();
        let Some((name, reply)) = self.commands.handle(&msg, now).await else {
            return;
        };
        self.reply(Message::reply(msg.chat_id, id, reply.text))
            .await;
        let activity = Activity {
            chat_id: msg.chat_id,
            activity_type: format!("command:{name}"),
            metadata: serde_json::json!({
                "user_id": msg.user_id,
                "text": msg.text.chars().take(256).collect::<String>(),
            }),
            created_at: now,
        };
        if let Err(e) = self
            .audit
            .push_batch(&mut self.redis, &[QueueRow::Activity(activity)])
            .await
        {
            tracing::warn!(error = %e, "command not written to the activity log");
        }
    }

    /// Queues a reply; one its chat has no room for is dropped (the
    /// sender counts it), since waiting would hold every chat up.
    async fn reply(&self, message: Message) {
        let chat_id = message.chat_id;
        match self.replies.send(message).await {
            Ok(()) => {}
            Err(sender::Rejected::ChatFull(_)) => {
                tracing::debug!(chat_id, "reply dropped: its chat has a full queue");
            }
            Err(e) => tracing::warn!(chat_id, "reply not queued: {e}"),
        }
    }
}
