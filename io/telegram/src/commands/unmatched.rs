//! `/unmatched` (admins): payments that matched no quote, kept for an
//! admin to credit by hand with `/resolve`.

use std::fmt::Write as _;

use super::text::esc;
use super::{Answer, Ask, Backend, Command, LIST_BUDGET, Reply, args};
use crate::format;

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("unmatched", args, Command::Unmatched)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let list = ask.b.unmatched().await?;
    if list.is_empty() {
        return Ok(Reply::text("No unmatched payments."));
    }
    let mut text = format!("<b>Unmatched payments</b> ({})\n", list.len());
    for (i, u) in list.iter().enumerate() {
        if format::units(&text) > LIST_BUDGET {
            let _ = writeln!(text, "…and {} more.", list.len() - i);
            break;
        }
        let _ = write!(
            text,
            "<code>{}</code>\n{} SOL, {}",
            esc(&u.signature),
            esc(&u.received_sol),
            esc(&u.reason)
        );
        if let Some(c) = u.chat_id {
            let _ = write!(text, ", quote of chat <code>{c}</code>");
        }
        text.push_str("\n\n");
    }
    text.push_str("Credit one with /resolve SIGNATURE CHAT PLAN.");
    Ok(Reply::text(text))
}
