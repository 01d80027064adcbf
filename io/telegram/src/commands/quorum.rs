//! `/min_callers` and `/lookback`: how many of a chat's channels must call
//! a token, and within how long, before the chat is alerted. Both take one
//! number in a range, read alike.

use std::ops::RangeInclusive;

use engine::event::{SettingsPatch, limits};

use super::text::{esc, minutes};
use super::{Answer, Ask, Backend, Command, Reply};

pub(super) fn parse_min_callers(args: &[&str]) -> Result<Command, String> {
    one_number(
        args,
        limits::MIN_CALLERS,
        "a number from 1 to 100",
        "Usage: <code>/min_callers N</code>, N from 1 to 100: how many of your channels \
         must call a token before you are alerted.",
    )
    .map(Command::MinCallers)
}

pub(super) fn parse_lookback(args: &[&str]) -> Result<Command, String> {
    one_number(
        args,
        limits::LOOKBACK_MINUTES,
        "a number of minutes from 1 to 10080",
        "Usage: <code>/lookback MINUTES</code>, from 1 to 10080 (a week): how far back \
         calls count together.",
    )
    .map(Command::Lookback)
}

/// The one argument of a command that takes a number in `range`.
fn one_number(
    args: &[&str],
    range: RangeInclusive<u32>,
    what: &str,
    usage: &str,
) -> Result<u32, String> {
    let [n] = args else {
        return Err(usage.to_owned());
    };
    match n.parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!("{} is not {what}.\n{usage}", esc(n))),
    }
}

pub(super) async fn answer_min_callers<B: Backend>(ask: &Ask<'_, B>, n: u32) -> Answer {
    let patch = SettingsPatch {
        min_callers: Some(n),
        ..SettingsPatch::default()
    };
    ask.save(&patch).await?;
    Ok(Reply::text(format!(
        "Done: you are alerted when {n} of your channel{} called a token.",
        if n == 1 { "" } else { "s have" }
    )))
}

pub(super) async fn answer_lookback<B: Backend>(ask: &Ask<'_, B>, lookback_minutes: u32) -> Answer {
    let patch = SettingsPatch {
        lookback_minutes: Some(lookback_minutes),
        ..SettingsPatch::default()
    };
    ask.save(&patch).await?;
    Ok(Reply::text(format!(
        "Done: calls within the last {} count together.",
        minutes(lookback_minutes)
    )))
}
