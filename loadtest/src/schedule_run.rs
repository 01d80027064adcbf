//! `loadtest schedule`: the price sources' scheduler over a million tracked
//! tokens on a request budget, on a simulated clock (the scheduler is pure:
//! no API is asked). New calls arrive all along and make their tokens
//! urgent for the scheduler's `recent_call_secs`; a share of tokens sit
//! near their next crossing. Reports how long tokens waited between polls,
//! for urgent tokens and for all in the steady state, for all during the
//! start (every token is due at once when the scheduler starts: until a
//! ceiling after the last first poll, and at least three ceilings, while
//! that backlog spreads out), and how fast the scheduler itself runs.

use std::time::Instant;

use callwatch_sources::network::Network;
use callwatch_sources::schedule::{ScheduleConfig, Scheduler, Tracked};
use engine::sim::{Rng, token};
use engine::time::NANOS_PER_SEC;
use hdrhistogram::Histogram;

/// The scenario's knobs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tokens: u64,
    /// Requests a minute, each asking about `config.batch` tokens.
    pub requests_per_minute: u32,
    /// Simulated minutes.
    pub minutes: u64,
    /// New calls a minute (each of a token tracked already, drawn at
    /// random): those tokens are urgent for `recent_call_secs`.
    pub calls_per_minute: u64,
    /// Share of tokens valued near their next crossing (urgent).
    pub near_share: f64,
    pub config: ScheduleConfig,
    pub seed: u64,
}

/// What the run measured.
#[derive(Debug)]
pub struct Results {
    /// Seconds between polls, every token, steady state.
    pub all: Histogram<u64>,
    /// Seconds between polls, every token, while the start's backlog
    /// spreads out (first polls not counted).
    pub start: Histogram<u64>,
    /// Seconds between polls of a token that was urgent when polled.
    pub urgent: Histogram<u64>,
    /// Tokens due and not yet polled at the end: the backlog.
    pub due_at_end: u64,
    pub polls: u64,
    pub requests: u64,
    /// Wall-clock seconds the scheduler took for the whole run.
    pub scheduler_secs: f64,
    pub tokens: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 30 * 24 * 3600, 3).expect("valid bounds")
}

/// Runs the plan; see the module's docs.
pub fn run(plan: &Plan) -> Results {
    let mut rng = Rng::new(plan.seed);
    let mut s = Scheduler::new(plan.config.clone());
    let sec = NANOS_PER_SEC;
    let tracked: Vec<Tracked> = (0..plan.tokens)
        .map(|_| Tracked {
            token: token(&mut rng),
            network: Network::Solana,
        })
        .collect();
    let recent = i64::try_from(plan.config.recent_call_secs).unwrap_or(i64::MAX) * sec;
    // Tokens called long enough ago to be normal, at the start.
    for t in &tracked {
        s.called(*t, -recent - sec, 0);
    }
    let near = (plan.tokens as f64 * plan.near_share) as usize;
    for t in &tracked[..near] {
        s.polled(*t, Some(90.0), 0);
        s.next_change(*t, 100.0, 0);
    }
    let index: std::collections::HashMap<Tracked, usize> =
        tracked.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut urgent_until = vec![0i64; tracked.len()];
    let (mut all, mut urgent, mut start) = (histogram(), histogram(), histogram());
    let (mut polls, mut requests) = (0u64, 0u64);
    let tick = 60 * sec / i64::from(plan.requests_per_minute.max(1));
    let call_every = 60 * sec / i64::try_from(plan.calls_per_minute.max(1)).unwrap_or(1);
    let (mut now, mut next_call) = (0i64, 0i64);
    let end = i64::try_from(plan.minutes).unwrap_or(i64::MAX) * 60 * sec;
    // Every token starts due at once, and its first poll's wait would count
    // from a made-up call: first polls are not counted. The polls that
    // follow fall due together until the backlog has spread out: the
    // steady state starts a ceiling after every token was polled once, and
    // not before three ceilings.
    let ceiling = i64::try_from(plan.config.ceiling_secs).unwrap_or(0) * sec;
    let mut polled_once = vec![false; tracked.len()];
    let mut unpolled = tracked.len();
    let mut steady = i64::MAX;
    let started = Instant::now();
    while now < end {
        while next_call <= now {
            let i = rng.below(plan.tokens) as usize;
            s.called(tracked[i], next_call, now);
            urgent_until[i] = next_call + recent;
            next_call += call_every;
        }
        let batch = s.next_batch(now, false);
        requests += u64::from(!batch.is_empty());
        for t in batch {
            let i = index[&t];
            // Near tokens stay near their crossing; the rest stay far.
            let value = if i < near { 90.0 } else { 1.0 };
            let waited = s.polled(t, Some(value), now);
            if !std::mem::replace(&mut polled_once[i], true) {
                unpolled -= 1;
                if unpolled == 0 {
                    steady = (now + ceiling).max(3 * ceiling);
                }
                continue;
            }
            let Some(waited) = waited else { continue };
            let secs = u64::try_from(waited / sec).unwrap_or(0).max(1);
            if now < steady {
                let _ = start.record(secs);
                continue;
            }
            let _ = all.record(secs);
            polls += 1;
            if i < near || urgent_until[i] > now {
                let _ = urgent.record(secs);
            }
        }
        now += tick;
    }
    let scheduler_secs = started.elapsed().as_secs_f64();
    let due_at_end = s.stats(now).due;
    Results {
        all,
        start,
        urgent,
        due_at_end,
        polls,
        requests,
        scheduler_secs,
        tokens: plan.tokens,
    }
}
