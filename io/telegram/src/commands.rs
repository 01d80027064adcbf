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

use std::fmt::Write as _;
use std::future::Future;

use engine::board::ChannelScore;
use engine::event::{ChannelId, ChatId, Event, SettingsPatch, limits};
use engine::shard::Holding;
use engine::time::{NANOS_PER_SEC, Nanos};
use serde::{Deserialize, Serialize};

use callwatch_common::keys::{EVENT_FIELD, chat_settings_key, stream_key};
use callwatch_common::route::Route;

use crate::format::{self, Links};
use crate::updates::Incoming;

/// The most channels one chat may follow by name.
pub const MAX_FOLLOW: usize = 500;
/// The most days one `/grant` may give.
pub const MAX_GRANT_DAYS: u32 = 3650;
/// Rows `/tracked` lists; the rest are counted.
pub const TRACKED_ROWS: usize = 30;
/// Channels `/top` ranks.
pub const TOP_ROWS: usize = 10;
/// Where a list stops growing, in UTF-16 units: one more row (a name is
/// cut at 64 characters) and the tail still fit Telegram's 4,096.
const LIST_BUDGET: usize = 3_500;
/// The window `/top` ranks over.
pub const TOP_WINDOW_NANOS: Nanos = 7 * 24 * 3600 * NANOS_PER_SEC;

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
    Tracked,
    Top,
    /// The plans, or a quote for one of them.
    Subscribe(Option<String>),
    /// Admins: give a chat this many days.
    Grant {
        chat_id: ChatId,
        days: u32,
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
            Command::Tracked => "tracked",
            Command::Top => "top",
            Command::Subscribe(_) => "subscribe",
            Command::Grant { .. } => "grant",
            Command::Stats => "stats",
            Command::Unmatched => "unmatched",
            Command::Resolve { .. } => "resolve",
        }
    }
}

/// The command list `/help` shows, with each command's usage.
const HELP: &[(&str, &str)] = &[
    ("/status", "your subscription, settings and tracked tokens"),
    ("/settings", "every setting and how to change it"),
    (
        "/min_callers N",
        "alert when N of your channels called a token (1–100)",
    ),
    (
        "/lookback MINUTES",
        "how far back calls count (1–10080, a week)",
    ),
    (
        "/mcap MIN MAX",
        "market value range, e.g. <code>/mcap 50k 5m</code> or <code>/mcap 0 any</code>",
    ),
    (
        "/follow CHANNEL…",
        "follow channels by id (e.g. <code>-1001234567890</code>); <code>/follow all</code> follows every channel",
    ),
    ("/unfollow CHANNEL…", "stop following channels"),
    ("/following", "the channels you follow"),
    ("/tracked", "tokens alerted to you, with their multiple now"),
    ("/top", "channels ranked over the last 7 days"),
    ("/subscribe [PLAN]", "plans, and how to pay in SOL"),
];

/// The admins' commands, which `/help` lists to admins only.
const ADMIN_HELP: &[(&str, &str)] = &[
    (
        "/grant CHAT DAYS",
        "give a chat days, recorded as your grant",
    ),
    ("/stats", "the service's figures"),
    ("/unmatched", "payments that matched no quote"),
    (
        "/resolve SIGNATURE CHAT PLAN",
        "credit an unmatched payment to a chat",
    ),
];

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

fn parse_args(name: &str, args: &[&str]) -> Result<Command, String> {
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(format!("/{name} takes no arguments."))
        }
    };
    match name {
        "start" => none(Command::Start),
        "help" => none(Command::Help),
        "status" => none(Command::Status),
        "settings" => none(Command::Settings),
        "following" => none(Command::Following),
        "tracked" => none(Command::Tracked),
        "top" => none(Command::Top),
        "stats" => none(Command::Stats),
        "unmatched" => none(Command::Unmatched),
        "resolve" => {
            let usage = "Usage: <code>/resolve SIGNATURE CHAT PLAN</code>: credit an unmatched \
                         payment (see /unmatched) to a chat as a plan.";
            let [signature, chat, plan] = args else {
                return Err(usage.to_owned());
            };
            let signature_ok = (32..=100).contains(&signature.len())
                && signature.bytes().all(|b| b.is_ascii_alphanumeric());
            if !signature_ok {
                return Err(format!(
                    "{} is not a transaction signature.\n{usage}",
                    esc(signature)
                ));
            }
            let chat_id = chat_id_arg(chat, usage)?;
            Ok(Command::Resolve {
                signature: (*signature).to_owned(),
                chat_id,
                plan: plan.to_ascii_lowercase(),
            })
        }
        "min_callers" => one_number(
            args,
            limits::MIN_CALLERS,
            "a number from 1 to 100",
            "Usage: <code>/min_callers N</code>, N from 1 to 100: how many of your channels \
             must call a token before you are alerted.",
        )
        .map(Command::MinCallers),
        "lookback" => one_number(
            args,
            limits::LOOKBACK_MINUTES,
            "a number of minutes from 1 to 10080",
            "Usage: <code>/lookback MINUTES</code>, from 1 to 10080 (a week): how far back \
             calls count together.",
        )
        .map(Command::Lookback),
        "mcap" => {
            let usage = "Usage: <code>/mcap MIN MAX</code> in USD, with k, m or b for \
                         thousands, millions, billions; <code>any</code> for no upper bound. \
                         Example: <code>/mcap 50k 5m</code>.";
            let [min, max] = args else {
                return Err(usage.to_owned());
            };
            let min_v = parse_usd(min)
                .filter(|v| *v >= 0.0)
                .ok_or_else(|| format!("{} is not an amount.\n{usage}", esc(min)))?;
            let max_v =
                if ["any", "none", "-", "inf", "∞"].contains(&&*max.to_ascii_lowercase()) {
                    None
                } else {
                    Some(parse_usd(max).filter(|v| *v > 0.0).ok_or_else(|| {
                        format!("{} is not an amount above 0.\n{usage}", esc(max))
                    })?)
                };
            if let Some(max_v) = max_v
                && min_v > max_v
            {
                return Err(format!(
                    "The minimum ({}) is above the maximum ({}).\n{usage}",
                    usd(min_v),
                    usd(max_v)
                ));
            }
            Ok(Command::Mcap {
                min: min_v,
                max: max_v,
            })
        }
        "follow" | "unfollow" => {
            let usage = format!(
                "Usage: <code>/{name} CHANNEL…</code> with channel ids such as \
                 <code>-1001234567890</code>{}. /top shows channels with their ids.",
                if name == "follow" {
                    "; <code>/follow all</code> follows every channel"
                } else {
                    ""
                }
            );
            if args.is_empty() {
                return Err(usage);
            }
            if name == "follow" && args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                return Ok(Command::Follow(Vec::new()));
            }
            let mut ids = Vec::with_capacity(args.len());
            for a in args {
                match a.parse::<i64>() {
                    Ok(id) if id != 0 => ids.push(id),
                    _ if a.starts_with('@') || a.contains("t.me/") => {
                        return Err(format!(
                            "{} is a channel's name; I need its numeric id (it starts with \
                             -100 for channels).\n{usage}",
                            esc(a)
                        ));
                    }
                    _ => return Err(format!("{} is not a channel id.\n{usage}", esc(a))),
                }
            }
            if ids.len() > MAX_FOLLOW {
                return Err(format!("At most {MAX_FOLLOW} channels at once."));
            }
            ids.sort_unstable();
            ids.dedup();
            Ok(if name == "follow" {
                Command::Follow(ids)
            } else {
                Command::Unfollow(ids)
            })
        }
        "subscribe" => match args {
            [] => Ok(Command::Subscribe(None)),
            [plan] => Ok(Command::Subscribe(Some(plan.to_ascii_lowercase()))),
            _ => Err("Usage: <code>/subscribe</code> for the plans, or \
                      <code>/subscribe PLAN</code> to pay for one."
                .to_owned()),
        },
        "grant" => {
            let usage =
                "Usage: <code>/grant CHAT DAYS</code>, e.g. <code>/grant 123456789 30</code>.";
            let [chat, days] = args else {
                return Err(usage.to_owned());
            };
            let chat_id = chat_id_arg(chat, usage)?;
            let days = days
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=MAX_GRANT_DAYS).contains(d))
                .ok_or_else(|| {
                    format!(
                        "{} is not a number of days from 1 to {MAX_GRANT_DAYS}.\n{usage}",
                        esc(days)
                    )
                })?;
            Ok(Command::Grant { chat_id, days })
        }
        other => Err(format!(
            "I don't know /{}. /help lists what I understand.",
            esc(other)
        )),
    }
}

/// A chat id argument (any non-zero integer).
fn chat_id_arg(arg: &str, usage: &str) -> Result<ChatId, String> {
    arg.parse::<i64>()
        .ok()
        .filter(|c| *c != 0)
        .ok_or_else(|| format!("{} is not a chat id.\n{usage}", esc(arg)))
}

/// The one argument of a command that takes a number in `range`.
fn one_number(
    args: &[&str],
    range: std::ops::RangeInclusive<u32>,
    what: &str,
    usage: &str,
) -> Result<u32, String> {
    let [n] = args else {
        return Err(usage.to_owned());
    };
    match n.parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!("{} is not {what}.\n{usage}", esc(n))),
    }
}

/// `50k`, `1.5M`, `$2b`, `1,000,000` → dollars.
fn parse_usd(text: &str) -> Option<f64> {
    let t = text.trim().trim_start_matches('$').replace(['_', ','], "");
    let (num, scale) = match t.chars().last()?.to_ascii_lowercase() {
        'k' => (&t[..t.len() - 1], 1e3),
        'm' => (&t[..t.len() - 1], 1e6),
        'b' => (&t[..t.len() - 1], 1e9),
        _ => (&t[..], 1.0),
    };
    let v = num.parse::<f64>().ok()? * scale;
    v.is_finite().then_some(v)
}

/// `text` escaped for Telegram's HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::new();
    format::escape(text, &mut out);
    out
}

fn usd(v: f64) -> String {
    let mut out = String::new();
    format::usd(v, &mut out);
    out
}

fn multiple(v: f64) -> String {
    let mut out = String::new();
    format::multiple(v, &mut out);
    out
}

/// A time for people: `2026-12-25 10:00 UTC`.
pub fn when(t: Nanos) -> String {
    let s = engine::time::format_rfc3339(t);
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

/// A span for people: `3 days`, `5 hours`, `12 minutes`.
fn span(nanos: Nanos) -> String {
    let minutes = nanos / (60 * NANOS_PER_SEC);
    let (n, unit) = if minutes >= 2 * 24 * 60 {
        (minutes / (24 * 60), "day")
    } else if minutes >= 120 {
        (minutes / 60, "hour")
    } else {
        (minutes.max(0), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A chat's settings as the bot keeps them (the engine's defaults until
/// the chat changes one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatSettings {
    pub min_callers: u32,
    pub lookback_minutes: u32,
    pub min_fdv_usd: f64,
    /// `None`: no upper bound.
    pub max_fdv_usd: Option<f64>,
    /// Sorted; empty follows every channel.
    pub follow: Vec<ChannelId>,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            min_callers: 2,
            lookback_minutes: 60,
            min_fdv_usd: 0.0,
            max_fdv_usd: None,
            follow: Vec::new(),
        }
    }
}

impl ChatSettings {
    /// The settings with `patch` applied, as the engine applies it.
    pub fn patched(&self, patch: &SettingsPatch) -> ChatSettings {
        ChatSettings {
            min_callers: patch.min_callers.unwrap_or(self.min_callers),
            lookback_minutes: patch.lookback_minutes.unwrap_or(self.lookback_minutes),
            min_fdv_usd: patch.min_fdv_usd.unwrap_or(self.min_fdv_usd),
            max_fdv_usd: match patch.max_fdv_usd {
                Some(v) if v < f64::MAX => Some(v),
                Some(_) => None,
                None => self.max_fdv_usd,
            },
            follow: patch.follow.clone().unwrap_or_else(|| self.follow.clone()),
        }
    }
}

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

    fn subscription(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<Option<Subscription>, BackendError>> + Send;

    /// The chat's tracked tokens with their current values.
    fn tracked(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<Vec<Holding>, BackendError>> + Send;

    /// Channels ranked by their calls since `since`.
    fn leaderboard(
        &self,
        since: Nanos,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChannelScore>, BackendError>> + Send;

    /// Channel names, where known.
    fn names(&self, ids: &[ChannelId]) -> impl Future<Output = Vec<Option<String>>> + Send;

    /// Credits `days` to `chat_id`, recorded as granted by `admin`; the new
    /// expiry.
    fn grant(
        &self,
        admin: i64,
        chat_id: ChatId,
        days: u32,
        now: Nanos,
    ) -> impl Future<Output = Result<Nanos, BackendError>> + Send;

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
    /// recorded as decided by `admin`; the new expiry.
    fn resolve(
        &self,
        admin: i64,
        signature: &str,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Nanos, BackendError>> + Send;
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
}

impl<B: Backend> Commands<B> {
    /// `admins` are the Telegram user ids allowed `/grant` and `/stats`.
    pub fn new(backend: B, admins: Vec<i64>, bot_username: Option<String>) -> Commands<B> {
        Commands {
            backend,
            admins,
            bot_username,
            links: Links::default(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn is_admin(&self, req: &Incoming) -> bool {
        req.user_id.is_some_and(|u| self.admins.contains(&u))
    }

    /// The parsed command of a message, if it is one of ours.
    fn parse(&self, text: &str) -> Option<Result<Command, String>> {
        parse(text, self.bot_username.as_deref())
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

    async fn answer(
        &self,
        req: &Incoming,
        command: Command,
        now: Nanos,
    ) -> Result<Reply, BackendError> {
        let chat = req.chat_id;
        let b = &self.backend;
        Ok(match command {
            Command::Start => {
                let mut text = String::from(
                    "<b>Welcome to callwatch.</b>\nI alert you when a token is called by \
                     enough of the channels you follow, then when it reaches 2x, 5x, 10x and \
                     more of its value at the call.\n\n",
                );
                match b.subscription(chat).await? {
                    Some(s) if s.expires_at > now => {
                        let _ =
                            writeln!(text, "Your subscription runs until {}.", when(s.expires_at));
                    }
                    _ => text
                        .push_str("You have no active subscription: /subscribe shows the plans.\n"),
                }
                text.push('\n');
                help(&mut text);
                Reply::text(text)
            }
            Command::Help => {
                let mut text = String::from("<b>Commands</b>\n");
                help(&mut text);
                if self.is_admin(req) {
                    text.push_str("\n<b>Admins</b>\n");
                    for (usage, what) in ADMIN_HELP {
                        let _ = writeln!(text, "{} — {what}", esc(usage));
                    }
                }
                Reply::text(text)
            }
            Command::Status => {
                let subscription = b.subscription(chat).await?;
                let settings = b.settings(chat).await?;
                let tracked = b.tracked(chat).await?;
                let mut text = String::from("<b>Status</b>\n");
                match subscription {
                    Some(s) if s.expires_at > now => {
                        let _ = writeln!(
                            text,
                            "Subscription: <b>{}</b>, until {} ({} left)",
                            esc(&s.plan),
                            when(s.expires_at),
                            span(s.expires_at - now)
                        );
                    }
                    Some(s) => {
                        let _ = writeln!(
                            text,
                            "Subscription: expired {} (/subscribe to renew)",
                            when(s.expires_at)
                        );
                    }
                    None => text.push_str("Subscription: none (/subscribe)\n"),
                }
                settings_lines(&settings, &mut text);
                let _ = writeln!(text, "Tracked tokens: {}", tracked.len());
                Reply::text(text)
            }
            Command::Settings => {
                let settings = b.settings(chat).await?;
                let mut text = String::from("<b>Settings</b>\n");
                settings_lines(&settings, &mut text);
                text.push_str(
                    "\nChange them with /min_callers, /lookback, /mcap, /follow and /unfollow.",
                );
                Reply::text(text)
            }
            Command::MinCallers(n) => {
                let patch = SettingsPatch {
                    min_callers: Some(n),
                    ..SettingsPatch::default()
                };
                self.save(chat, &patch, now).await?;
                Reply::text(format!(
                    "Done: you are alerted when {n} of your channel{} called a token.",
                    if n == 1 { "" } else { "s have" }
                ))
            }
            Command::Lookback(minutes) => {
                let patch = SettingsPatch {
                    lookback_minutes: Some(minutes),
                    ..SettingsPatch::default()
                };
                self.save(chat, &patch, now).await?;
                Reply::text(format!(
                    "Done: calls within the last {} count together.",
                    span(i64::from(minutes) * 60 * NANOS_PER_SEC)
                ))
            }
            Command::Mcap { min, max } => {
                let patch = SettingsPatch {
                    min_fdv_usd: Some(min),
                    // The contract has no "unbounded" value; the largest finite one is.
                    max_fdv_usd: Some(max.unwrap_or(f64::MAX)),
                    ..SettingsPatch::default()
                };
                self.save(chat, &patch, now).await?;
                Reply::text(format!("Done: market value {}.", range(min, max)))
            }
            Command::Follow(ids) => {
                let current = b.settings(chat).await?;
                let follow = if ids.is_empty() {
                    Vec::new()
                } else {
                    let mut list = current.follow.clone();
                    list.extend(&ids);
                    list.sort_unstable();
                    list.dedup();
                    list
                };
                if follow.len() > MAX_FOLLOW {
                    return Err(BackendError::Refused(format!(
                        "You can follow at most {MAX_FOLLOW} channels by id; /follow all \
                         follows every channel."
                    )));
                }
                let patch = SettingsPatch {
                    follow: Some(follow.clone()),
                    ..SettingsPatch::default()
                };
                self.save_from(chat, &current, &patch, now).await?;
                let mut text = if ids.is_empty() {
                    String::from("Done: you follow every channel.")
                } else if current.follow.is_empty() {
                    String::from(
                        "Done. You followed every channel; now you follow only the ones you \
                         name. ",
                    )
                } else {
                    String::from("Done. ")
                };
                if !ids.is_empty() {
                    self.channel_list("You follow", &follow, &mut text).await;
                }
                Reply::text(text)
            }
            Command::Unfollow(ids) => {
                let current = b.settings(chat).await?;
                if current.follow.is_empty() {
                    return Ok(Reply::text(
                        "You follow every channel, so there is nothing to unfollow. Name the \
                         channels you want with /follow first.",
                    ));
                }
                let follow: Vec<ChannelId> = current
                    .follow
                    .iter()
                    .copied()
                    .filter(|c| !ids.contains(c))
                    .collect();
                if follow.len() == current.follow.len() {
                    return Ok(Reply::text("You did not follow any of those channels."));
                }
                if follow.is_empty() {
                    return Ok(Reply::text(
                        "That would leave no channel, and an empty list means every channel. \
                         Follow another channel first, or use /follow all.",
                    ));
                }
                let patch = SettingsPatch {
                    follow: Some(follow.clone()),
                    ..SettingsPatch::default()
                };
                self.save_from(chat, &current, &patch, now).await?;
                let mut text = String::from("Done. ");
                self.channel_list("You follow", &follow, &mut text).await;
                Reply::text(text)
            }
            Command::Following => {
                let settings = b.settings(chat).await?;
                if settings.follow.is_empty() {
                    Reply::text("You follow every channel. /follow CHANNEL narrows that down.")
                } else {
                    let mut text = String::new();
                    self.channel_list("You follow", &settings.follow, &mut text)
                        .await;
                    Reply::text(text)
                }
            }
            Command::Tracked => {
                let mut tracked = b.tracked(chat).await?;
                if tracked.is_empty() {
                    return Ok(Reply::text(
                        "Nothing is tracked for you yet: tokens appear here after a call alert.",
                    ));
                }
                tracked.sort_by(|a, b| {
                    b.multiple()
                        .total_cmp(&a.multiple())
                        .then(a.tracked.token.cmp(&b.tracked.token))
                });
                let mut text = format!("<b>Tracked tokens</b> ({})\n", tracked.len());
                for h in tracked.iter().take(TRACKED_ROWS) {
                    let token = h.tracked.token.to_string();
                    let _ = writeln!(
                        text,
                        "<a href=\"{}\">{}</a> {} → {} <b>{}</b>",
                        esc(&self.links.chart(&h.tracked.token)),
                        esc(&short(&token)),
                        usd(h.tracked.fdv_at_call),
                        usd(h.fdv_usd),
                        multiple(h.multiple())
                    );
                }
                if tracked.len() > TRACKED_ROWS {
                    let _ = writeln!(text, "…and {} more.", tracked.len() - TRACKED_ROWS);
                }
                Reply::text(text)
            }
            Command::Top => {
                let board = b.leaderboard(now - TOP_WINDOW_NANOS, TOP_ROWS).await?;
                if board.is_empty() {
                    return Ok(Reply::text("No calls in the last 7 days yet."));
                }
                let ids: Vec<ChannelId> = board.iter().map(|s| s.channel_id).collect();
                let names = b.names(&ids).await;
                let mut text = String::from(
                    "<b>Top channels, last 7 days</b>\ncalls · reached 2x · median peak\n",
                );
                for (i, (s, name)) in board.iter().zip(&names).enumerate() {
                    let mut shown = String::new();
                    format::channel_name(s.channel_id, name.as_deref(), &mut shown);
                    let _ = writeln!(
                        text,
                        "{}. {} (<code>{}</code>): {} · {:.0}% · {}",
                        i + 1,
                        shown,
                        s.channel_id,
                        s.calls,
                        s.share_2x() * 100.0,
                        multiple(s.median_peak)
                    );
                }
                Reply::text(text)
            }
            Command::Subscribe(None) => {
                let plans = b.plans();
                if plans.is_empty() {
                    return Ok(Reply::text(
                        "Payments are not open yet. An admin can /grant you days.",
                    ));
                }
                let mut text = String::from("<b>Plans</b>\n");
                for p in &plans {
                    let _ = writeln!(
                        text,
                        "<b>{}</b>: {} days for {} SOL — <code>/subscribe {}</code>",
                        esc(&p.name),
                        p.days,
                        esc(&p.price_sol),
                        esc(&p.name)
                    );
                }
                text.push_str("\nA renewal adds to the time you have left.");
                Reply::text(text)
            }
            Command::Subscribe(Some(plan)) => {
                let q = b.quote(chat, &plan, now).await?;
                // Telegram opens only http(s) and tg links from buttons and
                // anchors, so the wallet link is text to copy.
                Reply::text(format!(
                    "<b>{}</b>: {} days for <b>{} SOL</b>.\n\nSend exactly {} SOL to\n\
                     <code>{}</code>\nwith the reference key\n<code>{}</code>\n\
                     or open this link in your wallet:\n<code>{}</code>\n\n\
                     This quote is valid until {}. I confirm here once the payment is \
                     finalized on-chain.",
                    esc(&q.plan),
                    q.days,
                    esc(&q.amount_sol),
                    esc(&q.amount_sol),
                    esc(&q.address),
                    esc(&q.reference),
                    esc(&q.pay_url),
                    when(q.expires_at)
                ))
            }
            Command::Grant { chat_id, days } => {
                let admin = req.user_id.unwrap_or(chat);
                let expires_at = b.grant(admin, chat_id, days, now).await?;
                Reply::text(format!(
                    "Granted {days} day{} to <code>{chat_id}</code>: subscribed until {}.",
                    if days == 1 { "" } else { "s" },
                    when(expires_at)
                ))
            }
            Command::Unmatched => {
                let list = b.unmatched().await?;
                if list.is_empty() {
                    return Ok(Reply::text("No unmatched payments."));
                }
                let mut text = format!("<b>Unmatched payments</b> ({})\n", list.len());
                for (i, u) in list.iter().enumerate() {
                    if format::units(&text) > LIST_BUDGET {
                        let _ = writeln!(text, "…and {} more.", list.len() - i);
                        break;
                    }
                    let _ = write!(
                        text,
                        "<code>{}</code>\n{} SOL, {}",
                        esc(&u.signature),
                        esc(&u.received_sol),
                        esc(&u.reason)
                    );
                    if let Some(c) = u.chat_id {
                        let _ = write!(text, ", quote of chat <code>{c}</code>");
                    }
                    text.push_str("\n\n");
                }
                text.push_str("Credit one with /resolve SIGNATURE CHAT PLAN.");
                Reply::text(text)
            }
            Command::Resolve {
                signature,
                chat_id,
                plan,
            } => {
                let admin = req.user_id.unwrap_or(chat);
                let expires_at = b.resolve(admin, &signature, chat_id, &plan, now).await?;
                Reply::text(format!(
                    "Credited to <code>{chat_id}</code> as {}: subscribed until {}.",
                    esc(&plan),
                    when(expires_at)
                ))
            }
            Command::Stats => {
                let rows = b.stats().await?;
                let mut text = String::from("<b>Stats</b>\n");
                for (name, value) in rows {
                    let _ = writeln!(text, "{}: <b>{}</b>", esc(&name), esc(&value));
                }
                Reply::text(text)
            }
        })
    }

    async fn save(
        &self,
        chat: ChatId,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> Result<(), BackendError> {
        let current = self.backend.settings(chat).await?;
        self.save_from(chat, &current, patch, now).await
    }

    async fn save_from(
        &self,
        chat: ChatId,
        current: &ChatSettings,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> Result<(), BackendError> {
        let next = current.patched(patch);
        if next.max_fdv_usd.is_some_and(|max| next.min_fdv_usd > max) {
            return Err(BackendError::Refused(format!(
                "The market value range would be {}, which is empty. Set both ends with \
                 /mcap MIN MAX.",
                range(next.min_fdv_usd, next.max_fdv_usd)
            )));
        }
        self.backend.save_settings(chat, &next, patch, now).await
    }

    async fn channel_list(&self, head: &str, ids: &[ChannelId], out: &mut String) {
        let names = self.backend.names(ids).await;
        let _ = writeln!(
            out,
            "{head} {} channel{}:",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        for (i, (id, name)) in ids.iter().zip(&names).enumerate() {
            if format::units(out) > LIST_BUDGET {
                let _ = writeln!(out, "…and {} more.", ids.len() - i);
                break;
            }
            out.push_str("• ");
            format::channel_name(*id, name.as_deref(), out);
            if name.is_some() {
                let _ = write!(out, " (<code>{id}</code>)");
            }
            out.push('\n');
        }
    }
}

fn help(out: &mut String) {
    for (usage, what) in HELP {
        let _ = writeln!(out, "{} — {what}", esc(usage));
    }
}

fn range(min: f64, max: Option<f64>) -> String {
    match max {
        Some(max) => format!("from {} to {}", usd(min), usd(max)),
        None if min == 0.0 => "any".to_owned(),
        None => format!("from {} up", usd(min)),
    }
}

fn settings_lines(s: &ChatSettings, out: &mut String) {
    let _ = writeln!(out, "Callers needed: {}", s.min_callers);
    let _ = writeln!(
        out,
        "Lookback: {}",
        span(i64::from(s.lookback_minutes) * 60 * NANOS_PER_SEC)
    );
    let _ = writeln!(out, "Market value: {}", range(s.min_fdv_usd, s.max_fdv_usd));
    if s.follow.is_empty() {
        out.push_str("Channels: every channel\n");
    } else {
        let _ = writeln!(out, "Channels: {} (/following)", s.follow.len());
    }
}

/// `AbCd…WxYz` for a long address.
fn short(token: &str) -> String {
    if token.len() <= 14 {
        token.to_owned()
    } else {
        format!("{}…{}", &token[..6], &token[token.len() - 4..])
    }
}

/// Chat settings in Redis beside the chats stream.
#[derive(Debug, Clone)]
pub struct SettingsStore {
    key_prefix: String,
    stream: String,
}

impl SettingsStore {
    /// The store under `key_prefix` (empty in production), writing to the
    /// chats stream the service reads.
    pub fn new(key_prefix: &str) -> SettingsStore {
        SettingsStore {
            key_prefix: key_prefix.to_owned(),
            stream: stream_key(key_prefix, Route::Chats),
        }
    }

    fn key(&self, chat_id: ChatId) -> String {
        chat_settings_key(&self.key_prefix, chat_id)
    }

    /// The chat's settings; defaults when none were saved.
    pub async fn get(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
        chat_id: ChatId,
    ) -> Result<ChatSettings, BackendError> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(chat_id))
            .query_async(con)
            .await
            .map_err(|e| BackendError::Unavailable(format!("Redis: {e}")))?;
        match value {
            None => Ok(ChatSettings::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| {
                BackendError::Unavailable(format!("chat_settings:{chat_id} is unreadable: {e}"))
            }),
        }
    }

    /// Appends the `settings` event of `patch` at `now` to the chats stream
    /// and stores `settings`, in one MULTI: both or neither.
    pub async fn save(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
        chat_id: ChatId,
        settings: &ChatSettings,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> Result<(), BackendError> {
        let mut line = Vec::with_capacity(128);
        Event::Settings {
            chat_id,
            at: now,
            patch: Box::new(patch.clone()),
        }
        .write_json(&mut line);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let json = serde_json::to_vec(settings)
            .map_err(|e| BackendError::Unavailable(format!("encoding settings: {e}")))?;
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(line)
            .ignore()
            .cmd("SET")
            .arg(self.key(chat_id))
            .arg(json)
            .ignore()
            .query_async::<()>(con)
            .await
            .map_err(|e| BackendError::Unavailable(format!("Redis: {e}")))
    }
}

#[cfg(test)]
mod tests;
