//! Each call's value and peak, as the shards keep them for the channel
//! leaderboard: on one `ShardState`, and through the sharded router, whose
//! answer must not depend on the number of shards.

use engine::board::leaderboard;
use engine::event::{ChannelId, limits};
use engine::ingest::{Ingest, Outcome};
use engine::shard::{CallOutcome, RestoreCall, ShardState};
use engine::sim::{Market, MarketConfig};
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;
use engine::{EngineConfig, Envelope, Event, Rules, router};

const SOL: &str = "So11111111111111111111111111111111111111112";
const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
/// 2026-11-25T10:00:00Z
const BASE: Nanos = 1_795_600_800 * NANOS_PER_SEC;
const MINUTE: Nanos = 60 * NANOS_PER_SEC;

fn token(s: &str) -> Token {
    s.parse().expect("test token parses")
}

/// A shard fed events in order, its clock the latest time seen.
struct Run {
    shard: ShardState,
    seq: u64,
    clock: Nanos,
}

impl Run {
    fn new() -> Self {
        Run {
            shard: ShardState::new(Rules::default()),
            seq: 0,
            clock: Nanos::MIN,
        }
    }

    fn feed(&mut self, event: Event) {
        self.seq += 1;
        self.clock = self.clock.max(event.at());
        let env = Envelope {
            seq: self.seq,
            clock: self.clock,
            event,
        };
        self.shard.apply(&env, &mut Vec::new());
        self.shard.maintain(64);
    }

    fn call(&mut self, token: &str, channel_id: ChannelId, fdv_usd: f64, minutes: i64) {
        self.feed(Event::Call {
            token: self::token(token),
            channel_id,
            fdv_usd,
            at: BASE + minutes * MINUTE,
        });
    }

    fn price(&mut self, token: &str, fdv_usd: f64, minutes: i64) {
        self.feed(Event::Price {
            token: self::token(token),
            fdv_usd,
            at: BASE + minutes * MINUTE,
        });
    }

    /// (token, channel, minutes after BASE, value at call, peak), sorted.
    fn outcomes(&self) -> Vec<(String, ChannelId, i64, f64, f64)> {
        let mut v: Vec<_> = self
            .shard
            .call_outcomes(Nanos::MIN)
            .iter()
            .map(|o| {
                (
                    o.token.to_string(),
                    o.channel_id,
                    (o.at - BASE) / MINUTE,
                    o.fdv_at_call,
                    o.peak_fdv,
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }
}

#[test]
fn peak_rises_with_prices_and_later_calls_and_never_falls() {
    let mut r = Run::new();
    r.call(SOL, -1, 100.0, 0);
    r.price(SOL, 150.0, 1);
    r.price(SOL, 120.0, 2);
    assert_eq!(r.outcomes(), [(SOL.into(), -1, 0, 100.0, 150.0)]);
    // Another channel's call is a new current value for the earlier call.
    r.call(SOL, -2, 300.0, 3);
    r.price(SOL, 50.0, 4);
    assert_eq!(
        r.outcomes(),
        [
            (SOL.into(), -2, 3, 300.0, 300.0),
            (SOL.into(), -1, 0, 100.0, 300.0),
        ]
    );
    r.price(SOL, 400.0, 5);
    r.price(JUP, 1e9, 6);
    assert_eq!(
        r.outcomes(),
        [
            (SOL.into(), -2, 3, 300.0, 400.0),
            (SOL.into(), -1, 0, 100.0, 400.0),
        ],
        "a price of another token, or of nobody's call, changes nothing"
    );
}

#[test]
fn a_recall_resets_the_peak_and_a_late_older_call_does_not() {
    let mut r = Run::new();
    r.call(SOL, -1, 100.0, 10);
    r.price(SOL, 500.0, 11);
    r.call(SOL, -1, 80.0, 5);
    assert_eq!(
        r.outcomes(),
        [(SOL.into(), -1, 10, 100.0, 500.0)],
        "an older call neither moves the time nor resets the peak"
    );
    r.call(SOL, -1, 200.0, 20);
    assert_eq!(r.outcomes(), [(SOL.into(), -1, 20, 200.0, 200.0)]);
    r.price(SOL, 250.0, 21);
    assert_eq!(r.outcomes(), [(SOL.into(), -1, 20, 200.0, 250.0)]);
}

#[test]
fn expired_calls_leave_the_outcomes() {
    let mut r = Run::new();
    r.call(SOL, -1, 100.0, 0);
    r.call(JUP, -1, 100.0, 60);
    let week = limits::MAX_LOOKBACK_NANOS / MINUTE;
    r.price(JUP, 120.0, week + 1);
    assert_eq!(r.outcomes(), [(JUP.into(), -1, 60, 100.0, 120.0)]);
    r.price(JUP, 130.0, week + 61);
    assert_eq!(r.outcomes(), []);
    assert_eq!(r.shard.token_count(), 0, "tokens left with nothing go");
}

#[test]
fn outcomes_since_a_time_with_a_known_value_only() {
    let mut r = Run::new();
    r.call(SOL, -1, 100.0, 0);
    r.call(SOL, -2, 100.0, 30);
    for (channel_id, fdv) in [(-3, f64::NAN), (-4, 0.0), (-5, 90.0)] {
        r.shard.restore_call(&RestoreCall {
            token: token(SOL),
            channel_id,
            at: BASE + 40 * MINUTE,
            fdv_at_call: fdv,
            peak_fdv: f64::NAN,
        });
    }
    r.price(SOL, 95.0, 50);
    let since: Vec<_> = r
        .shard
        .call_outcomes(BASE + 30 * MINUTE)
        .iter()
        .map(|o| (o.channel_id, o.peak_fdv))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    // -5's peak was unknown, so it starts at its value and rises with the
    // price; -3 and -4 have no value and are left out.
    assert_eq!(since, [(-5, 95.0), (-2, 100.0)]);
}

/// A market with calls spread over two weeks, so that some expire.
fn market_events(n: usize) -> Vec<Envelope> {
    let mut ingest = Ingest::new();
    Market::new(MarketConfig {
        tokens: 300,
        chats: 5,
        call_share: 0.2,
        step_nanos: MINUTE,
        ..MarketConfig::default()
    })
    .take(n)
    .filter_map(|e| match ingest.event(e) {
        Outcome::Event(env) => Some(env),
        _ => None,
    })
    .collect()
}

/// The outcomes read straight off the contract: per (token, channel) the
/// latest call, its value, and the highest value of every later event of
/// the token. Plain maps, no floor; an independent check of the shard's.
fn naive_outcomes(envs: &[Envelope], since: Nanos) -> Vec<CallOutcome> {
    let mut calls = std::collections::BTreeMap::<(String, ChannelId), CallOutcome>::new();
    for env in envs {
        let (token, fdv_usd) = match &env.event {
            Event::Call { token, fdv_usd, .. } | Event::Price { token, fdv_usd, .. } => {
                (token, *fdv_usd)
            }
            _ => continue,
        };
        for o in calls.values_mut().filter(|o| o.token == *token) {
            o.peak_fdv = o.peak_fdv.max(fdv_usd);
        }
        if let Event::Call { channel_id, at, .. } = env.event {
            let fresh = CallOutcome {
                token: *token,
                channel_id,
                at,
                fdv_at_call: fdv_usd,
                peak_fdv: fdv_usd,
            };
            calls
                .entry((token.to_string(), channel_id))
                .and_modify(|o| {
                    if at >= o.at {
                        *o = fresh;
                    }
                })
                .or_insert(fresh);
        }
    }
    calls.into_values().filter(|o| o.at >= since).collect()
}

fn sorted(mut v: Vec<CallOutcome>) -> Vec<CallOutcome> {
    v.sort_by_key(|o| (o.token.to_string(), o.channel_id));
    v
}

#[test]
fn call_outcomes_through_the_router_match_one_shard_and_a_naive_model() {
    let envs = market_events(20_000);
    let (asked, rest) = envs.split_at(15_000);
    let clock = asked.last().unwrap().clock;
    let since = clock - 3 * 24 * 60 * MINUTE;

    let config = EngineConfig {
        shards: 3,
        pin_threads: false,
        ..EngineConfig::default()
    };
    let (mut engine, mut effects, workers) = router::start(&config).unwrap();
    let drain = std::thread::spawn(move || while effects.next_batch().unwrap().is_some() {});
    for env in asked {
        engine.submit(env.clone()).unwrap();
    }
    let answers = engine.call_outcomes(since).unwrap();
    // Events after the question do not change its answer.
    for env in rest {
        engine.submit(env.clone()).unwrap();
    }
    engine.finish().unwrap();
    let parts: Vec<_> = answers.iter().collect();
    assert_eq!(parts.len(), 3, "one answer per shard");
    drain.join().unwrap();
    workers.join().unwrap();
    let sharded = sorted(parts.into_iter().flatten().collect());

    let mut one = ShardState::new(config.rules());
    for env in asked {
        one.apply(env, &mut Vec::new());
        one.maintain(64);
    }
    let single = sorted(one.call_outcomes(since));
    assert!(single.len() > 100, "{} outcomes", single.len());
    assert!(single.iter().all(|o| o.at >= since));
    assert!(single.iter().any(|o| o.peak_fdv > o.fdv_at_call));
    assert_eq!(sharded, single);
    assert_eq!(single, naive_outcomes(asked, since));
    assert_eq!(
        leaderboard(sharded.iter().rev().copied(), 10),
        leaderboard(single, 10)
    );
}
