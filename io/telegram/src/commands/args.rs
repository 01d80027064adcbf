//! Argument readers that several commands share, each returning the reply
//! that explains a bad argument.

use engine::event::ChatId;

use super::Command;
use super::text::esc;

/// `command` when `/name` came with no arguments, as it must.
pub(super) fn none(name: &str, args: &[&str], command: Command) -> Result<Command, String> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(format!("/{name} takes no arguments."))
    }
}

/// A chat id argument (any non-zero integer).
pub(super) fn chat_id(arg: &str, usage: &str) -> Result<ChatId, String> {
    arg.parse::<i64>()
        .ok()
        .filter(|c| *c != 0)
        .ok_or_else(|| format!("{} is not a chat id.\n{usage}", esc(arg)))
}
