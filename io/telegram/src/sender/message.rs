//! What producers hand the sender: a message, the tag that says which
//! alert or reply it is, and the lane that tag puts it in.
//!
//! A message with a photo (a multiplier alert's chart) goes as
//! `sendPhoto` with its text as the caption; Telegram counts it against
//! the same limits as a text message. If Telegram refuses the photo, the
//! scheduler sends the message again as text without it
//! ([`Message::without_photo`]), so a chart never costs an alert.

use std::future::Future;
use std::sync::Arc;

use engine::effect::Effect;
use engine::event::ChatId;
use engine::time::Nanos;
use engine::token::Token;
use teloxide::Bot;
use teloxide::RequestError;
use teloxide::payloads::{SendMessageSetters, SendPhotoSetters};
use teloxide::requests::Requester;
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, ParseMode,
};

use callwatch_common::records::AlertKind;

use crate::format::{Button, Rendered};

/// Which alert a message is: the natural key of its `alert_audit` row
/// (with the chat id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertKey {
    pub token: Token,
    pub kind: AlertKind,
    /// The multiple reached; 0 for call alerts.
    pub threshold: f64,
    pub at: Nanos,
}

impl AlertKey {
    /// The key of an alert; `None` for effects that are not alerts.
    pub fn of(effect: &Effect) -> Option<AlertKey> {
        match effect {
            Effect::CallAlert(a) => Some(AlertKey {
                token: a.token,
                kind: AlertKind::CallAlert,
                threshold: 0.0,
                at: a.at,
            }),
            Effect::MultiplierAlert(a) => Some(AlertKey {
                token: a.token,
                kind: AlertKind::MultiplierAlert,
                threshold: a.threshold,
                at: a.at,
            }),
            Effect::Progress(_) => None,
        }
    }
}

/// What a message is; it picks the lane and comes back in its report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tag {
    Alert(AlertKey),
    /// A reply to a command, with the caller's own id for it.
    Reply(u64),
}

impl Tag {
    pub(super) fn lane(&self) -> Lane {
        match self {
            Tag::Alert(_) => Lane::Alert,
            Tag::Reply(_) => Lane::Reply,
        }
    }
}

/// One message to send: HTML text and a row of URL buttons, and perhaps a
/// photo, which the text then captions.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub chat_id: ChatId,
    pub tag: Tag,
    pub text: String,
    pub buttons: Vec<Button>,
    /// A PNG sent with the text as its caption; only when the text fits a
    /// caption ([`crate::format::fits_caption`]). Not kept in the outbox:
    /// an alert sent again after a restart goes as text.
    pub photo: Option<Photo>,
}

/// A photo's bytes (PNG), shared by the attempts to send it. An `Arc` of
/// a `Vec` (one word) rather than of a slice (two), so a message stays
/// small in the sender's queues.
pub type Photo = Arc<Vec<u8>>;

impl Message {
    /// The message of an alert, rendered by [`crate::format::alert`];
    /// `None` for effects that are not alerts.
    pub fn alert(effect: &Effect, rendered: Rendered) -> Option<Message> {
        Some(Message {
            chat_id: effect.chat_id(),
            tag: Tag::Alert(AlertKey::of(effect)?),
            text: rendered.text,
            buttons: rendered.buttons,
            photo: None,
        })
    }

    /// The message with `photo` attached, when its text fits a caption;
    /// unchanged (as text) when it does not.
    pub fn with_photo(mut self, photo: Photo) -> Message {
        self.attach(photo);
        self
    }

    /// Attaches `photo` if the text fits a caption; whether it did.
    pub fn attach(&mut self, photo: Photo) -> bool {
        let fits = crate::format::fits_caption(&self.text);
        if fits {
            self.photo = Some(photo);
        }
        fits
    }

    /// The same message as text alone.
    pub fn without_photo(mut self) -> Message {
        self.photo = None;
        self
    }

    /// A reply to a command, in the priority lane.
    pub fn reply(chat_id: ChatId, id: u64, text: String) -> Message {
        Message {
            chat_id,
            tag: Tag::Reply(id),
            text,
            buttons: Vec::new(),
            photo: None,
        }
    }
}

/// The two lanes of a chat: replies to commands go before alerts, and
/// each lane has its own capacity, so a full alert queue never holds a
/// reply back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Reply,
    Alert,
}

/// A message not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("the Telegram queue is full")]
    Full(Message),
    /// Its chat holds as many messages of its lane as a chat may: refused
    /// at once, never waited for, so one chat cannot hold up a producer
    /// that serves every chat.
    #[error("the chat has as many messages queued as it may")]
    ChatFull(Message),
    #[error("the Telegram sender is closed")]
    Closed(Message),
}

impl Message {
    /// The Bot API request that sends it: `sendMessage`, HTML without link
    /// previews, or `sendPhoto` with the HTML as its caption; its buttons
    /// as one row either way.
    pub(super) fn request(
        &self,
        bot: &Bot,
    ) -> impl Future<Output = Result<teloxide::types::Message, RequestError>> + Send + 'static {
        let chat = teloxide::types::ChatId(self.chat_id);
        let markup = (!self.buttons.is_empty()).then(|| {
            let row: Vec<InlineKeyboardButton> = self
                .buttons
                .iter()
                .map(|b| InlineKeyboardButton::url(b.text.clone(), b.url.clone()))
                .collect();
            InlineKeyboardMarkup::new([row])
        });
        let text = self.text.clone();
        let photo = self.photo.clone();
        let bot = bot.clone();
        async move {
            match photo {
                Some(png) => {
                    let file = InputFile::memory(png.as_ref().clone()).file_name("chart.png");
                    let mut request = bot
                        .send_photo(chat, file)
                        .caption(text)
                        .parse_mode(ParseMode::Html);
                    if let Some(markup) = markup {
                        request = request.reply_markup(markup);
                    }
                    request.await
                }
                None => {
                    let mut request = bot
                        .send_message(chat, text)
                        .parse_mode(ParseMode::Html)
                        .link_preview_options(LinkPreviewOptions {
                            is_disabled: true,
                            url: None,
                            prefer_small_media: false,
                            prefer_large_media: false,
                            show_above_text: false,
                        });
                    if let Some(markup) = markup {
                        request = request.reply_markup(markup);
                    }
                    request.await
                }
            }
        }
    }
}
