//! The Telegram sender: a bounded queue and one task that delivers its
//! messages through teloxide within Telegram's limits, and reports what
//! became of each.
//!
//! # Limits, counted where Telegram counts them
//! Telegram counts a message when it receives it; the sender only knows
//! when it sent one and when the answer came. So each limit is kept from the
//! *answer*, which Telegram cannot have sent before it received the
//! message:
//! - **per chat** (one message per `chat_interval`, 1 s): one message of a
//!   chat in flight at a time, and the next one leaves at least
//!   `chat_interval` after the previous one's answer;
//! - **overall** (`global_limit` messages per `window`, 30 per second): a
//!   message leaves at least `window` after the answer to the one sent
//!   `global_limit` sends before it (and after every earlier one), so no
//!   `window` at the server ever holds more than `global_limit`. Sends are
//!   also spread `window / global_limit` apart rather than sent in bursts.
//!   An answer that takes longer than `assume_received_after` (250 ms)
//!   counts from there instead, so one slow answer cannot stall every chat.
//!
//! Both hold whatever the network's jitter; the price is one round trip
//! per `window` (30 messages per 1.003 s over loopback in the load test,
//! per 1.1 s at a 100 ms round trip). `governor` was considered and not used: it counts a
//! message when it is let through, not when it was answered, and its keyed
//! limiter grows with every chat until swept, while the sender must hold
//! each chat's state (queue, pause, order) anyway.
//!
//! # Order and lanes
//! Each chat has two queues: replies to commands (the priority lane) and
//! alerts. A chat's next message is its oldest reply, else its oldest
//! alert; chats ready to send take turns, those with a reply first. A
//! message being retried keeps its place at the head of its queue, so a
//! chat's alerts arrive in the order they were queued.
//!
//! # What Telegram says back
//! | answer | what happens |
//! | --- | --- |
//! | ok | [`Report::Sent`] with Telegram's message id |
//! | 429 `retry_after` | that chat waits `retry_after`; 429s for `flood_chats` (2) different chats within a `window` mean the bot as a whole is over the limit, and every chat waits |
//! | 5xx, network error, timeout | retried after `retry_backoff` doubling up to `max_retry_backoff`, at most `max_attempts` times, then [`Report::Failed`]; `failures_to_open` in a row open the breaker, which pauses all sending |
//! | blocked, kicked, deactivated, chat not found, migrated | [`Report::Inactive`]: the chat's queued messages are dropped (counted) and its alerts are dropped on arrival for `inactive_ttl`, each reported as `Inactive` with `dropped: 1`; a reply to it clears that |
//! | any other refusal (a bad request) | [`Report::Failed`], and the chat's next message goes |
//!
//! teloxide waits 10 s inside a request that got a 5xx before it reads the
//! answer; `request_timeout` (15 s) is longer so that a 5xx shows as one.
//!
//! # Bounds
//! At most `alert_capacity` alerts and `reply_capacity` replies are held,
//! waiting, retrying or in flight (every queued message holds a permit of a
//! semaphore; [`Sender::depth`] is the gauge). [`Sender::try_send`] says
//! `Full` when there is no room; [`Sender::send`] waits for it. Chats
//! without queued messages are forgotten once their interval has passed;
//! blocked chats are remembered up to `inactive_capacity`. Reports go
//! through a channel of `report_capacity`: a reader that falls behind
//! slows the sender down rather than growing memory.
//!
//! # Close
//! [`SenderTask::close`] refuses new messages and sends what is queued,
//! within the limits, until the deadline; what is left (in flight
//! included: Telegram may have it) comes back in [`Closed::unsent`].
//! Dropping the [`SenderTask`] instead stops sending at once, and what is
//! queued is lost.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::effect::Effect;
use engine::event::ChatId;
use engine::time::Nanos;
use engine::token::Token;
use teloxide::payloads::SendMessageSetters;
use teloxide::requests::Requester;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, ParseMode};
use teloxide::{ApiError, Bot, RequestError};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, watch};
use tokio::task::JoinSet;

use callwatch_common::backoff::Backoff;
use callwatch_common::breaker::{Breaker, BreakerConfig, BreakerState};
use callwatch_common::records::AlertKind;

use crate::BotToken;
use crate::format::{Button, Rendered};

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
    /// 429s for this many different chats within one `window` pause every
    /// chat. Default: 2.
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
pub struct ConfigError(String);

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
        if self.inactive_capacity == 0 {
            return fail("inactive-capacity must be positive");
        }
        Ok(())
    }
}

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
    fn lane(&self) -> Lane {
        match self {
            Tag::Alert(_) => Lane::Alert,
            Tag::Reply(_) => Lane::Reply,
        }
    }
}

/// One message to send: HTML text and a row of URL buttons.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub chat_id: ChatId,
    pub tag: Tag,
    pub text: String,
    pub buttons: Vec<Button>,
}

impl Message {
    /// The message of an alert, rendered by [`super::format::alert`];
    /// `None` for effects that are not alerts.
    pub fn alert(effect: &Effect, rendered: Rendered) -> Option<Message> {
        Some(Message {
            chat_id: effect.chat_id(),
            tag: Tag::Alert(AlertKey::of(effect)?),
            text: rendered.text,
            buttons: rendered.buttons,
        })
    }

    /// A reply to a command, in the priority lane.
    pub fn reply(chat_id: ChatId, id: u64, text: String) -> Message {
        Message {
            chat_id,
            tag: Tag::Reply(id),
            text,
            buttons: Vec::new(),
        }
    }
}

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

/// A message not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("the Telegram queue is full")]
    Full(Message),
    #[error("the Telegram sender is closed")]
    Closed(Message),
}

/// What the sender has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Messages held now, waiting, retrying or in flight (the depth gauge).
    pub queued: u64,
    /// Of those, replies.
    pub queued_replies: u64,
    /// Messages taken.
    pub accepted: u64,
    pub sent: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Pauses of every chat after 429s for several chats.
    pub flood_pauses: u64,
    pub timeouts: u64,
    pub server_errors: u64,
    pub network_errors: u64,
    /// Messages given up on ([`Report::Failed`]).
    pub failed: u64,
    /// Chats found unreachable ([`Report::Inactive`]).
    pub inactive_chats: u64,
    /// Messages dropped because their chat was unreachable.
    pub dropped_inactive: u64,
    /// Messages refused because the queue was full.
    pub rejected_full: u64,
    pub breaker_opened: u64,
    /// Reports dropped because the close deadline passed while their
    /// reader was not reading.
    pub reports_lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    sent: AtomicU64,
    rate_limited: AtomicU64,
    flood_pauses: AtomicU64,
    timeouts: AtomicU64,
    server_errors: AtomicU64,
    network_errors: AtomicU64,
    failed: AtomicU64,
    inactive_chats: AtomicU64,
    dropped_inactive: AtomicU64,
    rejected_full: AtomicU64,
    breaker_opened: AtomicU64,
    reports_lost: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Reply,
    Alert,
}

struct Shared {
    alert_room: Semaphore,
    reply_room: Semaphore,
    alert_capacity: usize,
    reply_capacity: usize,
    closing: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn room(&self, lane: Lane) -> &Semaphore {
        match lane {
            Lane::Alert => &self.alert_room,
            Lane::Reply => &self.reply_room,
        }
    }

    /// A message has left the queue (sent, given up or dropped).
    fn release(&self, lane: Lane, n: usize) {
        self.room(lane).add_permits(n);
    }

    fn held(&self, lane: Lane) -> usize {
        let capacity = match lane {
            Lane::Alert => self.alert_capacity,
            Lane::Reply => self.reply_capacity,
        };
        capacity.saturating_sub(self.room(lane).available_permits())
    }
}

/// The producers' handle: cheap to clone; never waits on Telegram.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
    // Unbounded in type only: every message in it holds a permit.
    inbox: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Sender {
    /// Starts the sending task on the current tokio runtime. Reports of
    /// what became of each message come out of the returned receiver; read
    /// it, or the sender slows down to wait for you.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        token: BotToken,
        config: SenderConfig,
    ) -> Result<(Sender, mpsc::Receiver<Report>, SenderTask), ConfigError> {
        config.check()?;
        let api_url = url::Url::parse(&config.api_url).expect("checked");
        // reqwest's own timeout only backs ours up.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(config.request_timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| ConfigError(format!("HTTP client: {}", token.scrub(&e.to_string()))))?;
        let bot = Bot::with_client(token.expose(), client).set_api_url(api_url);
        let shared = Arc::new(Shared {
            alert_room: Semaphore::new(config.alert_capacity),
            reply_room: Semaphore::new(config.reply_capacity),
            alert_capacity: config.alert_capacity,
            reply_capacity: config.reply_capacity,
            closing: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::channel(config.report_capacity);
        let (mode_tx, mode) = watch::channel(Mode::Run);
        let scheduler = Scheduler::new(
            config,
            bot,
            token,
            Arc::clone(&shared),
            inbox,
            reports_tx,
            mode,
        );
        let task = tokio::spawn(scheduler.run());
        let sender = Sender {
            shared: Arc::clone(&shared),
            inbox: inbox_tx,
        };
        Ok((
            sender,
            reports,
            SenderTask {
                shared,
                mode: mode_tx,
                task,
            },
        ))
    }

    /// Queues a message if there is room; never waits.
    pub fn try_send(&self, msg: Message) -> Result<(), Rejected> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Rejected::Closed(msg));
        }
        match self.shared.room(msg.tag.lane()).try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                bump(&self.shared.counters.rejected_full);
                return Err(Rejected::Full(msg));
            }
            Err(TryAcquireError::Closed) => return Err(Rejected::Closed(msg)),
        }
        self.push(msg)
    }

    /// Queues a message, waiting for room.
    pub async fn send(&self, msg: Message) -> Result<(), Rejected> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Rejected::Closed(msg));
        }
        match self.shared.room(msg.tag.lane()).acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Rejected::Closed(msg)),
        }
        self.push(msg)
    }

    fn push(&self, msg: Message) -> Result<(), Rejected> {
        let lane = msg.tag.lane();
        match self.inbox.send(msg) {
            Ok(()) => {
                bump(&self.shared.counters.accepted);
                Ok(())
            }
            Err(mpsc::error::SendError(msg)) => {
                self.shared.release(lane, 1);
                Err(Rejected::Closed(msg))
            }
        }
    }

    /// Messages held now: waiting, retrying or in flight.
    pub fn depth(&self) -> usize {
        self.shared.held(Lane::Alert) + self.shared.held(Lane::Reply)
    }

    pub fn stats(&self) -> SenderStats {
        stats(&self.shared)
    }
}

fn stats(shared: &Shared) -> SenderStats {
    let c = &shared.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let replies = shared.held(Lane::Reply) as u64;
    SenderStats {
        queued: shared.held(Lane::Alert) as u64 + replies,
        queued_replies: replies,
        accepted: load(&c.accepted),
        sent: load(&c.sent),
        rate_limited: load(&c.rate_limited),
        flood_pauses: load(&c.flood_pauses),
        timeouts: load(&c.timeouts),
        server_errors: load(&c.server_errors),
        network_errors: load(&c.network_errors),
        failed: load(&c.failed),
        inactive_chats: load(&c.inactive_chats),
        dropped_inactive: load(&c.dropped_inactive),
        rejected_full: load(&c.rejected_full),
        breaker_opened: load(&c.breaker_opened),
        reports_lost: load(&c.reports_lost),
    }
}

/// The sending task's handle: [`SenderTask::close`] drains and stops it.
pub struct SenderTask {
    shared: Arc<Shared>,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<Vec<Message>>,
}

impl std::fmt::Debug for SenderTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderTask")
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a close left.
#[derive(Debug, Clone, Default)]
pub struct Closed {
    pub stats: SenderStats,
    /// Messages not known to be delivered, oldest first per chat: those
    /// still queued at the deadline, and those in flight then (Telegram
    /// may have them).
    pub unsent: Vec<Message>,
}

impl SenderTask {
    /// Refuses new messages, sends what is queued (within the limits) and
    /// stops; at `deadline` it stops anyway and hands back what is left.
    pub async fn close(self, deadline: Duration) -> Closed {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::Release);
        shared.alert_room.close();
        shared.reply_room.close();
        let _ = self.mode.send(Mode::Drain);
        let mut task = self.task;
        let unsent = match tokio::time::timeout(deadline, &mut task).await {
            Ok(done) => done.unwrap_or_default(),
            Err(_) => {
                let _ = self.mode.send(Mode::Stop);
                task.await.unwrap_or_default()
            }
        };
        if !unsent.is_empty() {
            tracing::warn!(
                unsent = unsent.len(),
                "Telegram sender closed with messages unsent"
            );
        }
        Closed {
            stats: stats(shared),
            unsent,
        }
    }

    /// Stats of the sender this task runs.
    pub fn stats(&self) -> SenderStats {
        stats(&self.shared)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    /// Take no more; send what is held, then stop.
    Drain,
    /// Stop now.
    Stop,
}

/// What one answer means for the message and its chat.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Sent(i32),
    RetryAfter(Duration),
    Inactive(Inactive),
    Retry(SendError),
    Refused(SendError),
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

struct Pending {
    msg: Message,
    attempts: u32,
}

/// One chat's state; it exists while the chat has messages, or had one
/// answered less than `chat_interval` ago.
struct Chat {
    replies: VecDeque<Pending>,
    alerts: VecDeque<Pending>,
    in_flight: Option<Pending>,
    /// The earliest its next message may leave.
    next_at: Instant,
    in_ready: [bool; 2],
}

impl Chat {
    fn new(now: Instant) -> Chat {
        Chat {
            replies: VecDeque::new(),
            alerts: VecDeque::new(),
            in_flight: None,
            next_at: now,
            in_ready: [false; 2],
        }
    }

    fn has_work(&self) -> bool {
        !self.replies.is_empty() || !self.alerts.is_empty()
    }

    fn queue(&mut self, lane: Lane) -> &mut VecDeque<Pending> {
        match lane {
            Lane::Reply => &mut self.replies,
            Lane::Alert => &mut self.alerts,
        }
    }
}

/// A send counted against the global window.
struct Slot {
    started: Instant,
    answered: Option<Instant>,
}

impl Slot {
    /// The latest moment Telegram can have received it: its answer, or
    /// `assume` after it left if that is sooner (or it is unanswered).
    fn anchor(&self, assume: Duration) -> Instant {
        let cap = self.started + assume;
        self.answered.map_or(cap, |a| a.min(cap))
    }
}

/// Chats found unreachable, remembered for a while, oldest first out.
struct Unreachable {
    since: HashMap<ChatId, Instant>,
    order: VecDeque<(Instant, ChatId)>,
    ttl: Duration,
    capacity: usize,
}

impl Unreachable {
    fn insert(&mut self, chat: ChatId, now: Instant) {
        self.expire(now);
        self.since.insert(chat, now);
        self.order.push_back((now, chat));
        while self.since.len() > self.capacity {
            self.pop_oldest();
        }
    }

    fn contains(&mut self, chat: ChatId, now: Instant) -> bool {
        self.expire(now);
        self.since.contains_key(&chat)
    }

    fn remove(&mut self, chat: ChatId) {
        self.since.remove(&chat);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.ttl)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((at, chat)) = self.order.pop_front()
            && self.since.get(&chat) == Some(&at)
        {
            self.since.remove(&chat);
        }
    }
}

/// One request's result, back from its task.
struct Answer {
    chat_id: ChatId,
    seq: u64,
    result: Result<Result<i32, RequestError>, tokio::time::error::Elapsed>,
}

struct Scheduler {
    config: SenderConfig,
    bot: Bot,
    token: BotToken,
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedReceiver<Message>,
    inbox_done: bool,
    reports: mpsc::Sender<Report>,
    mode_rx: watch::Receiver<Mode>,
    mode: Mode,
    chats: HashMap<ChatId, Chat>,
    /// When chats may send again (or be forgotten); stale entries are
    /// skipped.
    timers: BinaryHeap<Reverse<(Instant, ChatId)>>,
    /// Chats that may send now, by the lane of their next message.
    ready: [VecDeque<ChatId>; 2],
    in_flight: JoinSet<Answer>,
    tasks: HashMap<tokio::task::Id, (ChatId, u64)>,
    /// The last `global_limit` sends; `window_seq` is the first one's.
    window: VecDeque<Slot>,
    window_seq: u64,
    next_seq: u64,
    /// The latest answer of the sends that left the window.
    watermark: Option<Instant>,
    /// When the next send is due to keep sends spread out.
    due: Option<Instant>,
    spacing: Duration,
    paused_until: Option<Instant>,
    recent_429: VecDeque<(Instant, ChatId)>,
    breaker: Breaker,
    /// The pause before a message's next attempt, by its attempts.
    retries: Backoff,
    unreachable: Unreachable,
}

impl Scheduler {
    fn new(
        config: SenderConfig,
        bot: Bot,
        token: BotToken,
        shared: Arc<Shared>,
        inbox: mpsc::UnboundedReceiver<Message>,
        reports: mpsc::Sender<Report>,
        mode_rx: watch::Receiver<Mode>,
    ) -> Scheduler {
        Scheduler {
            spacing: config.window / config.global_limit,
            breaker: Breaker::new(config.breaker.clone()),
            retries: Backoff::new(config.retry_backoff, config.max_retry_backoff),
            unreachable: Unreachable {
                since: HashMap::new(),
                order: VecDeque::new(),
                ttl: config.inactive_ttl,
                capacity: config.inactive_capacity,
            },
            window: VecDeque::with_capacity(config.global_limit as usize),
            config,
            bot,
            token,
            shared,
            inbox,
            inbox_done: false,
            reports,
            mode_rx,
            mode: Mode::Run,
            chats: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: [VecDeque::new(), VecDeque::new()],
            in_flight: JoinSet::new(),
            tasks: HashMap::new(),
            window_seq: 0,
            next_seq: 0,
            watermark: None,
            due: None,
            paused_until: None,
            recent_429: VecDeque::new(),
        }
    }

    async fn run(mut self) -> Vec<Message> {
        loop {
            let now = Instant::now();
            self.wake_due(now);
            self.dispatch(now);
            if self.mode == Mode::Stop
                || (self.mode == Mode::Drain
                    && self.inbox_done
                    && self.in_flight.is_empty()
                    && !self.chats.values().any(Chat::has_work))
            {
                break;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                changed = self.mode_rx.changed() => match changed {
                    Ok(()) => {
                        let mode = *self.mode_rx.borrow_and_update();
                        self.set_mode(mode);
                    }
                    Err(_) => self.set_mode(Mode::Stop),
                },
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    let answer = match joined {
                        Ok((id, answer)) => {
                            self.tasks.remove(&id);
                            answer
                        }
                        Err(e) => {
                            let (chat_id, seq) = self.tasks.remove(&e.id()).expect("a task of ours");
                            tracing::error!(chat_id, "Telegram send task failed: {e}");
                            Answer {
                                chat_id,
                                seq,
                                result: Ok(Err(RequestError::Io(Arc::new(std::io::Error::other(
                                    "send task failed",
                                ))))),
                            }
                        }
                    };
                    self.complete(answer).await;
                }
                msg = self.inbox.recv(), if !self.inbox_done => match msg {
                    Some(msg) => {
                        if let Some(report) = self.accept(msg, Instant::now()) {
                            self.report(report).await;
                        }
                    }
                    None => self.inbox_done = true,
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
        self.leftovers()
    }

    fn set_mode(&mut self, mode: Mode) {
        if mode != Mode::Run {
            // Messages already in the channel are still received.
            self.inbox.close();
        }
        self.mode = mode;
    }

    /// Everything not known to be delivered, per chat oldest first.
    fn leftovers(mut self) -> Vec<Message> {
        self.in_flight.abort_all();
        let mut left = Vec::new();
        for (_, chat) in self.chats.drain() {
            let Chat {
                replies,
                alerts,
                in_flight,
                ..
            } = chat;
            left.extend(
                in_flight
                    .into_iter()
                    .chain(replies)
                    .chain(alerts)
                    .map(|p| p.msg),
            );
        }
        while let Ok(msg) = self.inbox.try_recv() {
            left.push(msg);
        }
        left
    }

    /// Queues a message; an alert to a chat known to be unreachable is
    /// dropped and reported (so whoever waits for it knows).
    fn accept(&mut self, msg: Message, now: Instant) -> Option<Report> {
        let lane = msg.tag.lane();
        let id = msg.chat_id;
        match lane {
            Lane::Alert if self.unreachable.contains(id, now) => {
                self.shared.release(lane, 1);
                bump(&self.shared.counters.dropped_inactive);
                return Some(Report::Inactive {
                    chat_id: id,
                    reason: Inactive::Unreachable("still unreachable".to_owned()),
                    dropped: 1,
                });
            }
            // The chat's user just wrote to the bot: it is reachable again.
            Lane::Reply => self.unreachable.remove(id),
            Lane::Alert => {}
        }
        let chat = self.chats.entry(id).or_insert_with(|| Chat::new(now));
        chat.queue(lane).push_back(Pending { msg, attempts: 0 });
        if chat.in_flight.is_none() && chat.next_at <= now {
            self.mark_ready(id);
        }
        None
    }

    /// Puts a chat that may send now in line, by its next message's lane.
    fn mark_ready(&mut self, id: ChatId) {
        let Some(chat) = self.chats.get_mut(&id) else {
            return;
        };
        let lane = if chat.replies.is_empty() {
            Lane::Alert
        } else {
            Lane::Reply
        };
        let i = lane as usize;
        if chat.has_work() && !chat.in_ready[i] {
            chat.in_ready[i] = true;
            self.ready[i].push_back(id);
        }
    }

    /// Chats whose interval, backoff or pause is over: in line if they
    /// have messages, forgotten if not.
    fn wake_due(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(chat) = self.chats.get(&id) else {
                continue;
            };
            if chat.in_flight.is_some() || chat.next_at > now {
                continue;
            }
            if chat.has_work() {
                self.mark_ready(id);
            } else {
                self.chats.remove(&id);
            }
        }
    }

    /// The next chat in line that may send now, replies first.
    fn next_ready(&mut self, now: Instant) -> Option<ChatId> {
        for lane in [Lane::Reply, Lane::Alert] {
            let i = lane as usize;
            while let Some(id) = self.ready[i].pop_front() {
                let Some(chat) = self.chats.get_mut(&id) else {
                    continue;
                };
                chat.in_ready[i] = false;
                if chat.in_flight.is_none() && chat.next_at <= now && chat.has_work() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// When the global limits let the next message go; `None` while a
    /// breaker trial is in flight.
    fn global_release(&self, now: Instant) -> Option<Instant> {
        if self.breaker.state(now) == BreakerState::HalfOpen && !self.in_flight.is_empty() {
            return None;
        }
        let mut at = now + self.breaker.wait(now);
        if let Some(p) = self.paused_until {
            at = at.max(p);
        }
        if let Some(due) = self.due {
            // Half a spacing of slack, so a late timer does not slow the
            // pace for good.
            at = at.max(due - self.spacing / 2);
        }
        if self.window.len() >= self.config.global_limit as usize {
            let answered = self.window[0].anchor(self.config.assume_received_after);
            let anchor = self.watermark.map_or(answered, |w| w.max(answered));
            at = at.max(anchor + self.config.window);
        }
        Some(at)
    }

    fn dispatch(&mut self, now: Instant) {
        while self.global_release(now).is_some_and(|at| at <= now) {
            let Some(id) = self.next_ready(now) else {
                return;
            };
            self.start(id, now);
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let ready = self.ready.iter().any(|q| !q.is_empty());
        let global = if ready {
            self.global_release(now)
        } else {
            None
        };
        match (timer, global) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start(&mut self, id: ChatId, now: Instant) {
        let assume = self.config.assume_received_after;
        if self.window.len() >= self.config.global_limit as usize
            && let Some(oldest) = self.window.pop_front()
        {
            let answered = oldest.anchor(assume);
            self.watermark = Some(self.watermark.map_or(answered, |w| w.max(answered)));
            self.window_seq += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.window.push_back(Slot {
            started: now,
            answered: None,
        });
        self.due = Some(self.due.map_or(now, |d| d.max(now)) + self.spacing);

        let chat = self.chats.get_mut(&id).expect("a ready chat exists");
        let pending = match chat.replies.pop_front() {
            Some(p) => p,
            None => chat.alerts.pop_front().expect("a ready chat has work"),
        };
        let msg = &pending.msg;
        let mut request = self
            .bot
            .send_message(teloxide::types::ChatId(id), msg.text.clone())
            .parse_mode(ParseMode::Html)
            .link_preview_options(LinkPreviewOptions {
                is_disabled: true,
                url: None,
                prefer_small_media: false,
                prefer_large_media: false,
                show_above_text: false,
            });
        if !msg.buttons.is_empty() {
            let row: Vec<InlineKeyboardButton> = msg
                .buttons
                .iter()
                .map(|b| InlineKeyboardButton::url(b.text.clone(), b.url.clone()))
                .collect();
            request = request.reply_markup(InlineKeyboardMarkup::new([row]));
        }
        chat.in_flight = Some(pending);
        let timeout = self.config.request_timeout;
        let handle = self.in_flight.spawn(async move {
            let result =
                tokio::time::timeout(timeout, async move { request.await.map(|m| m.id.0) }).await;
            Answer {
                chat_id: id,
                seq,
                result,
            }
        });
        self.tasks.insert(handle.id(), (id, seq));
    }

    async fn complete(&mut self, answer: Answer) {
        let now = Instant::now();
        if let Some(slot) = answer
            .seq
            .checked_sub(self.window_seq)
            .and_then(|i| self.window.get_mut(i as usize))
        {
            slot.answered = Some(now);
        }
        let id = answer.chat_id;
        let outcome = match answer.result {
            Ok(result) => classify(result, &self.token),
            Err(_) => Outcome::Retry(SendError {
                kind: ErrorKind::Timeout,
                detail: format!("no answer within {:?}", self.config.request_timeout),
            }),
        };
        let c = &self.shared.counters;
        let chat = self
            .chats
            .get_mut(&id)
            .expect("a chat with a send in flight");
        let pending = chat.in_flight.take().expect("a chat with a send in flight");
        let lane = pending.msg.tag.lane();
        let interval = self.config.chat_interval;
        let report = match outcome {
            Outcome::Sent(message_id) => {
                self.breaker.success();
                bump(&c.sent);
                self.shared.release(lane, 1);
                chat.next_at = now + interval;
                Some(Report::Sent {
                    chat_id: id,
                    tag: pending.msg.tag,
                    message_id,
                })
            }
            Outcome::RetryAfter(after) => {
                bump(&c.rate_limited);
                chat.queue(lane).push_front(pending);
                chat.next_at = now + after.max(interval);
                tracing::debug!(chat_id = id, retry_after = ?after, "Telegram 429 for a chat; it waits");
                self.flood_check(id, after, now);
                None
            }
            Outcome::Inactive(reason) => {
                let replies = chat.replies.len() + usize::from(lane == Lane::Reply);
                let alerts = chat.alerts.len() + usize::from(lane == Lane::Alert);
                self.chats.remove(&id);
                self.shared.release(Lane::Reply, replies);
                self.shared.release(Lane::Alert, alerts);
                self.unreachable.insert(id, now);
                bump(&c.inactive_chats);
                c.dropped_inactive
                    .fetch_add((replies + alerts) as u64, Ordering::Relaxed);
                tracing::info!(chat_id = id, reason = ?reason, dropped = replies + alerts, "Telegram chat unreachable; its messages dropped");
                Some(Report::Inactive {
                    chat_id: id,
                    reason,
                    dropped: replies + alerts,
                })
            }
            Outcome::Retry(error) => {
                bump(match error.kind {
                    ErrorKind::Timeout => &c.timeouts,
                    ErrorKind::Network => &c.network_errors,
                    _ => &c.server_errors,
                });
                let before = self.breaker.opened();
                self.breaker.failure(now);
                if self.breaker.opened() > before {
                    bump(&c.breaker_opened);
                    tracing::warn!(%error, "Telegram failing; all sending paused (breaker open)");
                }
                let mut pending = pending;
                pending.attempts += 1;
                if pending.attempts >= self.config.max_attempts {
                    bump(&c.failed);
                    self.shared.release(lane, 1);
                    chat.next_at = now + interval;
                    tracing::warn!(chat_id = id, attempts = pending.attempts, %error, "Telegram message given up");
                    Some(Report::Failed {
                        chat_id: id,
                        tag: pending.msg.tag,
                        error,
                    })
                } else {
                    let backoff = self.retries.delay_for_attempt(pending.attempts);
                    tracing::debug!(chat_id = id, attempts = pending.attempts, ?backoff, %error, "Telegram send failed; will retry");
                    chat.queue(lane).push_front(pending);
                    chat.next_at = now + backoff.max(interval);
                    None
                }
            }
            Outcome::Refused(error) => {
                bump(&c.failed);
                self.shared.release(lane, 1);
                chat.next_at = now + interval;
                tracing::warn!(chat_id = id, %error, "Telegram refused a message");
                Some(Report::Failed {
                    chat_id: id,
                    tag: pending.msg.tag,
                    error,
                })
            }
        };
        if let Some(chat) = self.chats.get(&id) {
            self.timers.push(Reverse((chat.next_at, id)));
        }
        if let Some(report) = report {
            self.report(report).await;
        }
    }

    /// A 429 for `chat`: if other chats got one within the window too, the
    /// whole bot is over the limit and every chat waits.
    fn flood_check(&mut self, chat: ChatId, after: Duration, now: Instant) {
        let window = self.config.window;
        while self
            .recent_429
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
            || self.recent_429.len() >= 64
        {
            self.recent_429.pop_front();
        }
        self.recent_429.push_back((now, chat));
        let chats: HashSet<ChatId> = self.recent_429.iter().map(|(_, c)| *c).collect();
        if chats.len() >= self.config.flood_chats {
            let until = now + after;
            if self.paused_until.is_none_or(|p| p < until) {
                self.paused_until = Some(until);
                bump(&self.shared.counters.flood_pauses);
                tracing::warn!(chats = chats.len(), retry_after = ?after, "Telegram flood control for several chats; every chat waits");
            }
        }
    }

    /// Hands a report to its reader, waiting for room, unless told to stop.
    async fn report(&mut self, report: Report) {
        if self.mode == Mode::Stop {
            if self.reports.try_send(report).is_err() {
                bump(&self.shared.counters.reports_lost);
            }
            return;
        }
        tokio::select! {
            sent = self.reports.send(report) => {
                // A reader that has gone away wants no reports.
                let _ = sent;
            }
            () = stop_signal(&mut self.mode_rx) => {
                self.mode = Mode::Stop;
                bump(&self.shared.counters.reports_lost);
            }
        }
    }
}

/// Resolves when the mode becomes `Stop` (or its sender is gone).
async fn stop_signal(mode: &mut watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m == Mode::Stop).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
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

    #[test]
    fn unreachable_chats_are_forgotten_after_their_ttl_and_bounded() {
        let mut u = Unreachable {
            since: HashMap::new(),
            order: VecDeque::new(),
            ttl: Duration::from_secs(10),
            capacity: 2,
        };
        let t0 = Instant::now();
        u.insert(1, t0);
        u.insert(2, t0 + Duration::from_secs(1));
        assert!(u.contains(1, t0 + Duration::from_secs(2)));
        u.insert(3, t0 + Duration::from_secs(2));
        assert!(!u.contains(1, t0 + Duration::from_secs(2)), "capacity 2");
        assert!(u.contains(2, t0 + Duration::from_secs(2)));
        assert!(!u.contains(2, t0 + Duration::from_secs(11)), "expired");
        u.remove(3);
        u.insert(3, t0 + Duration::from_secs(11));
        // The first insertion of 3 expiring must not forget the second.
        assert!(u.contains(3, t0 + Duration::from_secs(12)));
    }

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
