//! Receiving: the bot's incoming messages (commands from subscribers), by
//! long polling or by a webhook, handed one at a time per chat to the
//! caller's handler.
//!
//! Built on teloxide's `Dispatcher` rather than a loop of our own: it
//! already keeps Telegram's `offset` (an update is confirmed only once the
//! next `getUpdates` asks past it, so one that arrived while the process
//! stopped comes again), backs off when the Bot API fails, and runs one
//! worker per chat. The webhook is an axum server of ours in front of the
//! dispatcher ([`webhook`](crate::webhook)): `setWebhook` with our secret,
//! requests whose `X-Telegram-Bot-Api-Secret-Token` is missing or wrong
//! refused (401, compared in constant time), bodies over 64 KiB refused
//! (413), a bounded queue to the dispatcher (429 when full, so Telegram
//! sends again later), and `deleteWebhook` when it stops.
//!
//! # Order and bounds
//! Updates of one chat reach the handler in order, one at a time: the
//! dispatcher's default distribution keys them by chat, and each chat has
//! one worker task that awaits the handler before taking the next update.
//! Different chats run in parallel. A chat's worker holds at most
//! [`WORKER_QUEUE`] updates waiting; when one chat's handler falls that far
//! behind, the dispatcher waits for room, which holds back every chat
//! (and, by polling, confirming them to Telegram) rather than buffering
//! without end.
//!
//! # Posts
//! With [`receive`]'s `posts`, the posts of channels the bot is in
//! (`channel_post`, `edited_channel_post`) and the messages of groups it
//! is in that are not commands (`message`, `edited_message`) go to the
//! posts handler as [`Post`]s: text or caption, the links of its
//! `text_link` entities, its date and its chat's name. That is where
//! callwatch reads calls.
//!
//! # What is not delivered
//! Updates of other kinds, and messages without text or caption
//! (stickers, joins), are dropped without a word. Polling asks Telegram
//! for the kinds the handlers take.

use std::convert::Infallible;
use std::fmt::Display;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use callwatch_common::secret::Secret;
use teloxide::Bot;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::error_handlers::ErrorHandler;
use teloxide::payloads::SetWebhookSetters;
use teloxide::requests::Requester;
use teloxide::stop::StopToken;
use teloxide::types::{BotCommand, Message, Update};
use teloxide::update_listeners::{Polling, UpdateListener};

use crate::BotToken;
use crate::webhook::{self, WebhookCounters};

/// How long one `getUpdates` long poll waits for an update. Below
/// teloxide's HTTP client timeout (17 s), as it must be.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Updates held waiting for one chat's handler before the dispatcher
/// waits for room (teloxide's default).
pub const WORKER_QUEUE: usize = 64;

/// One text message to the bot, in a private chat or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub chat_id: i64,
    /// The sender; `None` for messages on behalf of a channel or group.
    /// (Telegram names a placeholder user for a group's anonymous
    /// administrators: see `sender_chat_id`.)
    pub user_id: Option<i64>,
    /// The chat the message was sent on behalf of, if any: the group
    /// itself for its anonymous administrators, a channel for a channel's
    /// posts forwarded to its discussion group.
    pub sender_chat_id: Option<i64>,
    pub message_id: i32,
    pub text: String,
}

/// A channel's post, or a group's message that is not a command: where
/// calls are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub chat_id: i64,
    pub message_id: i32,
    /// When it was posted, Unix seconds.
    pub date: i64,
    /// Its text, or its caption.
    pub text: String,
    /// The URLs of its `text_link` entities (links not in its text).
    pub links: Vec<String>,
    /// An edit of a post sent before.
    pub edited: bool,
    pub chat_title: Option<String>,
    pub chat_username: Option<String>,
}

impl Post {
    /// The post in `message`; `None` if it has neither text nor caption.
    fn of(message: &Message, edited: bool) -> Option<Post> {
        let text = message.text().or_else(|| message.caption())?;
        let entities = message
            .entities()
            .or_else(|| message.caption_entities())
            .unwrap_or_default();
        let links = entities
            .iter()
            .filter_map(|e| match &e.kind {
                teloxide::types::MessageEntityKind::TextLink { url } => Some(url.to_string()),
                _ => None,
            })
            .collect();
        Some(Post {
            chat_id: message.chat.id.0,
            message_id: message.id.0,
            date: message.date.timestamp(),
            text: text.to_owned(),
            links,
            edited,
            chat_title: message.chat.title().map(str::to_owned),
            chat_username: message.chat.username().map(str::to_owned),
        })
    }
}

/// Whether a group's message is a post (not a command, not private).
fn is_group_post(message: &Message) -> bool {
    let command = message
        .text()
        .is_some_and(|t| t.trim_start().starts_with('/'));
    (message.chat.is_group() || message.chat.is_supergroup()) && !command
}

impl Incoming {
    /// The text message in `message`; `None` if it has no text.
    fn of(message: &Message) -> Option<Incoming> {
        Some(Incoming {
            chat_id: message.chat.id.0,
            user_id: message
                .from
                .as_ref()
                .and_then(|u| i64::try_from(u.id.0).ok()),
            sender_chat_id: message.sender_chat.as_ref().map(|c| c.id.0),
            message_id: message.id.0,
            text: message.text()?.to_owned(),
        })
    }
}

/// Where updates come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Long polling with `getUpdates` (any webhook set is deleted first:
    /// Telegram refuses to poll while one is set).
    Polling,
    /// Telegram posts updates to a server of ours (see [`Webhook`]).
    Webhook(Webhook),
}

/// Webhook mode: Telegram posts updates to `public_url`, which must reach
/// `listen` (through a proxy or directly); Telegram sends `secret_token`
/// with each, and a request without it is refused. The route is
/// `public_url`'s path. Telegram wants `https` on port 443, 80, 88 or
/// 8443; `run` leaves that to Telegram's answer to `setWebhook`. What the
/// server takes is bounded (see [`webhook`](crate::webhook)): bodies at
/// 64 KiB, and `queue` updates waiting for the dispatcher.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub listen: SocketAddr,
    pub public_url: url::Url,
    pub secret_token: Secret,
    /// Updates held for the dispatcher; beyond, Telegram is answered 429.
    pub queue: usize,
    /// What the server refused and took.
    pub counters: Arc<WebhookCounters>,
}

impl Webhook {
    /// A webhook at `public_url` served on `listen`, with the default
    /// queue and counters of its own.
    pub fn new(listen: SocketAddr, public_url: url::Url, secret_token: &str) -> Webhook {
        Webhook {
            listen,
            public_url,
            secret_token: Secret::from(secret_token),
            queue: crate::webhook::DEFAULT_QUEUE,
            counters: Arc::default(),
        }
    }
}

/// Why receiving could not start (or its server failed). Texts are
/// scrubbed of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdatesError {
    #[error(
        "telegram updates: the webhook secret token must be 1 to 256 characters \
         of A-Z, a-z, 0-9, _ and - ({0})"
    )]
    BadSecret(&'static str),
    #[error("telegram updates: HTTP client: {0}")]
    Client(String),
    #[error("telegram updates: cannot listen on {addr}: {detail}")]
    Listen { addr: SocketAddr, detail: String },
    #[error("telegram updates: setWebhook failed: {0}")]
    SetWebhook(String),
    /// The first call, `getMe`, failed (a bad token, the API unreachable).
    #[error("telegram updates: getMe failed: {0}")]
    Start(String),
    #[error("telegram updates: the webhook server failed: {0}")]
    Serve(String),
}

/// Receives commands alone: [`receive`] without posts.
pub async fn run<H, F>(
    api_url: &url::Url,
    token: &BotToken,
    mode: Mode,
    handler: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UpdatesError>
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
{
    let posts: Option<fn(Post) -> std::future::Ready<()>> = None;
    receive(api_url, token, mode, handler, posts, shutdown).await
}

/// Sets the "/" menu of commands (`setMyCommands`), off the way of
/// receiving: a failure is logged and changes nothing else.
async fn set_menu(bot: Bot, token: BotToken) {
    let menu: Vec<BotCommand> = crate::commands::menu()
        .into_iter()
        .map(|(name, what)| BotCommand::new(name, what))
        .collect();
    match bot.set_my_commands(menu).await {
        Ok(_) => tracing::debug!("command menu set"),
        Err(e) => tracing::warn!(
            error = %token.scrub(&e.to_string()),
            "the command menu could not be set (setMyCommands)"
        ),
    }
}

/// Receives updates until `shutdown` completes, calling `handler` with
/// each text message (and `posts`, when given, with each post; see the
/// module's docs): one at a time and in order within a chat, chats in
/// parallel (see the module's docs for the bound).
///
/// On `shutdown` it stops taking updates, lets the handlers running and
/// the updates already queued for them finish, confirms what it took to
/// Telegram (polling) or deletes the webhook (webhook mode), and returns
/// `Ok` (so a handler that never returns holds the shutdown up: bound it).
/// A shutdown during start-up abandons it. Errors of the listener
/// while running (a failed `getUpdates`) are logged, scrubbed of the
/// token, and retried with teloxide's backoff; only start-up errors and a
/// failed webhook server come back.
pub async fn receive<H, F, P, G>(
    api_url: &url::Url,
    token: &BotToken,
    mode: Mode,
    handler: H,
    posts: Option<P>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UpdatesError>
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
    P: Fn(Post) -> G + Clone + Send + Sync + 'static,
    G: Future<Output = ()> + Send,
{
    if let Mode::Webhook(webhook) = &mode {
        check_secret(webhook.secret_token.expose())?;
    }
    let client = teloxide::net::default_reqwest_settings()
        .build()
        .map_err(|e| UpdatesError::Client(token.scrub(&e.to_string())))?;
    let bot = Bot::with_client(token.expose(), client).set_api_url(api_url.clone());
    let scrub = |e: &dyn Display| token.scrub(&e.to_string());
    tokio::spawn(set_menu(bot.clone(), token.clone()));

    let schema = schema(handler, posts);
    let mut dispatcher = Dispatcher::builder(bot.clone(), schema)
        .default_handler(|_| async {})
        .worker_queue_size(WORKER_QUEUE)
        .build();
    let stop_dispatching = dispatcher.shutdown_token();
    let errors = Arc::new(LogScrubbed(token.clone()));
    let mut shutdown = std::pin::pin!(shutdown);

    match mode {
        Mode::Polling => {
            let start = Polling::builder(bot).timeout(POLL_TIMEOUT).delete_webhook();
            let listener = tokio::select! {
                builder = start => builder.build(),
                () = &mut shutdown => return Ok(()),
            };
            let dispatch = dispatcher.try_dispatch_with_listener(listener, errors);
            until_shutdown(dispatch, stop_dispatching, shutdown)
                .await
                .map_err(|e| UpdatesError::Start(scrub(&e)))
        }
        Mode::Webhook(webhook) => {
            let started = start_webhook(&bot, token, webhook, shutdown.as_mut()).await?;
            let Some((listener, server, stop_listener)) = started else {
                return Ok(());
            };
            let dispatch = dispatcher.try_dispatch_with_listener(listener, errors);
            let dispatched = until_shutdown(dispatch, stop_dispatching, shutdown)
                .await
                .map_err(|e| UpdatesError::Start(scrub(&e)));
            // Stopped already after a graceful shutdown; not if getMe
            // failed or the shutdown came before dispatching began.
            stop_listener.stop();
            let served = server
                .await
                .map_err(|e| UpdatesError::Serve(scrub(&e)))?
                .map_err(|e| UpdatesError::Serve(scrub(&e)));
            dispatched.and(served)
        }
    }
}

/// The webhook server's task: it ends once the listener is stopped (after
/// deleting the webhook), or when it fails.
type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Webhook mode's start: listens, tells Telegram to post there with the
/// secret, and serves [`webhook::front`]. The listener for the dispatcher,
/// the server's task and the listener's stop token; `None` if `shutdown`
/// came first.
async fn start_webhook<S: Future<Output = ()> + Send>(
    bot: &Bot,
    token: &BotToken,
    webhook: Webhook,
    shutdown: Pin<&mut S>,
) -> Result<
    Option<(
        impl UpdateListener<Err = Infallible> + use<S>,
        ServerTask,
        StopToken,
    )>,
    UpdatesError,
> {
    let Webhook {
        listen,
        public_url,
        secret_token,
        queue,
        counters,
    } = webhook;
    // Bound before Telegram is told to send here, so a busy port is an
    // error rather than updates sent to nothing.
    let socket = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| UpdatesError::Listen {
            addr: listen,
            detail: e.to_string(),
        })?;
    let set = bot
        .set_webhook(public_url.clone())
        .secret_token(secret_token.expose().to_owned())
        .drop_pending_updates(false)
        .into_future();
    tokio::select! {
        set = set => { set.map_err(|e| UpdatesError::SetWebhook(token.scrub(&e.to_string())))?; }
        () = shutdown => return Ok(None),
    }
    let (mut listener, stopped, router) =
        webhook::front(public_url.path(), secret_token.expose(), queue, counters);
    // Once the listener is stopped, Telegram is told to stop posting, then
    // the server stops; if it fails first, it stops the listener, which
    // ends the dispatcher.
    let (bot, token) = (bot.clone(), token.clone());
    let stopped = async move {
        stopped.await;
        if let Err(e) = bot.delete_webhook().await {
            let error = token.scrub(&e.to_string());
            tracing::warn!(%error, "telegram updates: deleteWebhook failed");
        }
    };
    let stop_listener = listener.stop_token();
    let stop_on_failure = stop_listener.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(socket, router)
            .with_graceful_shutdown(stopped)
            .await;
        if served.is_err() {
            stop_on_failure.stop();
        }
        served
    });
    Ok(Some((listener, server, stop_listener)))
}

/// The dispatcher's tree: text messages to `handler`, and posts to
/// `posts` when given.
fn schema<H, F, P, G>(handler: H, posts: Option<P>) -> UpdateHandler<Infallible>
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
    P: Fn(Post) -> G + Clone + Send + Sync + 'static,
    G: Future<Output = ()> + Send,
{
    // Without a posts handler, every text message is the handler's, as it
    // always was; with one, a group's messages that are not commands are
    // posts.
    let reads_posts = posts.is_some();
    let commands = Update::filter_message()
        .filter(move |message: Message| !(reads_posts && is_group_post(&message)))
        .filter_map(|message: Message| Incoming::of(&message))
        .endpoint(move |incoming: Incoming| {
            let handler = handler.clone();
            async move {
                handler(incoming).await;
                Ok::<(), Infallible>(())
            }
        });
    let mut schema = teloxide::dptree::entry().branch(commands);
    if let Some(posts) = posts {
        let to = |edited: bool| {
            let posts = posts.clone();
            move |message: Message| {
                let posts = posts.clone();
                async move {
                    if let Some(post) = Post::of(&message, edited) {
                        posts(post).await;
                    }
                    Ok::<(), Infallible>(())
                }
            }
        };
        schema = schema
            .branch(
                Update::filter_message()
                    .filter(|m: Message| is_group_post(&m))
                    .endpoint(to(false)),
            )
            .branch(
                Update::filter_edited_message()
                    .filter(|m: Message| is_group_post(&m))
                    .endpoint(to(true)),
            )
            .branch(Update::filter_channel_post().endpoint(to(false)))
            .branch(Update::filter_edited_channel_post().endpoint(to(true)));
    }
    schema
}

/// Runs `dispatch` until it ends by itself or `shutdown` completes; then
/// shuts the dispatcher down gracefully and lets it finish.
async fn until_shutdown<E>(
    dispatch: impl Future<Output = Result<(), E>>,
    token: teloxide::dispatching::ShutdownToken,
    shutdown: impl Future<Output = ()>,
) -> Result<(), E> {
    let mut dispatch = std::pin::pin!(dispatch);
    tokio::select! {
        biased;
        done = &mut dispatch => return done,
        () = shutdown => {}
    }
    // Only polling `dispatch` changes the dispatcher's state, so `Idle`
    // here means it has not started (it is still at `getMe`): nothing was
    // taken, and dropping it loses nothing.
    match token.shutdown() {
        Ok(_) => dispatch.await,
        Err(_idle) => Ok(()),
    }
}

/// Logs the update listener's errors (failed `getUpdates`) without the
/// token; teloxide retries them with backoff.
struct LogScrubbed(BotToken);

impl<E: Display + Send + 'static> ErrorHandler<E> for LogScrubbed {
    fn handle_error(self: Arc<Self>, error: E) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let error = self.0.scrub(&error.to_string());
        tracing::warn!(%error, "telegram updates: receiving failed; retrying");
        Box::pin(std::future::ready(()))
    }
}

/// Telegram's rule for a webhook's secret token: 1 to 256 characters of
/// `A-Z`, `a-z`, `0-9`, `_` and `-` (teloxide panics on others).
fn check_secret(secret: &str) -> Result<(), UpdatesError> {
    if !(1..=256).contains(&secret.len()) {
        return Err(UpdatesError::BadSecret("length"));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(UpdatesError::BadSecret("a character outside them"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_modes_debug_shows_no_secret() {
        let mode = Mode::Webhook(Webhook::new(
            "127.0.0.1:8443".parse().unwrap(),
            url::Url::parse("https://bot.example/hook").unwrap(),
            "hook-s3cret",
        ));
        let shown = format!("{mode:?}");
        assert!(!shown.contains("hook-s3cret"), "{shown}");
    }

    #[test]
    fn the_webhook_secret_follows_telegrams_rule() {
        assert_eq!(check_secret("aZ09_-"), Ok(()));
        assert_eq!(check_secret(&"x".repeat(256)), Ok(()));
        assert_eq!(check_secret(""), Err(UpdatesError::BadSecret("length")));
        assert_eq!(
            check_secret(&"x".repeat(257)),
            Err(UpdatesError::BadSecret("length"))
        );
        for bad in ["with space", "ümlaut", "a:b", "a\nb"] {
            assert!(check_secret(bad).is_err(), "{bad:?}");
        }
    }
}
