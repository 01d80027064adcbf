//! `/grant` (admins): days for a chat without a payment, recorded as the
//! admin's grant.

use engine::event::ChatId;

use super::text::{esc, when};
use super::{Answer, Ask, Backend, Command, Reply, args};

/// The most days one `/grant` may give.
pub const MAX_GRANT_DAYS: u32 = 3650;

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    let usage = "Usage: <code>/grant CHAT DAYS</code>, e.g. <code>/grant 123456789 30</code>.";
    let [chat, days] = args else {
        return Err(usage.to_owned());
    };
    let chat_id = args::chat_id(chat, usage)?;
    let days = days
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=MAX_GRANT_DAYS).contains(d))
        .ok_or_else(|| {
            format!(
                "{} is not a number of days from 1 to {MAX_GRANT_DAYS}.\n{usage}",
                esc(days)
            )
        })?;
    Ok(Command::Grant { chat_id, days })
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>, chat_id: ChatId, days: u32) -> Answer {
    let expires_at = ask.b.grant(ask.user, chat_id, days, ask.now).await?;
    Ok(Reply::text(format!(
        "Granted {days} day{} to <code>{chat_id}</code>: subscribed until {}.",
        if days == 1 { "" } else { "s" },
        when(expires_at)
    )))
}
