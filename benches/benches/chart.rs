//! The cost of one multiplier alert's chart ([2.6]): a full history
//! (`callwatch_charts::POINTS` points, a token priced every minute for a
//! week) drawn and encoded as PNG, as `serve` does on its blocking pool for
//! each alert that carries one. Also the cost of recording one price in a
//! full history (the keeper's part, per price of a tracked token).
//!
//! Run: `cargo bench -p callwatch-benches --bench chart`

use std::hint::black_box;

use callwatch_charts::{Chart, History, Point, render};
use criterion::{Criterion, criterion_group, criterion_main};

const MINUTE_NS: i64 = 60_000_000_000;

/// A week of minute prices, climbing to 11x with a wobble.
fn week() -> History {
    let call = Point {
        at_ns: 0,
        value: 125_000.0,
    };
    let mut history = History::new(call);
    let minutes = 7 * 24 * 60;
    for i in 1..=minutes {
        let t = i as f64 / minutes as f64;
        let wobble = 1.0 + 0.1 * (i as f64 / 50.0).sin();
        history.record(Point {
            at_ns: i * MINUTE_NS,
            value: call.value * (0.8 + 10.2 * t * t) * wobble,
        });
    }
    history
}

fn chart(c: &mut Criterion) {
    let history = week();
    let points = history.between(1, i64::MAX);
    let call = Point {
        at_ns: 0,
        value: 125_000.0,
    };
    c.bench_function("chart/render_png", |b| {
        b.iter(|| {
            render(black_box(&Chart {
                title: "7xKX…9fQe reached 10x",
                call,
                points: &points,
                thresholds: &[2.0, 5.0, 10.0],
            }))
            .expect("a chart")
        })
    });
    let mut full = history.clone();
    let mut at_ns = 8 * 24 * 60 * MINUTE_NS;
    c.bench_function("chart/record_price", |b| {
        b.iter(|| {
            at_ns += MINUTE_NS;
            full.record(black_box(Point {
                at_ns,
                value: 1_000_000.0,
            }));
        })
    });
}

criterion_group!(benches, chart);
criterion_main!(benches);
