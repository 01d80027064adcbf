//! The `[telegram]` section of the service's settings: the bot, its limits
//! and how its commands arrive.

use std::net::SocketAddr;
use std::time::Duration;

use callwatch_common::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::sender::SenderConfig;

/// The bot, its limits and how its commands arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token; empty runs the service without sending (alerts are
    /// still decided, kept and audited). Never printed [default: empty].
    pub token: Secret,
    /// The Bot API's base URL [default: `https://api.telegram.org`].
    pub api_url: String,
    /// Messages a second to one chat [default: 1].
    pub per_chat_per_sec: f64,
    /// Messages a second overall, at least the per-chat rate [default: 30].
    pub global_per_sec: f64,
    /// Where these limits are kept: `redis`, shared by every process
    /// sending with this bot through the service's Redis (`redis.url`,
    /// under `redis.key_prefix`), or `process`, this process's alone (only
    /// for a bot no other process sends with). Every process of a bot must
    /// say the same [default: `redis`].
    pub limits: String,
    /// Commands a minute one chat may send, on average; more are not
    /// answered (the first one over is told to slow down) [default: 30].
    pub commands_per_minute: u32,
    /// Commands one chat may send at once, above that rate [default: 10].
    pub command_burst: u32,
    /// Telegram user ids allowed the admin commands (`/grant`, `/stats`,
    /// `/unmatched`, `/resolve`) [default: none].
    pub admins: Vec<i64>,
    /// How commands reach the bot: `polling`, `webhook` or `off` (a
    /// process that only sends; run exactly one process that receives)
    /// [default: `polling`].
    pub updates: String,
    /// The bot's @username without the `@`, so `/status@name` is taken
    /// and a command for another bot in a group is not; empty: any
    /// [default: empty].
    pub bot_username: String,
    /// Webhook mode: the public HTTPS URL Telegram posts updates to
    /// [default: empty].
    pub webhook_url: String,
    /// Webhook mode: where the webhook server listens [default:
    /// `0.0.0.0:8443`].
    pub webhook_listen: String,
    /// Webhook mode: the secret Telegram sends in
    /// `X-Telegram-Bot-Api-Secret-Token` (1 to 256 of A-Z a-z 0-9 _ -).
    /// Never printed [default: empty].
    pub webhook_secret: Secret,
    /// Webhook mode: updates held for the dispatcher; when that many wait,
    /// Telegram is answered 429 and sends them again later [default: 256].
    pub webhook_queue: usize,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token: Secret::default(),
            api_url: "https://api.telegram.org".to_owned(),
            per_chat_per_sec: 1.0,
            global_per_sec: 30.0,
            limits: "redis".to_owned(),
            commands_per_minute: 30,
            command_burst: 10,
            admins: Vec::new(),
            updates: "polling".to_owned(),
            bot_username: String::new(),
            webhook_url: String::new(),
            webhook_listen: "0.0.0.0:8443".to_owned(),
            webhook_secret: Secret::default(),
            webhook_queue: crate::webhook::DEFAULT_QUEUE,
        }
    }
}

impl TelegramConfig {
    /// Whether there is a bot to send with.
    pub fn enabled(&self) -> bool {
        !self.token.is_empty()
    }

    /// Whether this process receives the bot's commands.
    pub fn receives(&self) -> bool {
        self.enabled() && self.updates != "off"
    }

    /// Whether the limits are shared through Redis.
    pub fn shared_limits(&self) -> bool {
        self.limits == "redis"
    }

    /// The sender's settings: these rates, the rest its defaults.
    pub fn sender(&self) -> SenderConfig {
        SenderConfig {
            api_url: self.api_url.clone(),
            chat_interval: Duration::from_secs_f64(1.0 / self.per_chat_per_sec),
            global_limit: self.global_per_sec.round().max(1.0) as u32,
            ..SenderConfig::default()
        }
    }

    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.per_chat_per_sec > 0.0 && self.global_per_sec >= self.per_chat_per_sec) {
            problems.push(
                "telegram rates must be positive, the global one at least the per-chat one"
                    .to_owned(),
            );
        }
        if self.commands_per_minute == 0 || self.command_burst == 0 {
            problems.push(
                "telegram.commands_per_minute and telegram.command_burst must be at least 1"
                    .to_owned(),
            );
        }
        if !self.api_url.starts_with("http://") && !self.api_url.starts_with("https://") {
            problems.push("telegram.api_url must be an http(s) URL".to_owned());
        }
        if !self.token.is_empty() && !self.token.expose().contains(':') {
            problems.push("telegram.token does not look like a bot token (id:secret)".to_owned());
        }
        if !matches!(self.limits.as_str(), "redis" | "process") {
            problems.push(format!(
                "telegram.limits `{}`: use `redis` (shared by the bot's processes) or `process`",
                self.limits
            ));
        }
        match self.updates.as_str() {
            "polling" | "off" => {}
            "webhook" => problems.extend(self.webhook_problems()),
            other => problems.push(format!(
                "telegram.updates `{other}`: use `polling`, `webhook` or `off`"
            )),
        }
        problems
    }

    fn webhook_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.webhook_url.starts_with("https://") {
            problems.push("telegram.webhook_url must be an https URL in webhook mode".to_owned());
        }
        if self.webhook_listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "telegram.webhook_listen `{}` is not an address:port",
                self.webhook_listen
            ));
        }
        let secret = self.webhook_secret.expose();
        let secret_ok = (1..=256).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if self.webhook_queue == 0 {
            problems.push("telegram.webhook_queue must be at least 1".to_owned());
        }
        if !secret_ok {
            problems.push(
                "telegram.webhook_secret (or CALLWATCH_WEBHOOK_SECRET) must be 1 to 256 \
                 of A-Z a-z 0-9 _ - in webhook mode"
                    .to_owned(),
            );
        }
        problems
    }
}
