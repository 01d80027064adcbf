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
use callwatch_io::clock::{self, system_time};
use callwatch_io::payments::config::lamports_to_sol;
use callwatch_io::payments::expiry::ReminderKind;
use callwatch_io::payments::unmatched::{Resolution, Resolved};
use callwatch_io::payments::watcher::{Outcome, Watcher};
use callwatch_io::payments::{Ledger, PaymentError, solana_pay_url};
use callwatch_io::subscriptions::{
    Credit, CreditError, Credited, Source, SubscriptionStore, announce,
};
use callwatch_io::telegram::BotToken;
use callwatch_io::telegram::commands::{
    Backend, BackendError, ChatSettings, Commands, PlanView, QuoteView, SettingsStore,
    Subscription, UnmatchedView, esc, when,
};
use callwatch_io::telegram::names::ChannelNames;
use callwatch_io::telegram::sender::{self, Message};
use callwatch_io::telegram::updates::{self, Incoming, Mode};
use engine::board::{self, ChannelScore};
use engine::event::{ChannelId, ChatId, SettingsPatch};
use engine::shard::{CallOutcome, Holding};
use engine::time::Nanos;
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
    /// Payments, when configured.
    pub payments: Option<Ledger>,
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
    async fn publish_subscribe(
        &self,
        chat_id: ChatId,
        plan: &str,
        expires_at: Nanos,
        now: Nanos,
    ) -> Result<(), BackendError> {
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            let mut con = self.redis.clone();
            let announced = announce(
                &mut con,
                &self.prefix,
                self.partitions,
                chat_id,
                plan,
                expires_at,
                now,
            );
            match announced.await {
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

    fn ledger(&self) -> Result<&Ledger, BackendError> {
        self.payments.as_ref().ok_or_else(|| {
            BackendError::Refused(
                "Payments are not open yet. An admin can /grant you days.".to_owned(),
            )
        })
    }

    /// A payments error as the user sees it; a PostgreSQL failure drops the
    /// connection so the next command makes a new one.
    fn payment_failed(
        &self,
        pg: &mut Option<tokio_postgres::Client>,
        e: PaymentError,
    ) -> BackendError {
        if matches!(e, PaymentError::Postgres(_) | PaymentError::PgConnect(_)) {
            *pg = None;
        }
        unavailable("payments", e)
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
        super::connected(url, &mut pg)
            .await
            .map_err(|e| unavailable("PostgreSQL", callwatch_io::migrate::pg_detail(&e)))?;
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
        let copy = self
            .subscriptions
            .read_copy(&mut self.redis.clone(), chat_id)
            .await
            .map_err(|e| unavailable("subscription", e))?;
        Ok(copy.map(|(plan, expires_at)| Subscription { plan, expires_at }))
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
        self.payments.as_ref().map_or_else(Vec::new, |ledger| {
            ledger
                .config()
                .plans
                .iter()
                .map(|p| PlanView {
                    name: p.name.clone(),
                    days: p.days,
                    price_sol: p.price_sol.clone(),
                })
                .collect()
        })
    }

    async fn quote(
        &self,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> Result<QuoteView, BackendError> {
        let ledger = self.ledger()?;
        let mut pg = self.postgres().await?;
        let client = pg.as_mut().expect("connected above");
        let quote = match ledger
            .create_quote(client, chat_id, plan, system_time(now))
            .await
        {
            Ok(q) => q,
            Err(PaymentError::UnknownPlan(name)) => {
                return Err(BackendError::Refused(format!(
                    "There is no plan \"{name}\"; /subscribe lists them."
                )));
            }
            Err(e) => return Err(self.payment_failed(&mut pg, e)),
        };
        Ok(QuoteView {
            pay_url: solana_pay_url(&quote),
            amount_sol: quote.amount_sol(),
            plan: quote.plan,
            days: quote.days,
            address: quote.receiving_address,
            reference: quote.reference,
            expires_at: quote.expires_at,
        })
    }

    async fn unmatched(&self) -> Result<Vec<UnmatchedView>, BackendError> {
        let ledger = self.ledger()?;
        let mut pg = self.postgres().await?;
        let client = pg.as_mut().expect("connected above");
        match ledger.list_unmatched(client).await {
            Ok(list) => Ok(list
                .into_iter()
                .map(|u| UnmatchedView {
                    signature: u.signature,
                    reason: u.reason.to_string(),
                    received_sol: if u.received_lamports < 0 {
                        format!("-{}", lamports_to_sol(u.received_lamports.unsigned_abs()))
                    } else {
                        lamports_to_sol(u.received_lamports.unsigned_abs())
                    },
                    chat_id: u.chat_id,
                })
                .collect()),
            Err(e) => Err(self.payment_failed(&mut pg, e)),
        }
    }

    async fn resolve(
        &self,
        admin: i64,
        signature: &str,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> Result<Nanos, BackendError> {
        let ledger = self.ledger()?;
        let mut pg = self.postgres().await?;
        let client = pg.as_mut().expect("connected above");
        let resolution = Resolution {
            signature,
            chat_id,
            plan,
            admin_chat_id: admin,
        };
        let resolved = ledger
            .resolve_unmatched(
                client,
                &mut self.redis.clone(),
                &resolution,
                system_time(now),
            )
            .await;
        match resolved {
            Ok(Resolved::Credited { expires_at }) => Ok(expires_at),
            Ok(Resolved::AlreadyResolved {
                resolved_by,
                chat_id,
            }) => Err(BackendError::Refused(format!(
                "That payment was already resolved by {resolved_by}, for chat {chat_id}."
            ))),
            Err(PaymentError::NotFound(sig)) => Err(BackendError::Refused(format!(
                "No unmatched payment has the signature {sig}."
            ))),
            Err(PaymentError::UnknownPlan(name)) => Err(BackendError::Refused(format!(
                "There is no plan \"{name}\"."
            ))),
            Err(e) => Err(self.payment_failed(&mut pg, e)),
        }
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
    let payments = match &database_url {
        Some(url) if settings.payments_enabled() => {
            let ledger = Ledger::new(
                settings.payments.clone(),
                &settings.postgres.schema,
                &prefix,
                settings.ingest.partitions,
            )
            .context("payments")?;
            start_payments(
                rt,
                &ledger,
                url,
                &parts.redis,
                &parts.sender,
                &t.admins,
                stop.clone(),
            )?;
            Some(ledger)
        }
        _ => None,
    };
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
        payments,
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
            let now = clock::now();
            let Some((name, reply)) = commands.handle(&msg, now).await else {
                return;
            };
            let message = Message::reply(
                msg.chat_id,
                u64::from(msg.message_id.unsigned_abs()),
                reply.text,
            );
            if replies.send(message).await.is_err() {
                tracing::warn!(
                    chat_id = msg.chat_id,
                    "reply not queued: the sender has closed"
                );
            }
            let activity = Activity {
                chat_id: msg.chat_id,
                activity_type: format!("command:{name}"),
                metadata: serde_json::json!({
                    "user_id": msg.user_id,
                    "text": msg.text.chars().take(256).collect::<String>(),
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

/// Ids for the messages the service sends on its own (confirmations,
/// reminders), apart from the update ids replies carry.
static NOTICE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 48);

async fn notify(sender: &sender::Sender, chat_id: ChatId, text: String) {
    let id = NOTICE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if sender
        .send(Message::reply(chat_id, id, text))
        .await
        .is_err()
    {
        tracing::warn!(chat_id, "notice not queued: the sender has closed");
    }
}

/// How often reminders and expiry are looked for.
const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// Starts the payment watcher (credits, then a confirmation to the chat;
/// what matches nothing, a note to the admins) and the reminder loop (3
/// days and 1 day before expiry, and at expiry). Both stop with `stop`.
fn start_payments(
    rt: &tokio::runtime::Runtime,
    ledger: &Ledger,
    database_url: &str,
    redis: &ConnectionManager,
    sender: &sender::Sender,
    admins: &[i64],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let watcher = Watcher::new(ledger.clone()).context("payments")?;
    let (tx, mut outcomes) = mpsc::channel(64);
    {
        let (url, redis, stop) = (database_url.to_owned(), redis.clone(), stop.clone());
        rt.spawn(async move {
            if let Err(e) = watcher.run(&url, redis, tx, stop).await {
                tracing::error!(error = %e, "the payment watcher stopped");
            }
        });
    }
    {
        let (sender, admins) = (sender.clone(), admins.to_vec());
        rt.spawn(async move {
            while let Some(outcome) = outcomes.recv().await {
                match outcome {
                    Outcome::Credited {
                        chat_id,
                        plan,
                        days,
                        expires_at,
                        signature,
                        lamports,
                    } => {
                        tracing::info!(chat_id, %plan, %signature, lamports, "payment credited");
                        let text = format!(
                            "Payment received: {} SOL for <b>{}</b> ({days} days). You are \
                             subscribed until {}. Thank you!",
                            lamports_to_sol(lamports),
                            esc(&plan),
                            when(expires_at)
                        );
                        notify(&sender, chat_id, text).await;
                    }
                    Outcome::Unmatched {
                        signature,
                        reason,
                        chat_id,
                    } => {
                        tracing::warn!(%signature, %reason, ?chat_id, "payment matched no quote");
                        if let Some(chat_id) = chat_id {
                            let text = format!(
                                "Your payment <code>{signature}</code> could not be credited \
                                 ({}). An admin will look at it.",
                                esc(&reason.to_string())
                            );
                            notify(&sender, chat_id, text).await;
                        }
                        for &admin in &admins {
                            let text = format!(
                                "Unmatched payment <code>{signature}</code>: {}. /unmatched \
                                 lists them; /resolve credits one.",
                                esc(&reason.to_string())
                            );
                            notify(&sender, admin, text).await;
                        }
                    }
                    Outcome::Pending { signature } => {
                        tracing::debug!(%signature, "payment not yet finalized");
                    }
                    Outcome::AlreadySeen { .. } | Outcome::Ignored { .. } => {}
                }
            }
        });
    }
    let (ledger, url, mut redis, sender, mut stop) = (
        ledger.clone(),
        database_url.to_owned(),
        redis.clone(),
        sender.clone(),
        stop,
    );
    rt.spawn(async move {
        let mut pg: Option<tokio_postgres::Client> = None;
        loop {
            if let Err(e) = remind(&ledger, &url, &mut pg, &mut redis, &sender).await {
                tracing::warn!(error = %e, "reminders not sent this round");
                pg = None;
            }
            tokio::select! {
                () = tokio::time::sleep(REMINDER_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(())
}

/// One round of reminders and expiry notices.
async fn remind(
    ledger: &Ledger,
    url: &str,
    pg: &mut Option<tokio_postgres::Client>,
    redis: &mut ConnectionManager,
    sender: &sender::Sender,
) -> anyhow::Result<()> {
    let client = super::connected(url, pg)
        .await
        .map_err(|e| anyhow::anyhow!(callwatch_io::migrate::pg_detail(&e)))?;
    let now = SystemTime::now();
    for r in ledger.due_reminders(client, now).await? {
        let left = match r.kind {
            ReminderKind::ThreeDays => "3 days",
            ReminderKind::OneDay => "1 day",
        };
        let text = format!(
            "Your subscription ends in less than {left}, on {}. /subscribe to renew: the \
             time you have left is kept.",
            when(r.expires_at)
        );
        notify(sender, r.chat_id, text).await;
    }
    for chat_id in ledger.expire_due(client, redis, now).await? {
        notify(
            sender,
            chat_id,
            "Your subscription has ended, so alerts have stopped. /subscribe to renew.".to_owned(),
        )
        .await;
    }
    Ok(())
}
