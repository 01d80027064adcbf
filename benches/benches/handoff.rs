//! Handing events from the router's thread to a shard's, per event.
//!
//! - `inbox_handoff/crossbeam_vec_1024`: the bare channel handoff.
//! - `inbox_handoff/router_1_shard`: the whole router path around it.
//!
//! Both time whole runs (`iter_custom`): one iteration is one event, and a
//! run of `iters` events ends when the receiving side has seen them all.
//! On 2 cores the two busy threads get a core each.
//!
//! Run: `cargo bench -p callwatch-benches --bench handoff`

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::bounded;
use engine::EngineConfig;
use engine::event::{Envelope, Event};
use engine::router;
use engine::sim::{self, Rng};
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;

const T0: Nanos = 1_795_600_800 * NANOS_PER_SEC;

/// Price envelope number `seq` (from 1) for `token`.
fn price(seq: u64, token: Token) -> Envelope {
    let at = T0 + seq as Nanos;
    Envelope {
        seq,
        clock: at,
        event: Event::Price {
            token,
            fdv_usd: 100_000.0 + (seq % 1_000) as f64,
            at,
        },
    }
}

/// `inbox_handoff/crossbeam_vec_1024`: a `Vec<Envelope>` of 1,024 price
/// envelopes (80 bytes each on x86-64) built on this thread, sent through a
/// crossbeam bounded channel of 64 batches (the router's default
/// `batch_events` and `inbox_batches`), read item by item and dropped on
/// another thread, as a shard does with its inbox. Per event: building it
/// into the batch, the batch's allocation, send and receive, the read, and
/// freeing the batch on the other thread. The receiver is spawned before
/// the clock starts.
///
/// `inbox_handoff/router_1_shard`: the full path for one event:
/// `router::start` with 1 shard (`pin_threads: false`), `Router::submit` of
/// price envelopes for a token nobody tracks (so the shard does one map
/// lookup and nothing else), `Router::finish`, while another thread drains
/// `Effects::next_merged` (one empty merge per batch). Timed from the first
/// submit until the drain has seen the end; starting the engine and joining
/// the shard are not timed. Router, channels, shard loop (with its
/// `maintain` and gauges), outbox and merge, per event.
///
/// Run: `cargo bench -p callwatch-benches --bench handoff`
fn inbox_handoff(c: &mut Criterion) {
    let token = sim::token(&mut Rng::new(21));
    let defaults = EngineConfig::default();
    let batch = defaults.batch_events;
    let inbox = defaults.inbox_batches;
    let mut group = c.benchmark_group("inbox_handoff");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(4));

    group.bench_function(format!("crossbeam_vec_{batch}"), |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = bounded::<Vec<Envelope>>(inbox);
            let shard = thread::spawn(move || {
                let mut sum = 0u64;
                while let Ok(items) = rx.recv() {
                    for env in &items {
                        sum = sum.wrapping_add(black_box(env).seq);
                    }
                }
                sum
            });
            let start = Instant::now();
            let mut seq = 0;
            while seq < iters {
                let mut items = Vec::with_capacity(batch);
                let end = iters.min(seq + batch as u64);
                while seq < end {
                    seq += 1;
                    items.push(price(seq, token));
                }
                tx.send(items).expect("the receiving thread runs");
            }
            drop(tx);
            let sum = shard.join().expect("the receiving thread ends");
            let elapsed = start.elapsed();
            assert_eq!(sum, iters * (iters + 1) / 2, "every envelope arrived");
            elapsed
        });
    });

    let config = EngineConfig {
        shards: 1,
        pin_threads: false,
        ..EngineConfig::default()
    };
    group.bench_function("router_1_shard", |b| {
        b.iter_custom(|iters| {
            let (mut router, mut effects, workers) =
                router::start(&config).expect("a valid config");
            let drain = thread::spawn(move || {
                let (mut alerts, mut upto) = (0, 0);
                while let Some(merged) = effects.next_merged().expect("the shard runs") {
                    alerts += merged.effects.len();
                    upto = merged.upto_seq;
                    effects.recycle(merged.effects);
                }
                (alerts, upto)
            });
            let start = Instant::now();
            for seq in 1..=iters {
                router.submit(price(seq, token)).expect("the engine runs");
            }
            router.finish().expect("the engine runs");
            let (alerts, upto) = drain.join().expect("the drain thread ends");
            let elapsed = start.elapsed();
            let shards = workers.join().expect("the shard exits cleanly");
            assert_eq!((alerts, upto), (0, iters), "all applied, nothing raised");
            assert_eq!(shards[0].stats().prices, iters);
            assert_eq!(shards[0].token_count(), 0, "the token stayed untracked");
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, inbox_handoff);
criterion_main!(benches);
