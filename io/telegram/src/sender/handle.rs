//! The handles: [`Sender`] for producers, which queues without waiting on
//! Telegram, and [`SenderTask`] for whoever owns the sending task and
//! closes it. Both share the room left in each lane, each chat's share of
//! it, and the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::event::ChatId;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use teloxide::Bot;
use tokio::sync::{Semaphore, TryAcquireError, mpsc, watch};

use super::scheduler::Scheduler;
use super::shared::{Limiter, SharedLimits};
use super::stats::{Counters, bump};
use super::{ConfigError, Lane, Message, Rejected, Report, SenderConfig, SenderStats};
use crate::BotToken;

/// What the handles and the task share: the room left in each lane (every
/// message held holds a permit), what each chat holds of it, whether the
/// sender is closing, and the counters.
pub(super) struct Shared {
    alert_room: Semaphore,
    reply_room: Semaphore,
    alert_capacity: usize,
    reply_capacity: usize,
    /// Messages each chat holds, by lane (`Lane as usize`); a chat is here
    /// while it holds any. Taken when a message is let in, given back with
    /// its permit.
    by_chat: Mutex<HashMap<ChatId, [usize; 2]>>,
    /// The most each chat may hold, by lane.
    chat_caps: [usize; 2],
    closing: AtomicBool,
    pub(super) counters: Counters,
}

impl Shared {
    fn new(config: &SenderConfig) -> Shared {
        Shared {
            alert_room: Semaphore::new(config.alert_capacity),
            reply_room: Semaphore::new(config.reply_capacity),
            alert_capacity: config.alert_capacity,
            reply_capacity: config.reply_capacity,
            by_chat: Mutex::new(HashMap::new()),
            chat_caps: [config.chat_reply_cap, config.chat_alert_cap],
            closing: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    fn room(&self, lane: Lane) -> &Semaphore {
        match lane {
            Lane::Alert => &self.alert_room,
            Lane::Reply => &self.reply_room,
        }
    }

    /// Counts a message against its chat's share of its lane; `false`,
    /// counting nothing, if the chat holds its cap already.
    fn hold(&self, chat: ChatId, lane: Lane) -> bool {
        let mut by_chat = self.by_chat.lock();
        let held = by_chat.entry(chat).or_default();
        // Caps are at least 1, so a chat refused holds something: its
        // entry stays.
        if held[lane as usize] >= self.chat_caps[lane as usize] {
            return false;
        }
        held[lane as usize] += 1;
        true
    }

    /// Gives `n` messages of a chat's share back.
    fn unhold(&self, chat: ChatId, lane: Lane, n: usize) {
        let mut by_chat = self.by_chat.lock();
        if let Some(held) = by_chat.get_mut(&chat) {
            held[lane as usize] = held[lane as usize].saturating_sub(n);
            if held == &[0, 0] {
                by_chat.remove(&chat);
            }
        }
    }

    /// `n` messages of `chat` have left the queue (sent, given up or
    /// dropped): their room and their chat's share go back.
    pub(super) fn release(&self, chat: ChatId, lane: Lane, n: usize) {
        self.unhold(chat, lane, n);
        self.room(lane).add_permits(n);
    }

    fn held(&self, lane: Lane) -> usize {
        let capacity = match lane {
            Lane::Alert => self.alert_capacity,
            Lane::Reply => self.reply_capacity,
        };
        capacity.saturating_sub(self.room(lane).available_permits())
    }

    fn stats(&self) -> SenderStats {
        self.counters
            .stats(self.held(Lane::Alert) as u64, self.held(Lane::Reply) as u64)
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
    /// Starts the sending task on the current tokio runtime, keeping the
    /// limits in this process alone: for a bot no other process sends
    /// with. Reports of what became of each message come out of the
    /// returned receiver; read it, or the sender slows down to wait for
    /// you.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        token: BotToken,
        config: SenderConfig,
    ) -> Result<(Sender, mpsc::Receiver<Report>, SenderTask), ConfigError> {
        Self::launch(token, config, None)
    }

    /// As [`Sender::start`], with the limits shared by every process that
    /// starts its sender with the same bot and `shared` (see
    /// [`SharedLimits`]): each send is reserved there before it leaves.
    pub fn start_shared(
        token: BotToken,
        config: SenderConfig,
        shared: SharedLimits,
    ) -> Result<(Sender, mpsc::Receiver<Report>, SenderTask), ConfigError> {
        Self::launch(token, config, Some(shared))
    }

    fn launch(
        token: BotToken,
        config: SenderConfig,
        shared: Option<SharedLimits>,
    ) -> Result<(Sender, mpsc::Receiver<Report>, SenderTask), ConfigError> {
        config.check()?;
        let limiter = shared.map(|s| Limiter::new(s, &config));
        let api_url = url::Url::parse(&config.api_url).expect("checked");
        // reqwest's own timeout only backs ours up.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(config.request_timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| ConfigError(format!("HTTP client: {}", token.scrub(&e.to_string()))))?;
        let bot = Bot::with_client(token.expose(), client).set_api_url(api_url);
        let shared = Arc::new(Shared::new(&config));
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
        )
        .with_limiter(limiter);
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

    /// Queues a message if there is room, in its lane and in its chat's
    /// share of it; never waits.
    pub fn try_send(&self, msg: Message) -> Result<(), Rejected> {
        let msg = self.admit(msg)?;
        let lane = msg.tag.lane();
        match self.shared.room(lane).try_acquire() {
            Ok(permit) => permit.forget(),
            Err(e) => {
                self.shared.unhold(msg.chat_id, lane, 1);
                if matches!(e, TryAcquireError::Closed) {
                    return Err(Rejected::Closed(msg));
                }
                bump(&self.shared.counters.rejected_full);
                return Err(Rejected::Full(msg));
            }
        }
        self.push(msg)
    }

    /// Queues a message, waiting for room in its lane. A chat that holds
    /// its cap is refused at once ([`Rejected::ChatFull`]): a producer
    /// that serves every chat never waits on one of them.
    pub async fn send(&self, msg: Message) -> Result<(), Rejected> {
        let msg = self.admit(msg)?;
        match self.shared.room(msg.tag.lane()).acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => {
                self.shared.unhold(msg.chat_id, msg.tag.lane(), 1);
                return Err(Rejected::Closed(msg));
            }
        }
        self.push(msg)
    }

    /// Counts `msg` against its chat's share, unless the sender is closing
    /// or the chat holds its cap.
    fn admit(&self, msg: Message) -> Result<Message, Rejected> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Rejected::Closed(msg));
        }
        if !self.shared.hold(msg.chat_id, msg.tag.lane()) {
            bump(&self.shared.counters.rejected_chat_full);
            return Err(Rejected::ChatFull(msg));
        }
        Ok(msg)
    }

    fn push(&self, msg: Message) -> Result<(), Rejected> {
        let (chat, lane) = (msg.chat_id, msg.tag.lane());
        match self.inbox.send(msg) {
            Ok(()) => {
                bump(&self.shared.counters.accepted);
                Ok(())
            }
            Err(mpsc::error::SendError(msg)) => {
                self.shared.release(chat, lane, 1);
                Err(Rejected::Closed(msg))
            }
        }
    }

    /// Messages held now: waiting, retrying or in flight.
    pub fn depth(&self) -> usize {
        self.shared.held(Lane::Alert) + self.shared.held(Lane::Reply)
    }

    pub fn stats(&self) -> SenderStats {
        self.shared.stats()
    }

    /// Seconds from each message taken to its first attempt, as a
    /// histogram `/metrics` shows (a handle to the live one).
    pub fn queue_wait(&self) -> Histogram {
        self.shared.counters.queue_wait.clone()
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
            stats: shared.stats(),
            unsent,
        }
    }

    /// Stats of the sender this task runs.
    pub fn stats(&self) -> SenderStats {
        self.shared.stats()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Run,
    /// Take no more; send what is held, then stop.
    Drain,
    /// Stop now.
    Stop,
}
