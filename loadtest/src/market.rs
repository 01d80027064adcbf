//! The load test's synthetic market: tokens with Zipf popularity, tracked
//! keys spread over them, and a stream of price updates (random walks with
//! the odd pump and dump) with a share of calls.
//!
//! Everything is drawn from the seed, so the engine run, the baseline run
//! and the missed-crossing count all see the same keys and the same prices.

use engine::sim::{self, Rng};
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;

/// 2026-11-25T10:00:00Z: when every key's tracking started.
pub const T0: Nanos = 1_795_600_800 * NANOS_PER_SEC;

/// The shape of the market.
#[derive(Debug, Clone)]
pub struct Spec {
    pub seed: u64,
    pub tokens: u64,
    pub chats: u64,
    pub channels: u64,
    pub keys: u64,
    /// Share of stream events that are calls.
    pub call_share: f64,
    /// Chance that a price update is a pump (3–20x), and again a dump.
    pub pump_rate: f64,
    /// How updates pick their token: by Zipf popularity (`true`), or
    /// uniformly, as a feed that polls every token at the same pace.
    pub zipf_feed: bool,
}

/// One stream event before it gets its `seq` and time.
#[derive(Debug, Clone, Copy)]
pub enum Tick {
    Price {
        token: u32,
        fdv_usd: f64,
    },
    Call {
        token: u32,
        channel: u32,
        fdv_usd: f64,
    },
}

impl Tick {
    /// The index of the token it is about.
    pub fn token(&self) -> u32 {
        match *self {
            Tick::Price { token, .. } | Tick::Call { token, .. } => token,
        }
    }
}

/// Tokens, their starting values and how many keys each has.
#[derive(Debug)]
pub struct Market {
    pub spec: Spec,
    pub tokens: Vec<Token>,
    pub start_fdv: Vec<f64>,
    pub keys_per_token: Vec<u32>,
    /// Where each token's run of chats starts (chats of token t are
    /// `offset[t] .. offset[t] + keys[t]`, wrapping around).
    offsets: Vec<u64>,
}

impl Market {
    pub fn new(spec: Spec) -> Self {
        let mut rng = Rng::new(spec.seed);
        let tokens: Vec<Token> = (0..spec.tokens).map(|_| sim::token(&mut rng)).collect();
        let start_fdv = (0..spec.tokens)
            .map(|_| 20_000.0 * (1.0 + 99.0 * rng.unit()))
            .collect();
        let keys_per_token = spread(spec.keys, spec.tokens, spec.chats);
        let offsets = (0..spec.tokens).map(|_| rng.below(spec.chats)).collect();
        Market {
            spec,
            tokens,
            start_fdv,
            keys_per_token,
            offsets,
        }
    }

    pub fn chat_id(i: u64) -> i64 {
        1_000_000 + i as i64
    }

    pub fn channel_id(i: u64) -> i64 {
        -1_001_000_000_000 - i as i64
    }

    /// Every tracked key as (token index, chat id, fdv at call), in a fixed
    /// order. Values at call lie between 0.6x and 1.4x of the token's
    /// starting value, so price walks cross some of them early and most late.
    pub fn keys(&self) -> impl Iterator<Item = (u32, i64, f64)> + '_ {
        let mut rng = Rng::new(self.spec.seed ^ 0x6b65_7973);
        (0..self.spec.tokens as u32).flat_map(move |t| {
            let n = u64::from(self.keys_per_token[t as usize]);
            let base = self.start_fdv[t as usize];
            let offset = self.offsets[t as usize];
            let chats = self.spec.chats;
            (0..n)
                .map(|j| (offset + j) % chats)
                .map(|c| (Market::chat_id(c), base * (0.6 + 0.8 * rng.unit())))
                .collect::<Vec<_>>()
                .into_iter()
                .map(move |(chat, fdv)| (t, chat, fdv))
        })
    }

    /// `n` stream events: prices drawn by Zipf popularity that random-walk
    /// ±1 % with rare pumps (3–20x) and dumps, and a share of calls.
    pub fn ticks(&self, n: usize, seed: u64) -> Vec<Tick> {
        let mut rng = Rng::new(seed);
        let mut fdv = self.start_fdv.clone();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = if self.spec.zipf_feed {
                rng.zipf(self.spec.tokens)
            } else {
                rng.below(self.spec.tokens)
            } as usize;
            let token = t as u32;
            if rng.unit() < self.spec.call_share {
                let channel = rng.below(self.spec.channels) as u32;
                out.push(Tick::Call {
                    token,
                    channel,
                    fdv_usd: fdv[t],
                });
                continue;
            }
            let r = rng.unit();
            let pump = self.spec.pump_rate;
            let factor = if r < pump {
                3.0 + 17.0 * rng.unit()
            } else if r < 2.0 * pump {
                0.2 + 0.3 * rng.unit()
            } else {
                1.0 + (rng.unit() - 0.5) * 0.02
            };
            let start = self.start_fdv[t];
            fdv[t] = (fdv[t] * factor).clamp(start / 50.0, start * 500.0);
            out.push(Tick::Price {
                token,
                fdv_usd: fdv[t],
            });
        }
        out
    }
}

/// Splits `keys` over `tokens` with Zipf weights (exponent 0.8), no token
/// holding more than `cap` keys (one per chat); what the cap cuts off goes
/// to the next tokens in line.
fn spread(keys: u64, tokens: u64, cap: u64) -> Vec<u32> {
    assert!(
        keys <= tokens * cap,
        "{keys} keys need at least {} chats for {tokens} tokens",
        keys.div_ceil(tokens)
    );
    let weights: Vec<f64> = (1..=tokens).map(|i| (i as f64).powf(-0.8)).collect();
    let total: f64 = weights.iter().sum();
    let mut counts: Vec<u64> = weights
        .iter()
        .map(|w| ((w / total) * keys as f64).floor() as u64)
        .map(|c| c.min(cap))
        .collect();
    let mut left = keys - counts.iter().sum::<u64>();
    let mut i = 0usize;
    while left > 0 {
        if counts[i] < cap {
            counts[i] += 1;
            left -= 1;
        }
        i = (i + 1) % counts.len();
    }
    counts
        .into_iter()
        .map(|c| u32::try_from(c).expect("keys per token fit u32"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_every_key_once_within_the_cap() {
        let c = spread(10_000, 100, 500);
        assert_eq!(c.iter().map(|&v| u64::from(v)).sum::<u64>(), 10_000);
        assert!(c.iter().all(|&v| v <= 500));
        assert!(c[0] >= c[99], "popular tokens hold more keys");
    }

    #[test]
    fn keys_are_unique_pairs() {
        let m = Market::new(Spec {
            seed: 1,
            tokens: 50,
            chats: 40,
            channels: 10,
            keys: 1_500,
            call_share: 0.0,
            pump_rate: 0.0,
            zipf_feed: true,
        });
        let mut pairs: Vec<(u32, i64)> = m.keys().map(|(t, c, _)| (t, c)).collect();
        assert_eq!(pairs.len(), 1_500);
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), 1_500);
    }
}
