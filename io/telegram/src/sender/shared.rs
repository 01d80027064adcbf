//! Telegram's limits are the bot's, not a process's: every process sending
//! with one bot token reserves each send in Redis first, so that together
//! they keep one message per `chat_interval` per chat, `group_limit` per
//! `group_window` per group and `global_limit` per `window` overall.
//!
//! # How
//! Two Lua scripts (`reserve.lua`, `settle.lua`), each one atomic step on
//! the server's clock:
//! - **reserve**, before a send leaves: granted if the chat has no message
//!   in flight (a lease, held by whichever process sends) and its interval
//!   since the last answer is over, its group is under its limit, and the
//!   bot's window and spacing let one more go. Granting takes the lease
//!   and a slot in the window. Otherwise it says how long the chat (or
//!   every chat) waits, and writes nothing.
//! - **settle**, after the answer: the lease ends, the chat's next send
//!   waits `chat_interval` (or a 429's `retry_after`) from then, the slot
//!   counts from then (or from `assume_received_after` after the grant if
//!   sooner), and a group's message counts against its group from then.
//!
//! These are the rules the sender keeps in process (see the module's
//! docs), moved to where every process sees them; each process still
//! keeps its own on top, and its own order per chat and lane: the shared
//! limits only decide when the message it picked may leave.
//!
//! # Keys
//! Under `{prefix}telegram:limits:{<bot>}` (`keys::telegram_limits_key`),
//! `<bot>` a hash of the token ([`BotToken::key_id`]), never the token;
//! the braces are a hash tag, so one script's keys share a Cluster slot.
//! `:all` and `:order` (the window, at most `global_limit` slots),
//! `:chat:<id>` (lease and next send), `:group:<id>` (the last
//! `group_limit` answers). Every key expires once it can hold nothing back
//! (a window and a second, the lease, the group window).
//!
//! # When Redis does not answer
//! The sender waits: no message leaves until a reservation is granted,
//! tried again every [`RETRY_AFTER_FAILURE`]. A local budget was not
//! chosen: a process cannot know how many others share the bot, so no
//! budget of its own is safe, and `serve` reads its input from the same
//! Redis, so it has nothing new to send while Redis is away. Settlements
//! that failed are kept and made, in order, before the next reservation;
//! until then the lease holds the chat (it lapses `request_timeout` plus
//! 2 s after the grant, in case the process died) and the slot counts
//! from its cap. A reservation whose answer was lost may have been
//! granted: its message is not sent, and the chat waits for the lease.
//! A Redis that loses its data (restarted without persistence) forgets
//! the last minute's group sends; the per-chat and overall limits hold,
//! as every process waited at least a second meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use callwatch_common::keys::telegram_limits_key;
use callwatch_streams::Conn;
use engine::event::ChatId;
use redis::Script;

use super::SenderConfig;
use super::chat::is_group;
use crate::BotToken;

/// The longest wait for one script's answer; longer reads as Redis down.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// After Redis failed, the wait before trying again (at least a window, so
/// that what was in flight has been answered).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Where a bot's limits are shared: a Redis every process sending with the
/// bot uses, and the key prefix they share. Give it to
/// [`Sender::start_shared`](super::Sender::start_shared).
#[derive(Clone)]
pub struct SharedLimits {
    con: Conn,
    base: String,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("keys", &self.base)
            .finish()
    }
}

impl SharedLimits {
    /// The limits of `token`'s bot, under `key_prefix` in the Redis `con`
    /// reaches.
    pub fn new(con: Conn, key_prefix: &str, token: &BotToken) -> SharedLimits {
        SharedLimits {
            con,
            base: telegram_limits_key(key_prefix, &token.key_id()),
        }
    }
}

/// A granted send, to settle once answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    seq: i64,
    anchor: i64,
}

/// What a reservation said.
#[derive(Debug)]
pub(super) enum Reservation {
    Granted(Ticket),
    /// This chat (or its group) waits this long; others may go.
    ChatWaits(Duration),
    /// Every chat waits, until [`Limiter::until`].
    BotWaits,
    /// Redis did not answer: every chat waits, until [`Limiter::until`].
    Unavailable,
}

/// A settlement to make.
struct Settle {
    chat: ChatId,
    ticket: Ticket,
    hold: Duration,
    group_sent: bool,
}

/// The scheduler's side of the shared limits: the scripts, their
/// arguments, the settlements still to make, and until when every chat
/// waits.
pub(super) struct Limiter {
    shared: SharedLimits,
    reserve: Script,
    settle: Script,
    /// ARGV 2.. of a reservation, in microseconds where a time.
    reserve_args: [i64; 8],
    group_limit: i64,
    group_window: i64,
    pending: VecDeque<Settle>,
    until: Option<Instant>,
    down: bool,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Limiter {
    pub(super) fn new(shared: SharedLimits, config: &SenderConfig) -> Limiter {
        let lease = config.request_timeout + Duration::from_secs(2);
        Limiter {
            shared,
            reserve: Script::new(include_str!("reserve.lua")),
            settle: Script::new(include_str!("settle.lua")),
            reserve_args: [
                micros(lease),
                micros(config.chat_interval),
                config.group_limit as i64,
                micros(config.group_window),
                i64::from(config.global_limit),
                micros(config.window),
                micros(config.window / config.global_limit),
                micros(config.assume_received_after),
            ],
            group_limit: config.group_limit as i64,
            group_window: micros(config.group_window),
            pending: VecDeque::new(),
            until: None,
            down: false,
        }
    }

    /// Until when every chat waits (the bot's budget, or Redis down).
    pub(super) fn until(&self) -> Option<Instant> {
        self.until
    }

    fn keys(&self, chat: ChatId) -> [String; 4] {
        let b = &self.shared.base;
        [
            format!("{b}:all"),
            format!("{b}:order"),
            format!("{b}:chat:{chat}"),
            format!("{b}:group:{chat}"),
        ]
    }

    /// Asks for a send to `chat` now, after the settlements still owed.
    pub(super) async fn reserve(&mut self, chat: ChatId) -> Reservation {
        if !self.flush().await {
            return Reservation::Unavailable;
        }
        let mut call = self.reserve.prepare_invoke();
        for key in self.keys(chat) {
            call.key(key);
        }
        call.arg(u8::from(is_group(chat)))
            .arg(&self.reserve_args[..]);
        let mut con = self.shared.con.clone();
        let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<Vec<i64>>(&mut con));
        let answer = self.answered(answer.await);
        match answer.as_deref() {
            Some(&[0, seq, anchor]) => Reservation::Granted(Ticket { seq, anchor }),
            Some(&[1, wait]) => Reservation::ChatWaits(Duration::from_micros(wait.unsigned_abs())),
            Some(&[2, wait]) => {
                self.until = Some(Instant::now() + Duration::from_micros(wait.unsigned_abs()));
                Reservation::BotWaits
            }
            Some(other) => {
                tracing::error!(
                    ?other,
                    "shared Telegram limits: an answer of no known shape"
                );
                self.failed();
                Reservation::Unavailable
            }
            None => Reservation::Unavailable,
        }
    }

    /// Settles a granted send whose answer is in: `chat` waits `hold`, and
    /// a message a group was sent counts against it.
    pub(super) async fn settle(
        &mut self,
        chat: ChatId,
        ticket: Ticket,
        hold: Duration,
        sent: bool,
    ) {
        self.pending.push_back(Settle {
            chat,
            ticket,
            hold,
            group_sent: sent && is_group(chat),
        });
        // While Redis is away, only the next reservation tries again.
        if self.until.is_none_or(|u| u <= Instant::now()) {
            self.flush().await;
        }
    }

    /// Makes the settlements owed, oldest first; `false` if Redis failed.
    pub(super) async fn flush(&mut self) -> bool {
        while let Some(s) = self.pending.front() {
            let mut call = self.settle.prepare_invoke();
            for key in self.keys(s.chat) {
                call.key(key);
            }
            call.arg(s.ticket.seq)
                .arg(s.ticket.anchor)
                .arg(micros(s.hold))
                .arg(u8::from(s.group_sent))
                .arg(self.group_limit)
                .arg(self.group_window);
            let mut con = self.shared.con.clone();
            let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<i64>(&mut con));
            if self.answered(answer.await).is_none() {
                return false;
            }
            self.pending.pop_front();
        }
        true
    }

    /// The script's answer, or `None` (and every chat waits) if Redis did
    /// not give one.
    fn answered<T>(
        &mut self,
        answer: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let error = match answer {
            Ok(Ok(value)) => {
                if self.down {
                    self.down = false;
                    tracing::info!("shared Telegram limits: Redis answers again; sending resumes");
                }
                return Some(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        if !self.down {
            tracing::warn!(%error, "shared Telegram limits: Redis failed; no message leaves until it answers");
        }
        self.failed();
        None
    }

    fn failed(&mut self) {
        self.down = true;
        self.until = Some(Instant::now() + RETRY_AFTER_FAILURE);
    }
}
