//! What Telegram says back, and what the sender reports of it: each answer
//! read once into an [`Outcome`] that decides what becomes of the message
//! and its chat (the table in the module's docs), then a [`Report`] for
//! whoever waits on the message.

use std::time::Duration;

use engine::event::ChatId;
use teloxide::{ApiError, RequestError};
use tokio::time::error::Elapsed;

use super::Tag;
use crate::BotToken;

/// Why a chat cannot be written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inactive {
    /// Blocked, kicked, deactivated or not found: Telegram's words.
    Unreachable(String),
    /// The group became a supergroup with this id.
    Migrated(ChatId),
}

/// What became of messages, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Telegram took it; `message_id` is its id in the chat.
    Sent {
        chat_id: ChatId,
        tag: Tag,
        message_id: i32,
    },
    /// Given up: refused, or still failing after `max_attempts`.
    Failed {
        chat_id: ChatId,
        tag: Tag,
        error: SendError,
    },
    /// The chat cannot be written to: mark it inactive. `dropped` messages
    /// for it were discarded unsent (the one that found out included).
    Inactive {
        chat_id: ChatId,
        reason: Inactive,
        dropped: usize,
    },
}

/// What went wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer within `request_timeout`.
    Timeout,
    /// The request or its answer did not get through.
    Network,
    /// Telegram (or a proxy before it) failed: 5xx, or an answer that is
    /// not the Bot API's JSON.
    Server,
    /// Telegram refused the message (a bad request, an invalid token).
    Refused,
}

/// A failed request, with the token scrubbed from its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct SendError {
    pub kind: ErrorKind,
    pub detail: String,
}

/// What one answer means for the message and its chat.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Sent(i32),
    RetryAfter(Duration),
    Inactive(Inactive),
    Retry(SendError),
    Refused(SendError),
}

/// What a request's result means, or its having had no answer within
/// `timeout`.
pub(super) fn outcome(
    result: Result<Result<i32, RequestError>, Elapsed>,
    token: &BotToken,
    timeout: Duration,
) -> Outcome {
    match result {
        Ok(result) => classify(result, token),
        Err(_) => Outcome::Retry(SendError {
            kind: ErrorKind::Timeout,
            detail: format!("no answer within {timeout:?}"),
        }),
    }
}

/// Reads one request's result; every text in it is scrubbed of the token.
fn classify(result: Result<i32, RequestError>, token: &BotToken) -> Outcome {
    let error = match result {
        Ok(id) => return Outcome::Sent(id),
        Err(e) => e,
    };
    let detail = token.scrub(&error.to_string());
    let err = |kind| SendError {
        kind,
        detail: detail.clone(),
    };
    match &error {
        RequestError::RetryAfter(after) => Outcome::RetryAfter(after.duration()),
        RequestError::MigrateToChatId(to) => Outcome::Inactive(Inactive::Migrated(to.0)),
        RequestError::Network(_) | RequestError::Io(_) => Outcome::Retry(err(ErrorKind::Network)),
        // A proxy's error page, or a body cut short.
        RequestError::InvalidJson { .. } => Outcome::Retry(err(ErrorKind::Server)),
        RequestError::Api(api) => match api {
            ApiError::BotBlocked
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::BotKickedFromChannel
            | ApiError::UserDeactivated
            | ApiError::CantInitiateConversation
            | ApiError::CantTalkWithBots
            | ApiError::ChatNotFound => {
                Outcome::Inactive(Inactive::Unreachable(token.scrub(&api.to_string())))
            }
            ApiError::Unknown(text) => {
                let refusal = ["Bad Request", "Unauthorized", "Not Found", "Conflict"];
                if text.starts_with("Forbidden") {
                    Outcome::Inactive(Inactive::Unreachable(token.scrub(text)))
                } else if refusal.iter().any(|r| text.starts_with(r)) {
                    Outcome::Refused(err(ErrorKind::Refused))
                } else {
                    // "Internal Server Error", "Bad Gateway", …: the
                    // descriptions of Telegram's 5xx answers.
                    Outcome::Retry(err(ErrorKind::Server))
                }
            }
            _ => Outcome::Refused(err(ErrorKind::Refused)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teloxide::types::Seconds;

    fn token() -> BotToken {
        BotToken::new("42:SECRET")
    }

    #[test]
    fn answers_are_read_as_telegram_means_them() {
        let t = token();
        assert_eq!(classify(Ok(7), &t), Outcome::Sent(7));
        assert_eq!(
            classify(Err(RequestError::RetryAfter(Seconds::from_seconds(3))), &t),
            Outcome::RetryAfter(Duration::from_secs(3))
        );
        assert!(matches!(
            classify(Err(RequestError::Api(ApiError::BotBlocked)), &t),
            Outcome::Inactive(Inactive::Unreachable(_))
        ));
        assert!(matches!(
            classify(Err(RequestError::Api(ApiError::UserDeactivated)), &t),
            Outcome::Inactive(_)
        ));
        assert_eq!(
            classify(
                Err(RequestError::MigrateToChatId(teloxide::types::ChatId(-100))),
                &t
            ),
            Outcome::Inactive(Inactive::Migrated(-100))
        );
        for five in ["Internal Server Error", "Bad Gateway", "Gateway Timeout"] {
            assert!(
                matches!(
                    classify(Err(RequestError::Api(ApiError::Unknown(five.into()))), &t),
                    Outcome::Retry(SendError {
                        kind: ErrorKind::Server,
                        ..
                    })
                ),
                "{five}"
            );
        }
        assert!(matches!(
            classify(
                Err(RequestError::Api(ApiError::Unknown(
                    "Forbidden: bot was blocked by a new reason".into()
                ))),
                &t
            ),
            Outcome::Inactive(_)
        ));
        assert!(matches!(
            classify(
                Err(RequestError::Api(ApiError::CantParseEntities(
                    "Bad Request: can't parse entities".into()
                ))),
                &t
            ),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            classify(
                Err(RequestError::Api(ApiError::Unknown(
                    "Bad Request: something new".into()
                ))),
                &t
            ),
            Outcome::Refused(_)
        ));
    }
}
