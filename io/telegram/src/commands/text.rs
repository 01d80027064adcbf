//! Values written for people, in Telegram's HTML: escaped text, dollars,
//! multiples, times, spans and ranges. One spelling of each, so that every
//! reply (and the service's payment messages) writes them alike.

use engine::time::{NANOS_PER_SEC, Nanos};

use crate::format;

/// `text` escaped for Telegram's HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::new();
    format::escape(text, &mut out);
    out
}

pub(super) fn usd(v: f64) -> String {
    let mut out = String::new();
    format::usd(v, &mut out);
    out
}

pub(super) fn multiple(v: f64) -> String {
    let mut out = String::new();
    format::multiple(v, &mut out);
    out
}

/// A time for people: `2026-12-25 10:00 UTC`.
pub fn when(t: Nanos) -> String {
    let s = engine::time::format_rfc3339(t);
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

/// A span for people: `3 days`, `5 hours`, `12 minutes`.
pub(super) fn span(nanos: Nanos) -> String {
    let minutes = nanos / (60 * NANOS_PER_SEC);
    let (n, unit) = if minutes >= 2 * 24 * 60 {
        (minutes / (24 * 60), "day")
    } else if minutes >= 120 {
        (minutes / 60, "hour")
    } else {
        (minutes.max(0), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A lookback of `minutes` as a span.
pub(super) fn minutes(minutes: u32) -> String {
    span(i64::from(minutes) * 60 * NANOS_PER_SEC)
}

/// A market value range: `from $50K to $5M`, `from $100K up`, `any`.
pub(super) fn range(min: f64, max: Option<f64>) -> String {
    match max {
        Some(max) => format!("from {} to {}", usd(min), usd(max)),
        None if min == 0.0 => "any".to_owned(),
        None => format!("from {} up", usd(min)),
    }
}
