//! `/help`: every command with its usage; the admins' commands to admins
//! only.

use std::fmt::Write as _;

use super::text::esc;
use super::{Command, Reply, args};

/// The command list `/help` shows, with each command's usage.
const HELP: &[(&str, &str)] = &[
    ("/status", "your subscription, settings and tracked tokens"),
    ("/settings", "every setting and how to change it"),
    (
        "/min_callers N",
        "alert when N of your channels called a token (1–100)",
    ),
    (
        "/lookback MINUTES",
        "how far back calls count (1–10080, a week)",
    ),
    (
        "/mcap MIN MAX",
        "market value range, e.g. <code>/mcap 50k 5m</code> or <code>/mcap 0 any</code>",
    ),
    (
        "/follow CHANNEL…",
        "follow channels by id (e.g. <code>-1001234567890</code>); <code>/follow all</code> follows every channel",
    ),
    ("/unfollow CHANNEL…", "stop following channels"),
    ("/following", "the channels you follow"),
    ("/tracked", "tokens alerted to you, with their multiple now"),
    ("/top", "channels ranked over the last 7 days"),
    ("/subscribe [PLAN]", "plans, and how to pay in SOL"),
];

/// The admins' commands, which `/help` lists to admins only.
const ADMIN_HELP: &[(&str, &str)] = &[
    (
        "/grant CHAT DAYS",
        "give a chat days, recorded as your grant",
    ),
    ("/stats", "the service's figures"),
    ("/unmatched", "payments that matched no quote"),
    (
        "/resolve SIGNATURE CHAT PLAN",
        "credit an unmatched payment to a chat",
    ),
];

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    args::none("help", args, Command::Help)
}

/// Pure: the list depends only on who asks.
pub(super) fn answer(admin: bool) -> Reply {
    let mut text = String::from("<b>Commands</b>\n");
    commands(&mut text);
    if admin {
        text.push_str("\n<b>Admins</b>\n");
        list(ADMIN_HELP, &mut text);
    }
    Reply::text(text)
}

/// Every user command with its usage, one a line; `/start` shows it too.
pub(super) fn commands(out: &mut String) {
    list(HELP, out);
}

fn list(commands: &[(&str, &str)], out: &mut String) {
    for (usage, what) in commands {
        let _ = writeln!(out, "{} — {what}", esc(usage));
    }
}
