//! The global limit: each send counted from the latest moment Telegram
//! can have received it (see the module's docs).

use std::time::{Duration, Instant};

/// A send counted against the global window.
pub(super) struct Slot {
    pub(super) started: Instant,
    pub(super) answered: Option<Instant>,
}

impl Slot {
    /// The latest moment Telegram can have received it: its answer, or
    /// `assume` after it left if that is sooner (or it is unanswered).
    pub(super) fn anchor(&self, assume: Duration) -> Instant {
        let cap = self.started + assume;
        self.answered.map_or(cap, |a| a.min(cap))
    }
}
