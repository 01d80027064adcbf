//! Which tracked tokens to ask a DEX API about next, within its request
//! budget: pure, on a clock the caller passes in.
//!
//! Every tracked token has a due time: its last poll plus its interval.
//! Urgent tokens (called recently, or priced close to the value at which
//! they next cross a threshold, which the engine knows) have the short
//! interval; the rest have the ceiling. Each request takes up to `batch`
//! tokens of one network: urgent tokens that are due first, most overdue
//! first; then the other due tokens, most overdue first; and, while the
//! budget has room and nothing is due, the tokens due soonest. So with
//! enough budget no token waits longer than the ceiling, and with too
//! little the urgent ones still come first.
//!
//! A token nobody tracks any more (the engine holds no live record of it:
//! its last call is older than the TTL) is dropped by the caller.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;
use serde::{Deserialize, Serialize};

use crate::network::Network;

/// How the budget is spent: part of the `[sources.prices]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Tokens one request asks about [default: 30, DexScreener's most].
    pub batch: usize,
    /// How often an urgent token is asked about [default: 60].
    pub urgent_interval_secs: u64,
    /// The longest any tracked token waits between polls, while the budget
    /// allows it [default: 1800].
    pub ceiling_secs: u64,
    /// A token is urgent for this long after a call [default: 3600].
    pub recent_call_secs: u64,
    /// A token is urgent while its value is at least this share of the
    /// value at which it next crosses a threshold [default: 0.8].
    pub near_threshold: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            batch: 30,
            urgent_interval_secs: 60,
            ceiling_secs: 1_800,
            recent_call_secs: 3_600,
            near_threshold: 0.8,
        }
    }
}

impl ScheduleConfig {
    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.batch == 0 || self.batch > 30 {
            problems.push("batch must be between 1 and 30".to_owned());
        }
        if self.urgent_interval_secs == 0 || self.urgent_interval_secs > self.ceiling_secs {
            problems
                .push("urgent_interval_secs must be positive and at most ceiling_secs".to_owned());
        }
        if !(self.near_threshold > 0.0 && self.near_threshold <= 1.0) {
            problems.push("near_threshold must be in (0, 1]".to_owned());
        }
        problems
    }
}

/// A token as the sources know it: its address and its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tracked {
    pub token: Token,
    pub network: Network,
}

/// What the scheduler knows of one token.
#[derive(Debug, Clone, Copy)]
struct State {
    /// When it was last asked about; `None`: never.
    polled: Option<Nanos>,
    /// Its latest call.
    called: Nanos,
    /// The value at which it next crosses a threshold (infinite: none).
    next_change: f64,
    /// Its latest value.
    value: Option<f64>,
    /// Bumped at every reschedule: heap entries of older versions are stale.
    version: u32,
}

/// A heap entry: due time (earliest first), then the token.
type Due = Reverse<(Nanos, u32, Tracked)>;

/// One network's two queues.
#[derive(Debug, Default)]
struct Queues {
    urgent: BinaryHeap<Due>,
    normal: BinaryHeap<Due>,
}

/// Figures the caller exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Tokens tracked.
    pub tokens: u64,
    /// Of those, urgent now.
    pub urgent: u64,
    /// Tokens due (their interval has passed) and not yet asked about.
    pub due: u64,
}

/// The scheduler; see the module's docs.
#[derive(Debug)]
pub struct Scheduler {
    config: ScheduleConfig,
    tokens: HashMap<Tracked, State>,
    queues: HashMap<Network, Queues>,
}

impl Scheduler {
    pub fn new(config: ScheduleConfig) -> Scheduler {
        Scheduler {
            config,
            tokens: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    fn secs(s: u64) -> Nanos {
        i64::try_from(s).unwrap_or(i64::MAX / NANOS_PER_SEC) * NANOS_PER_SEC
    }

    /// Whether `s` is urgent at `now`.
    fn urgent(&self, s: &State, now: Nanos) -> bool {
        let recent = now.saturating_sub(s.called) < Self::secs(self.config.recent_call_secs);
        let near = s
            .value
            .is_some_and(|v| v >= self.config.near_threshold * s.next_change);
        recent || near
    }

    /// Puts `t` in its queue again, due one interval after its last poll
    /// (at once if it was never asked about).
    fn reschedule(&mut self, t: Tracked, now: Nanos) {
        let Some(s) = self.tokens.get_mut(&t) else {
            return;
        };
        s.version = s.version.wrapping_add(1);
        let s = *s;
        let urgent = self.urgent(&s, now);
        let interval = Self::secs(if urgent {
            self.config.urgent_interval_secs
        } else {
            self.config.ceiling_secs
        });
        let due = s.polled.map_or(Nanos::MIN, |p| p.saturating_add(interval));
        let q = self.queues.entry(t.network).or_default();
        let heap = if urgent { &mut q.urgent } else { &mut q.normal };
        heap.push(Reverse((due, s.version, t)));
    }

    /// A call of `t` at `at`: tracked (again), urgent, due at once if it
    /// has no value yet.
    pub fn called(&mut self, t: Tracked, at: Nanos, now: Nanos) {
        let s = self.tokens.entry(t).or_insert(State {
            polled: None,
            called: at,
            next_change: f64::INFINITY,
            value: None,
            version: 0,
        });
        s.called = s.called.max(at);
        self.reschedule(t, now);
    }

    /// The engine's news of `t`: the value at which it next crosses a
    /// threshold. A token the scheduler does not track is ignored.
    pub fn next_change(&mut self, t: Tracked, next_change: f64, now: Nanos) {
        if let Some(s) = self.tokens.get_mut(&t)
            && s.next_change != next_change
        {
            s.next_change = next_change;
            self.reschedule(t, now);
        }
    }

    /// `t` was asked about at `now` and is worth `value` (`None`: the
    /// sources did not know it). Returns how long it waited for this poll:
    /// since its last poll or its latest call, whichever came later.
    pub fn polled(&mut self, t: Tracked, value: Option<f64>, now: Nanos) -> Option<Nanos> {
        let s = self.tokens.get_mut(&t)?;
        let since = s.polled.map_or(s.called, |p| p.max(s.called));
        let waited = now.saturating_sub(since);
        s.polled = Some(now);
        if value.is_some() {
            s.value = value;
        }
        self.reschedule(t, now);
        Some(waited)
    }

    /// Stops tracking `t`.
    pub fn forget(&mut self, t: Tracked) {
        self.tokens.remove(&t);
    }

    /// Tokens whose last call is older than `before`: the caller forgets
    /// those the engine no longer holds.
    pub fn called_before(&self, before: Nanos) -> Vec<Tracked> {
        self.tokens
            .iter()
            .filter(|(_, s)| s.called < before)
            .map(|(t, _)| *t)
            .collect()
    }

    /// The next request's tokens, all of one network: urgent due ones
    /// first, then due ones, then (`eager`, or to fill a request that has
    /// some due) the ones due soonest. Empty
    /// when nothing is tracked (or, without `eager`, nothing is due). The
    /// tokens taken are out of the queues until [`Scheduler::polled`].
    pub fn next_batch(&mut self, now: Nanos, eager: bool) -> Vec<Tracked> {
        self.drop_stale_heads();
        let Some(network) = self.pick_network(now, eager) else {
            return Vec::new();
        };
        let batch = self.config.batch;
        let mut taken = Vec::with_capacity(batch);
        let q = self.queues.get_mut(&network).expect("picked");
        let tokens = &self.tokens;
        // Takes the head of `heap` if it is current (a stale one is
        // dropped): true while there was a head.
        let take = |heap: &mut BinaryHeap<Due>, taken: &mut Vec<Tracked>| {
            let Some(Reverse((_, version, t))) = heap.pop() else {
                return false;
            };
            if tokens.get(&t).is_some_and(|s| s.version == version) {
                taken.push(t);
            }
            true
        };
        let due = |heap: &BinaryHeap<Due>| heap.peek().is_some_and(|Reverse((d, _, _))| *d <= now);
        while taken.len() < batch && due(&q.urgent) {
            take(&mut q.urgent, &mut taken);
        }
        while taken.len() < batch && due(&q.normal) {
            take(&mut q.normal, &mut taken);
        }
        // A request that goes anyway is filled with the tokens due soonest:
        // it costs nothing and spreads tokens that fell due together.
        let fill = eager || !taken.is_empty();
        while fill && taken.len() < batch {
            let head = |h: &BinaryHeap<Due>| h.peek().map(|Reverse((d, _, _))| *d);
            let heap = match (head(&q.urgent), head(&q.normal)) {
                (None, None) => break,
                (Some(_), None) => &mut q.urgent,
                (None, Some(_)) => &mut q.normal,
                (Some(u), Some(n)) if u <= n => &mut q.urgent,
                _ => &mut q.normal,
            };
            take(heap, &mut taken);
        }
        taken
    }

    /// Pops heap heads that no longer stand for their token's schedule.
    fn drop_stale_heads(&mut self) {
        let tokens = &self.tokens;
        let current = |e: &Due| {
            let Reverse((_, version, t)) = e;
            tokens.get(t).is_some_and(|s| s.version == *version)
        };
        for q in self.queues.values_mut() {
            for heap in [&mut q.urgent, &mut q.normal] {
                while heap.peek().is_some_and(|e| !current(e)) {
                    heap.pop();
                }
            }
        }
    }

    /// The network whose head is most pressing: an urgent token due first,
    /// then any due token, then (`eager`) the soonest due.
    fn pick_network(&self, now: Nanos, eager: bool) -> Option<Network> {
        let head = |h: &BinaryHeap<Due>| h.peek().map(|Reverse((due, _, _))| *due);
        let mut best: Option<((u8, Nanos), Network)> = None;
        for (&network, q) in &self.queues {
            let candidates = [(0u8, head(&q.urgent)), (1u8, head(&q.normal))];
            for (class, due) in candidates {
                let Some(due) = due else { continue };
                let rank = if due <= now { (class, due) } else { (2, due) };
                if rank.0 == 2 && !eager {
                    continue;
                }
                if best.is_none_or(|(b, n)| (rank, network) < (b, n)) {
                    best = Some((rank, network));
                }
            }
        }
        best.map(|(_, n)| n)
    }

    /// Figures for metrics: O(tokens), so call it now and then.
    pub fn stats(&self, now: Nanos) -> ScheduleStats {
        let mut stats = ScheduleStats {
            tokens: self.tokens.len() as u64,
            ..ScheduleStats::default()
        };
        for s in self.tokens.values() {
            let urgent = self.urgent(s, now);
            stats.urgent += u64::from(urgent);
            let interval = Self::secs(if urgent {
                self.config.urgent_interval_secs
            } else {
                self.config.ceiling_secs
            });
            let due = s.polled.is_none_or(|p| p.saturating_add(interval) <= now);
            stats.due += u64::from(due);
        }
        stats
    }

    /// Tokens tracked.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
