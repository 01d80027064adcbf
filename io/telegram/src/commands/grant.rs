//! `/grant` (admins): days for a chat without a payment, recorded as the
//! admin's grant.
//!
//! A grant is named by its command (`CHAT:MESSAGE` of the admin's message)
//! and credits once per name: the same update handled again credits
//! nothing more, and only finishes what was left (the engine's `subscribe`
//! event). If that was left undone, the reply gives the command that
//! finishes it: the same grant with its name, `/grant CHAT DAYS ID`.

use engine::event::ChatId;

use super::text::{esc, when};
use super::{Answer, Ask, Backend, Command, Reply, args};

/// The most days one `/grant` may give.
pub const MAX_GRANT_DAYS: u32 = 3650;

/// The longest grant id an admin may write.
const MAX_GRANT_ID: usize = 64;

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    let usage = "Usage: <code>/grant CHAT DAYS</code>, e.g. <code>/grant 123456789 30</code>.";
    let (chat, days, grant_id) = match args {
        [chat, days] => (chat, days, None),
        [chat, days, id] => (chat, days, Some(grant_id(id, usage)?)),
        _ => return Err(usage.to_owned()),
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
    Ok(Command::Grant {
        chat_id,
        days,
        grant_id,
    })
}

/// A grant id as an admin repeats it: what the bot gave, letters, digits,
/// `:`, `_` and `-`.
fn grant_id(id: &str, usage: &str) -> Result<String, String> {
    let ok = (1..=MAX_GRANT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(format!("{} is not a grant id.\n{usage}", esc(id)))
    }
}

pub(super) async fn answer<B: Backend>(
    ask: &Ask<'_, B>,
    chat_id: ChatId,
    days: u32,
    grant_id: Option<String>,
) -> Answer {
    let grant_id = grant_id.unwrap_or_else(|| format!("{}:{}", ask.chat, ask.message_id));
    let applied = ask
        .b
        .grant(ask.user, &grant_id, chat_id, days, ask.now)
        .await?;
    let plural = if days == 1 { "" } else { "s" };
    let mut text = format!(
        "Granted {days} day{plural} to <code>{chat_id}</code>: subscribed until {}.",
        when(applied.expires_at)
    );
    if !applied.announced {
        text.push_str(&format!(
            "\n\nThe grant is recorded, but I could not tell the alerting engine yet \
             (storage is unavailable). In a minute, send\n\
             <code>/grant {chat_id} {days} {}</code>\nto finish: with its id it is not \
             credited again.",
            esc(&grant_id)
        ));
    }
    Ok(Reply::text(text))
}
