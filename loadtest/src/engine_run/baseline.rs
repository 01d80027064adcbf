//! The predecessor's design (`--baseline seed`) on the same keys and
//! prices as the engine, for the comparison the report prints.

use std::time::{Duration, Instant};

use engine::time::NANOS_PER_SEC;
use engine::token::Token;

use super::{BaselineResults, bar, step_nanos};
use crate::market::{Market, T0, Tick};
use crate::seed::{Gate, SeedTracker};

/// The seed's design on the same keys and prices, on one thread, for at
/// most `limit` of wall time; and the crossings its gating hid.
/// Seconds between the baseline's throughput marks.
const TIMELINE_STEP_SECS: f64 = 0.25;

pub(super) fn run(
    market: &Market,
    pool: &[Tick],
    limit: Duration,
    updates: u64,
) -> BaselineResults {
    let names: Vec<String> = market.tokens.iter().map(Token::to_string).collect();
    let seed = SeedTracker::new();
    let pb = bar(market.spec.keys, "seed: loading");
    for (i, (t, chat, fdv)) in market.keys().enumerate() {
        seed.track_call(&names[t as usize], chat, -1, fdv, T0);
        if i.is_multiple_of(65_536) {
            pb.set_position(i as u64);
        }
    }
    pb.finish_and_clear();
    let step = step_nanos(market.spec.tokens);
    let mut at = T0 + NANOS_PER_SEC;
    let mut b = BaselineResults::default();
    let pb = bar(updates, "seed: prices");
    let start = Instant::now();
    let mut seen = 0usize;
    let mut marks = vec![(0.0, 0u64)];
    for i in 0..updates as usize {
        let tick = &pool[i % pool.len()];
        at += step;
        seen = i + 1;
        if let Tick::Price { token, fdv_usd } = *tick {
            b.updates += 1;
            if seed.process_price_update(&names[token as usize], fdv_usd, at) {
                b.processed += 1;
            }
        }
        if i % 4096 == 0 {
            pb.set_position(i as u64);
            let elapsed = start.elapsed();
            if elapsed.as_secs_f64() >= marks.last().map_or(0.0, |m| m.0) + TIMELINE_STEP_SECS {
                marks.push((elapsed.as_secs_f64(), b.updates));
            }
            if elapsed >= limit {
                break;
            }
        }
    }
    // The last stretch, unless too short to give a steady rate.
    let end = start.elapsed().as_secs_f64();
    if end - marks.last().map_or(0.0, |m| m.0) >= TIMELINE_STEP_SECS / 2.0 {
        marks.push((end, b.updates));
    }
    b.timeline = super::rates(&marks);
    b.updates_per_sec = b.updates as f64 / start.elapsed().as_secs_f64();
    b.notifications = seed.notifications();
    pb.finish_and_clear();
    drop(seed);

    // Which thresholds each key reached on the prices the seed was shown,
    // against those reached on every price (what the engine checks).
    let mut gate = Gate::default();
    let n = market.tokens.len();
    let (mut max_all, mut max_seen) = (vec![0.0f64; n], vec![0.0f64; n]);
    let mut at = T0 + NANOS_PER_SEC;
    for tick in pool.iter().cycle().take(seen) {
        at += step;
        if let Tick::Price { token, fdv_usd } = *tick {
            let t = token as usize;
            max_all[t] = max_all[t].max(fdv_usd);
            if gate.passes(token, fdv_usd, at) {
                max_seen[t] = max_seen[t].max(fdv_usd);
            }
        }
    }
    const THRESHOLDS: [f64; 6] = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
    for (t, _, fdv_at_call) in market.keys() {
        let (all, shown) = (
            max_all[t as usize] / fdv_at_call,
            max_seen[t as usize] / fdv_at_call,
        );
        for h in THRESHOLDS {
            if all >= h {
                b.engine_crossings += 1;
                if shown < h {
                    b.missed_crossings += 1;
                }
            }
        }
    }
    b
}
