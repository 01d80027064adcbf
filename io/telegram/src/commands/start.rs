//! `/start`: the first thing a new subscriber sees: what the bot does,
//! whether they are subscribed, and every command.

use std::fmt::Write as _;

use super::text::when;
use super::{Answer, Ask, Backend, Command, Reply, args, help};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("start", args, Command::Start)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let mut text = String::from(
        "<b>Welcome to callwatch.</b>\nI alert you when a token is called by \
         enough of the channels you follow, then when it reaches 2x, 5x, 10x and \
         more of its value at the call.\n\n",
    );
    match ask.b.subscription(ask.chat).await? {
        Some(s) if s.expires_at > ask.now => {
            let _ = writeln!(text, "Your subscription runs until {}.", when(s.expires_at));
        }
        _ => text.push_str("You have no active subscription: /subscribe shows the plans.\n"),
    }
    text.push('\n');
    help::commands(&mut text);
    Ok(Reply::text(text))
}
