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
    (
        "/charts on|off",
        "multiplier alerts with a chart of the value since the call, or as text",
    ),
    ("/tracked", "tokens alerted to you, with their multiple now"),
    ("/top", "channels ranked over the last 7 days"),
    (
        "/dashboard",
        "a private link to your tracked tokens and the leaderboard on the web",
    ),
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

/// The "/" menu Telegram shows beside the input (`setMyCommands`): each
/// user command's name and what it does, as plain text (the menu shows no
/// HTML), `/help` last.
pub fn menu() -> Vec<(String, String)> {
    HELP.iter()
        .map(|(usage, what)| {
            let name = usage.trim_start_matches('/');
            let name = name.split(' ').next().unwrap_or(name);
            (name.to_owned(), plain(what))
        })
        .chain(std::iter::once((
            "help".to_owned(),
            "every command and how to use it".to_owned(),
        )))
        .collect()
}

/// `html` without its tags and entities: what Telegram's menu can show.
fn plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn list(commands: &[(&str, &str)], out: &mut String) {
    for (usage, what) in commands {
        let _ = writeln!(out, "{} — {what}", esc(usage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_names_each_user_command_in_plain_text_within_telegrams_limits() {
        let menu = menu();
        let names: Vec<&str> = menu.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), HELP.len() + 1);
        for name in [
            "status",
            "min_callers",
            "mcap",
            "follow",
            "tracked",
            "top",
            "dashboard",
            "help",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert!(
            !names.contains(&"grant"),
            "admin commands stay out of the menu"
        );
        for (name, what) in &menu {
            // Telegram: 1-32 of a-z, 0-9, _; a description of 1-256.
            assert!(
                (1..=32).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!((1..=256).contains(&what.chars().count()), "{what}");
            assert!(!what.contains('<') && !what.contains("&lt;"), "{what}");
        }
        let mcap = &menu.iter().find(|(n, _)| n == "mcap").unwrap().1;
        assert!(mcap.contains("/mcap 50k 5m"), "{mcap}");
    }
}
