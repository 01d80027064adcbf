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

/// One line of a chart.
struct Series {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// How an axis maps values: evenly, or by powers of ten.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

impl Scale {
    fn at(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => v.max(1e-12).log10(),
        }
    }
}

/// Ticks for an axis from `lo` to `hi`: (value, label). A linear axis
/// gets "nice" steps (1, 2 or 5 times a power of ten) from 0; a log axis
/// gets the powers of ten in range, and 2× and 5× as well when it spans
/// fewer than three decades.
fn ticks(lo: f64, hi: f64, scale: Scale, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    match scale {
        Scale::Linear => {
            let span = (hi - lo).max(1e-12);
            let raw = span / 7.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|&s| s >= raw)
                .unwrap_or(10.0 * mag);
            let first = (lo / step).ceil() as i64;
            let last = (hi / step).floor() as i64;
            (first..=last)
                .map(|k| {
                    let v = k as f64 * step;
                    (v, label(v))
                })
                .collect()
        }
        Scale::Log => {
            let (a, b) = (
                lo.max(1e-12).log10().floor() as i32,
                hi.max(1e-12).log10().ceil() as i32,
            );
            let steps: &[f64] = if b - a < 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            (a..=b)
                .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|&v| v >= lo * 0.999 && v <= hi * 1.001)
                .map(|v| (v, label(v)))
                .collect()
        }
    }
}

/// A number as a tick label: no more digits than it needs.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else if a >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// What a chart draws on its axes.
struct Axes {
    x_label: &'static str,
    y_label: &'static str,
    x_scale: Scale,
    y_scale: Scale,
    /// Fixed x ticks (value, label), or `None` for ticks from the data.
    x_ticks: Option<Vec<(f64, String)>>,
}

/// Lines on labelled axes, as inline SVG: ticks with values on both axes,
/// a grid, and a legend naming each line.
fn chart(title: &str, axes: &Axes, series: &[Series]) -> String {
    let (w, legend) = (720.0, 16.0 * series.len() as f64);
    let h = 340.0 + legend;
    // The legend sits between the title and the plot, one line a series.
    let (left, right, top, bottom) = (70.0, 45.0, 36.0 + legend, 50.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{x}" y="20" font-size="14" text-anchor="middle">{title}</text>"#,
        x = w / 2.0
    );
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if all.is_empty() {
        svg.push_str(r#"<text x="70" y="180">no data</text></svg>"#);
        return svg;
    }
    let (xs, ys) = (axes.x_scale, axes.y_scale);
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all.iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
    };
    let (x_lo, x_hi) = fold(|p| p.0);
    let (mut y_lo, mut y_hi) = fold(|p| p.1);
    match ys {
        Scale::Linear => (y_lo, y_hi) = (0.0, y_hi * 1.1),
        Scale::Log => {
            (y_lo, y_hi) = (
                10f64.powf(y_lo.max(1e-12).log10().floor()),
                10f64.powf(y_hi.max(1e-12).log10().ceil()),
            )
        }
    }
    let y_hi = if y_hi <= y_lo { y_lo + 1.0 } else { y_hi };
    let (px0, px1) = (xs.at(x_lo), xs.at(x_hi).max(xs.at(x_lo) + 1e-9));
    let (py0, py1) = (ys.at(y_lo), ys.at(y_hi));
    let sx = |x: f64| left + (xs.at(x) - px0) / (px1 - px0) * (w - left - right);
    let sy = |y: f64| h - bottom - (ys.at(y) - py0) / (py1 - py0) * (h - top - bottom);
    let x_ticks = axes
        .x_ticks
        .clone()
        .unwrap_or_else(|| ticks(x_lo, x_hi, xs, short));
    for (v, label) in x_ticks
        .iter()
        .filter(|(v, _)| *v >= x_lo * 0.999 && *v <= x_hi * 1.001)
    {
        let x = sx(*v);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{b}" stroke="#e4e4e4"/><text x="{x:.1}" y="{ty}" font-size="11" text-anchor="middle" class="xtick">{label}</text>"##,
            b = h - bottom,
            ty = h - bottom + 15.0,
        );
    }
    for (v, label) in ticks(y_lo, y_hi, ys, short) {
        let y = sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" class="ytick">{label}</text>"##,
            r = w - right,
            tx = left - 6.0,
            ty = y + 4.0,
        );
    }
    let _ = write!(
        svg,
        r#"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="black"/><text x="{cx}" y="{lx}" font-size="12" text-anchor="middle">{xl}</text><text x="14" y="{cy}" font-size="12" transform="rotate(-90 14 {cy})" text-anchor="middle">{yl}</text>"#,
        b = h - bottom,
        r = w - right,
        cx = left + (w - left - right) / 2.0,
        lx = h - 12.0,
        cy = top + (h - top - bottom) / 2.0,
        xl = axes.x_label,
        yl = axes.y_label,
    );
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y.max(y_lo))))
            .collect();
        let ly = 40.0 + 16.0 * i as f64;
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{p}"/><rect x="{lx}" y="{ry}" width="12" height="4" fill="{c}"/><text x="{tx}" y="{ty}" font-size="11" class="legend">{n}</text>"#,
            c = s.color,
            p = pts.join(" "),
            lx = left + 10.0,
            ry = ly - 4.0,
            tx = left + 28.0,
            ty = ly + 1.0,
            n = escape(&s.name),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Percentiles a latency curve is drawn through: from the median out to
/// one in 100,000, ten points a decade of the tail.
fn curve_quantiles() -> impl Iterator<Item = f64> {
    (3..=50).map(|k| 1.0 - 10f64.powf(-f64::from(k) / 10.0))
}

/// A latency curve: x is 1 / (1 - q), so 100 is p99; y in µs.
fn curve(h: Option<&Histogram<u64>>) -> Vec<(f64, f64)> {
    let Some(h) = h.filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    curve_quantiles()
        .map(|q| (1.0 / (1.0 - q), h.value_at_quantile(q) as f64 / 1e3))
        .collect()
}

/// The percentile ticks of a latency curve's x axis.
fn percentile_ticks() -> Vec<(f64, String)> {
    [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (0.99999, "99.999%"),
    ]
    .iter()
    .map(|&(q, l)| (1.0 / (1.0 - q), l.to_owned()))
    .collect()
}

/// A histogram of nanoseconds as HdrHistogram's percentile distribution
/// (`.hgrm`), in microseconds: the text its plotter reads, five steps per
/// halving of the tail.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1e3;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2();
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1e3,
        h.stdev() / 1e3
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1e3,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// The latency curve in an `.hgrm` file this report wrote: (1 / (1 - q),
/// µs) for each line with a percentile below 1.
fn curve_of_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let value: f64 = f.next()?.parse().ok()?;
            let q: f64 = f.next()?.parse().ok()?;
            (0.5..1.0).contains(&q).then(|| (1.0 / (1.0 - q), value))
        })
        .collect()
}

/// A report's throughput timeline as `timeline.csv` holds it.
fn timeline_csv(points: &[(f64, f64)]) -> String {
    let mut out = String::from("seconds,events_per_sec\n");
    for (t, v) in points {
        let _ = writeln!(out, "{t:.3},{v:.0}");
    }
    out
}

fn timeline_of_csv(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((t.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

/// An earlier report to draw beside this one (`--compare DIR`): its
/// curves and timeline, from the files it wrote.
pub struct Compared {
    name: String,
    latency: Vec<(f64, f64)>,
    latency_at_max: Vec<(f64, f64)>,
    timeline: Vec<(f64, f64)>,
}

impl Compared {
    /// Reads the report in `dir`; an error names what is missing.
    pub fn load(dir: &Path) -> anyhow::Result<Compared> {
        let read = |name: &str| -> anyhow::Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "--compare {}: cannot read {} ({e}); is it a directory `loadtest engine --report` wrote?",
                    dir.display(),
                    path.display()
                )
            })
        };
        Ok(Compared {
            name: dir.display().to_string(),
            latency: curve_of_hgrm(&read(LATENCY_HGRM)?),
            latency_at_max: curve_of_hgrm(&read(LATENCY_AT_MAX_HGRM)?),
            timeline: timeline_of_csv(&read(TIMELINE_CSV)?),
        })
    }
}

const LATENCY_HGRM: &str = "latency.hgrm";
const LATENCY_AT_MAX_HGRM: &str = "latency-at-max.hgrm";
const TIMELINE_CSV: &str = "timeline.csv";

/// Writes `report.html` into `dir`: the summary; the latency percentile
/// curves on a log percentile axis; throughput over time, with the
/// predecessor's baseline when it ran and an earlier report's lines when
/// `compare` names one; and beside it the `.hgrm` percentile files
/// (HdrHistogram's plotter reads them) and `timeline.csv`, which a later
/// `--compare` reads. Nothing is loaded from elsewhere.
pub fn html(
    r: &Results,
    dir: &Path,
    compare: Option<&Compared>,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, h) in [
        (LATENCY_HGRM, r.latency.as_ref()),
        (LATENCY_AT_MAX_HGRM, r.latency_at_max.as_ref()),
        ("call-cost.hgrm", r.call_cost.as_ref()),
    ] {
        let empty = Histogram::<u64>::new(3).expect("3 significant figures");
        std::fs::write(dir.join(name), hgrm(h.unwrap_or(&empty)))?;
    }
    std::fs::write(dir.join(TIMELINE_CSV), timeline_csv(&r.timeline))?;

    let this = "this run";
    let with_compared = |mine: Vec<(f64, f64)>, theirs: Option<&Vec<(f64, f64)>>| {
        let mut s = vec![Series {
            name: this.to_owned(),
            color: "steelblue",
            points: mine,
        }];
        if let (Some(c), Some(points)) = (compare, theirs) {
            s.push(Series {
                name: c.name.clone(),
                color: "darkorange",
                points: points.clone(),
            });
        }
        s
    };
    let latency_axes = Axes {
        x_label: "percentile",
        y_label: "latency, µs (log)",
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        x_ticks: Some(percentile_ticks()),
    };
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>callwatch load test</title>\
         <style>body{font-family:sans-serif;max-width:760px;margin:2em auto;padding:0 1em}\
         pre{background:#f4f4f4;padding:1em;white-space:pre-wrap;overflow-wrap:anywhere;overflow-x:auto}\
         svg{max-width:100%;height:auto}</style>\
         </head><body><h1>callwatch load test: engine</h1>",
    );
    if let Some(c) = compare {
        let _ = write!(
            page,
            "<p>Lines in orange are the report in <code>{}</code>.</p>",
            escape(&c.name)
        );
    }
    let _ = write!(page, "<pre id=\"summary\">{}</pre>", escape(&table(r)));
    page.push_str("<h2>Latency, ingest to effect, at half speed</h2>");
    page.push_str(&chart(
        "latency by percentile, at half the maximum rate",
        &latency_axes,
        &with_compared(curve(r.latency.as_ref()), compare.map(|c| &c.latency)),
    ));
    page.push_str("<h2>Latency at full speed</h2>");
    page.push_str(&chart(
        "latency by percentile, at the maximum rate",
        &latency_axes,
        &with_compared(
            curve(r.latency_at_max.as_ref()),
            compare.map(|c| &c.latency_at_max),
        ),
    ));
    page.push_str("<h2>Throughput over time</h2>");
    let mut lines = with_compared(
        r.timeline.iter().map(|&(t, v)| (t, v / 1e6)).collect(),
        compare
            .map(|c| c.timeline.iter().map(|&(t, v)| (t, v / 1e6)).collect())
            .as_ref(),
    );
    lines[0].name = "callwatch (this run)".to_owned();
    if let Some(b) = &r.baseline {
        lines.push(Series {
            name: "predecessor's design (--baseline seed), price updates".to_owned(),
            color: "firebrick",
            points: b.timeline.iter().map(|&(t, v)| (t, v / 1e6)).collect(),
        });
    }
    page.push_str(&chart(
        "events applied per second",
        &Axes {
            x_label: "seconds since start",
            y_label: "M events/s",
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_ticks: None,
        },
        &lines,
    ));
    let _ = write!(
        page,
        "<p>Beside this page: <code>{LATENCY_HGRM}</code>, <code>{LATENCY_AT_MAX_HGRM}</code> and <code>call-cost.hgrm</code> (HdrHistogram percentile distributions, µs) and <code>{TIMELINE_CSV}</code>.</p>"
    );
    let _ = write!(
        page,
        "<h2>JSON</h2><pre>{}</pre></body></html>",
        escape(&json(r))
    );
    let path = dir.join("report.html");
    std::fs::write(&path, page)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_log_ticks_are_decades() {
        let t: Vec<String> = ticks(0.0, 1.37, Scale::Linear, short)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(t, ["0", "0.2", "0.4", "0.6", "0.8", "1", "1.2"]);
        let labels: Vec<String> = ticks(1.0, 100_000.0, Scale::Log, short)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(labels, ["1", "10", "100", "1k", "10k", "100k"]);
        let narrow: Vec<String> = ticks(1_000.0, 20_000.0, Scale::Log, short)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(narrow, ["1k", "2k", "5k", "10k", "20k"]);
    }

    #[test]
    fn an_hgrm_file_gives_back_its_curve() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let text = hgrm(&h);
        let max: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#[Max     ="))
            .and_then(|l| l.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a Max line");
        assert!((max - 10_000.0).abs() < 20.0, "{max} µs");
        let curve = curve_of_hgrm(&text);
        // Values 1..=10,000 µs evenly: the value at q is q × 10,000.
        for &(x, y) in &curve {
            let q = 1.0 - 1.0 / x;
            assert!((y - q * 10_000.0).abs() < 20.0, "at q {q}: {y}");
        }
        assert!(curve.iter().any(|&(x, _)| x >= 100.0), "out to p99");
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
    }
}
