//! `/top`: the channels whose calls did best over the last week, so that
//! a subscriber can find channels worth following (with their ids).

use std::fmt::Write as _;

use engine::event::ChannelId;
use engine::time::{NANOS_PER_SEC, Nanos};

use super::text::multiple;
use super::{Answer, Ask, Backend, Command, Reply, args};
use crate::format;

/// Channels `/top` ranks.
pub const TOP_ROWS: usize = 10;
/// The window `/top` ranks over.
pub const TOP_WINDOW_NANOS: Nanos = 7 * 24 * 3600 * NANOS_PER_SEC;

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("top", args, Command::Top)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let b = ask.b;
    let board = b.leaderboard(TOP_WINDOW_NANOS, ask.now, TOP_ROWS).await?;
    if board.is_empty() {
        return Ok(Reply::text("No calls in the last 7 days yet."));
    }
    let ids: Vec<ChannelId> = board.iter().map(|s| s.channel_id).collect();
    let names = b.names(&ids).await;
    let mut text =
        String::from("<b>Top channels, last 7 days</b>\ncalls · reached 2x · median peak\n");
    for (i, (s, name)) in board.iter().zip(&names).enumerate() {
        let mut shown = String::new();
        format::channel_name(s.channel_id, name.as_deref(), &mut shown);
        let mut share = String::new();
        format::percent(s.share_2x(), &mut share);
        let _ = writeln!(
            text,
            "{}. {} (<code>{}</code>): {} · {} · {}",
            i + 1,
            shown,
            s.channel_id,
            s.calls,
            share,
            multiple(s.median_peak)
        );
    }
    Ok(Reply::text(text))
}
