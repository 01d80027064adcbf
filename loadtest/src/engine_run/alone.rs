//! Shard 0 alone on the driver thread, once the engine has stopped: no
//! router, no channels, so the figures are the shard's own cost apart
//! from the harness's and the engine's plumbing.

use std::time::Instant;

use engine::effect::Effect;
use engine::event::{Envelope, Event};
use engine::router::shard_of;
use engine::shard::ShardState;
use engine::time::{NANOS_PER_SEC, Nanos};
use hdrhistogram::Histogram;

use super::{envelope, histogram, step_nanos};
use crate::market::{Market, T0, Tick};

/// Applies prices straight to one shard's state: first prices that cannot
/// cross (below 1.1x of each token's start, under every 2x), then the
/// stream's own prices for that shard's tokens. Returns both rates and the
/// alerts the non-crossing run raised (0 unless an entry started at a
/// dumped price, which the warm-up pass uses up).
pub(super) fn shard_alone(
    state: &mut ShardState,
    market: &Market,
    shards: usize,
    pool: &[Tick],
) -> (f64, u64, f64) {
    let mine: Vec<u32> = (0..market.tokens.len() as u32)
        .filter(|&t| shard_of(&market.tokens[t as usize], shards) == 0)
        .collect();
    if mine.is_empty() {
        return (0.0, 0, 0.0);
    }
    let mut rng = engine::sim::Rng::new(99);
    let at = T0 + 2 * NANOS_PER_SEC;
    let calm: Vec<Envelope> = (0..1_000_000u64)
        .map(|i| {
            let t = mine[rng.zipf(mine.len() as u64) as usize] as usize;
            Envelope {
                seq: u64::MAX / 2 + i,
                clock: at,
                event: Event::Price {
                    token: market.tokens[t],
                    fdv_usd: market.start_fdv[t] * (1.0 + 0.1 * rng.unit()),
                    at,
                },
            }
        })
        .collect();
    let mut out: Vec<Effect> = Vec::new();
    for env in &calm {
        state.apply(env, &mut out);
    }
    out.clear();
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        state.apply_all(&calm, &mut out);
    }
    let noncross = (rounds * calm.len()) as f64 / start.elapsed().as_secs_f64();
    let alerts = out.len() as u64;

    let ours: Vec<Envelope> = pool
        .iter()
        .filter_map(|tick| match *tick {
            Tick::Price { token, fdv_usd }
                if shard_of(&market.tokens[token as usize], shards) == 0 =>
            {
                Some(Envelope {
                    seq: 1,
                    clock: at,
                    event: Event::Price {
                        token: market.tokens[token as usize],
                        fdv_usd,
                        at,
                    },
                })
            }
            _ => None,
        })
        .collect();
    out.clear();
    let start = Instant::now();
    state.apply_all(&ours, &mut out);
    let mixed = ours.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    (noncross, alerts, mixed)
}

/// Applies the stream's calls of shard 0's tokens to its state once more,
/// one at a time, and times each: the pause a call puts between the events
/// queued behind it. They come after everything applied so far (from
/// `from` on), so each re-checks every follower.
pub(super) fn call_cost(
    state: &mut ShardState,
    market: &Market,
    shards: usize,
    pool: &[Tick],
    from: Nanos,
) -> Histogram<u64> {
    let mut hist = histogram();
    let mut out = Vec::new();
    let step = step_nanos(market.spec.tokens);
    let mut at = from;
    for tick in pool {
        if let Tick::Call { token, .. } = *tick
            && shard_of(&market.tokens[token as usize], shards) == 0
        {
            at += step;
            let env = envelope(tick, &market.tokens, market.spec.channels, 1, at);
            let start = Instant::now();
            state.apply(&env, &mut out);
            hist.saturating_record(start.elapsed().as_nanos() as u64);
            out.clear();
        }
    }
    hist
}
