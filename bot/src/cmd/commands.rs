//! The service's side of the bot's commands: the [`Backend`] that answers
//! them from Redis, PostgreSQL and the running engine.
//!
//! The engine is asked through [`EngineQuery`]: the thread that feeds the
//! router takes the query in turn with events, so an answer reflects every
//! event read before it. Settings and subscriptions change the engine only
//! through the chats stream, as every other producer does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use callwatch_io::audit::{Activity, AuditQueue, QueueRow};
use callwatch_io::store::subscription_key;
use callwatch_io::stream_ingest;
use callwatch_io::subscriptions::{Credit, CreditError, Credited, Source, SubscriptionStore};
use callwatch_io::telegram::BotToken;
use callwatch_io::telegram::commands::{
    Backend, BackendError, ChatSettings, Commands, PlanView, QuoteView, Request, SettingsStore,
    Subscription,
};
use callwatch_io::telegram::names::ChannelNames;
use callwatch_io::telegram::sender::{self, Message, Tag};
use callwatch_io::telegram::updates::{self, Incoming, Mode};
use engine::board::{self, ChannelScore};
use engine::event::{ChannelId, ChatId, Event, SettingsPatch};
use engine::shard::{CallOutcome, Holding};
use engine::time::{self, Nanos};
use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::settings::Settings;

/// A question for the engine, answered once the shards reach it.
#[derive(Debug)]
pub enum EngineQuery {
    Tracked {
        chat_id: ChatId,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    Outcomes {
        since: Nanos,
        reply: oneshot::Sender<Vec<CallOutcome>>,
    },
}

/// How long a command waits for the engine before it apologises.
const ENGINE_WAIT: Duration = Duration::from_secs(5);

/// The figures `/stats` shows, read when asked.
pub type StatsFn = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Where the service's commands get their answers.
pub struct ServiceBackend {
    pub redis: ConnectionManager,
    pub prefix: String,
    pub partitions: u32,
    pub settings: SettingsStore,
    pub subscriptions: SubscriptionStore,
    /// PostgreSQL, where grants are recorded; `None` when not configured.
    pub database_url: Option<String>,
    pub pg: Mutex<Option<tokio_postgres::Client>>,
    pub engine: mpsc::Sender<EngineQuery>,
    pub names: Arc<ChannelNames>,
    pub stats: StatsFn,
}

impl std::fmt::Debug for ServiceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("{what}: {e}"))
}

fn system_time(t: Nanos) -> SystemTime {
    if t >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(t as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(t.unsigned_abs())
    }
}

impl ServiceBackend {
    async fn ask<T>(
        &self,
        query: impl FnOnce(oneshot::Sender<T>) -> EngineQuery,
    ) -> Result<T, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.engine
            .send(query(tx))
            .await
            .map_err(|_| unavailable("engine", "stopping"))?;
        match tokio::time::timeout(ENGINE_WAIT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(unavailable("engine", "stopped before answering")),
            Err(_) => Err(unavailable("engine", "no answer in 5 s (busy)")),
        }
    }

    /// Appends the engine's `subscribe` event for a new expiry, retried a
    /// few times: the credit is already committed, so giving up here only
    /// delays the engine until the chat's next credit or a re-publish.
    pub async fn publish_subscribe(
        &self,
        chat_id: ChatId,
        plan: &str,
        expires_at: Nanos,
        now: Nanos,
    ) -> Result<(), BackendError> {
        let mut line = Vec::new();
        Event::Subscribe {
            chat_id,
            at: now,
            expires_at,
            plan: Some(plan.into()),
        }
        .write_json(&mut line);
        let line = line.trim_ascii_end();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            let mut con = self.redis.clone();
            match stream_ingest::publish(&mut con, &self.prefix, self.partitions, &[line]).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 4 => {
                    tracing::warn!(chat_id, error = %e, "subscribe event not published; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(e) => return Err(unavailable("Redis (subscribe event)", e)),
            }
        }
        unreachable!("the loop returns")
    }

    async fn postgres(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<tokio_postgres::Client>>, BackendError> {
        let Some(url) = &self.database_url else {
            return Err(BackendError::Refused(
                "Subscriptions need PostgreSQL, and this service runs without it.".to_owned(),
            ));
        };
        let mut pg = self.pg.lock().await;
        if pg.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .map_err(|e| unavailable("PostgreSQL", callwatch_io::migrate::pg_detail(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection for commands ended");
                }
            });
            *pg = Some(client);
        }
        Ok(pg)
    }
}

impl Backend for ServiceBackend {
    async fn settings(&self, chat_id: ChatId) -> Result<ChatSettings, BackendError> {
        self.settings.get(&mut self.redis.clone(), chat_id).await
    }

    async fn save_settings(
        &self,
        chat_id: ChatId,
        settings: &ChatSettings,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> Result<(), BackendError> {
        self.settings
            .save(&mut self.redis.clone(), chat_id, settings, patch, now)
            .await
    }

    async fn subscription(&self, chat_id: ChatId) -> Result<Option<Subscription>, BackendError> {
        let key = format!("{}{}", self.prefix, subscription_key(chat_id));
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| unavailable("Redis", e))?;
        let Some(value) = value else {
            return Ok(None);
        };
        #[derive(serde::Deserialize)]
        struct Copy {
            #[serde(default)]
            plan: String,
            expires_at: String,
        }
        let copy: Copy = serde_json::from_str(&value)
            .map_err(|e| unavailable(&format!("{key} is unreadable"), e))?;
        let expires_at = time::parse_rfc3339(&copy.expires_at)
            .map_err(|e| unavailable(&format!("{key} has a bad expires_at"), e))?;
        Ok(Some(Subscription {
            plan: copy.plan,
            expires_at,
        }))
    }

    async fn tracked(&self, chat_id: ChatId) -> Result<Vec<Holding>, BackendError> {
        self.ask(|reply| EngineQuery::Tracked { chat_id, reply })
            .await
    }

    async fn leaderboard(
        &self,
        since: Nanos,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, BackendError> {
        let outcomes = self
            .ask(|reply| EngineQuery::Outcomes { since, reply })
            .await?;
        Ok(board::leaderboard(outcomes, limit))
    }

    async fn names(&self, ids: &[ChannelId]) -> Vec<Option<String>> {
        self.names
            .resolve(ids)
            .await
            .into_iter()
            .map(|n| n.map(|n| n.to_string()))
            .collect()
    }

    async fn grant(
        &self,
        admin: i64,
        chat_id: ChatId,
        days: u32,
        now: Nanos,
    ) -> Result<Nanos, BackendError> {
        let credit = Credit {
            chat_id,
            plan: "grant".to_owned(),
            days,
            source: Source::Grant { granted_by: admin },
            amount_sol: None,
            amount_usd: None,
        };
        let credited = {
            let mut pg = self.postgres().await?;
            let client = pg.as_mut().expect("connected above");
            let result = self
                .subscriptions
                .credit(client, &mut self.redis.clone(), &credit, system_time(now))
                .await;
            if let Err(CreditError::Postgres(_)) = &result {
                *pg = None;
            }
            match result {
                Ok(c) => c,
                // Committed; the Redis copy is rewritten at the next start.
                Err(CreditError::RedisCopy { credited, error }) => {
                    tracing::warn!(chat_id, %error, "grant committed; its Redis copy failed");
                    credited
                }
                Err(e) => return Err(unavailable("grant", e)),
            }
        };
        let Credited::New { expires_at, .. } = credited else {
            return Err(BackendError::Refused(
                "That grant was already recorded.".to_owned(),
            ));
        };
        self.publish_subscribe(chat_id, "grant", expires_at, now)
            .await?;
        Ok(expires_at)
    }

    async fn stats(&self) -> Result<Vec<(String, String)>, BackendError> {
        Ok((self.stats)())
    }

    fn plans(&self) -> Vec<PlanView> {
        Vec::new()
    }

    async fn quote(
        &self,
        _chat_id: ChatId,
        _plan: &str,
        _now: Nanos,
    ) -> Result<QuoteView, BackendError> {
        Err(BackendError::Refused(
            "Payments are not open yet. An admin can /grant you days.".to_owned(),
        ))
    }
}

/// What `serve` hands over to run the commands.
pub struct Parts {
    pub sender: sender::Sender,
    pub names: Arc<ChannelNames>,
    pub queries: mpsc::Sender<EngineQuery>,
    pub stats: StatsFn,
    pub redis: ConnectionManager,
}

/// The wall clock as the engine counts time.
fn now_nanos() -> Nanos {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX))
}

/// Starts receiving commands (long polling or the webhook, as configured):
/// each is answered through the sender's reply lane and written to the
/// activity log. The task ends when `stop` turns true.
pub fn start(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    parts: Parts,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), updates::UpdatesError>>> {
    let t = &settings.telegram;
    let prefix = settings.redis.key_prefix.clone();
    let database_url = (!settings.postgres.url.is_empty()).then(|| settings.postgres.url.clone());
    let backend = ServiceBackend {
        redis: parts.redis.clone(),
        prefix: prefix.clone(),
        partitions: settings.ingest.partitions,
        settings: SettingsStore::new(&prefix),
        subscriptions: SubscriptionStore::new(&settings.postgres.schema, &prefix),
        database_url,
        pg: Mutex::new(None),
        engine: parts.queries,
        names: parts.names,
        stats: parts.stats,
    };
    let username = (!t.bot_username.is_empty()).then(|| t.bot_username.clone());
    let commands = Arc::new(Commands::new(backend, t.admins.clone(), username));
    let mode = if t.updates == "webhook" {
        Mode::Webhook {
            listen: t
                .webhook_listen
                .parse()
                .context("telegram.webhook_listen")?,
            public_url: t.webhook_url.parse().context("telegram.webhook_url")?,
            secret_token: t.webhook_secret.clone(),
        }
    } else {
        Mode::Polling
    };
    let api_url: url::Url = t.api_url.parse().context("telegram.api_url")?;
    let token = BotToken::new(t.token.clone());
    let audit = AuditQueue::new(format!("{prefix}callwatch:audit"));
    let (replies, redis) = (parts.sender, parts.redis);
    let handler = move |msg: Incoming| {
        let (commands, replies, audit, mut redis) = (
            Arc::clone(&commands),
            replies.clone(),
            audit.clone(),
            redis.clone(),
        );
        async move {
            let now = now_nanos();
            let req = Request {
                chat_id: msg.chat_id,
                user_id: msg.user_id,
                text: msg.text,
            };
            let Some(reply) = commands.handle(&req, now).await else {
                return;
            };
            let name = match commands.parse(&req.text) {
                Some(Ok(c)) => c.name(),
                _ => "invalid",
            };
            let message = Message {
                chat_id: req.chat_id,
                tag: Tag::Reply(u64::from(msg.message_id.unsigned_abs())),
                text: reply.text,
                buttons: reply.buttons,
            };
            if replies.send(message).await.is_err() {
                tracing::warn!(
                    chat_id = req.chat_id,
                    "reply not queued: the sender has closed"
                );
            }
            let activity = Activity {
                chat_id: req.chat_id,
                activity_type: format!("command:{name}"),
                metadata: serde_json::json!({
                    "user_id": req.user_id,
                    "text": req.text.chars().take(256).collect::<String>(),
                }),
                created_at: now,
            };
            if let Err(e) = audit
                .push_batch(&mut redis, &[QueueRow::Activity(activity)])
                .await
            {
                tracing::warn!(error = %e, "command not written to the activity log");
            }
        }
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let _entered = rt.enter();
    Ok(rt.spawn(async move { updates::run(&api_url, &token, mode, handler, shutdown).await }))
}
