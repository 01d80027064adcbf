//! What the sender has done so far: counters the task bumps as it goes
//! and anyone may sample, without a lock and without waiting on the task.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::histogram::Histogram;

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
    /// Messages given up on ([`Report::Failed`](super::Report::Failed)).
    pub failed: u64,
    /// Chats found unreachable ([`Report::Inactive`](super::Report::Inactive)).
    pub inactive_chats: u64,
    /// Messages dropped because their chat was unreachable.
    pub dropped_inactive: u64,
    /// Messages refused because the queue was full.
    pub rejected_full: u64,
    /// Messages refused because their chat held as many as it may
    /// ([`Rejected::ChatFull`](super::Rejected)).
    pub rejected_chat_full: u64,
    pub breaker_opened: u64,
    /// Reports dropped because the close deadline passed while their
    /// reader was not reading.
    pub reports_lost: u64,
    /// Sends the limits shared with the bot's other processes held back
    /// (the chat, its group or the bot was at its limit).
    pub shared_waits: u64,
    /// Calls to those limits that Redis did not answer (sending waited).
    pub shared_unavailable: u64,
    /// Charts Telegram refused; their alerts went again as text.
    pub photos_refused: u64,
}

#[derive(Debug)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) flood_pauses: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) server_errors: AtomicU64,
    pub(super) network_errors: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) inactive_chats: AtomicU64,
    pub(super) dropped_inactive: AtomicU64,
    pub(super) rejected_full: AtomicU64,
    pub(super) rejected_chat_full: AtomicU64,
    pub(super) breaker_opened: AtomicU64,
    pub(super) reports_lost: AtomicU64,
    pub(super) shared_waits: AtomicU64,
    pub(super) shared_unavailable: AtomicU64,
    pub(super) photos_refused: AtomicU64,
    /// Seconds from a message taken to its first attempt starting.
    pub(super) queue_wait: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        let zero = AtomicU64::default;
        Counters {
            accepted: zero(),
            sent: zero(),
            rate_limited: zero(),
            flood_pauses: zero(),
            timeouts: zero(),
            server_errors: zero(),
            network_errors: zero(),
            failed: zero(),
            inactive_chats: zero(),
            dropped_inactive: zero(),
            rejected_full: zero(),
            rejected_chat_full: zero(),
            breaker_opened: zero(),
            reports_lost: zero(),
            shared_waits: zero(),
            shared_unavailable: zero(),
            photos_refused: zero(),
            queue_wait: Histogram::new(callwatch_common::buckets::latency()),
        }
    }
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The figures so far, with the queue depths, which the counters do not
    /// keep (the semaphores do).
    pub(super) fn stats(&self, queued_alerts: u64, queued_replies: u64) -> SenderStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SenderStats {
            queued: queued_alerts + queued_replies,
            queued_replies,
            accepted: load(&self.accepted),
            sent: load(&self.sent),
            rate_limited: load(&self.rate_limited),
            flood_pauses: load(&self.flood_pauses),
            timeouts: load(&self.timeouts),
            server_errors: load(&self.server_errors),
            network_errors: load(&self.network_errors),
            failed: load(&self.failed),
            inactive_chats: load(&self.inactive_chats),
            dropped_inactive: load(&self.dropped_inactive),
            rejected_full: load(&self.rejected_full),
            rejected_chat_full: load(&self.rejected_chat_full),
            breaker_opened: load(&self.breaker_opened),
            reports_lost: load(&self.reports_lost),
            shared_waits: load(&self.shared_waits),
            shared_unavailable: load(&self.shared_unavailable),
            photos_refused: load(&self.photos_refused),
        }
    }
}
