//! Shared inputs for callwatch's criterion benches (in `benches/`): the
//! simulated event files they replay and the parse-only floor they are
//! measured against. Public APIs of the crates only.

use engine::sim::{Market, MarketConfig};

/// `n` events of the default simulated market (mostly prices) as JSON
/// Lines: the same bytes `callwatch generate --events n` writes.
pub fn market_lines(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 140);
    for event in Market::new(MarketConfig::default()).take(n) {
        event.write_json(&mut out);
    }
    out
}

/// The replay of [2.3]'s hash-flooding case: one subscribed chat that
/// follows every channel, then each of `tokens` called once and priced
/// twice (the second price a 2x), a millisecond apart. With
/// `engine::sim::colliding_tokens` it is hostile input; with
/// `engine::sim::token` draws, its control.
pub fn called_and_priced_lines(tokens: &[engine::token::Token]) -> Vec<u8> {
    use std::io::Write as _;
    let start = 1_795_000_000_000i64; // 2026-11-18, milliseconds
    let at = |ms: i64| engine::time::format_rfc3339(ms * 1_000_000);
    let mut out = Vec::with_capacity(tokens.len() * 3 * 140 + 256);
    let _ = writeln!(
        out,
        r#"{{"type":"subscribe","at":"{}","chat_id":1,"expires_at":"2036-01-01T00:00:00Z"}}"#,
        at(start)
    );
    let _ = writeln!(
        out,
        r#"{{"type":"settings","at":"{}","chat_id":1,"min_callers":1}}"#,
        at(start)
    );
    for (i, t) in tokens.iter().enumerate() {
        let ms = start + 1 + i as i64;
        let _ = writeln!(
            out,
            r#"{{"type":"call","at":"{}","token":"{t}","channel_id":7,"fdv_usd":10000}}"#,
            at(ms)
        );
    }
    for (round, fdv) in [(1i64, 15_000), (2, 25_000)] {
        for (i, t) in tokens.iter().enumerate() {
            let ms = start + 1 + (round * tokens.len() as i64) + i as i64;
            let _ = writeln!(
                out,
                r#"{{"type":"price","at":"{}","token":"{t}","fdv_usd":{fdv}}}"#,
                at(ms)
            );
        }
    }
    out
}
