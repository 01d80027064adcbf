//! The chats that turned charts off (`/charts off`): one Redis set of chat
//! ids, `charts:off` under the deployment's prefix (callwatch's own key, no
//! expiry). A set rather than a field of `chat_settings`, so that the
//! sending side asks about a whole batch of alerts in one `SMISMEMBER`, and
//! every process sending for the bot sees a change at once.

use std::collections::HashSet;

use callwatch_common::keys::charts_off_key;
use engine::event::ChatId;
use redis::aio::ConnectionLike;

/// The set of chats without charts.
#[derive(Debug, Clone)]
pub struct ChartsOff {
    key: String,
}

impl ChartsOff {
    pub fn new(prefix: &str) -> ChartsOff {
        ChartsOff {
            key: charts_off_key(prefix),
        }
    }

    /// Turns charts on or off for `chat_id`.
    pub async fn set(
        &self,
        con: &mut impl ConnectionLike,
        chat_id: ChatId,
        on: bool,
    ) -> redis::RedisResult<()> {
        let command = if on { "SREM" } else { "SADD" };
        redis::cmd(command)
            .arg(&self.key)
            .arg(chat_id)
            .exec_async(con)
            .await
    }

    /// Whether `chat_id` has charts on.
    pub async fn is_on(
        &self,
        con: &mut impl ConnectionLike,
        chat_id: ChatId,
    ) -> redis::RedisResult<bool> {
        Ok(self.off_among(con, &[chat_id]).await?.is_empty())
    }

    /// Which of `chats` turned charts off, in one round trip.
    pub async fn off_among(
        &self,
        con: &mut impl ConnectionLike,
        chats: &[ChatId],
    ) -> redis::RedisResult<HashSet<ChatId>> {
        if chats.is_empty() {
            return Ok(HashSet::new());
        }
        let member: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(&self.key)
            .arg(chats)
            .query_async(con)
            .await?;
        Ok(chats
            .iter()
            .zip(member)
            .filter_map(|(&chat, off)| off.then_some(chat))
            .collect())
    }
}
