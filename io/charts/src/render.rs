//! A chart of a multiplier alert, drawn to PNG bytes: the token's value
//! since the call as a multiple of the value at the call (a log scale, so
//! 2x and 100x both read), the thresholds crossed as dashed lines, the
//! call and the latest value marked.
//!
//! Text is drawn with a font compiled in (Hack, under the MIT and Bitstream
//! Vera licences, as `epaint_default_fonts` ships it; registered once
//! under plotters' `sans-serif`), so a machine without system fonts draws
//! the same chart.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::history::Point;

/// A chart's size in pixels.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;

const NANOS_PER_HOUR: f64 = 3_600e9;
const LINE: RGBColor = RGBColor(33, 102, 172);
const THRESHOLD: RGBColor = RGBColor(214, 96, 77);
const CALL: RGBColor = RGBColor(27, 120, 55);

/// What a chart shows.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// The line above the plot (the token, short).
    pub title: &'a str,
    /// The value at the call: the origin of time and of the multiples.
    pub call: Point,
    /// The values since the call, in time order, the alert's last.
    pub points: &'a [Point],
    /// The multiples crossed so far, e.g. `[2.0, 5.0, 10.0]`.
    pub thresholds: &'a [f64],
}

/// Why no chart was drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("the value at the call must be finite and above 0, not {0}")]
    BadCall(f64),
    #[error("the embedded font did not load")]
    Font,
    #[error("drawing: {0}")]
    Draw(String),
    #[error("encoding PNG: {0}")]
    Encode(String),
}

pub type Result<T> = std::result::Result<T, RenderError>;

/// Registers the compiled-in font once per process.
fn font() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::HACK_REGULAR,
        )
        .is_ok()
    });
    if loaded {
        Ok(())
    } else {
        Err(RenderError::Font)
    }
}

fn draw<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> RenderError {
    RenderError::Draw(e.to_string())
}

/// The chart as PNG bytes, [`WIDTH`] × [`HEIGHT`], RGB.
pub fn render(chart: &Chart<'_>) -> Result<Vec<u8>> {
    let call = chart.call;
    if !(call.value.is_finite() && call.value > 0.0) {
        return Err(RenderError::BadCall(call.value));
    }
    font()?;
    // (hours since the call, multiple of the call), the call first; values
    // that are no price (0, NaN) are left out rather than break the scale.
    let series: Vec<(f64, f64)> = std::iter::once(call)
        .chain(chart.points.iter().copied())
        .filter(|p| p.value.is_finite() && p.value > 0.0 && p.at_ns >= call.at_ns)
        .map(|p| {
            (
                (p.at_ns - call.at_ns) as f64 / NANOS_PER_HOUR,
                p.value / call.value,
            )
        })
        .collect();
    let hours = series
        .iter()
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(1.0 / 60.0);
    let highest = series
        .iter()
        .map(|p| p.1)
        .chain(chart.thresholds.iter().copied())
        .fold(1.0, f64::max);
    let lowest = series.iter().map(|p| p.1).fold(1.0, f64::min);
    let last = *series.last().expect("the call is in the series");

    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..hours * 1.05, (lowest * 0.8..highest * 1.3).log_scale())
            .map_err(draw)?;
        plot.configure_mesh()
            .x_desc("hours since the call")
            .y_desc("x the value at the call")
            .y_label_formatter(&|m| format!("{}x", short(*m)))
            .x_label_formatter(&|h| short(*h))
            .y_labels(8)
            .label_style(("sans-serif", 12))
            .bold_line_style(RGBColor(232, 232, 232))
            .light_line_style(WHITE)
            .draw()
            .map_err(draw)?;
        for &t in chart.thresholds {
            plot.draw_series(DashedLineSeries::new(
                [(0.0, t), (hours * 1.05, t)],
                6,
                4,
                THRESHOLD.stroke_width(1),
            ))
            .map_err(draw)?;
            plot.draw_series(std::iter::once(Text::new(
                format!("{}x", short(t)),
                (hours * 0.96, t * 1.04),
                ("sans-serif", 12).into_font().color(&THRESHOLD),
            )))
            .map_err(draw)?;
        }
        plot.draw_series(LineSeries::new(
            series.iter().copied(),
            LINE.stroke_width(2),
        ))
        .map_err(draw)?;
        plot.draw_series([
            Circle::new((0.0, 1.0), 5, CALL.filled()),
            Circle::new(last, 4, LINE.filled()),
        ])
        .map_err(draw)?;
        plot.draw_series([
            Text::new(
                format!("call {}", usd(call.value)),
                (hours * 0.03, 1.0 / 1.2),
                ("sans-serif", 12).into_font().color(&CALL),
            ),
            Text::new(
                format!("{}x {}", short(last.1), usd(last.1 * call.value)),
                (last.0 * 0.8, last.1 * 1.12),
                ("sans-serif", 12).into_font().color(&LINE),
            ),
        ])
        .map_err(draw)?;
        root.present().map_err(draw)?;
    }
    encode(&rgb)
}

fn encode(rgb: &[u8]) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Flat colours and a few lines: the best compression costs little
    // here and keeps a chart a few tens of kilobytes.
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder
        .write_header()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(png)
}

/// A number for an axis: no more digits than it needs.
fn short(v: f64) -> String {
    if v >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A value in USD, as people read market values: $125K, $1.6M.
pub fn usd(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "B"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "K"),
        v => (v, ""),
    };
    if scaled >= 100.0 {
        format!("${scaled:.0}{unit}")
    } else {
        format!("${scaled:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(minutes: i64, value: f64) -> Point {
        Point {
            at_ns: minutes * 60_000_000_000,
            value,
        }
    }

    fn decoded(bytes: &[u8]) -> (u32, u32) {
        let decoder = png::Decoder::new(bytes);
        let reader = decoder.read_info().expect("a PNG");
        (reader.info().width, reader.info().height)
    }

    #[test]
    fn a_chart_is_a_png_of_its_size() {
        let points = [p(10, 150_000.0), p(30, 300_000.0), p(90, 1_300_000.0)];
        let png = render(&Chart {
            title: "So11…1112 · 10x",
            call: p(0, 125_000.0),
            points: &points,
            thresholds: &[2.0, 5.0, 10.0],
        })
        .unwrap();
        assert_eq!(decoded(&png), (WIDTH, HEIGHT));
    }

    #[test]
    fn a_chart_of_the_call_alone_draws() {
        let png = render(&Chart {
            title: "t",
            call: p(0, 1.0),
            points: &[],
            thresholds: &[],
        })
        .unwrap();
        assert_eq!(decoded(&png), (WIDTH, HEIGHT));
    }

    #[test]
    fn a_call_without_a_value_is_refused() {
        let chart = Chart {
            title: "t",
            call: p(0, 0.0),
            points: &[],
            thresholds: &[],
        };
        assert_eq!(render(&chart), Err(RenderError::BadCall(0.0)));
    }

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(usd(125_000.0), "$125K");
        assert_eq!(usd(1_562_500.0), "$1.6M");
        assert_eq!(usd(950.0), "$950");
    }
}
