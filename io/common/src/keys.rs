//! Redis keys: the predecessor's layout, so a running deployment can switch
//! over, and the keys and streams callwatch adds. Every name the service
//! writes is made here, so that a reader finds the whole layout in one
//! place.
//!
//! | key | value | TTL |
//! | --- | --- | --- |
//! | `multiplier:{token}:{chat_id}` | [`MultiplierRecord`] | 7 days |
//! | `processed_token:{token}:{chat_id}` | [`ProcessedRecord`] | the engine's ttl (7 days) |
//! | `subscription:{chat_id}` | plan, expires_at, status | 365 days |
//! | `channel:{id}:info` | channel name and details | 30 minutes |
//!
//! callwatch's own keys and streams:
//!
//! | key | what |
//! | --- | --- |
//! | `calls:{token}:{channel_id}` | a channel's latest call of a token (at, value), expiring with tracking |
//! | `charts:off` | the chats that turned charts off (`/charts off`), a set of chat ids |
//! | `chat_settings:{chat_id}` | a chat's settings, beside the event that set them (on a Redis Cluster `{events:chats}:chat_settings:{chat_id}`, in the chats stream's slot) |
//! | `events:{p}`, `events:chats` | the input streams (`route`) |
//! | `events:dead` | input set aside, with the reason |
//! | `callwatch:audit` | audit and activity rows on their way to PostgreSQL |
//! | `callwatch:outbox` | alerts on their way to Telegram |
//! | `posts:raw` | channel posts as readers write them, for calls |
//! | `posts:seen:{chat_id}:{message_id}` | the tokens a post has called, so an edit calls only new ones |
//! | `sources:calls` | every call kept, for the price scheduler |
//! | `sources:near` | tokens whose value is near their next crossing, by the engine |
//! | `dashboard:key` | the key the dashboard's links are signed with, when the settings name none: made at first start, shared by every process on this Redis, no TTL |
//! | `telegram:limits:{bot}:…` | a bot's Telegram limits, shared by its processes (`bot` a hash of its token); each key expires once it holds nothing back |
//!
//! Every name takes the deployment's key prefix in front (empty in
//! production, the predecessor's layout).

use engine::token::Token;

use crate::route::Route;

/// Seconds a multiplier (tracking) record lives, as in the seed.
pub const MULTIPLIER_TTL_SECS: u64 = 7 * 24 * 3600;
/// Seconds a subscription record lives, as in the seed.
pub const SUBSCRIPTION_TTL_SECS: u64 = 365 * 24 * 3600;
/// Seconds a cached channel description lives, as in the seed.
pub const CHANNEL_INFO_TTL_SECS: u64 = 30 * 60;

pub fn multiplier_key(token: &Token, chat_id: i64) -> String {
    format!("multiplier:{token}:{chat_id}")
}

pub fn processed_key(token: &Token, chat_id: i64) -> String {
    format!("processed_token:{token}:{chat_id}")
}

pub fn subscription_key(chat_id: i64) -> String {
    format!("subscription:{chat_id}")
}

pub fn channel_info_key(channel_id: i64) -> String {
    format!("channel:{channel_id}:info")
}

/// The (token, chat) of a `{prefix}:{token}:{chat_id}` key, if it is one.
pub fn parse_pair_key(prefix: &str, key: &str) -> Option<(Token, i64)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (token, chat) = rest.rsplit_once(':')?;
    Some((Token::parse(token).ok()?, chat.parse().ok()?))
}

/// The one field of an input stream entry: a CONTRACT.md event as JSON.
pub const EVENT_FIELD: &str = "event";

/// The key of a stream.
pub fn stream_key(prefix: &str, route: Route) -> String {
    match route {
        Route::Chats => format!("{prefix}events:chats"),
        Route::Partition(p) => format!("{prefix}events:{p}"),
    }
}

/// The default dead-letter stream's key.
pub fn dead_letter_key(prefix: &str) -> String {
    format!("{prefix}events:dead")
}

/// A chat's current settings, kept beside the settings events.
pub fn chat_settings_key(prefix: &str, chat_id: i64) -> String {
    format!("{prefix}chat_settings:{chat_id}")
}

/// The chats that turned charts off: a set of chat ids.
pub fn charts_off_key(prefix: &str) -> String {
    format!("{prefix}charts:off")
}

/// The audit queue: alert and activity rows on their way to PostgreSQL.
pub fn audit_key(prefix: &str) -> String {
    format!("{prefix}callwatch:audit")
}

/// The outbox: alerts on their way to Telegram.
pub fn outbox_key(prefix: &str) -> String {
    format!("{prefix}callwatch:outbox")
}

/// Channel posts as readers write them: the calls' raw input.
pub fn posts_key(prefix: &str) -> String {
    format!("{prefix}posts:raw")
}

/// The tokens post `message_id` of `chat_id` has called.
pub fn post_seen_key(prefix: &str, chat_id: i64, message_id: i64) -> String {
    format!("{prefix}posts:seen:{chat_id}:{message_id}")
}

/// Every call kept, for the price scheduler.
pub fn source_calls_key(prefix: &str) -> String {
    format!("{prefix}sources:calls")
}

/// Tokens whose value is near their next crossing, as the engine saw them.
pub fn source_near_key(prefix: &str) -> String {
    format!("{prefix}sources:near")
}

/// The dashboard's signing key, made at first start when the settings name
/// none, so that every process on this Redis verifies the same links.
pub fn dashboard_key_key(prefix: &str) -> String {
    format!("{prefix}dashboard:key")
}

/// The start of the keys of a bot's Telegram limits, which every process
/// sending with it shares: `bot` names it by a hash of its token, never
/// the token. The braces make it a hash tag, so that the keys one script
/// touches share a Redis Cluster slot.
pub fn telegram_limits_key(prefix: &str, bot: &str) -> String {
    format!("{prefix}telegram:limits:{{{bot}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";

    #[test]
    fn keys_follow_the_seeds_layout() {
        let t: Token = SOL.parse().unwrap();
        assert_eq!(multiplier_key(&t, -42), format!("multiplier:{SOL}:-42"));
        assert_eq!(processed_key(&t, 7), format!("processed_token:{SOL}:7"));
        assert_eq!(subscription_key(7), "subscription:7");
        assert_eq!(channel_info_key(-1001), "channel:-1001:info");
        assert_eq!(
            telegram_limits_key("t:", "00ff"),
            "t:telegram:limits:{00ff}"
        );
        assert_eq!(
            parse_pair_key("multiplier", &format!("multiplier:{SOL}:-42")),
            Some((t, -42))
        );
        assert_eq!(parse_pair_key("multiplier", "multiplier:nope:1"), None);
        assert_eq!(
            parse_pair_key("multiplier", &format!("processed_token:{SOL}:1")),
            None
        );
    }
}
