//! Alerts on their way to Telegram, kept in a Redis stream until Telegram
//! has answered for them, so that a crash loses none: the service appends
//! an alert here before it queues it, deletes it when the sender reports it
//! sent (or given up), and at start queues again whatever is still here.
//!
//! An entry has one field, `alert`: the message as JSON (chat, the alert's
//! key, the HTML text and the buttons). What is sent twice after a crash is
//! at most what Telegram had answered and the service had not yet deleted:
//! the messages in flight and the sender's reports not yet read.

use callwatch_common::records::AlertKind;
use callwatch_streams::EntryId;
use callwatch_streams::log;
use engine::time::Nanos;
use engine::token::Token;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::format::Button;
use crate::sender::{AlertKey, Message, Tag};

/// The outbox of one deployment: a stream key.
#[derive(Debug, Clone)]
pub struct Outbox {
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    chat_id: i64,
    token: String,
    kind: AlertKind,
    threshold: f64,
    at: Nanos,
    text: String,
    buttons: Vec<(String, String)>,
}

/// Entries read per XRANGE at start.
const LOAD_BATCH: usize = 1_000;
/// An entry's one field: the message as JSON.
const FIELD: &str = "alert";

impl Outbox {
    pub fn new(key: impl Into<String>) -> Outbox {
        Outbox { key: key.into() }
    }

    /// Appends alert messages (replies are not kept) in one pipeline and
    /// returns each one's entry id, in order.
    pub async fn push(
        &self,
        con: &mut impl ConnectionLike,
        messages: &[Message],
    ) -> callwatch_streams::Result<Vec<EntryId>> {
        let stored: Vec<String> = messages
            .iter()
            .filter_map(|m| {
                let Tag::Alert(key) = &m.tag else {
                    return None;
                };
                let stored = Stored {
                    chat_id: m.chat_id,
                    token: key.token.to_string(),
                    kind: key.kind,
                    threshold: key.threshold,
                    at: key.at,
                    text: m.text.clone(),
                    buttons: m
                        .buttons
                        .iter()
                        .map(|b| (b.text.clone(), b.url.to_string()))
                        .collect(),
                };
                Some(serde_json::to_string(&stored).expect("alerts serialise"))
            })
            .collect();
        log::append(con, &self.key, FIELD, &stored).await
    }

    /// Deletes answered entries.
    pub async fn remove(
        &self,
        con: &mut impl ConnectionLike,
        ids: &[EntryId],
    ) -> callwatch_streams::Result<()> {
        log::delete(con, &self.key, ids).await
    }

    /// Every entry still here, oldest first, with its id. An entry that
    /// cannot be read back is returned as an error string with its id (and
    /// should be deleted by the caller after logging it).
    pub async fn load(
        &self,
        con: &mut impl ConnectionLike,
    ) -> callwatch_streams::Result<Vec<(EntryId, Result<Message, String>)>> {
        let entries = log::read_all(con, &self.key, LOAD_BATCH).await?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let message = entry
                    .sole_field(FIELD)
                    .and_then(|v| String::from_utf8(v).map_err(|e| e.to_string()))
                    .and_then(|v| decode(&v));
                (entry.id, message)
            })
            .collect())
    }
}

fn decode(json: &str) -> Result<Message, String> {
    let s: Stored = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let token: Token = s.token.parse().map_err(|e| format!("token: {e}"))?;
    let buttons = s
        .buttons
        .into_iter()
        .map(|(text, url)| {
            Ok(Button {
                text,
                url: Url::parse(&url).map_err(|e| format!("button url: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Message {
        chat_id: s.chat_id,
        tag: Tag::Alert(AlertKey {
            token,
            kind: s.kind,
            threshold: s.threshold,
            at: s.at,
        }),
        text: s.text,
        buttons,
        // Charts are not kept: an alert sent again after a restart goes as
        // text (its chart would be drawn from a history the restart lost).
        photo: None,
    })
}
