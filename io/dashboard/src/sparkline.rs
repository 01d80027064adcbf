//! A sparkline: a series of multiples of the value at the call as a small
//! inline SVG, drawn on the server (no script on the page).
//!
//! The y axis is logarithmic, so 1x to 2x takes as much room as 10x to
//! 20x, and always shows 1x (the value at the call) as a dashed base line.
//! The points are spaced evenly: a series is the steps it knows of, in
//! order, not a time axis. The SVG holds only numbers and fixed words, so
//! it is safe to put in a page unescaped.

use std::fmt::Write as _;

/// The drawing's size in CSS pixels.
pub const WIDTH: f64 = 96.0;
pub const HEIGHT: f64 = 28.0;
/// Room kept free on every side, so the line's width and the last
/// point's dot show whole.
const PAD: f64 = 3.0;

/// The sparkline of `multiples` (each > 0; others are left out), with a
/// `label` for screen readers, e.g. "at call 1x, now 3x". Rising to the
/// last point draws green, falling below 1x red.
pub fn svg(multiples: &[f64], label: &str) -> String {
    let points: Vec<f64> = multiples
        .iter()
        .copied()
        .filter(|m| m.is_finite() && *m > 0.0)
        .collect();
    let logs: Vec<f64> = points.iter().map(|m| m.log10()).collect();
    let lo = logs.iter().copied().fold(0.0_f64, f64::min);
    let hi = logs.iter().copied().fold(0.0_f64, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |l: f64| PAD + (hi - l) / span * (HEIGHT - 2.0 * PAD);
    let step = if points.len() > 1 {
        (WIDTH - 2.0 * PAD) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let x = |i: usize| PAD + i as f64 * step;
    let colour = match points.last() {
        Some(m) if *m >= 1.0 => "#1a7f37",
        Some(_) => "#cf222e",
        None => "#57606a",
    };
    let mut out = String::with_capacity(320);
    let _ = write!(
        out,
        "<svg class=\"spark\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"",
    );
    escape_attr(label, &mut out);
    let _ = write!(
        out,
        "\"><line x1=\"0\" y1=\"{base:.1}\" x2=\"{WIDTH}\" y2=\"{base:.1}\" \
         stroke=\"#8c959f\" stroke-dasharray=\"2 2\" stroke-width=\"1\"/>",
        base = y(0.0)
    );
    if !logs.is_empty() {
        out.push_str("<polyline fill=\"none\" stroke=\"");
        out.push_str(colour);
        out.push_str("\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"");
        for (i, l) in logs.iter().enumerate() {
            let _ = write!(
                out,
                "{}{:.1},{:.1}",
                if i > 0 { " " } else { "" },
                x(i),
                y(*l)
            );
        }
        out.push_str("\"/>");
        let last = logs.len() - 1;
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
            x(last),
            y(logs[last])
        );
    }
    out.push_str("</svg>");
    out
}

fn escape_attr(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (x, y) pairs of the polyline.
    fn points(svg: &str) -> Vec<(f64, f64)> {
        let at = svg.find("points=\"").unwrap() + 8;
        let end = at + svg[at..].find('"').unwrap();
        svg[at..end]
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_rise_goes_up_across_the_width_on_a_log_scale() {
        let s = svg(&[1.0, 10.0, 100.0], "at call 1x, now 100x");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        let p = points(&s);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].0, p[2].0), (PAD, WIDTH - PAD));
        // Higher multiples are higher up (smaller y), evenly on a log axis.
        assert!(p[0].1 > p[1].1 && p[1].1 > p[2].1, "{p:?}");
        assert!(((p[0].1 - p[1].1) - (p[1].1 - p[2].1)).abs() < 0.2, "{p:?}");
        assert!(s.contains("#1a7f37"), "green when up");
    }

    #[test]
    fn a_fall_below_the_call_is_red_and_bad_values_are_left_out() {
        let s = svg(&[1.0, f64::NAN, -3.0, 0.5], "falling");
        assert_eq!(points(&s).len(), 2);
        assert!(s.contains("#cf222e"));
        let empty = svg(&[], "nothing");
        assert!(!empty.contains("polyline") && empty.contains("<line"));
    }

    #[test]
    fn the_label_is_escaped() {
        let s = svg(&[1.0], "<script>\"x\"</script>");
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;&quot;x&quot;"), "{s}");
    }
}
