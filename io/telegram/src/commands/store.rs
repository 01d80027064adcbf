//! Where a chat's settings are kept: Redis, beside the chats stream that
//! carries them to the engine, both written in one MULTI so that the two
//! never disagree. On a Redis Cluster the settings keys carry the chats
//! stream's name as their hash tag (`{events:chats}:chat_settings:42`), so
//! they share its slot and the MULTI stays on one node.

use engine::event::{ChatId, Event, SettingsPatch};

use callwatch_common::keys::{EVENT_FIELD, chat_settings_key, stream_key};
use callwatch_common::route::Route;

use super::{BackendError, ChatSettings};

/// Chat settings in Redis beside the chats stream.
#[derive(Debug, Clone)]
pub struct SettingsStore {
    key_prefix: String,
    stream: String,
    /// The hash tag put in each key, on a cluster.
    tag: Option<String>,
}

impl SettingsStore {
    /// The store under `key_prefix` (empty in production), writing to the
    /// chats stream the service reads.
    pub fn new(key_prefix: &str) -> SettingsStore {
        SettingsStore {
            key_prefix: key_prefix.to_owned(),
            stream: stream_key(key_prefix, Route::Chats),
            tag: None,
        }
    }

    /// The same on a Redis Cluster: each key tagged with the stream's
    /// name, so that both live in one slot.
    pub fn on_cluster(key_prefix: &str) -> SettingsStore {
        let store = SettingsStore::new(key_prefix);
        SettingsStore {
            tag: Some(format!("{{{}}}", store.stream)),
            ..store
        }
    }

    fn key(&self, chat_id: ChatId) -> String {
        match &self.tag {
            None => chat_settings_key(&self.key_prefix, chat_id),
            Some(tag) => chat_settings_key(&format!("{}{tag}:", self.key_prefix), chat_id),
        }
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

    /// Appends the `settings` event of `patch` to the chats stream and
    /// stores `settings`, in one MULTI: both or neither. The event is
    /// stamped by Redis's clock, the one that stamps its entry (the ingest
    /// sets aside events dated ahead of their entries).
    pub async fn save(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
        chat_id: ChatId,
        settings: &ChatSettings,
        patch: &SettingsPatch,
    ) -> Result<(), BackendError> {
        // The clock of the node holding the stream (beside a command on
        // its key), which stamps the entry: on a cluster, other nodes'
        // clocks may differ.
        let (_, (secs, micros)): (u64, (i64, i64)) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(&self.stream)
            .cmd("TIME")
            .query_async(con)
            .await
            .map_err(|e| BackendError::Unavailable(format!("Redis: {e}")))?;
        let now = secs
            .saturating_mul(1_000_000_000)
            .saturating_add(micros * 1_000);
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
