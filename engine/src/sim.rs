//! A seeded synthetic market: chats that subscribe and choose settings,
//! channels that call tokens, and prices that random-walk with the odd pump
//! and dump. The demo, the benches and the load test drive the engine with
//! it; the same seed gives the same events on every machine and version
//! (the generator is written here, not borrowed, for that reason).

use crate::event::{ChannelId, Event, SettingsPatch};
use crate::time::{NANOS_PER_SEC, Nanos};
use crate::token::Token;

/// SplitMix64: tiny, fast, and fixed forever, so seeds stay meaningful.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Zipf-like rank in [0, n): rank k is drawn about 1/k as often as rank
    /// 1, so a few tokens get most of the traffic.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let r = (n as f64).powf(self.unit()) as u64;
        r.saturating_sub(1).min(n - 1)
    }
}

/// A token address from 32 random bytes.
pub fn token(rng: &mut Rng) -> Token {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Token::solana(bytes)
}

/// `n` distinct Solana addresses minted so that the unkeyed fold an
/// earlier version hashed tokens by (the four 8-byte words XORed, rotated
/// by 0, 16, 32 and 48 bits) gives one value for all of them: hostile input
/// for every table keyed by token, and the benchmark of [2.3].
pub fn colliding_tokens(n: usize, seed: u64) -> Vec<Token> {
    let mut rng = Rng::new(seed);
    let target = rng.next_u64();
    (0..n)
        .map(|_| {
            let (w0, w1, w2) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
            let w3 = (target ^ w0 ^ w1.rotate_left(16) ^ w2.rotate_left(32)).rotate_right(48);
            let mut bytes = [0u8; 32];
            for (chunk, w) in bytes.chunks_mut(8).zip([w0, w1, w2, w3]) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            Token::solana(bytes)
        })
        .collect()
}

/// The shape of a simulated market.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketConfig {
    pub seed: u64,
    pub tokens: u64,
    pub channels: u64,
    pub chats: u64,
    /// Share of token events that are calls (the rest are prices).
    pub call_share: f64,
    /// Stream time between two events.
    pub step_nanos: Nanos,
    /// Stream time of the first event.
    pub start: Nanos,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            seed: 7,
            tokens: 2_000,
            channels: 40,
            chats: 50,
            call_share: 0.02,
            step_nanos: 50_000_000,
            start: 1_795_600_800 * NANOS_PER_SEC, // 2026-11-25T10:00:00Z
        }
    }
}

/// An endless stream of events: first every chat's subscription and
/// settings, then calls and prices.
#[derive(Debug, Clone)]
pub struct Market {
    cfg: MarketConfig,
    rng: Rng,
    tokens: Vec<(Token, f64)>,
    channels: Vec<ChannelId>,
    now: Nanos,
    setup: Vec<Event>,
}

impl Market {
    pub fn new(cfg: MarketConfig) -> Self {
        assert!(
            cfg.tokens > 0 && cfg.channels > 0,
            "a market needs tokens and channels"
        );
        let mut rng = Rng::new(cfg.seed);
        let tokens = (0..cfg.tokens)
            .map(|_| (token(&mut rng), 20_000.0 + rng.unit() * 480_000.0))
            .collect();
        let channels: Vec<ChannelId> = (0..cfg.channels)
            .map(|i| -1_001_000_000_000 - i as i64)
            .collect();
        let now = cfg.start;
        let mut setup = Vec::new();
        for i in 0..cfg.chats {
            let chat_id = 1_000 + i as i64;
            setup.push(Event::Subscribe {
                chat_id,
                at: now,
                expires_at: now + 30 * 24 * 3600 * NANOS_PER_SEC,
                plan: None,
            });
            // Most chats follow everything; some pick a handful of channels.
            let follow = if rng.below(4) == 0 {
                let mut list: Vec<ChannelId> = (0..5)
                    .map(|_| channels[rng.below(cfg.channels) as usize])
                    .collect();
                list.sort_unstable();
                list.dedup();
                list
            } else {
                Vec::new()
            };
            setup.push(Event::Settings {
                chat_id,
                at: now,
                patch: Box::new(SettingsPatch {
                    min_callers: Some(2 + rng.below(3) as u32),
                    lookback_minutes: Some(30 + 30 * rng.below(8) as u32),
                    min_fdv_usd: None,
                    max_fdv_usd: None,
                    follow: Some(follow),
                }),
            });
        }
        setup.reverse();
        Market {
            cfg,
            rng,
            tokens,
            channels,
            now,
            setup,
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        if let Some(e) = self.setup.pop() {
            return e;
        }
        self.now += self.cfg.step_nanos;
        let rng = &mut self.rng;
        let t = rng.zipf(self.cfg.tokens) as usize;
        let (token, fdv) = &mut self.tokens[t];
        if rng.unit() < self.cfg.call_share {
            let channel = self.channels[rng.zipf(self.cfg.channels) as usize];
            return Event::Call {
                token: *token,
                channel_id: channel,
                fdv_usd: *fdv,
                at: self.now,
            };
        }
        let r = rng.unit();
        let factor = if r < 0.0005 {
            3.0 + rng.unit() * 30.0 // a pump
        } else if r < 0.0010 {
            0.1 + rng.unit() * 0.4 // a dump
        } else {
            1.0 + (rng.unit() - 0.5) * 0.04
        };
        *fdv = (*fdv * factor).clamp(1_000.0, 1e12);
        Event::Price {
            token: *token,
            fdv_usd: *fdv,
            at: self.now,
        }
    }
}

impl Iterator for Market {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let a: Vec<Event> = Market::new(MarketConfig::default()).take(500).collect();
        let b: Vec<Event> = Market::new(MarketConfig::default()).take(500).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn generated_events_parse_back_as_themselves() {
        let mut p = crate::parse::LineParser::new();
        let mut line = Vec::new();
        for ev in Market::new(MarketConfig::default()).take(2_000) {
            line.clear();
            ev.write_json(&mut line);
            let back = p.parse(line.strip_suffix(b"\n").unwrap()).unwrap();
            assert_eq!(back, ev, "{}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn zipf_stays_in_range() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 10, 1_000] {
            for _ in 0..1_000 {
                assert!(rng.zipf(n) < n);
            }
        }
    }
}
