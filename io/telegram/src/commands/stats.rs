//! `/stats` (admins): the service's figures, as the backend names them.

use std::fmt::Write as _;

use super::text::esc;
use super::{Answer, Ask, Backend, Command, Reply, args};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("stats", args, Command::Stats)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let rows = ask.b.stats().await?;
    let mut text = String::from("<b>Stats</b>\n");
    for (name, value) in rows {
        let _ = writeln!(text, "{}: <b>{}</b>", esc(&name), esc(&value));
    }
    Ok(Reply::text(text))
}
