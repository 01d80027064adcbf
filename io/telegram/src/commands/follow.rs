//! `/follow`, `/unfollow` and `/following`: the channels a chat counts
//! calls from, by id. An empty list means every channel, so the commands
//! refuse what would empty the list by accident.

use std::fmt::Write as _;

use engine::event::{ChannelId, SettingsPatch};

use super::text::esc;
use super::{Answer, Ask, Backend, BackendError, Command, LIST_BUDGET, Reply, args};
use crate::format;

/// The most channels one chat may follow by name.
pub const MAX_FOLLOW: usize = 500;

pub(super) fn parse_follow(args: &[&str]) -> Result<Command, String> {
    if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
        return Ok(Command::Follow(Vec::new()));
    }
    channel_ids("follow", args).map(Command::Follow)
}

pub(super) fn parse_unfollow(args: &[&str]) -> Result<Command, String> {
    channel_ids("unfollow", args).map(Command::Unfollow)
}

pub(super) fn parse_following(args: &[&str]) -> Result<Command, String> {
    args::none("following", args, Command::Following)
}

/// The channel ids of `/name`, sorted and without repeats.
fn channel_ids(name: &str, args: &[&str]) -> Result<Vec<ChannelId>, String> {
    let usage = format!(
        "Usage: <code>/{name} CHANNEL…</code> with channel ids such as \
         <code>-1001234567890</code>{}. /top shows channels with their ids.",
        if name == "follow" {
            "; <code>/follow all</code> follows every channel"
        } else {
            ""
        }
    );
    if args.is_empty() {
        return Err(usage);
    }
    let mut ids = Vec::with_capacity(args.len());
    for a in args {
        match a.parse::<i64>() {
            Ok(id) if id != 0 => ids.push(id),
            _ if a.starts_with('@') || a.contains("t.me/") => {
                return Err(format!(
                    "{} is a channel's name; I need its numeric id (it starts with \
                     -100 for channels).\n{usage}",
                    esc(a)
                ));
            }
            _ => return Err(format!("{} is not a channel id.\n{usage}", esc(a))),
        }
    }
    if ids.len() > MAX_FOLLOW {
        return Err(format!("At most {MAX_FOLLOW} channels at once."));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub(super) async fn answer_follow<B: Backend>(ask: &Ask<'_, B>, ids: &[ChannelId]) -> Answer {
    let current = ask.b.settings(ask.chat).await?;
    let follow = if ids.is_empty() {
        Vec::new()
    } else {
        let mut list = current.follow.clone();
        list.extend(ids);
        list.sort_unstable();
        list.dedup();
        list
    };
    if follow.len() > MAX_FOLLOW {
        return Err(BackendError::Refused(format!(
            "You can follow at most {MAX_FOLLOW} channels by id; /follow all \
             follows every channel."
        )));
    }
    let patch = SettingsPatch {
        follow: Some(follow.clone()),
        ..SettingsPatch::default()
    };
    ask.save_from(&current, &patch).await?;
    let mut text = if ids.is_empty() {
        String::from("Done: you follow every channel.")
    } else if current.follow.is_empty() {
        String::from(
            "Done. You followed every channel; now you follow only the ones you \
             name. ",
        )
    } else {
        String::from("Done. ")
    };
    if !ids.is_empty() {
        channel_list(ask.b, &follow, &mut text).await;
    }
    Ok(Reply::text(text))
}

pub(super) async fn answer_unfollow<B: Backend>(ask: &Ask<'_, B>, ids: &[ChannelId]) -> Answer {
    let current = ask.b.settings(ask.chat).await?;
    if current.follow.is_empty() {
        return Ok(Reply::text(
            "You follow every channel, so there is nothing to unfollow. Name the \
             channels you want with /follow first.",
        ));
    }
    let follow: Vec<ChannelId> = current
        .follow
        .iter()
        .copied()
        .filter(|c| !ids.contains(c))
        .collect();
    if follow.len() == current.follow.len() {
        return Ok(Reply::text("You did not follow any of those channels."));
    }
    if follow.is_empty() {
        return Ok(Reply::text(
            "That would leave no channel, and an empty list means every channel. \
             Follow another channel first, or use /follow all.",
        ));
    }
    let patch = SettingsPatch {
        follow: Some(follow.clone()),
        ..SettingsPatch::default()
    };
    ask.save_from(&current, &patch).await?;
    let mut text = String::from("Done. ");
    channel_list(ask.b, &follow, &mut text).await;
    Ok(Reply::text(text))
}

pub(super) async fn answer_following<B: Backend>(ask: &Ask<'_, B>) -> Answer {
    let current = ask.b.settings(ask.chat).await?;
    if current.follow.is_empty() {
        return Ok(Reply::text(
            "You follow every channel. /follow CHANNEL narrows that down.",
        ));
    }
    let mut text = String::new();
    channel_list(ask.b, &current.follow, &mut text).await;
    Ok(Reply::text(text))
}

/// "You follow N channels:" and one channel a line, with its name where
/// known, cut short to fit one message.
async fn channel_list<B: Backend>(b: &B, ids: &[ChannelId], out: &mut String) {
    let names = b.names(ids).await;
    let _ = writeln!(
        out,
        "You follow {} channel{}:",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    );
    for (i, (id, name)) in ids.iter().zip(&names).enumerate() {
        if format::units(out) > LIST_BUDGET {
            let _ = writeln!(out, "…and {} more.", ids.len() - i);
            break;
        }
        out.push_str("• ");
        format::channel_name(*id, name.as_deref(), out);
        if name.is_some() {
            let _ = write!(out, " (<code>{id}</code>)");
        }
        out.push('\n');
    }
}
