//! Presenting results: a summary table for people, one JSON line for
//! scripts, and a self-contained HTML page with SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::engine_run::Results;

fn pct(h: Option<&Histogram<u64>>, q: f64) -> u64 {
    h.filter(|h| !h.is_empty())
        .map_or(0, |h| h.value_at_quantile(q))
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// "p50 …  p99 …  p99.9 …", in microseconds.
fn percentiles(h: Option<&Histogram<u64>>) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}",
        micros(pct(h, 0.5)),
        micros(pct(h, 0.99)),
        micros(pct(h, 0.999))
    )
}

/// The table printed at the end of a run.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let lat = r.latency.as_ref();
    let lat_max = r.latency_at_max.as_ref();
    let rows: Vec<(&str, String)> = vec![
        ("tracked keys", format!("{}", r.tracked_keys)),
        ("tokens / chats", format!("{} / {}", r.tokens, r.chats)),
        ("shards", format!("{}", r.shards)),
        ("build", format!("{:.2} s", r.build_secs)),
        (
            "memory",
            format!(
                "{:.1} bytes per key ({:.0} MiB resident after build)",
                r.bytes_per_key,
                r.rss_after_build_bytes as f64 / 1048576.0
            ),
        ),
        (
            "updates (full speed)",
            format!("{} ({} calls)", r.updates, r.calls),
        ),
        (
            "throughput",
            format!(
                "{:.2} M updates/s through the router",
                r.updates_per_sec / 1e6
            ),
        ),
        ("latency at full speed", percentiles(lat_max)),
        (
            "half speed",
            format!(
                "{:.2} M/s asked, {:.2} M/s achieved, {} updates",
                r.half_rate / 1e6,
                r.half_achieved_per_sec / 1e6,
                r.half_updates
            ),
        ),
        ("latency at half speed", percentiles(lat)),
        (
            "waits for a CPU",
            match (r.half_driver_wait_ns, r.half_shard_wait_ns) {
                (Some(d), Some(s)) => format!(
                    "in the half-speed phase, driver {:.2} ms, most-waiting shard {:.2} ms \
                     (shards that share a core count their waits for each other)",
                    d as f64 / 1e6,
                    s as f64 / 1e6
                ),
                _ => "not known (no /proc)".to_owned(),
            },
        ),
        ("alerts", format!("{}", r.alerts)),
        (
            "one shard, pre-parsed",
            format!(
                "{:.2} M non-crossing updates/s ({} alerts); {:.2} M/s on the stream's prices",
                r.shard_noncrossing_per_sec / 1e6,
                r.shard_noncrossing_alerts,
                r.shard_mixed_per_sec / 1e6
            ),
        ),
        (
            "one call, shard 0 alone",
            format!(
                "{} ({} calls)",
                percentiles(r.call_cost.as_ref()),
                r.call_cost.as_ref().map_or(0, Histogram::len)
            ),
        ),
    ];
    let mut rows = rows;
    if let Some(b) = &r.baseline {
        rows.push((
            "seed baseline",
            format!(
                "{:.0} updates/s ({} of {} passed its gating), {} notifications",
                b.updates_per_sec, b.processed, b.updates, b.notifications
            ),
        ));
        rows.push((
            "speed-up",
            format!("{:.0}x", r.updates_per_sec / b.updates_per_sec.max(1e-9)),
        ));
        rows.push((
            "missed by gating",
            format!(
                "{} of {} threshold crossings",
                b.missed_crossings, b.engine_crossings
            ),
        ));
    }
    for (k, v) in rows {
        let _ = writeln!(s, "  {k:<24} {v}");
    }
    s
}

/// The one-line JSON object.
pub fn json(r: &Results) -> String {
    let lat = r.latency.as_ref();
    let lat_max = r.latency_at_max.as_ref();
    let cost = r.call_cost.as_ref();
    let mut v = serde_json::json!({
        "scenario": "engine",
        "tracked_keys": r.tracked_keys,
        "tokens": r.tokens,
        "chats": r.chats,
        "shards": r.shards,
        "updates": r.updates,
        "calls": r.calls,
        "updates_per_sec": r.updates_per_sec.round(),
        "latency_ns_p50": pct(lat, 0.5),
        "latency_ns_p99": pct(lat, 0.99),
        "latency_ns_p999": pct(lat, 0.999),
        "latency_rate_per_sec": r.half_rate.round(),
        "latency_achieved_per_sec": r.half_achieved_per_sec.round(),
        "latency_driver_cpu_wait_ns": r.half_driver_wait_ns,
        "latency_shard_cpu_wait_ns": r.half_shard_wait_ns,
        "latency_at_max_ns_p50": pct(lat_max, 0.5),
        "latency_at_max_ns_p99": pct(lat_max, 0.99),
        "latency_at_max_ns_p999": pct(lat_max, 0.999),
        "alerts": r.alerts,
        "bytes_per_key": (r.bytes_per_key * 10.0).round() / 10.0,
        "rss_after_build_bytes": r.rss_after_build_bytes,
        "build_secs": (r.build_secs * 1000.0).round() / 1000.0,
        "shard_noncrossing_updates_per_sec": r.shard_noncrossing_per_sec.round(),
        "shard_noncrossing_alerts": r.shard_noncrossing_alerts,
        "shard_stream_updates_per_sec": r.shard_mixed_per_sec.round(),
        "call_ns_p50": pct(cost, 0.5),
        "call_ns_p99": pct(cost, 0.99),
        "calls_timed": cost.map_or(0, Histogram::len),
    });
    if let Some(b) = &r.baseline {
        let o = v.as_object_mut().expect("an object");
        o.insert(
            "baseline_updates_per_sec".into(),
            b.updates_per_sec.round().into(),
        );
        o.insert(
            "speedup_vs_baseline".into(),
            ((r.updates_per_sec / b.updates_per_sec.max(1e-9) * 10.0).round() / 10.0).into(),
        );
        o.insert(
            "baseline_missed_crossings".into(),
            b.missed_crossings.into(),
        );
        o.insert("baseline_updates".into(), b.updates.into());
        o.insert("baseline_processed".into(), b.processed.into());
        o.insert("engine_crossings".into(), b.engine_crossings.into());
    }
    v.to_string()
}

/// A polyline chart as inline SVG; `log_x` spaces x on a log scale.
fn chart(title: &str, xlabel: &str, ylabel: &str, points: &[(f64, f64)], log_x: bool) -> String {
    let (w, h, pad) = (640.0, 320.0, 50.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><rect width="100%" height="100%" fill="white"/><text x="{x}" y="20" font-family="sans-serif" font-size="14" text-anchor="middle">{title}</text>"#,
        x = w / 2.0
    );
    if points.is_empty() {
        svg.push_str("<text x=\"50\" y=\"160\" font-family=\"sans-serif\">no data</text></svg>");
        return svg;
    }
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(fx(p.0)), b.max(fx(p.0)))
    });
    let y1 = points.iter().fold(0.0f64, |m, p| m.max(p.1)) * 1.05;
    let sx = |x: f64| pad + (fx(x) - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - y / y1.max(1e-9) * (h - 2.0 * pad);
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = write!(
        svg,
        r#"<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/><polyline fill="none" stroke="steelblue" stroke-width="2" points="{pts}"/><text x="{cx}" y="{lb}" font-family="sans-serif" font-size="12" text-anchor="middle">{xlabel}</text><text x="12" y="{cy}" font-family="sans-serif" font-size="12" transform="rotate(-90 12 {cy})" text-anchor="middle">{ylabel}</text><text x="{pad}" y="{top}" font-family="sans-serif" font-size="11" text-anchor="start">max {ymax:.3}</text></svg>"#,
        b = h - pad,
        r = w - pad,
        pts = path.join(" "),
        cx = w / 2.0,
        lb = h - 12.0,
        cy = h / 2.0,
        top = pad - 6.0,
        ymax = y1 / 1.05,
    );
    svg
}

/// Writes `report.html` into `dir`: the summary, the latency percentile
/// curve and throughput over time, with nothing loaded from elsewhere.
pub fn html(r: &Results, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let curve = |h: Option<&Histogram<u64>>| -> Vec<(f64, f64)> {
        let Some(h) = h.filter(|h| !h.is_empty()) else {
            return Vec::new();
        };
        [
            0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
        ]
        .iter()
        .map(|&q: &f64| {
            let tail = (1.0f64 - q).max(1e-5);
            (1.0 / tail, h.value_at_quantile(q) as f64 / 1e3)
        })
        .collect()
    };
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>callwatch load test</title>\
         <style>body{font-family:sans-serif;max-width:720px;margin:2em auto}pre{background:#f4f4f4;padding:1em}</style>\
         </head><body><h1>callwatch load test: engine</h1>",
    );
    let _ = write!(page, "<pre>{}</pre>", table(r));
    page.push_str("<h2>Latency, ingest to effect, at half speed</h2>");
    page.push_str(&chart(
        "latency percentiles (x: 1/(1-q), so 100 = p99)",
        "1 / (1 - percentile)",
        "µs",
        &curve(r.latency.as_ref()),
        true,
    ));
    page.push_str("<h2>Latency at full speed</h2>");
    page.push_str(&chart(
        "latency percentiles at full speed",
        "1 / (1 - percentile)",
        "µs",
        &curve(r.latency_at_max.as_ref()),
        true,
    ));
    page.push_str("<h2>Throughput over time</h2>");
    let tp: Vec<(f64, f64)> = r.timeline.iter().map(|&(t, v)| (t, v / 1e6)).collect();
    page.push_str(&chart(
        "events applied per second",
        "seconds since start",
        "M events/s",
        &tp,
        false,
    ));
    let _ = write!(page, "<h2>JSON</h2><pre>{}</pre></body></html>", json(r));
    let path = dir.join("report.html");
    std::fs::write(&path, page)?;
    Ok(path)
}
