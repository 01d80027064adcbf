//! The shard's hot path and what sits next to it, on one thread: no
//! channels, no parsing except in `parse/*`. Handing batches between
//! threads is measured in `handoff.rs`.
//!
//! Groups, each described on its function below:
//! - `price_no_cross/{1,1000}_chats`: a price update that crosses nothing.
//! - `parse/*`: token addresses and a price line.
//! - `shard_apply/call`, `shard_apply/price_crossing`: `ShardState::apply`
//!   of a call, and of a price that crosses a threshold for one entry.
//! - `routing/shard_of/{2,8}`: which shard owns a token.
//! - `rebuild/restore_insert{,_new_chats}`: loading tracked entries from
//!   storage with `ShardState::restore`.
//!
//! Every group reports time per element (`Throughput::Elements`).
//!
//! Run: `cargo bench -p callwatch-benches --bench engine`
//! (one group: `cargo bench -p callwatch-benches --bench engine -- shard_apply`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use engine::Rules;
use engine::effect::Effect;
use engine::event::{Envelope, Event, SettingsPatch};
use engine::parse::LineParser;
use engine::router::shard_of;
use engine::shard::{Restore, ShardState};
use engine::sim::{self, Rng};
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;

const T0: i64 = 1_795_600_800 * NANOS_PER_SEC;
const MINUTE: Nanos = 60 * NANOS_PER_SEC;
const HOUR: Nanos = 60 * MINUTE;

/// An envelope whose stream clock is the event's own time (every feed here
/// has times that never go back).
fn envelope(seq: u64, event: Event) -> Envelope {
    Envelope {
        seq,
        clock: event.at(),
        event,
    }
}

/// Subscribes chats `ids` for good and gives them `patch`.
fn subscribe_all(
    shard: &mut ShardState,
    ids: impl IntoIterator<Item = i64>,
    patch: &SettingsPatch,
) {
    let mut out = Vec::new();
    for chat_id in ids {
        let subscribe = Event::Subscribe {
            chat_id,
            at: T0,
            expires_at: Nanos::MAX,
            plan: None,
        };
        shard.apply(&envelope(0, subscribe), &mut out);
        let settings = Event::Settings {
            chat_id,
            at: T0,
            patch: Box::new(patch.clone()),
        };
        shard.apply(&envelope(0, settings), &mut out);
    }
    assert!(out.is_empty(), "chat events raise no alert");
}

/// A shard where `chats` chats track one token called at $100,000.
fn tracked_by(chats: i64, token: Token) -> ShardState {
    let mut shard = ShardState::new(Rules::default());
    let patch = SettingsPatch {
        min_callers: Some(1),
        ..SettingsPatch::default()
    };
    subscribe_all(&mut shard, 1..=chats, &patch);
    let call = Event::Call {
        token,
        channel_id: -1001,
        fdv_usd: 100_000.0,
        at: T0,
    };
    shard.apply(&envelope(1, call), &mut Vec::new());
    assert_eq!(
        shard.stats().tracked,
        chats as u64,
        "every chat tracks the token"
    );
    shard
}

/// `price_no_cross/{1,1000}_chats`: a price update that crosses no
/// threshold, on a token tracked by 1 chat and by 1,000 chats. The tracked
/// entries sit in a heap keyed by next crossing, so both should cost the
/// same: one map lookup and one comparison (issue target: the 1-chat cost
/// divided by the 1,000-chat cost is at least 0.8).
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- price_no_cross`
fn price_no_cross(c: &mut Criterion) {
    let token: Token = "So11111111111111111111111111111111111111112"
        .parse()
        .unwrap();
    let mut group = c.benchmark_group("price_no_cross");
    group.throughput(Throughput::Elements(1));
    for chats in [1i64, 1_000] {
        let mut shard = tracked_by(chats, token);
        // Prices wander between 1.0x and 1.9x: never a crossing.
        let prices: Vec<Envelope> = (0..1024)
            .map(|i| Envelope {
                seq: 10_000 + i,
                clock: T0 + 1,
                event: Event::Price {
                    token,
                    fdv_usd: 100_000.0 * (1.0 + 0.9 * ((i * 37 % 101) as f64 / 101.0)),
                    at: T0 + 1,
                },
            })
            .collect();
        let mut out: Vec<Effect> = Vec::new();
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(format!("{chats}_chats")), |b| {
            b.iter(|| {
                shard.apply(black_box(&prices[i & 1023]), &mut out);
                i += 1;
            });
        });
        assert!(out.is_empty(), "no price crossed a threshold");
    }
    group.finish();
}

/// `parse/{token_solana,token_evm,price_line}`: a token address of each
/// chain, and a whole `price` line, parsed.
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- parse`
fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    let sol = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
    let evm = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
    group.bench_function("token_solana", |b| b.iter(|| Token::parse(black_box(sol))));
    group.bench_function("token_evm", |b| b.iter(|| Token::parse(black_box(evm))));
    let line = format!(
        r#"{{"type":"price","at":"2026-11-25T10:00:00.250Z","token":"{sol}","fdv_usd":125000.5}}"#
    );
    let mut parser = LineParser::new();
    group.bench_function("price_line", |b| {
        b.iter(|| parser.parse(black_box(line.as_bytes())).expect("valid"));
    });
    group.finish();
}

/// Events prepared per timed stretch in the `iter_custom` loops below.
const CHUNK: u64 = 1024;

/// Subscribed chats in `shard_apply/call`; all follow every channel.
const CALL_CHATS: i64 = 50;
/// Tokens the call feed cycles over.
const CALL_TOKENS: u64 = 1_024;
/// Channels the call feed draws from.
const CALL_CHANNELS: u64 = 16;
/// Consecutive calls on one token.
const BURST: u64 = 8;
/// Stream time between one call and the next: a token comes round again
/// 8,192 calls (2 h 16 min) later, past `CALL_TTL` and the 60-minute
/// lookback, so every burst is decided afresh.
const CALL_STEP: Nanos = NANOS_PER_SEC;
/// TTL of records and tracked entries in `shard_apply/call`. Shorter than
/// the default 168 h so that the feed can come round without its clock
/// racing towards the end of `i64` nanoseconds.
const CALL_TTL: Nanos = 2 * HOUR;
/// The feed restarts on a fresh shard (untimed) after this many calls,
/// 30 years of stream time: far more than any measurement reaches.
const CALL_HORIZON: u64 = 30 * 365 * 24 * 3600;
/// Which channel makes call `j` of a two-channel burst, as an offset into
/// the token's channels: A, A again, B (the second caller), then C, A, D,
/// B, E.
const BURST_CHANNELS: [u64; BURST as usize] = [0, 0, 1, 2, 0, 3, 1, 4];

/// The call feed of `shard_apply/call`: call `i` of an endless, periodic
/// stream with times that only go forward.
///
/// In a burst, the first call makes a record and rejects (one caller), the
/// second (same channel, later) re-checks and rejects again, the third
/// brings a second channel and every chat accepts (50 alerts, 50 tracked
/// entries); the other five re-check chats that have accepted. One burst in
/// four has a single channel calling eight times: eight rejecting
/// re-checks. So 3 calls in 32 accept and the rest re-check.
struct CallFeed {
    tokens: Vec<Token>,
}

impl CallFeed {
    fn new() -> Self {
        let mut rng = Rng::new(11);
        CallFeed {
            tokens: (0..CALL_TOKENS).map(|_| sim::token(&mut rng)).collect(),
        }
    }

    /// Call number `i`, and how many alerts it must raise.
    fn call(&self, i: u64) -> (Envelope, usize) {
        let (burst, j) = (i / BURST, i % BURST);
        let k = burst % CALL_TOKENS;
        let lone = burst % 4 == 3;
        let offset = if lone { 0 } else { BURST_CHANNELS[j as usize] };
        let channel = (k * 5 + offset) % CALL_CHANNELS;
        let event = Event::Call {
            token: self.tokens[k as usize],
            channel_id: -1_001_000_000_000 - channel as i64,
            fdv_usd: 50_000.0 + 1_000.0 * (i % 97) as f64,
            at: T0 + i as Nanos * CALL_STEP,
        };
        let alerts = if !lone && j == 2 {
            CALL_CHATS as usize
        } else {
            0
        };
        (envelope(i + 1, event), alerts)
    }

    /// A shard with the 50 chats that has seen one full period of the feed,
    /// so every token is known; the feed goes on from call `PERIOD`.
    fn warm_shard(&self) -> ShardState {
        let mut shard = ShardState::new(Rules {
            ttl_nanos: CALL_TTL,
            ..Rules::default()
        });
        let patch = SettingsPatch {
            min_callers: Some(2),
            lookback_minutes: Some(60),
            ..SettingsPatch::default()
        };
        subscribe_all(&mut shard, 1..=CALL_CHATS, &patch);
        let mut out = Vec::new();
        for i in 0..CallFeed::PERIOD {
            shard.apply(&self.call(i).0, &mut out);
        }
        shard
    }

    const PERIOD: u64 = CALL_TOKENS * BURST;
}

/// `shard_apply/call`: `ShardState::apply` of one `call` event on a shard
/// with 50 subscribed chats that follow every channel (min_callers 2,
/// lookback 60 minutes), so every call is decided for all 50. The feed
/// ([`CallFeed`]) cycles over 1,024 tokens and 16 channels with times
/// moving forward: 29 calls in 32 re-check (record found or made, callers
/// merged, rejected or already accepted), 3 in 32 accept for all 50 chats
/// (alert plus tracked entry each). Only `apply` is timed: the envelopes
/// are made beforehand, and after each 1,024 calls, untimed, the alerts are
/// counted against the feed's and dropped, and `maintain` sweeps expired
/// state, so the shard stays the same size however long the bench runs.
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- shard_apply/call`
fn apply_call(group: &mut BenchmarkGroup<'_, WallTime>) {
    let feed = CallFeed::new();
    let mut shard = feed.warm_shard();
    let mut next = CallFeed::PERIOD;
    let mut out: Vec<Effect> = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK as usize);
    let mut max_tracked = 0;
    group.bench_function("call", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if next >= CALL_HORIZON {
                    shard = feed.warm_shard();
                    next = CallFeed::PERIOD;
                }
                let n = left.min(CHUNK);
                chunk.clear();
                let mut expected = 0;
                for i in next..next + n {
                    let (env, alerts) = feed.call(i);
                    chunk.push(env);
                    expected += alerts;
                }
                next += n;
                let start = Instant::now();
                for env in &chunk {
                    shard.apply(black_box(env), &mut out);
                }
                total += start.elapsed();
                assert_eq!(out.len(), expected, "the feed's accepts, exactly");
                out.clear();
                max_tracked = max_tracked.max(shard.stats().tracked);
                shard.maintain(CALL_TOKENS as usize);
                left -= n;
            }
            total
        });
    });
    // At most one live set of 50 entries per token, and what expired since
    // the last sweep.
    assert!(
        max_tracked <= 2 * CALL_TOKENS * CALL_CHATS as u64,
        "state stays bounded: {max_tracked} tracked entries"
    );
}

/// Entries tracking the token in `shard_apply/price_crossing`.
const CROSS_ENTRIES: i64 = 1_000;

/// A shard with `CROSS_ENTRIES` subscribed chats tracking one token,
/// restored at call prices spread over $100,000..$150,000 (so a threshold's
/// crossings of all entries come before any entry's next threshold).
fn crossing_shard(token: Token) -> ShardState {
    let mut shard = ShardState::new(Rules::default());
    subscribe_all(&mut shard, 1..=CROSS_ENTRIES, &SettingsPatch::default());
    for chat_id in 1..=CROSS_ENTRIES {
        shard.restore(&Restore {
            token,
            chat_id,
            fdv_at_call: cross_fdv_at_call(chat_id),
            started: T0,
            last_threshold: None,
        });
    }
    shard
}

fn cross_fdv_at_call(chat_id: i64) -> f64 {
    100_000.0 * (1.0 + 0.5 * (chat_id - 1) as f64 / CROSS_ENTRIES as f64)
}

/// `shard_apply/price_crossing`: `ShardState::apply` of a price that
/// crosses a threshold for exactly 1 of 1,000 entries tracking the token:
/// pop it from the heap, raise its alert, push it back keyed by its next
/// threshold. The prices climb through each entry's 2x, 5x, 10x, 20x and
/// 50x in turn (5,000 prices, each a crossing, none the last threshold, so
/// every entry goes back into the heap); then a fresh shard is built,
/// untimed. Every price is checked to raise exactly one alert.
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- shard_apply/price_crossing`
fn apply_price_crossing(group: &mut BenchmarkGroup<'_, WallTime>) {
    let token = sim::token(&mut Rng::new(12));
    let thresholds = Rules::default().thresholds;
    let below_top = &thresholds[..thresholds.len() - 1];
    let mut prices = Vec::with_capacity(below_top.len() * CROSS_ENTRIES as usize);
    for &h in below_top {
        for chat_id in 1..=CROSS_ENTRIES {
            let seq = prices.len() as u64 + 1;
            // A hair above the exact product, so the contract's division
            // gives at least `h`.
            let fdv_usd = cross_fdv_at_call(chat_id) * h * (1.0 + 1e-9);
            let at = T0 + seq as Nanos;
            prices.push(envelope(seq, Event::Price { token, fdv_usd, at }));
        }
    }
    let mut out: Vec<Effect> = Vec::new();
    group.bench_function("price_crossing", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut shard = crossing_shard(token);
                let n = left.min(prices.len() as u64);
                let start = Instant::now();
                for env in &prices[..n as usize] {
                    shard.apply(black_box(env), &mut out);
                }
                total += start.elapsed();
                assert_eq!(out.len() as u64, n, "one crossing per price");
                assert_eq!(shard.stats().tracked, CROSS_ENTRIES as u64);
                out.clear();
                left -= n;
            }
            total
        });
    });
}

fn shard_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_apply");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(50);
    apply_call(&mut group);
    apply_price_crossing(&mut group);
    group.finish();
}

/// 1,024 token addresses, one in four EVM, parsed from their text form the
/// way the router receives them.
fn token_pool() -> Vec<Token> {
    let mut rng = Rng::new(13);
    (0..1024)
        .map(|i| {
            let text = if i % 4 == 3 {
                let mut s = String::from("0x");
                for _ in 0..20 {
                    s.push_str(&format!("{:02x}", rng.below(256)));
                }
                s
            } else {
                sim::token(&mut rng).to_string()
            };
            Token::parse(&text).expect("a valid address")
        })
        .collect()
}

/// `routing/shard_of/{2,8}`: `engine::router::shard_of` (FNV-1a over the
/// address, then a modulo) for 2 and 8 shards, cycling over 1,024 parsed
/// tokens; the shard count is opaque to the compiler, as in the router.
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- routing`
fn routing(c: &mut Criterion) {
    let pool = token_pool();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    for shards in [2usize, 8] {
        group.bench_with_input(
            BenchmarkId::new("shard_of", shards),
            &shards,
            |b, &shards| {
                let mut i = 0usize;
                b.iter(|| {
                    let s = shard_of(black_box(&pool[i & 1023]), black_box(shards));
                    i += 1;
                    s
                });
            },
        );
    }
    group.finish();
}

/// Entries one `rebuild/*` iteration restores.
const RESTORE_ENTRIES: i64 = 100_000;
/// Tokens they spread over.
const RESTORE_TOKENS: u64 = 1_000;

/// `RESTORE_ENTRIES` stored entries: tokens drawn Zipf-like from 1,000 (a
/// few hold thousands of entries, most a handful), one entry per chat
/// 1..=100,000 (so every (token, chat) pair is unique), call prices from
/// $10k to $10M, started within the last six days, and half of them past
/// the 2x or 5x threshold already.
fn stored_entries() -> Vec<Restore> {
    let mut rng = Rng::new(14);
    let tokens: Vec<Token> = (0..RESTORE_TOKENS).map(|_| sim::token(&mut rng)).collect();
    (1..=RESTORE_ENTRIES)
        .map(|chat_id| Restore {
            token: tokens[rng.zipf(RESTORE_TOKENS) as usize],
            chat_id,
            fdv_at_call: 10_000.0 * 1_000f64.powf(rng.unit()),
            started: T0 - rng.below(6 * 24 * HOUR as u64) as Nanos,
            last_threshold: match rng.below(4) {
                0 | 1 => None,
                2 => Some(2.0),
                _ => Some(5.0),
            },
        })
        .collect()
}

/// `rebuild/restore_insert`: `ShardState::restore` of 100,000 stored
/// entries ([`stored_entries`]) into a fresh shard, per entry. The shard
/// is built per iteration, untimed, with chats 1..=100,000 already
/// subscribed, as when a rebuild loads subscriptions before entries; the
/// restored shard is dropped untimed too.
///
/// `rebuild/restore_insert_new_chats`: the same into an empty shard, so
/// every entry also adds its chat.
///
/// Run: `cargo bench -p callwatch-benches --bench engine -- rebuild`
fn rebuild(c: &mut Criterion) {
    let entries = stored_entries();
    let mut group = c.benchmark_group("rebuild");
    group.throughput(Throughput::Elements(RESTORE_ENTRIES as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let restore_all = |mut shard: ShardState| {
        for r in &entries {
            shard.restore(black_box(r));
        }
        shard
    };
    group.bench_function("restore_insert", |b| {
        b.iter_batched(
            || {
                let mut shard = ShardState::new(Rules::default());
                subscribe_all(&mut shard, 1..=RESTORE_ENTRIES, &SettingsPatch::default());
                shard
            },
            restore_all,
            BatchSize::LargeInput,
        );
    });
    group.bench_function("restore_insert_new_chats", |b| {
        b.iter_batched(
            || ShardState::new(Rules::default()),
            restore_all,
            BatchSize::LargeInput,
        );
    });
    group.finish();
    // The entries restore as promised: all of them tracked, on 1,000 tokens.
    let shard = restore_all(ShardState::new(Rules::default()));
    assert_eq!(shard.stats().tracked, RESTORE_ENTRIES as u64);
    assert!(shard.token_count() <= RESTORE_TOKENS as usize);
}

criterion_group!(
    benches,
    price_no_cross,
    parsing,
    shard_apply,
    routing,
    rebuild
);
criterion_main!(benches);
