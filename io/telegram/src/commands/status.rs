//! `/status`: a chat's subscription, settings, how many tokens are
//! tracked for it and its id (for an admin's `/grant`), in one reply.

use std::fmt::Write as _;

use super::text::{esc, span, when};
use super::{Answer, Ask, Backend, Command, Reply, args, settings};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("status", args, Command::Status)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let &Ask { b, chat, now, .. } = ask;
    let subscription = b.subscription(chat).await?;
    let current = b.settings(chat).await?;
    let tracked = b.tracked(chat).await?;
    let mut text = String::from("<b>Status</b>\n");
    match subscription {
        Some(s) if s.expires_at > now => {
            let _ = writeln!(
                text,
                "Subscription: <b>{}</b>, until {} ({} left)",
                esc(&s.plan),
                when(s.expires_at),
                span(s.expires_at - now)
            );
        }
        Some(s) => {
            let _ = writeln!(
                text,
                "Subscription: expired {} (/subscribe to renew)",
                when(s.expires_at)
            );
        }
        None => text.push_str("Subscription: none (/subscribe)\n"),
    }
    settings::lines(&current, &mut text);
    let _ = writeln!(text, "Tracked tokens: {}", tracked.len());
    // What an admin's `/grant CHAT DAYS` needs.
    let _ = writeln!(text, "This chat's id: <code>{chat}</code>");
    Ok(Reply::text(text))
}
