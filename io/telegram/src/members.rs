//! Who administers a group, asked of Telegram (`getChatMember`): what the
//! commands' permission check needs (see `commands`, which keeps the
//! answers a minute).

use std::time::Duration;

use teloxide::Bot;
use teloxide::requests::Requester;
use teloxide::types::{ChatId, UserId};

use crate::BotToken;

/// How long one `getChatMember` may take before the command it is for is
/// refused (the person is asked to try again).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why Telegram could not say. Texts are scrubbed of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("getChatMember: HTTP client: {0}")]
    Client(String),
    #[error("getChatMember failed: {0}")]
    Failed(String),
    #[error("getChatMember: no answer in {} s", LOOKUP_TIMEOUT.as_secs())]
    Timeout,
}

/// Asks the Bot API about a chat's members.
#[derive(Debug, Clone)]
pub struct ChatMembers {
    bot: Bot,
    token: BotToken,
}

impl ChatMembers {
    /// A client of the Bot API at `api_url` for the bot `token`.
    pub fn new(api_url: &url::Url, token: &BotToken) -> Result<ChatMembers, MembersError> {
        let client = teloxide::net::default_reqwest_settings()
            .timeout(LOOKUP_TIMEOUT)
            .build()
            .map_err(|e| MembersError::Client(token.scrub(&e.to_string())))?;
        let bot = Bot::with_client(token.expose(), client).set_api_url(api_url.clone());
        Ok(ChatMembers {
            bot,
            token: token.clone(),
        })
    }

    /// Whether `user_id` is the creator or an administrator of `chat_id`.
    /// A user id no person can have administers nothing.
    pub async fn is_admin(&self, chat_id: i64, user_id: i64) -> Result<bool, MembersError> {
        let Ok(user) = u64::try_from(user_id) else {
            return Ok(false);
        };
        let asked = self.bot.get_chat_member(ChatId(chat_id), UserId(user));
        match tokio::time::timeout(LOOKUP_TIMEOUT, asked).await {
            Ok(Ok(member)) => Ok(member.is_privileged()),
            Ok(Err(e)) => Err(MembersError::Failed(self.token.scrub(&e.to_string()))),
            Err(_) => Err(MembersError::Timeout),
        }
    }
}
