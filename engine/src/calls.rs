//! One token's calls table, `calls[T][c]` of CONTRACT.md, with what the
//! channel leaderboard needs of each call: the value at the call and the
//! highest value since.
//!
//! The table keeps a lower bound of every call's peak (the peak floor), so a
//! price that raises no peak costs one comparison whatever the number of
//! channels; only a price above the floor walks the calls, raises the peaks
//! below it and tightens the floor again.

use crate::event::ChannelId;
use crate::time::Nanos;

/// One channel's latest call of a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub channel: ChannelId,
    /// `calls[T][c]`: the latest `at` of the channel's calls of the token.
    pub at: Nanos,
    /// The FDV at the call that set `at`; NaN when unknown (a call restored
    /// from storage that did not keep it).
    pub fdv_at_call: f64,
    /// The highest current FDV of the token since that call, from
    /// `fdv_at_call` up; NaN when `fdv_at_call` is.
    pub peak_fdv: f64,
}

impl Call {
    /// Whether the leaderboard can use this call.
    pub fn known(&self) -> bool {
        known(self.fdv_at_call)
    }
}

/// A value stored or restored as a price: finite and positive, or unknown.
fn known(fdv_usd: f64) -> bool {
    fdv_usd.is_finite() && fdv_usd > 0.0
}

/// The calls of one token, sorted by channel so that the callers drawn
/// from it come out sorted too.
#[derive(Debug, Clone)]
pub struct Calls {
    list: Vec<Call>,
    /// No known call's peak is below it (infinity when there is none):
    /// a price at or under it raises nothing.
    peak_floor: f64,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            list: Vec::new(),
            peak_floor: f64::INFINITY,
        }
    }
}

impl Calls {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn as_slice(&self) -> &[Call] {
        &self.list
    }

    /// The lowest price that may raise a peak; no price at or below it can.
    pub fn peak_floor(&self) -> f64 {
        self.peak_floor
    }

    /// `calls[T][channel]`, if the channel called the token.
    pub fn at(&self, channel: ChannelId) -> Option<Nanos> {
        let i = self.find(channel).ok()?;
        Some(self.list[i].at)
    }

    fn find(&self, channel: ChannelId) -> Result<usize, usize> {
        self.list.binary_search_by_key(&channel, |c| c.channel)
    }

    /// Records a call of `channel` at `at` with its FDV and the peak seen
    /// since (an unknown `fdv_at_call` makes both unknown; a peak that is
    /// unknown or below `fdv_at_call` is taken as `fdv_at_call`). The
    /// latest call wins, as the contract's `max` does: one older than the
    /// channel's current call changes nothing, and one as late or later
    /// (the same channel calling again) replaces it, peak and all.
    pub fn record(&mut self, channel: ChannelId, at: Nanos, fdv_at_call: f64, peak_fdv: f64) {
        let (fdv_at_call, peak_fdv) = match (known(fdv_at_call), known(peak_fdv)) {
            (true, true) => (fdv_at_call, fdv_at_call.max(peak_fdv)),
            (true, false) => (fdv_at_call, fdv_at_call),
            (false, _) => (f64::NAN, f64::NAN),
        };
        let call = Call {
            channel,
            at,
            fdv_at_call,
            peak_fdv,
        };
        match self.find(channel) {
            Ok(i) if at < self.list[i].at => return,
            // The floor stays a lower bound even if the replaced call held
            // it; the next walk tightens it.
            Ok(i) => self.list[i] = call,
            Err(i) => self.list.insert(i, call),
        }
        if known(fdv_at_call) {
            self.peak_floor = self.peak_floor.min(peak_fdv);
        }
    }

    /// The token's current FDV is now `fdv_usd`: every call's peak rises to
    /// it. One comparison unless some peak is below it.
    pub fn raise_peaks(&mut self, fdv_usd: f64) {
        if fdv_usd <= self.peak_floor {
            return;
        }
        for c in &mut self.list {
            // An unknown (NaN) peak compares false and stays unknown.
            if c.peak_fdv < fdv_usd {
                c.peak_fdv = fdv_usd;
            }
        }
        self.tighten();
    }

    /// Keeps the calls made at or after `oldest`.
    pub fn retain_since(&mut self, oldest: Nanos) {
        let before = self.list.len();
        self.list.retain(|c| c.at >= oldest);
        if self.list.len() != before {
            self.tighten();
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.list.shrink_to_fit();
    }

    /// Sets the floor to the lowest known peak.
    fn tighten(&mut self) {
        self.peak_floor = self
            .list
            .iter()
            .filter(|c| c.known())
            .map(|c| c.peak_fdv)
            .fold(f64::INFINITY, f64::min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peaks(calls: &Calls) -> Vec<(ChannelId, f64)> {
        calls
            .as_slice()
            .iter()
            .map(|c| (c.channel, c.peak_fdv))
            .collect()
    }

    #[test]
    fn peaks_rise_and_never_fall() {
        let mut calls = Calls::default();
        calls.record(-2, 10, 100.0, 100.0);
        calls.record(-1, 20, 50.0, 50.0);
        assert_eq!(calls.peak_floor(), 50.0);
        calls.raise_peaks(80.0);
        assert_eq!(peaks(&calls), [(-2, 100.0), (-1, 80.0)]);
        assert_eq!(calls.peak_floor(), 80.0);
        calls.raise_peaks(60.0);
        calls.raise_peaks(150.0);
        calls.raise_peaks(10.0);
        assert_eq!(peaks(&calls), [(-2, 150.0), (-1, 150.0)]);
        assert_eq!(calls.peak_floor(), 150.0);
    }

    #[test]
    fn the_latest_call_of_a_channel_wins() {
        let mut calls = Calls::default();
        calls.record(-1, 10, 100.0, 100.0);
        calls.raise_peaks(300.0);
        // Older: ignored, time and peak alike.
        calls.record(-1, 5, 20.0, 20.0);
        assert_eq!(calls.at(-1), Some(10));
        assert_eq!(peaks(&calls), [(-1, 300.0)]);
        // Later: replaces, and the peak starts again from the new value.
        calls.record(-1, 30, 200.0, 200.0);
        assert_eq!(calls.as_slice()[0].fdv_at_call, 200.0);
        assert_eq!(peaks(&calls), [(-1, 200.0)]);
        assert!(calls.peak_floor() <= 200.0);
        assert_eq!(calls.at(-2), None);
    }

    #[test]
    fn unknown_values_stay_unknown_and_out_of_the_floor() {
        let mut calls = Calls::default();
        calls.record(-1, 10, f64::NAN, 500.0);
        calls.record(-2, 10, 0.0, f64::INFINITY);
        assert_eq!(calls.peak_floor(), f64::INFINITY);
        calls.raise_peaks(1e9);
        assert!(calls.as_slice().iter().all(|c| !c.known()));
        assert!(calls.as_slice().iter().all(|c| c.peak_fdv.is_nan()));
        // A known value with an unknown or lower peak starts at the value.
        calls.record(-3, 10, 100.0, f64::NAN);
        calls.record(-4, 10, 100.0, 40.0);
        calls.record(-5, 10, 100.0, f64::INFINITY);
        assert_eq!(peaks(&calls)[..3], [(-5, 100.0), (-4, 100.0), (-3, 100.0)]);
    }

    #[test]
    fn retain_since_drops_old_calls_and_tightens_the_floor() {
        let mut calls = Calls::default();
        calls.record(-1, 10, 50.0, 50.0);
        calls.record(-2, 20, 100.0, 100.0);
        calls.retain_since(15);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls.peak_floor(), 100.0);
        calls.retain_since(25);
        assert!(calls.is_empty());
        assert_eq!(calls.peak_floor(), f64::INFINITY);
    }
}
