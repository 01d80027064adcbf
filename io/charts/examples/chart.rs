//! Draws the chart of an example alert to a file: how the README's
//! `docs/images/chart.png` is made.
//!
//! `cargo run -p callwatch-charts --example chart -- docs/images/chart.png`

use callwatch_charts::{Chart, History, Point, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: chart OUTPUT.png")?;
    let minute = 60_000_000_000i64;
    let call = Point {
        at_ns: 0,
        value: 125_000.0,
    };
    // A token priced every minute for six hours: a dip, a climb through
    // 2x and 5x, and a jump past 10x at the end.
    let mut history = History::new(call);
    for i in 1..=360i64 {
        let t = i as f64 / 360.0;
        let wave = 1.0 + 0.08 * (i as f64 / 7.0).sin();
        let multiple = if i < 40 {
            1.0 - 0.2 * (i as f64 / 40.0)
        } else {
            0.8 + 7.5 * t.powf(2.2)
        };
        let value = if i == 360 {
            1_325_000.0
        } else {
            call.value * multiple * wave
        };
        history.record(Point {
            at_ns: i * minute,
            value,
        });
    }
    let points = history.between(call.at_ns, 360 * minute);
    let png = render(&Chart {
        title: "7xKX…9fQe reached 10x",
        call,
        points: &points,
        thresholds: &[2.0, 5.0, 10.0],
    })?;
    std::fs::write(&path, &png)?;
    println!("{path}: {} bytes", png.len());
    Ok(())
}
