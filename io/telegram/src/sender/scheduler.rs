//! The sending task: it takes messages from the inbox into per-chat
//! queues, lets the next chat in line send when the per-chat and global
//! limits allow, and settles each answer as the module's table says.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engine::event::ChatId;
use teloxide::{Bot, RequestError};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};

use callwatch_common::backoff::Backoff;
use callwatch_common::breaker::{Breaker, BreakerState};

use super::chat::{Chat, GroupSends, Pending, Unreachable, is_group};
use super::handle::{Mode, Shared};
use super::report::{self, Outcome};
use super::shared::{Limiter, Reservation, Ticket};
use super::stats::bump;
use super::window::Window;
use super::{ErrorKind, Inactive, Lane, Message, Report, SendError, SenderConfig};
use crate::BotToken;

/// One request's result, back from its task.
struct Answer {
    chat_id: ChatId,
    seq: u64,
    result: Result<Result<i32, RequestError>, tokio::time::error::Elapsed>,
}

/// The sending task's state: every chat, the window, the breaker. One task
/// owns it all, so nothing on the sending path takes a lock.
pub(super) struct Scheduler {
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
    window: Window,
    paused_until: Option<Instant>,
    recent_429: VecDeque<(Instant, ChatId)>,
    breaker: Breaker,
    /// The pause before a message's next attempt, by its attempts.
    retries: Backoff,
    unreachable: Unreachable,
    groups: GroupSends,
    /// The limits shared with the bot's other processes, if any.
    limiter: Option<Limiter>,
}

impl Scheduler {
    pub(super) fn new(
        config: SenderConfig,
        bot: Bot,
        token: BotToken,
        shared: Arc<Shared>,
        inbox: mpsc::UnboundedReceiver<Message>,
        reports: mpsc::Sender<Report>,
        mode_rx: watch::Receiver<Mode>,
    ) -> Scheduler {
        Scheduler {
            breaker: Breaker::new(config.breaker.clone()),
            retries: Backoff::new(config.retry_backoff, config.max_retry_backoff),
            unreachable: Unreachable::new(config.inactive_ttl, config.inactive_capacity),
            window: Window::new(&config),
            groups: GroupSends::new(config.group_limit, config.group_window),
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
            paused_until: None,
            recent_429: VecDeque::new(),
            limiter: None,
        }
    }

    /// Keeps the limits shared with the bot's other processes too.
    pub(super) fn with_limiter(mut self, limiter: Option<Limiter>) -> Scheduler {
        self.limiter = limiter;
        self
    }

    pub(super) async fn run(mut self) -> Vec<Message> {
        loop {
            let now = Instant::now();
            self.wake_due(now);
            self.dispatch().await;
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
                    let answer = self.answer_of(joined);
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
        if self.mode != Mode::Stop
            && let Some(limiter) = &mut self.limiter
        {
            // The last answers' settlements, so the other processes need
            // not wait for the leases to lapse.
            limiter.flush().await;
        }
        self.leftovers()
    }

    /// What a send task returned; one that failed answers as an I/O
    /// error would, so its message is retried like one.
    fn answer_of(&mut self, joined: Result<(tokio::task::Id, Answer), JoinError>) -> Answer {
        match joined {
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
        }
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
                self.shared.release(id, lane, 1);
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
        if !self.chats.contains_key(&id) {
            // A group at its limit waits for it, woken by a timer.
            let start = self.earliest(id, now, now);
            self.chats.insert(id, Chat::new(start));
            if start > now {
                self.timers.push(Reverse((start, id)));
            }
        }
        let chat = self.chats.get_mut(&id).expect("inserted above");
        chat.queue(lane).push_back(Pending {
            msg,
            attempts: 0,
            queued_at: Some(now),
        });
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
        if let Some(shared) = self.limiter.as_ref().and_then(Limiter::until) {
            at = at.max(shared);
        }
        Some(self.window.release(at))
    }

    /// Sends the chats in line while the limits let them, each after its
    /// reservation in the shared limits when there are some.
    async fn dispatch(&mut self) {
        loop {
            let now = Instant::now();
            if self.global_release(now).is_none_or(|at| at > now) {
                return;
            }
            let Some(id) = self.next_ready(now) else {
                return;
            };
            let ticket = match self.reserve(id).await {
                Ok(ticket) => ticket,
                Err(Stop::Chat) => continue,
                Err(Stop::All) => return,
            };
            self.start(id, Instant::now(), ticket);
        }
    }

    /// A send to `id` reserved in the shared limits (`None` when there are
    /// none). A chat told to wait waits, woken by a timer; when every chat
    /// must, `id` goes back to the head of its line.
    async fn reserve(&mut self, id: ChatId) -> Result<Option<Ticket>, Stop> {
        let Some(limiter) = &mut self.limiter else {
            return Ok(None);
        };
        let counters = &self.shared.counters;
        match limiter.reserve(id).await {
            Reservation::Granted(ticket) => return Ok(Some(ticket)),
            Reservation::ChatWaits(wait) => {
                bump(&counters.shared_waits);
                let at = Instant::now() + wait;
                self.ready_chat(id).next_at = at;
                self.timers.push(Reverse((at, id)));
                return Err(Stop::Chat);
            }
            Reservation::BotWaits => bump(&counters.shared_waits),
            Reservation::Unavailable => bump(&counters.shared_unavailable),
        }
        let chat = self.ready_chat(id);
        let lane = if chat.replies.is_empty() {
            Lane::Alert
        } else {
            Lane::Reply
        };
        chat.in_ready[lane as usize] = true;
        self.ready[lane as usize].push_front(id);
        Err(Stop::All)
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

    /// A chat taken from the ready line: it exists until its messages are
    /// sent.
    fn ready_chat(&mut self, id: ChatId) -> &mut Chat {
        self.chats.get_mut(&id).expect("a ready chat exists")
    }

    /// Sends the next message of chat `id`, counted against the window.
    fn start(&mut self, id: ChatId, now: Instant, ticket: Option<Ticket>) {
        let seq = self.window.record(now);
        let chat = self.chats.get_mut(&id).expect("a ready chat exists");
        chat.ticket = ticket;
        let mut pending = match chat.replies.pop_front() {
            Some(p) => p,
            None => chat.alerts.pop_front().expect("a ready chat has work"),
        };
        if let Some(queued_at) = pending.queued_at.take() {
            let waited = now.saturating_duration_since(queued_at);
            self.shared
                .counters
                .queue_wait
                .observe(waited.as_secs_f64());
        }
        let request = pending.msg.request(&self.bot);
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

    /// Settles the message a request was for, as its answer says: done
    /// with (sent, given up, or dropped with its unreachable chat) or back
    /// at the head of its queue; then its chat's next turn.
    async fn complete(&mut self, answer: Answer) {
        let now = Instant::now();
        self.window.answered(answer.seq, now);
        let id = answer.chat_id;
        let outcome = report::outcome(answer.result, &self.token, self.config.request_timeout);
        let chat = self.in_flight_chat(id);
        let pending = chat.in_flight.take().expect("a chat with a send in flight");
        let ticket = chat.ticket.take();
        if let (Some(limiter), Some(ticket)) = (&mut self.limiter, ticket) {
            let hold = match outcome {
                Outcome::RetryAfter(after) => after.max(self.config.chat_interval),
                _ => self.config.chat_interval,
            };
            let sent = matches!(outcome, Outcome::Sent(_));
            limiter.settle(id, ticket, hold, sent).await;
        }
        let report = match outcome {
            Outcome::Sent(message_id) => Some(self.sent(id, pending, message_id, now)),
            Outcome::RetryAfter(after) => {
                self.rate_limited(id, pending, after, now);
                None
            }
            Outcome::Inactive(reason) => Some(self.inactive(id, pending, reason, now)),
            Outcome::Retry(error) => self.retry(id, pending, error, now),
            Outcome::Refused(error) if pending.msg.photo.is_some() => {
                self.photo_refused(id, pending, error, now);
                None
            }
            Outcome::Refused(error) => Some(self.refused(id, pending, error, now)),
        };
        if let Some(chat) = self.chats.get(&id) {
            self.timers.push(Reverse((chat.next_at, id)));
        }
        if let Some(report) = report {
            self.report(report).await;
        }
    }

    /// The chat of a send being settled: it stays until its answer is.
    fn in_flight_chat(&mut self, id: ChatId) -> &mut Chat {
        self.chats
            .get_mut(&id)
            .expect("a chat with a send in flight")
    }

    /// The earliest chat `id` may send, at `at` or later: a group also
    /// waits for its limit.
    fn earliest(&mut self, id: ChatId, at: Instant, now: Instant) -> Instant {
        self.groups.release(id, now).map_or(at, |g| g.max(at))
    }

    /// Done with a message: its room goes back, and its chat's next one
    /// waits an interval (and its group's limit).
    fn done(&mut self, id: ChatId, lane: Lane, now: Instant) {
        self.shared.release(id, lane, 1);
        let next = self.earliest(id, now + self.config.chat_interval, now);
        self.in_flight_chat(id).next_at = next;
    }

    /// A message goes back to the head of its queue, keeping its chat's
    /// order, and the chat waits `wait` (an interval at least).
    fn requeue(&mut self, id: ChatId, pending: Pending, wait: Duration, now: Instant) {
        let next = self.earliest(id, now + wait.max(self.config.chat_interval), now);
        let chat = self.in_flight_chat(id);
        chat.queue(pending.msg.tag.lane()).push_front(pending);
        chat.next_at = next;
    }

    fn sent(&mut self, id: ChatId, pending: Pending, message_id: i32, now: Instant) -> Report {
        self.breaker.success();
        bump(&self.shared.counters.sent);
        self.groups.record(id, now);
        self.done(id, pending.msg.tag.lane(), now);
        Report::Sent {
            chat_id: id,
            tag: pending.msg.tag,
            message_id,
        }
    }

    /// A 429: the chat waits `retry_after`, and every chat does if other
    /// private chats got one too. A group's 429 is its own limit's (20 a
    /// minute per group), which says nothing of the bot's: that group
    /// alone waits, so no group (anyone may make one) pauses the rest.
    fn rate_limited(&mut self, id: ChatId, pending: Pending, after: Duration, now: Instant) {
        bump(&self.shared.counters.rate_limited);
        self.requeue(id, pending, after, now);
        tracing::debug!(chat_id = id, retry_after = ?after, "Telegram 429 for a chat; it waits");
        if !is_group(id) {
            self.flood_check(id, after, now);
        }
    }

    /// The chat cannot be written to: it is forgotten with everything
    /// queued for it, and remembered as unreachable.
    fn inactive(&mut self, id: ChatId, pending: Pending, reason: Inactive, now: Instant) -> Report {
        let lane = pending.msg.tag.lane();
        let chat = self.in_flight_chat(id);
        let replies = chat.replies.len() + usize::from(lane == Lane::Reply);
        let alerts = chat.alerts.len() + usize::from(lane == Lane::Alert);
        self.chats.remove(&id);
        self.shared.release(id, Lane::Reply, replies);
        self.shared.release(id, Lane::Alert, alerts);
        self.unreachable.insert(id, now);
        let c = &self.shared.counters;
        bump(&c.inactive_chats);
        c.dropped_inactive
            .fetch_add((replies + alerts) as u64, Ordering::Relaxed);
        tracing::info!(chat_id = id, reason = ?reason, dropped = replies + alerts, "Telegram chat unreachable; its messages dropped");
        Report::Inactive {
            chat_id: id,
            reason,
            dropped: replies + alerts,
        }
    }

    /// A 5xx, network error or timeout: a failure for the breaker, then
    /// another attempt after a backoff, or the message given up after
    /// `max_attempts`.
    fn retry(
        &mut self,
        id: ChatId,
        mut pending: Pending,
        error: SendError,
        now: Instant,
    ) -> Option<Report> {
        let c = &self.shared.counters;
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
        pending.attempts += 1;
        if pending.attempts >= self.config.max_attempts {
            tracing::warn!(chat_id = id, attempts = pending.attempts, %error, "Telegram message given up");
            return Some(self.give_up(id, pending, error, now));
        }
        let backoff = self.retries.delay_for_attempt(pending.attempts);
        tracing::debug!(chat_id = id, attempts = pending.attempts, ?backoff, %error, "Telegram send failed; will retry");
        self.requeue(id, pending, backoff, now);
        None
    }

    /// Telegram refused a message with a photo: it is sent again at once
    /// as text alone, since the chart is what Telegram may have refused,
    /// and an alert must not be lost for it.
    fn photo_refused(&mut self, id: ChatId, mut pending: Pending, why: SendError, now: Instant) {
        bump(&self.shared.counters.photos_refused);
        tracing::warn!(chat_id = id, %why, "Telegram refused a chart; the alert goes as text");
        pending.msg = pending.msg.without_photo();
        self.requeue(id, pending, Duration::ZERO, now);
    }

    fn refused(&mut self, id: ChatId, pending: Pending, error: SendError, now: Instant) -> Report {
        tracing::warn!(chat_id = id, %error, "Telegram refused a message");
        self.give_up(id, pending, error, now)
    }

    /// The message is done with, unsent: counted and reported failed.
    fn give_up(&mut self, id: ChatId, pending: Pending, error: SendError, now: Instant) -> Report {
        bump(&self.shared.counters.failed);
        self.done(id, pending.msg.tag.lane(), now);
        Report::Failed {
            chat_id: id,
            tag: pending.msg.tag,
            error,
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

/// Why [`Scheduler::reserve`] let no send go: this chat waits, or all do.
enum Stop {
    Chat,
    All,
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
