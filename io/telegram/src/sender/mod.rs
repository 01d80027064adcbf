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
//! - **per group** (`group_limit` messages per `group_window`, 20 a
//!   minute, Telegram's limit for a group): a group's next message leaves
//!   at least `group_window` after the answer to the one sent
//!   `group_limit` sends before it. The recent sends are kept apart from
//!   the chat's queues, so the limit holds however often a quiet group's
//!   state is forgotten.
//!
//! Both hold whatever the network's jitter; the price is one round trip
//! per `window` (30 messages per 1.003 s over loopback in the load test,
//! per 1.1 s at a 100 ms round trip). `governor` was considered and not used: it counts a
//! message when it is let through, not when it was answered, and its keyed
//! limiter grows with every chat until swept, while the sender must hold
//! each chat's state (queue, pause, order) anyway.
//!
//! # Limits shared by the bot's processes
//! Telegram counts per bot, not per process. [`Sender::start`] keeps the
//! limits in this process alone: right for a bot nothing else sends with.
//! [`Sender::start_shared`] keeps the same three rules in Redis too
//! ([`SharedLimits`], `shared`), so that any number of processes sending
//! with one token keep them together: each send is reserved there (one
//! atomic script, on the server's clock) before it leaves, and settled
//! once answered. The scheduler still picks which message goes next, so
//! order per chat and the reply lane stay as below; the reservation only
//! says when. A chat the shared limits hold back waits on a timer while
//! other chats go; when the bot as a whole is at its limit, every chat
//! waits. If Redis does not answer, no message leaves until it does (a
//! process cannot know what the others send, so no budget of its own is
//! safe); `shared` has the details. Routing every message through one
//! sending process fed by a stream was the other way: it was not taken,
//! as it needs that process to be elected and replaced when it dies,
//! while a reservation costs two Redis round trips per message and keeps
//! every process able to send.
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
//! | 429 `retry_after` | that chat waits `retry_after`; 429s for `flood_chats` (2) different private chats within a `window` mean the bot as a whole is over the limit, and every chat waits. A group's 429 is its own limit's: that group alone waits, so groups (anyone can make some) cannot pause the rest |
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
//! `Full` when there is no room; [`Sender::send`] waits for it. Within a
//! lane, one chat holds at most `chat_reply_cap` replies (20) and
//! `chat_alert_cap` alerts (1,000): one more is refused at once, by both,
//! with `ChatFull` (counted as `rejected_chat_full`), so that a chat that
//! floods fills its own share, never the lane, and a producer serving
//! every chat never waits on one. Chats
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
//!
//! # Layout
//! - `config`: [`SenderConfig`], checked once at start.
//! - `message`: what producers hand over: [`Message`], its [`Tag`] and
//!   lane.
//! - `handle`: the handles, [`Sender`] and [`SenderTask`], and the room
//!   they share with the task.
//! - `scheduler`: the task: per-chat turns, dispatch within the limits,
//!   and what each answer does.
//! - `chat`: one chat's queues and pause; the chats found unreachable.
//! - `window`: the global limit, counted from answers.
//! - `shared`: the limits shared through Redis ([`SharedLimits`]), with
//!   the scripts `reserve.lua` and `settle.lua`.
//! - `report`: Telegram's answers read into outcomes, and the
//!   [`Report`]s of them.
//! - `stats`: the counters behind [`SenderStats`].

mod chat;
mod config;
mod handle;
mod message;
mod report;
mod scheduler;
mod shared;
mod stats;
mod window;

pub use config::{ConfigError, SenderConfig};
pub use handle::{Closed, Sender, SenderTask};
pub use message::{AlertKey, Message, Photo, Rejected, Tag};
pub use report::{ErrorKind, Inactive, Report, SendError};
pub use shared::SharedLimits;
pub use stats::SenderStats;

use message::Lane;
