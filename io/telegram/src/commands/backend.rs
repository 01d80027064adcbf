//! What the commands need from the service, and the views it answers
//! with. A trait, so that every reply can be tested against a backend in
//! memory, without Redis, PostgreSQL or an engine.

use std::future::Future;

use engine::board::ChannelScore;
use engine::event::{ChannelId, ChatId, SettingsPatch};
use engine::shard::Holding;
use engine::time::Nanos;

use super::ChatSettings;

/// A chat's subscription, as the system of record has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub plan: String,
    pub expires_at: Nanos,
}

/// A plan on offer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanView {
    pub name: String,
    pub days: u32,
    /// Decimal SOL, e.g. "0.25".
    pub price_sol: String,
}

/// What to pay for one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteView {
    pub plan: String,
    pub days: u32,
    pub amount_sol: String,
    pub address: String,
    pub reference: String,
    pub expires_at: Nanos,
    /// A `solana:` payment link wallets open.
    pub pay_url: String,
}

/// A payment kept for an admin.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmatchedView {
    pub signature: String,
    /// Why it credited nothing, in words.
    pub reason: String,
    /// What arrived, decimal SOL.
    pub received_sol: String,
    /// The chat of the quote it named, if any.
    pub chat_id: Option<ChatId>,
}

/// A credit of record (a grant, a resolved payment), and whether the
/// engine was told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The chat's subscription now runs until then.
    pub expires_at: Nanos,
    /// False when the credit is committed but its `subscribe` event could
    /// not be published yet: repeating the command (by the same grant id,
    /// or the same payment) publishes it without crediting again.
    pub announced: bool,
}

/// A link to a chat's pages on the web dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardLink {
    pub url: String,
    /// The link opens the pages until then.
    pub expires_at: Nanos,
}

/// Why the backend could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Storage or the engine is not reachable now; worth asking again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be met; the text is for the user.
    #[error("{0}")]
    Refused(String),
}

/// What the commands need from the service. Every method answers for one
/// chat or for the whole service; none changes the engine except through
/// the chats stream.
pub trait Backend: Send + Sync {
    /// The chat's current settings (defaults for a chat never seen).
    fn settings(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<ChatSettings, BackendError>> + Send;

    /// Records `patch` for the engine (a `settings` event at `now`) and
    /// `settings` (the result) as the chat's current settings.
    fn save_settings(
        &self,
        chat_id: ChatId,
        settings: &ChatSettings,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whether the chat's multiplier alerts carry a chart (on unless
    /// turned off).
    fn charts(&self, chat_id: ChatId) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Turns the chat's charts on or off.
    fn set_charts(
        &self,
        chat_id: ChatId,
        on: bool,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn subscription(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<Option<Subscription>, BackendError>> + Send;

    /// The chat's tracked tokens with their current values.
    fn tracked(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<Vec<Holding>, BackendError>> + Send;

    /// Channels ranked by their calls over the last `window` of event
    /// time. `now` is this process's clock; a backend whose events are
    /// stamped by another clock (Redis's) anchors the window to that one.
    fn leaderboard(
        &self,
        window: Nanos,
        now: Nanos,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChannelScore>, BackendError>> + Send;

    /// A signed link to `chat_id`'s dashboard pages, expiring; `Refused`
    /// when the dashboard is not set up.
    fn dashboard_link(&self, chat_id: ChatId, now: Nanos) -> Result<DashboardLink, BackendError>;

    /// Channel names, where known.
    fn names(&self, ids: &[ChannelId]) -> impl Future<Output = Vec<Option<String>>> + Send;

    /// Credits `days` to `chat_id`, recorded as granted by `admin` under
    /// `grant_id` (the command that made it), once per `grant_id`: a grant
    /// id recorded already credits nothing more, but its announcement is
    /// made again (refused if that id granted something else).
    fn grant(
        &self,
        admin: i64,
        grant_id: &str,
        chat_id: ChatId,
        days: u32,
        now: Nanos,
    ) -> impl Future<Output = Result<Applied, BackendError>> + Send;

    /// The service's figures, as (name, value) rows.
    fn stats(&self) -> impl Future<Output = Result<Vec<(String, String)>, BackendError>> + Send;

    /// The plans on offer (empty when payments are not set up).
    fn plans(&self) -> Vec<PlanView>;

    /// A fresh quote for one plan.
    fn quote(
        &self,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<QuoteView, BackendError>> + Send;

    /// Payments that matched nothing, oldest first.
    fn unmatched(&self) -> impl Future<Output = Result<Vec<UnmatchedView>, BackendError>> + Send;

    /// Credits the unmatched payment `signature` to `chat_id` as `plan`,
    /// recorded as decided by `admin`, once (refused, naming who, if it was
    /// resolved before), and tells `chat_id` it was applied.
    fn resolve(
        &self,
        admin: i64,
        signature: &str,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Applied, BackendError>> + Send;

    /// Whether `user_id` administers the group `chat_id`: Telegram's
    /// `getChatMember` status `creator` or `administrator`. `Unavailable`
    /// when Telegram could not say.
    fn is_chat_admin(
        &self,
        chat_id: ChatId,
        user_id: i64,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
}
