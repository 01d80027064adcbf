//! The bot's commands: what a subscriber types, and what the bot answers.
//!
//! [`parse`] is pure: a message's text becomes a [`Command`], or a reply
//! that says what was wrong and how to write it. [`Commands::handle`]
//! answers a command through a [`Backend`] (the service's view of settings,
//! subscriptions, the engine and payments), so every reply can be tested
//! without Telegram, Redis or an engine.
//!
//! Settings commands never change the engine directly. Each becomes the
//! same `settings` event a replay file holds, appended to the chats stream
//! ([`SettingsStore::save`]), so replaying the stream gives the same state
//! as the live bot did. The chat's current settings are kept beside the
//! event in Redis (`chat_settings:{chat_id}`, callwatch's own key), written
//! in the same MULTI, so `/follow` adds to the list the chat last set.
//! Updates of one chat are handled one at a time (see `updates`), so two
//! `/follow`s in a row cannot lose one another.
//!
//! # Layout
//! One file per command, or per family of commands that share an argument
//! shape, so that adding a command touches its own file and two match
//! arms here. Each holds the command's pure `parse` of its arguments and
//! its `answer`, through the [`Backend`] that an `Ask` carries with the
//! chat and the time:
//! `start`, `help`, `status`, `settings`, `quorum`
//! (`/min_callers`, `/lookback`), `mcap`, `follow` (`/follow`,
//! `/unfollow`, `/following`), `charts`, `tracked`, `top`, `dashboard`,
//! `subscribe`, and the
//! admins' `grant`, `stats`, `unmatched`, `resolve`. The commands that
//! change settings are for subscribed chats only (`subscribed`).
//!
//! Who may: the bot's admins (the `[telegram]` list) alone the admin
//! commands; in a group, only its administrators the commands that change
//! its settings or subscription (`rights`, which asks Telegram and keeps
//! the answer a minute).
//!
//! Shared by them: `backend` (what the commands need from the service),
//! `chat_settings` and `store` (a chat's settings and where they are
//! kept), `args` (argument readers) and `text` (values written for
//! people).

use std::sync::Arc;

use engine::event::{ChannelId, ChatId, SettingsPatch};
use engine::time::Nanos;

use crate::format::Links;
use crate::updates::Incoming;

mod args;
mod backend;
mod charts;
mod chat_settings;
mod dashboard;
mod follow;
mod grant;
mod help;
mod mcap;
mod quorum;
mod resolve;
mod rights;
mod settings;
mod start;
mod stats;
mod status;
mod store;
mod subscribe;
mod subscribed;
mod text;
mod top;
mod tracked;
mod unmatched;

pub use backend::{
    Applied, Backend, BackendError, DashboardLink, PlanView, QuoteView, Subscription, UnmatchedView,
};
pub use chat_settings::ChatSettings;
pub use follow::MAX_FOLLOW;
pub use grant::MAX_GRANT_DAYS;
pub use help::menu;
pub use rights::{
    ADMIN_CACHE_ENTRIES, ADMIN_CACHE_NANOS, CANNOT_CHECK, NOT_AN_ADMIN, RightsCounters,
};
pub use store::SettingsStore;
pub use text::{esc, when};
pub use top::{TOP_ROWS, TOP_WINDOW_NANOS};
pub use tracked::{TRACKED_ROWS, rank as rank_tracked, short as short_address};

/// Where a list stops growing, in UTF-16 units: one more row (a name is
/// cut at 64 characters) and the tail still fit Telegram's 4,096.
const LIST_BUDGET: usize = 3_500;

/// One parsed command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start,
    Help,
    Status,
    Settings,
    MinCallers(u32),
    Lookback(u32),
    /// Market value bounds in USD; `None` is unbounded.
    Mcap {
        min: f64,
        max: Option<f64>,
    },
    /// Follow these channels too; an empty list means every channel.
    Follow(Vec<ChannelId>),
    Unfollow(Vec<ChannelId>),
    Following,
    /// Whether multiplier alerts carry a chart: show, or turn on or off.
    Charts(Option<bool>),
    Tracked,
    Top,
    /// A signed, expiring link to the chat's pages on the web dashboard.
    Dashboard,
    /// The plans, or a quote for one of them.
    Subscribe(Option<String>),
    /// Admins: give a chat this many days. The grant is named by
    /// `grant_id` when given (to finish one cut short), otherwise by the
    /// command's own message.
    Grant {
        chat_id: ChatId,
        days: u32,
        grant_id: Option<String>,
    },
    /// Admins: the service's figures.
    Stats,
    /// Admins: payments that matched no quote.
    Unmatched,
    /// Admins: credit an unmatched payment to a chat as a plan.
    Resolve {
        signature: String,
        chat_id: ChatId,
        plan: String,
    },
}

impl Command {
    fn admin_only(&self) -> bool {
        matches!(
            self,
            Command::Grant { .. } | Command::Stats | Command::Unmatched | Command::Resolve { .. }
        )
    }

    /// Whether the command changes the chat's settings (it records a
    /// `settings` event): only for a subscribed chat (`subscribed`).
    fn changes_settings(&self) -> bool {
        matches!(
            self,
            Command::MinCallers(_)
                | Command::Lookback(_)
                | Command::Mcap { .. }
                | Command::Follow(_)
                | Command::Unfollow(_)
        )
    }

    /// Whether it changes the chat's settings or subscription, which in a
    /// group only its administrators may (see `rights`).
    fn changes_chat(&self) -> bool {
        self.changes_settings()
            || matches!(self, Command::Subscribe(Some(_)) | Command::Charts(Some(_)))
    }

    /// The name for the activity log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Help => "help",
            Command::Status => "status",
            Command::Settings => "settings",
            Command::MinCallers(_) => "min_callers",
            Command::Lookback(_) => "lookback",
            Command::Mcap { .. } => "mcap",
            Command::Follow(_) => "follow",
            Command::Unfollow(_) => "unfollow",
            Command::Following => "following",
            Command::Charts(_) => "charts",
            Command::Tracked => "tracked",
            Command::Top => "top",
            Command::Dashboard => "dashboard",
            Command::Subscribe(_) => "subscribe",
            Command::Grant { .. } => "grant",
            Command::Stats => "stats",
            Command::Unmatched => "unmatched",
            Command::Resolve { .. } => "resolve",
        }
    }
}

/// A message's text as a command: `None` when it is not a command at all
/// (the bot stays quiet), `Some(Err(reply))` when it is one written wrong.
/// `bot_username` drops the `@name` Telegram appends in groups; a command
/// addressed to another bot is not ours.
pub fn parse(text: &str, bot_username: Option<&str>) -> Option<Result<Command, String>> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let mut words = rest.split_whitespace();
    let head = words.next()?;
    let (name, to) = match head.split_once('@') {
        Some((n, to)) => (n, Some(to)),
        None => (head, None),
    };
    if let (Some(to), Some(me)) = (to, bot_username)
        && !to.eq_ignore_ascii_case(me)
    {
        return None;
    }
    let args: Vec<&str> = words.collect();
    let name = name.to_ascii_lowercase();
    Some(parse_args(&name, &args))
}

/// The arguments of the command `name`, read by that command's own parse.
fn parse_args(name: &str, args: &[&str]) -> Result<Command, String> {
    match name {
        "start" => start::parse(args),
        "help" => help::parse(args),
        "status" => status::parse(args),
        "settings" => settings::parse(args),
        "min_callers" => quorum::parse_min_callers(args),
        "lookback" => quorum::parse_lookback(args),
        "mcap" => mcap::parse(args),
        "follow" => follow::parse_follow(args),
        "unfollow" => follow::parse_unfollow(args),
        "following" => follow::parse_following(args),
        "charts" => charts::parse(args),
        "tracked" => tracked::parse(args),
        "top" => top::parse(args),
        "dashboard" => dashboard::parse(args),
        "subscribe" => subscribe::parse(args),
        "grant" => grant::parse(args),
        "stats" => stats::parse(args),
        "unmatched" => unmatched::parse(args),
        "resolve" => resolve::parse(args),
        other => Err(format!(
            "I don't know /{}. /help lists what I understand.",
            esc(other)
        )),
    }
}

/// What a command's answer comes to: the reply, or why there is none
/// ([`Commands::handle`] turns that into a reply too).
type Answer = Result<Reply, BackendError>;

/// One command being answered: what every command's answer may need.
struct Ask<'a, B> {
    b: &'a B,
    chat: ChatId,
    /// Who asked: the user, or the chat when Telegram names no user. A
    /// `/grant` or `/resolve` is recorded as decided by them.
    user: i64,
    /// The command's message in `chat`: what names a grant.
    message_id: i32,
    now: Nanos,
    links: &'a Links,
}

impl<B: Backend> Ask<'_, B> {
    /// Records `patch` over the chat's current settings.
    async fn save(&self, patch: &SettingsPatch) -> Result<(), BackendError> {
        let current = self.b.settings(self.chat).await?;
        self.save_from(&current, patch).await
    }

    /// Records `patch` over `current`, unless the result is an empty
    /// market value range: checked on the result, not the patch, so that
    /// no command can leave a chat with one.
    async fn save_from(
        &self,
        current: &ChatSettings,
        patch: &SettingsPatch,
    ) -> Result<(), BackendError> {
        let next = current.patched(patch);
        if next.max_fdv_usd.is_some_and(|max| next.min_fdv_usd > max) {
            return Err(BackendError::Refused(format!(
                "The market value range would be {}, which is empty. Set both ends with \
                 /mcap MIN MAX.",
                text::range(next.min_fdv_usd, next.max_fdv_usd)
            )));
        }
        self.b
            .save_settings(self.chat, &next, patch, self.now)
            .await
    }
}

/// A reply, in Telegram's HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
}

impl Reply {
    fn text(text: impl Into<String>) -> Reply {
        Reply { text: text.into() }
    }
}

/// The command handler.
#[derive(Debug)]
pub struct Commands<B> {
    backend: B,
    admins: Vec<i64>,
    bot_username: Option<String>,
    links: Links,
    rights: rights::Rights,
}

impl<B: Backend> Commands<B> {
    /// `admins` are the Telegram user ids allowed `/grant` and `/stats`.
    pub fn new(backend: B, admins: Vec<i64>, bot_username: Option<String>) -> Commands<B> {
        Commands {
            backend,
            admins,
            bot_username,
            links: Links::default(),
            rights: rights::Rights::default(),
        }
    }

    /// Counts the checks of who may change a group into `counters`.
    pub fn counting_rights(mut self, counters: Arc<RightsCounters>) -> Commands<B> {
        self.rights = rights::Rights::counting(counters);
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn is_admin(&self, req: &Incoming) -> bool {
        req.user_id.is_some_and(|u| self.admins.contains(&u))
    }

    /// An admin writing in their own private chat, which may change its
    /// settings without a subscription (to try the bot out).
    fn is_admins_own_chat(&self, req: &Incoming) -> bool {
        self.is_admin(req) && req.user_id == Some(req.chat_id)
    }

    /// The parsed command of a message, if it is one of ours.
    fn parse(&self, text: &str) -> Option<Result<Command, String>> {
        parse(text, self.bot_username.as_deref())
    }

    /// Whether `text` is a command for this bot (well written or not).
    pub fn addressed(&self, text: &str) -> bool {
        self.parse(text).is_some()
    }

    /// The reply to one message, with the command's name for the activity
    /// log (`invalid` for a command written wrong); `None` for text that is
    /// not a command. Never fails: what goes wrong becomes the reply.
    pub async fn handle(&self, req: &Incoming, now: Nanos) -> Option<(&'static str, Reply)> {
        let command = match self.parse(&req.text)? {
            Ok(c) => c,
            Err(usage) => return Some(("invalid", Reply::text(usage))),
        };
        let name = command.name();
        if command.admin_only() && !self.is_admin(req) {
            return Some((name, Reply::text("That command is for the bot's admins.")));
        }
        if command.changes_chat()
            && let Err(why) = self.rights.may_change(&self.backend, req, now).await
        {
            return Some((name, Reply::text(why)));
        }
        let reply = match self.answer(req, command, now).await {
            Ok(reply) => reply,
            Err(BackendError::Refused(why)) => Reply::text(esc(&why)),
            Err(BackendError::Unavailable(why)) => {
                tracing::warn!(chat_id = req.chat_id, %why, "a command could not be answered");
                Reply::text(
                    "Sorry, I can't do that right now (storage is unavailable). \
                     Please try again in a minute.",
                )
            }
        };
        Some((name, reply))
    }

    /// The answer of the command's own file.
    async fn answer(&self, req: &Incoming, command: Command, now: Nanos) -> Answer {
        let ask = &Ask {
            b: &self.backend,
            chat: req.chat_id,
            user: req.user_id.unwrap_or(req.chat_id),
            message_id: req.message_id,
            now,
            links: &self.links,
        };
        if command.changes_settings() && !self.is_admins_own_chat(req) {
            subscribed::check(ask).await?;
        }
        match command {
            Command::Start => start::answer(ask).await,
            Command::Help => Ok(help::answer(self.is_admin(req))),
            Command::Status => status::answer(ask).await,
            Command::Settings => settings::answer(ask).await,
            Command::MinCallers(n) => quorum::answer_min_callers(ask, n).await,
            Command::Lookback(minutes) => quorum::answer_lookback(ask, minutes).await,
            Command::Mcap { min, max } => mcap::answer(ask, min, max).await,
            Command::Follow(ids) => follow::answer_follow(ask, &ids).await,
            Command::Unfollow(ids) => follow::answer_unfollow(ask, &ids).await,
            Command::Following => follow::answer_following(ask).await,
            Command::Charts(set) => charts::answer(ask, set).await,
            Command::Tracked => tracked::answer(ask).await,
            Command::Top => top::answer(ask).await,
            Command::Dashboard => dashboard::answer(ask),
            Command::Subscribe(plan) => subscribe::answer(ask, plan.as_deref()).await,
            Command::Grant {
                chat_id,
                days,
                grant_id,
            } => grant::answer(ask, chat_id, days, grant_id).await,
            Command::Stats => stats::answer(ask).await,
            Command::Unmatched => unmatched::answer(ask).await,
            Command::Resolve {
                signature,
                chat_id,
                plan,
            } => resolve::answer(ask, &signature, chat_id, &plan).await,
        }
    }
}

#[cfg(test)]
mod tests;
