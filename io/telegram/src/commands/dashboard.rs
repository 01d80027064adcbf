//! `/dashboard`: a link to the chat's pages on the web dashboard (its
//! tracked tokens, the channel leaderboard, the service's health), signed
//! for this chat and expiring. Anyone in the chat may ask: the pages only
//! show what `/tracked` and `/top` already tell the chat.

use super::text::{esc, span, when};
use super::{Answer, Ask, Backend, Command, Reply, args};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("dashboard", args, Command::Dashboard)
}

pub(super) fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let link = ask.b.dashboard_link(ask.chat, ask.now)?;
    Ok(Reply::text(format!(
        "<b>Your dashboard</b>\n<a href=\"{url}\">{url}</a>\n\
         Your tracked tokens, the channel leaderboard and the service's health. \
         The link works for {left}, until {until}; anyone you share it with can \
         read these pages. /dashboard gives a new one.",
        url = esc(&link.url),
        left = span(link.expires_at - ask.now),
        until = when(link.expires_at),
    )))
}
