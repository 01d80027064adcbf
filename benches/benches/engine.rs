//! The shard's hot path, without threads or parsing: `ShardState::apply`.
//!
//! `price_no_cross/{1,1000}_chats`: a price update that crosses no
//! threshold, on a token tracked by 1 chat and by 1,000 chats. The tracked
//! entries sit in a heap keyed by next crossing, so both should cost the
//! same: one map lookup and one comparison (issue target: the 1-chat cost
//! divided by the 1,000-chat cost is at least 0.8).
//!
//! Run: `cargo bench -p callwatch-benches --bench engine`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engine::Rules;
use engine::effect::Effect;
use engine::event::{Envelope, Event, SettingsPatch};
use engine::parse::LineParser;
use engine::shard::ShardState;
use engine::time::NANOS_PER_SEC;
use engine::token::Token;

const T0: i64 = 1_795_600_800 * NANOS_PER_SEC;

/// A shard where `chats` chats track one token called at $100,000.
fn tracked_by(chats: i64, token: Token) -> ShardState {
    let mut shard = ShardState::new(Rules::default());
    let mut out = Vec::new();
    let mut seq = 0;
    let mut apply = |shard: &mut ShardState, event: Event| {
        seq += 1;
        shard.apply(
            &Envelope {
                seq,
                clock: T0,
                event,
            },
            &mut out,
        );
    };
    for chat_id in 1..=chats {
        apply(
            &mut shard,
            Event::Subscribe {
                chat_id,
                at: T0,
                expires_at: T0 + 365 * 86_400 * NANOS_PER_SEC,
                plan: None,
            },
        );
        apply(
            &mut shard,
            Event::Settings {
                chat_id,
                at: T0,
                patch: Box::new(SettingsPatch {
                    min_callers: Some(1),
                    ..SettingsPatch::default()
                }),
            },
        );
    }
    apply(
        &mut shard,
        Event::Call {
            token,
            channel_id: -1001,
            fdv_usd: 100_000.0,
            at: T0,
        },
    );
    assert_eq!(
        shard.stats().tracked,
        chats as u64,
        "every chat tracks the token"
    );
    shard
}

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

criterion_group!(benches, price_no_cross, parsing);
criterion_main!(benches);
