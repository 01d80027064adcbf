//! How the sender runs: its limits, capacities and retries, checked once
//! at start so that the task never meets a setting it cannot honour.

use std::time::Duration;

use callwatch_common::breaker::BreakerConfig;

/// How the sender runs. [`SenderConfig::check`] once at start.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The Bot API's base URL. Default: `https://api.telegram.org`.
    pub api_url: String,
    /// The least time between the answer to one message to a chat and the
    /// next message to it. Default: 1 s.
    pub chat_interval: Duration,
    /// Messages per `window` overall. Default: 30.
    pub global_limit: u32,
    /// Default: 1 s.
    pub window: Duration,
    /// A message still unanswered this long after it left counts against
    /// the global window from then on (it must have reached Telegram by
    /// then for the window to hold). Default: 250 ms.
    pub assume_received_after: Duration,
    /// Giving up on one request (then retried). Default: 15 s.
    pub request_timeout: Duration,
    /// The wait before the first retry after a 5xx, network error or
    /// timeout; it about doubles with each, with jitter. Default: 1 s.
    pub retry_backoff: Duration,
    /// The longest wait between attempts. Default: 30 s.
    pub max_retry_backoff: Duration,
    /// Attempts per message before it is reported failed. Default: 10.
    pub max_attempts: u32,
    /// Alerts held at most (waiting, retrying or in flight). Default:
    /// 100,000 (about 55 minutes of sending at 30 per second).
    pub alert_capacity: usize,
    /// Replies held at most; a lane of their own, so a full alert queue
    /// never holds a reply back. Default: 1,000.
    pub reply_capacity: usize,
    /// Replies one chat may hold (waiting, retrying or in flight); one more
    /// is refused at once ([`Rejected::ChatFull`](super::Rejected)), so a
    /// chat that floods commands fills its own share, never the lane.
    /// Default: 20 (above a chat's burst of commands, so that the notice
    /// that it is over its rate still finds room).
    pub chat_reply_cap: usize,
    /// Alerts one chat may hold; one more is refused at once and dropped by
    /// its producer, counted (a chat that far behind reads stale alerts).
    /// Default: 1,000 (about 17 minutes of sending to one chat).
    pub chat_alert_cap: usize,
    /// Messages a group (a chat with a negative id) is sent per
    /// `group_window` at most, as Telegram allows. Default: 20.
    pub group_limit: usize,
    /// Default: 60 s.
    pub group_window: Duration,
    /// 429s for this many different private chats within one `window`
    /// pause every chat (a group's 429 is its own limit's, and pauses that
    /// group only). Default: 2.
    pub flood_chats: usize,
    /// How long a chat that became unreachable is remembered (its alerts
    /// dropped on arrival). Default: 10 minutes.
    pub inactive_ttl: Duration,
    /// Unreachable chats remembered at most. Default: 100,000.
    pub inactive_capacity: usize,
    /// Reports buffered for their reader. Default: 4,096.
    pub report_capacity: usize,
    /// Consecutive failures (5xx, network, timeout) that pause all sending.
    pub breaker: BreakerConfig,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            api_url: "https://api.telegram.org".to_owned(),
            chat_interval: Duration::from_secs(1),
            global_limit: 30,
            window: Duration::from_secs(1),
            assume_received_after: Duration::from_millis(250),
            request_timeout: Duration::from_secs(15),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(30),
            max_attempts: 10,
            alert_capacity: 100_000,
            reply_capacity: 1_000,
            chat_reply_cap: 20,
            chat_alert_cap: 1_000,
            group_limit: 20,
            group_window: Duration::from_secs(60),
            flood_chats: 2,
            inactive_ttl: Duration::from_secs(600),
            inactive_capacity: 100_000,
            report_capacity: 4096,
            breaker: BreakerConfig::default(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("telegram sender: {0}")]
pub struct ConfigError(pub(super) String);

impl SenderConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        let fail = |what: &str| Err(ConfigError(what.to_owned()));
        let url = url::Url::parse(&self.api_url)
            .map_err(|e| ConfigError(format!("api-url {:?}: {e}", self.api_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return fail("api-url must be an http(s) base URL");
        }
        if self.global_limit == 0 || self.window.is_zero() {
            return fail("global-limit and window must be positive");
        }
        if self.chat_interval.is_zero() || self.request_timeout.is_zero() {
            return fail("chat-interval and request-timeout must be positive");
        }
        if self.max_attempts == 0 || self.flood_chats == 0 {
            return fail("max-attempts and flood-chats must be at least 1");
        }
        if self.alert_capacity == 0 || self.reply_capacity == 0 || self.report_capacity == 0 {
            return fail("capacities must be positive");
        }
        if self.chat_reply_cap == 0 || self.chat_alert_cap == 0 {
            return fail("chat-reply-cap and chat-alert-cap must be at least 1");
        }
        if self.group_limit == 0 || self.group_window.is_zero() {
            return fail("group-limit and group-window must be positive");
        }
        if self.inactive_capacity == 0 {
            return fail("inactive-capacity must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_config_is_refused() {
        assert!(SenderConfig::default().check().is_ok());
        for bad in [
            SenderConfig {
                global_limit: 0,
                ..SenderConfig::default()
            },
            SenderConfig {
                api_url: "not a url".into(),
                ..SenderConfig::default()
            },
            SenderConfig {
                chat_interval: Duration::ZERO,
                ..SenderConfig::default()
            },
            SenderConfig {
                alert_capacity: 0,
                ..SenderConfig::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
