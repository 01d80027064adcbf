//! The sweep: what has expired dropped a few token slots at a time, so
//! that there is never a pause proportional to the state.

use crate::event::limits;
use crate::time::Nanos;

use super::record::current;
use super::{ShardState, TokenState};

impl ShardState {
    /// Drops what has expired from up to `budget` token slots, continuing
    /// where the last call stopped, and frees tokens left with nothing;
    /// and takes the chats of up to `budget` followers out of the follower
    /// index if their subscription expired (`crate::followers`).
    ///
    /// Invisible in the output: everything it drops is judged against the
    /// stream clock, which never goes back, so it could never have mattered
    /// again. The one exception is a call more than a week (the longest
    /// lookback) older than the clock, which only an event that much out of
    /// order could still count; ARCHITECTURE.md states that bound. A chat
    /// taken out of the follower index is still found by a call dated
    /// before its expiry, so that changes no output either.
    pub fn maintain(&mut self, budget: usize) {
        self.chats.sweep(self.clock, budget, &mut self.lapsed);
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let ttl = self.rules.ttl_nanos;
        let clock = self.clock;
        let oldest_call = clock.saturating_sub(limits::MAX_LOOKBACK_NANOS);
        for _ in 0..budget.min(n) {
            let i = self.sweep_cursor % n;
            self.sweep_cursor = (i + 1) % n;
            let ts = &self.slots[i];
            if !ts.live || ts.deciding || clock < ts.next_sweep {
                continue;
            }
            super::cut::save(&mut self.cut, &mut self.slots, i);
            let ts = &mut self.slots[i];
            let before = ts.tracked.len();
            let records = &ts.records;
            ts.tracked.retain(
                |e| clock < e.started.saturating_add(ttl) && current(records, e),
                &self.rules.thresholds,
            );
            let dropped = (before - ts.tracked.len()) as u64;
            self.stats.tracked -= dropped;
            self.stats.expired_tracked += dropped;
            let before = ts.records.len();
            ts.records.retain(|r| !r.dead(clock, ttl));
            self.stats.records -= (before - ts.records.len()) as u64;
            ts.calls.retain_since(oldest_call);
            if let Some(hot) = self.index.get_mut(&ts.token) {
                hot.next_change = ts.next_change(&self.rules.thresholds);
            }
            ts.next_sweep = ts
                .tracked
                .entries()
                .iter()
                .map(|e| e.started.saturating_add(ttl))
                .chain(ts.records.values().map(|r| r.dead_at(ttl)))
                .chain(
                    ts.calls
                        .as_slice()
                        .iter()
                        .map(|c| c.at.saturating_add(limits::MAX_LOOKBACK_NANOS)),
                )
                .min()
                .unwrap_or(Nanos::MAX);
            if ts.calls.is_empty() && ts.records.is_empty() && ts.tracked.is_empty() {
                self.index.remove(&ts.token);
                *ts = TokenState::new(ts.token);
                ts.live = false;
                self.free
                    .push(u32::try_from(i).expect("slot index fits u32"));
                self.stats.tokens -= 1;
            }
        }
    }
}
