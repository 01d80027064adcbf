//! The global limit: the last `global_limit` sends, each counted from the
//! latest moment Telegram can have received it, and when the next send
//! may leave so that no `window` at the server holds more than
//! `global_limit` (see the module's docs).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::SenderConfig;

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

/// The sends that count against the global limit, and the pace they keep.
pub(super) struct Window {
    /// The last `limit` sends; `first_seq` is the first one's.
    slots: VecDeque<Slot>,
    first_seq: u64,
    next_seq: u64,
    /// The latest answer of the sends that left the window.
    watermark: Option<Instant>,
    /// When the next send is due to keep sends spread out.
    due: Option<Instant>,
    spacing: Duration,
    limit: usize,
    length: Duration,
    assume_received_after: Duration,
}

impl Window {
    pub(super) fn new(config: &SenderConfig) -> Window {
        Window {
            slots: VecDeque::with_capacity(config.global_limit as usize),
            first_seq: 0,
            next_seq: 0,
            watermark: None,
            due: None,
            spacing: config.window / config.global_limit,
            limit: config.global_limit as usize,
            length: config.window,
            assume_received_after: config.assume_received_after,
        }
    }

    /// The earliest moment, `at` or later, that the window and the spacing
    /// of sends let the next send leave.
    pub(super) fn release(&self, mut at: Instant) -> Instant {
        if let Some(due) = self.due {
            // Half a spacing of slack, so a late timer does not slow the
            // pace for good.
            at = at.max(due - self.spacing / 2);
        }
        if self.slots.len() >= self.limit {
            let answered = self.slots[0].anchor(self.assume_received_after);
            let anchor = self.watermark.map_or(answered, |w| w.max(answered));
            at = at.max(anchor + self.length);
        }
        at
    }

    /// Counts a send leaving `now`; its sequence number, for
    /// [`Window::answered`].
    pub(super) fn record(&mut self, now: Instant) -> u64 {
        if self.slots.len() >= self.limit
            && let Some(oldest) = self.slots.pop_front()
        {
            let answered = oldest.anchor(self.assume_received_after);
            self.watermark = Some(self.watermark.map_or(answered, |w| w.max(answered)));
            self.first_seq += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            started: now,
            answered: None,
        });
        self.due = Some(self.due.map_or(now, |d| d.max(now)) + self.spacing);
        seq
    }

    /// The send `seq` was answered `now`, if it is still in the window.
    pub(super) fn answered(&mut self, seq: u64, now: Instant) {
        if let Some(slot) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| self.slots.get_mut(i as usize))
        {
            slot.answered = Some(now);
        }
    }
}
