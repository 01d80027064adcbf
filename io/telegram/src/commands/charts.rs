//! `/charts`, `/charts on`, `/charts off`: whether the chat's multiplier
//! alerts carry a chart. Not an engine setting (no `settings` event): the
//! sending side reads it when it renders an alert ([`crate::charts_off`]).
//! On unless turned off.

use super::{Answer, Ask, Backend, Command, Reply};

const USAGE: &str = "Usage: <code>/charts on</code> or <code>/charts off</code>: whether \
                     multiplier alerts come with a chart of the value since the call.";

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::Charts(None)),
        [word] if word.eq_ignore_ascii_case("on") => Ok(Command::Charts(Some(true))),
        [word] if word.eq_ignore_ascii_case("off") => Ok(Command::Charts(Some(false))),
        _ => Err(USAGE.to_owned()),
    }
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>, set: Option<bool>) -> Answer {
    let on = match set {
        Some(on) => {
            ask.b.set_charts(ask.chat, on).await?;
            on
        }
        None => ask.b.charts(ask.chat).await?,
    };
    let now = if set.is_some() { "Done: m" } else { "M" };
    Ok(Reply::text(if on {
        format!("{now}ultiplier alerts come with a chart. /charts off turns it off.")
    } else {
        format!("{now}ultiplier alerts come as text, without a chart. /charts on turns charts on.")
    }))
}
