//! `/settings`: every setting of a chat and the commands that change
//! them.

use std::fmt::Write as _;

use super::text::{minutes, range};
use super::{Answer, Ask, Backend, ChatSettings, Command, Reply, args};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("settings", args, Command::Settings)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let current = ask.b.settings(ask.chat).await?;
    let charts = ask.b.charts(ask.chat).await?;
    let mut text = String::from("<b>Settings</b>\n");
    lines(&current, &mut text);
    let _ = writeln!(
        text,
        "Charts in multiplier alerts: {}",
        if charts { "on" } else { "off" }
    );
    text.push_str(
        "\nChange them with /min_callers, /lookback, /mcap, /follow, /unfollow and /charts.",
    );
    Ok(Reply::text(text))
}

/// The settings, one a line; `/status` shows them too.
pub(super) fn lines(s: &ChatSettings, out: &mut String) {
    let _ = writeln!(out, "Callers needed: {}", s.min_callers);
    let _ = writeln!(out, "Lookback: {}", minutes(s.lookback_minutes));
    let _ = writeln!(out, "Market value: {}", range(s.min_fdv_usd, s.max_fdv_usd));
    if s.follow.is_empty() {
        out.push_str("Channels: every channel\n");
    } else {
        let _ = writeln!(out, "Channels: {} (/following)", s.follow.len());
    }
}
