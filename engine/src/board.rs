//! The channel leaderboard behind `/top`: how the calls of each channel
//! have done, from the call outcomes the shards report
//! ([`crate::router::Router::call_outcomes`]).
//!
//! A pure function of its input: the same outcomes in any order give the
//! same rows, so the answer does not depend on the number of shards or the
//! order their answers arrive in.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::event::ChannelId;
use crate::shard::CallOutcome;

/// The multiple of the value at the call that counts as a hit.
const HIT_MULTIPLE: f64 = 2.0;

/// One channel's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelScore {
    pub channel_id: ChannelId,
    /// Calls counted (one per token: a channel's latest call of it).
    pub calls: u32,
    /// Of those, calls whose token reached 2x the value at the call.
    pub reached_2x: u32,
    /// The median of `peak_fdv / fdv_at_call` over the calls; for an even
    /// count, the mean of the two middle values.
    pub median_peak: f64,
}

impl ChannelScore {
    /// The share of calls that reached 2x, from 0 to 1.
    pub fn share_2x(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        f64::from(self.reached_2x) / f64::from(self.calls)
    }

    /// Leaderboard order: the higher share of 2x first, then the higher
    /// median peak, then more calls, then the lower channel id. Shares are
    /// compared as exact fractions, so 1/3 and 2/6 tie.
    fn rank(&self, other: &Self) -> Ordering {
        let share = |s: &Self, t: &Self| u64::from(s.reached_2x) * u64::from(t.calls);
        share(other, self)
            .cmp(&share(self, other))
            .then_with(|| other.median_peak.total_cmp(&self.median_peak))
            .then_with(|| other.calls.cmp(&self.calls))
            .then_with(|| self.channel_id.cmp(&other.channel_id))
    }
}

/// The best `limit` channels by [`ChannelScore`]'s order, scored from
/// `outcomes`. Deterministic for any input order; floats are compared with
/// `total_cmp`, so a NaN multiple (which the shards never report) cannot
/// break the sort.
pub fn leaderboard(
    outcomes: impl IntoIterator<Item = CallOutcome>,
    limit: usize,
) -> Vec<ChannelScore> {
    let mut multiples: BTreeMap<ChannelId, Vec<f64>> = BTreeMap::new();
    for o in outcomes {
        multiples
            .entry(o.channel_id)
            .or_default()
            .push(o.peak_fdv / o.fdv_at_call);
    }
    let mut rows: Vec<ChannelScore> = multiples
        .into_iter()
        .map(|(channel_id, mut m)| {
            m.sort_unstable_by(f64::total_cmp);
            let n = m.len();
            let median_peak = if n % 2 == 1 {
                m[n / 2]
            } else {
                (m[n / 2 - 1] + m[n / 2]) / 2.0
            };
            ChannelScore {
                channel_id,
                calls: u32::try_from(n).expect("fewer than 2^32 calls a channel"),
                reached_2x: m.iter().filter(|&&x| x >= HIT_MULTIPLE).count() as u32,
                median_peak,
            }
        })
        .collect();
    rows.sort_unstable_by(ChannelScore::rank);
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn outcome(channel_id: ChannelId, multiple: f64) -> CallOutcome {
        CallOutcome {
            token: "So11111111111111111111111111111111111111112"
                .parse::<Token>()
                .unwrap(),
            channel_id,
            at: 0,
            fdv_at_call: 1000.0,
            peak_fdv: 1000.0 * multiple,
        }
    }

    fn board(outcomes: &[(ChannelId, f64)], limit: usize) -> Vec<ChannelScore> {
        leaderboard(outcomes.iter().map(|&(c, m)| outcome(c, m)), limit)
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let rows = board(&[(-1, 3.0), (-1, 1.0), (-1, 2.0), (-2, 4.0), (-2, 1.0)], 10);
        let median = |c| rows.iter().find(|r| r.channel_id == c).unwrap().median_peak;
        assert_eq!(median(-1), 2.0);
        assert_eq!(median(-2), 2.5);
    }

    #[test]
    fn share_counts_calls_that_reached_2x() {
        let rows = board(&[(-1, 2.0), (-1, 1.999), (-1, 7.0), (-1, 1.0)], 10);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].calls, rows[0].reached_2x), (4, 2));
        assert_eq!(rows[0].share_2x(), 0.5);
    }

    #[test]
    fn order_is_share_then_median_then_calls_then_channel() {
        let rows = board(
            &[
                // -1: share 1/2, median 2.5
                (-1, 1.0),
                (-1, 4.0),
                // -2: share 1/1
                (-2, 2.0),
                // -3: share 1/2, median 3.0
                (-3, 1.0),
                (-3, 5.0),
                // -4 and -5: share 2/4, median 2.5, more calls than -1
                (-4, 1.0),
                (-4, 1.0),
                (-4, 4.0),
                (-4, 4.0),
                (-5, 1.0),
                (-5, 1.0),
                (-5, 4.0),
                (-5, 4.0),
                // -6: share 0
                (-6, 1.5),
            ],
            10,
        );
        let order: Vec<ChannelId> = rows.iter().map(|r| r.channel_id).collect();
        assert_eq!(order, [-2, -3, -5, -4, -1, -6]);
        assert_eq!(board(&[(-1, 3.0), (-2, 3.0), (-3, 3.0)], 2).len(), 2);
        assert!(board(&[], 5).is_empty());
    }

    #[test]
    fn same_rows_for_any_input_order_and_nan_safe() {
        let mut input = vec![(-1, 3.0), (-2, f64::NAN), (-2, 2.0), (-3, 1.0), (-1, 1.0)];
        let forward = board(&input, 10);
        input.reverse();
        let backward = board(&input, 10);
        let ids = |rows: &[ChannelScore]| rows.iter().map(|r| r.channel_id).collect::<Vec<_>>();
        assert_eq!(ids(&forward), ids(&backward));
        assert_eq!(forward.len(), 3);
    }
}
