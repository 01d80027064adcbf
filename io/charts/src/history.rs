//! One token's price history: at most [`POINTS`] points, however long the
//! token is tracked and however often it is priced.
//!
//! Points are kept in time order. When the history is full, neighbours
//! are merged pairwise (each pair keeps its higher point), which halves
//! the history's resolution: from then on a point stands for twice as
//! many updates (its `stride`), gathered in a pending point until the
//! stride is complete. So the history of a token priced every second for
//! a week is still [`POINTS`] points spread over the whole week, and the
//! peaks that crossed thresholds survive every merge.

/// The most points a history holds (16 bytes each).
pub const POINTS: usize = 128;

/// A value at a moment: nanoseconds since the Unix epoch, and the value
/// (USD).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at_ns: i64,
    pub value: f64,
}

impl Point {
    /// The higher of two points; the later one when they are equal.
    fn higher(self, other: Point) -> Point {
        if other.value >= self.value {
            other
        } else {
            self
        }
    }
}

/// A bounded, downsampled price history.
#[derive(Debug, Clone)]
pub struct History {
    /// Complete points, ascending in time; never more than [`POINTS`].
    points: Vec<Point>,
    /// Updates each complete point stands for: a power of two.
    stride: u32,
    /// The point being gathered and how many updates it holds (less than
    /// `stride`).
    pending: Option<(Point, u32)>,
}

impl History {
    /// A history that starts with `first`.
    pub fn new(first: Point) -> History {
        let mut points = Vec::with_capacity(POINTS);
        points.push(first);
        History {
            points,
            stride: 1,
            pending: None,
        }
    }

    /// Adds an update. One older than the latest point is ignored: the
    /// history stays in time order, and a late price says nothing new
    /// about the curve.
    pub fn record(&mut self, point: Point) {
        if point.at_ns < self.latest().at_ns {
            return;
        }
        let (gathered, n) = match self.pending.take() {
            Some((p, n)) => (p.higher(point), n + 1),
            None => (point, 1),
        };
        if n < self.stride {
            self.pending = Some((gathered, n));
            return;
        }
        if self.points.len() == POINTS {
            self.halve();
        }
        self.points.push(gathered);
    }

    /// Merges neighbours pairwise (an odd last point stays alone) and
    /// doubles the stride.
    fn halve(&mut self) {
        let merged: Vec<Point> = self
            .points
            .chunks(2)
            .map(|pair| {
                pair.iter()
                    .copied()
                    .reduce(Point::higher)
                    .expect("chunks are not empty")
            })
            .collect();
        self.points.clear();
        self.points.extend(merged);
        self.stride *= 2;
    }

    /// The latest point, pending or complete.
    pub fn latest(&self) -> Point {
        match self.pending {
            Some((p, _)) => p,
            None => *self.points.last().expect("a history is never empty"),
        }
    }

    /// The points from `from_ns` through `to_ns`, in time order, the
    /// pending one included: what a chart of that span draws.
    pub fn between(&self, from_ns: i64, to_ns: i64) -> Vec<Point> {
        self.points
            .iter()
            .copied()
            .chain(self.pending.map(|(p, _)| p))
            .filter(|p| (from_ns..=to_ns).contains(&p.at_ns))
            .collect()
    }

    /// Complete points held (at most [`POINTS`]).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether it holds no complete point: never, as a history starts
    /// with one.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Updates each complete point stands for.
    pub fn stride(&self) -> u32 {
        self.stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: i64, value: f64) -> Point {
        Point {
            at_ns: i * 1_000_000_000,
            value,
        }
    }

    #[test]
    fn a_week_of_updates_stays_within_the_bound_and_spans_the_week() {
        let mut h = History::new(at(0, 1.0));
        let week = 7 * 24 * 3600;
        for i in 1..=week {
            h.record(at(i, 1.0 + (i % 97) as f64));
            assert!(h.len() <= POINTS);
        }
        let all = h.between(i64::MIN, i64::MAX);
        assert!(all.len() > POINTS / 2, "resolution kept: {}", all.len());
        assert!(all.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        assert!(all[0].at_ns < i64::from(h.stride()) * 1_000_000_000);
        assert!(all.last().unwrap().at_ns > (week - i64::from(h.stride())) * 1_000_000_000);
        assert!(h.stride().is_power_of_two() && h.stride() > 1);
    }

    #[test]
    fn a_peak_survives_downsampling() {
        let mut h = History::new(at(0, 1.0));
        for i in 1..10_000 {
            h.record(at(i, if i == 4_321 { 50.0 } else { 2.0 }));
        }
        let peak = h
            .between(i64::MIN, i64::MAX)
            .into_iter()
            .map(|p| p.value)
            .fold(0.0, f64::max);
        assert_eq!(peak, 50.0);
    }

    #[test]
    fn a_late_update_is_ignored() {
        let mut h = History::new(at(10, 1.0));
        h.record(at(5, 9.0));
        assert_eq!(h.between(i64::MIN, i64::MAX), vec![at(10, 1.0)]);
    }

    #[test]
    fn between_keeps_the_span_and_the_pending_point() {
        let mut h = History::new(at(0, 1.0));
        for i in 1..=3 {
            h.record(at(i, i as f64));
        }
        assert_eq!(
            h.between(at(1, 0.0).at_ns, at(2, 0.0).at_ns),
            vec![at(1, 1.0), at(2, 2.0)]
        );
        for i in 4..=POINTS as i64 {
            h.record(at(i, 1.0));
        }
        assert_eq!(h.stride(), 2, "the history halved when full");
        let pending = at(POINTS as i64 + 1, 7.0);
        h.record(pending);
        assert_eq!(h.latest(), pending);
        assert_eq!(h.between(pending.at_ns, i64::MAX), vec![pending]);
    }
}
