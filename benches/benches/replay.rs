//! `replay` throughput against a floor: a loop that only parses the same
//! lines with serde_json into a typed struct and does nothing else.
//!
//! Run: `cargo bench -p callwatch-benches --bench replay`
//! (CALLWATCH_BENCH_EVENTS sets the file size, default 1,000,000).

use std::hint::black_box;
use std::io;

use callwatch_benches::market_lines;
use callwatch_ingest::replay::{ReplayOptions, run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::EngineConfig;
use serde::Deserialize;

/// Every field any event has, typed; strings borrowed, as fast as serde
/// gets for these lines.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    at: &'a str,
    token: Option<&'a str>,
    fdv_usd: Option<f64>,
    channel_id: Option<i64>,
    chat_id: Option<i64>,
    expires_at: Option<&'a str>,
    plan: Option<&'a str>,
    min_callers: Option<u32>,
    lookback_minutes: Option<u32>,
    min_fdv_usd: Option<f64>,
    max_fdv_usd: Option<f64>,
    follow: Option<Vec<i64>>,
}

fn events() -> usize {
    std::env::var("CALLWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench(c: &mut Criterion) {
    let n = events();
    let data = market_lines(n);
    let mut group = c.benchmark_group("replay_file");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("serde_json_parse_only_floor", |b| {
        b.iter(|| {
            let mut count = 0usize;
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let parsed: Line<'_> = serde_json::from_slice(line).expect("valid line");
                count += black_box(&parsed).kind.len();
            }
            count
        });
    });
    for shards in [1, 2, 4] {
        let opts = ReplayOptions {
            engine: EngineConfig {
                shards,
                ..EngineConfig::default()
            },
            strict: false,
        };
        group.bench_function(format!("replay_shards_{shards}"), |b| {
            b.iter(|| {
                let mut errors = Vec::new();
                run(&data[..], io::sink(), &mut errors, &opts).expect("replay runs")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
