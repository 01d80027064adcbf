//! The service's side of the bot's commands: the [`Backend`] that answers
//! them from Redis, PostgreSQL and the running engine, the task that
//! receives them, and payments.
//!
//! The engine is asked through [`EngineQuery`]: the thread that feeds the
//! router takes the query in turn with events, so an answer reflects every
//! event read before it. Settings and subscriptions change the engine only
//! through the chats stream, as every other producer does.

mod credits;
mod engine_ask;
mod limit;
mod payments;
mod receive;

use std::sync::Arc;
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::clock::system_time;
use callwatch_dashboard::Links as DashboardLinks;
use callwatch_ledger::migrate::pg_detail;
use callwatch_ledger::pg::connected;
use callwatch_ledger::server::PgServer;
use callwatch_ledger::subscriptions::{SubscriptionStore, announce};
use callwatch_payments::config::lamports_to_sol;
use callwatch_payments::unmatched::Resolution;
use callwatch_payments::{Ledger, PaymentError, solana_pay_url};
use callwatch_streams::Conn;
use callwatch_telegram::charts_off::ChartsOff;
use callwatch_telegram::commands::{
    Applied, Backend, BackendError, ChatSettings, DashboardLink, PlanView, QuoteView,
    SettingsStore, Subscription, UnmatchedView,
};
use callwatch_telegram::members::ChatMembers;
use callwatch_telegram::names::ChannelNames;
use callwatch_telegram::sender;
use engine::board::ChannelScore;
use engine::event::{ChannelId, ChatId, SettingsPatch};
use engine::shard::Holding;
use engine::time::{NANOS_PER_SEC, Nanos};
use tokio::sync::Mutex;

pub use engine_ask::EngineAsk;
pub use limit::CommandCounters;
pub use receive::{Parts, ReceivingCounters, UpdatesTask, start};

pub use crate::reader::EngineQuery;

/// The figures `/stats` shows, read when asked.
pub type StatsFn = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Where the service's commands get their answers.
pub struct ServiceBackend {
    pub redis: Conn,
    pub prefix: String,
    pub settings: SettingsStore,
    pub subscriptions: SubscriptionStore,
    /// PostgreSQL, where grants are recorded; `None` when not configured.
    pub database: Option<PgServer>,
    pub pg: Mutex<Option<tokio_postgres::Client>>,
    /// The engine's questions, shared with the dashboard.
    pub engine: Arc<EngineAsk>,
    pub names: Arc<ChannelNames>,
    /// The dashboard's links, when it is set up.
    pub dashboard: Option<DashboardLinks>,
    pub stats: StatsFn,
    /// Payments, when configured.
    pub payments: Option<Ledger>,
    /// Telegram, asked who administers a group.
    pub members: ChatMembers,
    /// Where notices to other chats than the asking one go (a resolved
    /// payment's chat): the sender's reply lane.
    pub notices: sender::Sender,
    /// Where a notice without room is counted.
    pub counters: Arc<CommandCounters>,
}

impl std::fmt::Debug for ServiceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Where a leaderboard's window ends: calls are dated by event time,
/// which the ingest keeps in step with Redis's clock (no event is dated
/// ahead of its entry), so at that clock's now; this process's if Redis is
/// away. `/top` and the dashboard both end their windows here.
pub async fn board_end(redis: &Conn, now: Nanos) -> Nanos {
    callwatch_streams::clock::server_now(&mut redis.clone())
        .await
        .unwrap_or(now)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("{what}: {e}"))
}

impl ServiceBackend {
    /// Appends the engine's `subscribe` event for a new expiry, retried a
    /// few times: the credit is already committed, so giving up here only
    /// delays the engine until the chat's next credit or a re-publish.
    async fn publish_subscribe(
        &self,
        chat_id: ChatId,
        plan: &str,
        expires_at: Nanos,
    ) -> Result<(), BackendError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1.. {
            let mut con = self.redis.clone();
            let announced = announce(&mut con, &self.prefix, chat_id, plan, expires_at);
            match announced.await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 4 => {
                    tracing::warn!(chat_id, error = %e, "subscribe event not published; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
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
        let Some(server) = &self.database else {
            return Err(BackendError::Refused(
                "Subscriptions need PostgreSQL, and this service runs without it.".to_owned(),
            ));
        };
        let mut pg = self.pg.lock().await;
        connected(server, &mut pg)
            .await
            .map_err(|e| unavailable("PostgreSQL", pg_detail(&e)))?;
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
        _now: Nanos,
    ) -> Result<(), BackendError> {
        // The event is stamped by Redis's clock, which stamps its entry.
        self.settings
            .save(&mut self.redis.clone(), chat_id, settings, patch)
            .await
    }

    async fn charts(&self, chat_id: ChatId) -> Result<bool, BackendError> {
        ChartsOff::new(&self.prefix)
            .is_on(&mut self.redis.clone(), chat_id)
            .await
            .map_err(|e| unavailable("charts setting", e))
    }

    async fn set_charts(&self, chat_id: ChatId, on: bool) -> Result<(), BackendError> {
        ChartsOff::new(&self.prefix)
            .set(&mut self.redis.clone(), chat_id, on)
            .await
            .map_err(|e| unavailable("charts setting", e))
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
        self.engine.tracked(chat_id).await
    }

    async fn leaderboard(
        &self,
        window: Nanos,
        now: Nanos,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, BackendError> {
        let end = board_end(&self.redis, now).await;
        self.engine.leaderboard(end, window, 1, limit).await
    }

    fn dashboard_link(&self, chat_id: ChatId, now: Nanos) -> Result<DashboardLink, BackendError> {
        let Some(links) = &self.dashboard else {
            return Err(BackendError::Refused(
                "The dashboard is not set up on this bot.".to_owned(),
            ));
        };
        let now_secs = now.div_euclid(NANOS_PER_SEC);
        let ttl = i64::try_from(links.ttl_secs()).expect("a checked TTL");
        Ok(DashboardLink {
            url: links.link(chat_id, now_secs),
            expires_at: (now_secs + ttl).saturating_mul(NANOS_PER_SEC),
        })
    }

    async fn names(&self, ids: &[ChannelId]) -> Vec<Option<String>> {
        self.names.resolve_owned(ids).await
    }

    async fn grant(
        &self,
        admin: i64,
        grant_id: &str,
        chat_id: ChatId,
        days: u32,
        now: Nanos,
    ) -> Result<Applied, BackendError> {
        let credit = credits::granted(admin, grant_id, chat_id, days);
        self.grant_once(&credit, now).await
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
    ) -> Result<Applied, BackendError> {
        let resolution = Resolution {
            signature,
            chat_id,
            plan,
            admin_chat_id: admin,
        };
        self.resolve_once(&resolution, now).await
    }

    async fn is_chat_admin(&self, chat_id: ChatId, user_id: i64) -> Result<bool, BackendError> {
        self.members
            .is_admin(chat_id, user_id)
            .await
            .map_err(|e| unavailable("Telegram", e))
    }
}
