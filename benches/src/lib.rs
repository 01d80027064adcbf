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
