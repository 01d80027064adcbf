//! Telegram: alerts as messages, the channel names they show, and the
//! sender that delivers them within Telegram's limits.
//!
//! ```text
//!  Effect ─▶ names::ChannelNames::resolve ─▶ format::alert ─▶ Sender::send ─▶ Bot API
//!            (in process, then Redis)          (HTML, buttons)   (per-chat and global limits,
//!                                                                  429s, retries, reports)
//! ```
//!
//! # Layout
//! - [`config`]: the `[telegram]` settings: the bot, its rates, how
//!   commands arrive.
//! - [`format`](mod@format): an alert → HTML text and URL buttons (pure, escaped,
//!   capped at Telegram's 4,096 characters).
//! - [`names`]: channel names, in process (TTL, LRU) over Redis
//!   `channel:{id}:info`.
//! - [`sender`]: the bounded queue and the task that sends through
//!   teloxide: one message per chat per second, 30 per second overall, a
//!   priority lane for replies, `retry_after` for what it applies to,
//!   retries with backoff, reports of what was sent and who blocked the bot;
//!   the limits shared through Redis by every process of the bot, when
//!   started with [`SharedLimits`](sender::SharedLimits).
//!   A folder: `config`, `message`, `handle` (the [`Sender`](sender::Sender)
//!   and [`SenderTask`](sender::SenderTask) handles), `scheduler` (the
//!   task), `chat` (per-chat queues), `window` (the global limit),
//!   `shared` (the limits in Redis), `report` (answers read into outcomes)
//!   and `stats`.
//! - [`outbox`]: alerts kept in a Redis stream until Telegram has answered
//!   for them, so that a crash loses none.
//! - [`commands`]: the bot's commands, parsed with helpful replies for
//!   bad arguments, answered over a backend; settings commands become
//!   `settings` events on the chats stream. A folder with one file per
//!   command (or family sharing an argument shape), each a pure parse and
//!   an answer; `commands/mod.rs` dispatches to them and holds
//!   [`Command`](commands::Command) and [`Commands`](commands::Commands).
//!   In a group, only its administrators change its settings or
//!   subscription (`commands::rights`).
//! - [`updates`]: receiving the bot's messages (commands) through
//!   teloxide's dispatcher, by long polling or a webhook behind axum, in
//!   order per chat, with a graceful shutdown.
//! - [`webhook`]: the webhook's front door, ours: the secret compared in
//!   constant time, bodies capped at 64 KiB, a bounded queue to the
//!   dispatcher (429 when full), each refusal counted.
//! - [`members`]: who administers a group, asked of the Bot API
//!   (`getChatMember`), for the commands' permission check.
//! - [`charts_off`]: the chats that turned charts off (`/charts off`), a
//!   Redis set the alerts' renderer asks once per batch.
//!
//! The bot token is a [`BotToken`]: its `Debug` hides it, and every error
//! text that leaves this module has been through [`BotToken::scrub`]
//! (teloxide puts the token in request URLs, and reqwest's errors name the
//! URL).

pub mod charts_off;
pub mod commands;
pub mod config;
pub mod format;
pub mod members;
pub mod names;
pub mod outbox;
pub mod sender;
pub mod updates;
pub mod webhook;

use std::fmt;
use std::sync::Arc;

/// A bot's token: kept out of `Debug` output, logs and errors.
#[derive(Clone)]
pub struct BotToken(Arc<str>);

impl BotToken {
    pub fn new(token: impl Into<String>) -> BotToken {
        BotToken(Arc::from(token.into()))
    }

    /// The token itself, for the Bot API client and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The bot's name in keys that every process using it shares (the
    /// shared limits): the first 64 bits of the token's SHA-256, in hex.
    /// Stable across builds and machines, and tells nothing of the token.
    pub fn key_id(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `text` with every occurrence of the token (as is, or with its `:`
    /// percent-encoded, as a URL may carry it) replaced by `<token>`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        let encoded = self.0.replace(':', "%3A");
        text.replace(&*self.0, "<token>")
            .replace(&encoded, "<token>")
            .replace(&encoded.replace("%3A", "%3a"), "<token>")
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_scrubbed_in_every_spelling_and_hidden_from_debug() {
        let t = BotToken::new("123456:AAH-secret_part");
        let text = "error sending request for url (http://x/bot123456:AAH-secret_part/sendMessage) \
                    or http://x/bot123456%3AAAH-secret_part/ or %3a: bot123456%3aAAH-secret_part";
        let clean = t.scrub(text);
        assert!(!clean.contains("secret_part"), "{clean}");
        assert_eq!(clean.matches("<token>").count(), 3);
        assert_eq!(format!("{t:?}"), "BotToken(<redacted>)");
        assert_eq!(BotToken::new("").scrub("as is"), "as is");
    }

    #[test]
    fn the_key_id_is_a_stable_hash_that_shows_nothing_of_the_token() {
        let t = BotToken::new("123456:AAH-secret_part");
        // SHA-256 of the token, its first 8 bytes: the same in every build.
        assert_eq!(t.key_id(), "50a98982f9b01abc");
        assert_ne!(
            t.key_id(),
            BotToken::new("123456:AAH-secret_parts").key_id()
        );
        assert!(!t.key_id().contains("123456"));
    }
}
