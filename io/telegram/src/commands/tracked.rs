//! `/tracked`: the tokens alerted to a chat, highest multiple first, each
//! with its chart link and its value at the call and now.

use std::fmt::Write as _;

use engine::shard::Holding;

use super::text::{esc, multiple, usd};
use super::{Answer, Ask, Backend, Command, Reply, args};

/// Rows `/tracked` lists; the rest are counted.
pub const TRACKED_ROWS: usize = 30;

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("tracked", args, Command::Tracked)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let mut tracked = ask.b.tracked(ask.chat).await?;
    if tracked.is_empty() {
        return Ok(Reply::text(
            "Nothing is tracked for you yet: tokens appear here after a call alert.",
        ));
    }
    rank(&mut tracked);
    let mut text = format!("<b>Tracked tokens</b> ({})\n", tracked.len());
    for h in tracked.iter().take(TRACKED_ROWS) {
        let token = h.tracked.token.to_string();
        let _ = writeln!(
            text,
            "<a href=\"{}\">{}</a> {} → {} <b>{}</b>",
            esc(&ask.links.chart(&h.tracked.token)),
            esc(&short(&token)),
            usd(h.tracked.fdv_at_call),
            usd(h.fdv_usd),
            multiple(h.multiple())
        );
    }
    if tracked.len() > TRACKED_ROWS {
        let _ = writeln!(text, "…and {} more.", tracked.len() - TRACKED_ROWS);
    }
    Ok(Reply::text(text))
}

/// `/tracked`'s order: the highest multiple first, then by address.
pub fn rank(tracked: &mut [Holding]) {
    tracked.sort_by(|a, b| {
        b.multiple()
            .total_cmp(&a.multiple())
            .then(a.tracked.token.cmp(&b.tracked.token))
    });
}

/// `AbCd…WxYz` for a long address.
pub fn short(token: &str) -> String {
    if token.len() <= 14 {
        token.to_owned()
    } else {
        format!("{}…{}", &token[..6], &token[token.len() - 4..])
    }
}
