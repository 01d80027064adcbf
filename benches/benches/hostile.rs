//! Hash flooding ([2.3]: against addresses minted to collide, replay stays
//! within 1.5 times the time of random ones): 20,000 Solana addresses, each
//! called once and priced twice, replayed through the sharded engine, once
//! with addresses drawn at random and once with addresses minted so that
//! the unkeyed fold tokens were once hashed by gives one value for all.
//!
//! Run: `cargo bench -p callwatch-benches --bench hostile`
//! (CALLWATCH_BENCH_TOKENS sets the number of addresses, default 20,000).

use std::io;

use callwatch_benches::called_and_priced_lines;
use callwatch_ingest::replay::{ReplayOptions, run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::EngineConfig;
use engine::sim::{Rng, colliding_tokens, token};

fn tokens() -> usize {
    std::env::var("CALLWATCH_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn bench(c: &mut Criterion) {
    let n = tokens();
    let mut rng = Rng::new(3);
    let random: Vec<_> = (0..n).map(|_| token(&mut rng)).collect();
    let minted = colliding_tokens(n, 3);
    let mut group = c.benchmark_group("hash_flooding");
    group.sample_size(10);
    group.throughput(Throughput::Elements(3 * n as u64));
    let opts = ReplayOptions {
        engine: EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
        strict: true,
    };
    for (name, tokens) in [("random", &random), ("minted_to_collide", &minted)] {
        let data = called_and_priced_lines(tokens);
        group.bench_function(format!("replay_{name}_{n}"), |b| {
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
