//! What one compaction does, decided from the chats stream's entries in
//! id order, without I/O: which entries a later one supersedes, and the
//! merged settings entry that supersedes a chat's settings.

use std::collections::HashMap;

use callwatch_streams::EntryId;
use engine::chat::{Chat, Chats};
use engine::event::{ChatId, Event, SettingsPatch, limits};
use engine::ingest::{Ingest, Outcome};
use engine::time::Nanos;
use redis::Value;

use super::super::order::Body;

/// One chat's share of a compaction (or, without a chat, the bad entries):
/// a merged settings line to append, then the entries to delete. Applied
/// together or not at all.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Work {
    pub chat: Option<ChatId>,
    /// The chat's settings in full, as one `settings` event.
    pub line: Option<Vec<u8>>,
    pub delete: Vec<EntryId>,
}

/// What the planner keeps of one chat.
#[derive(Debug, Default)]
struct ChatEntries {
    /// The latest good `subscribe`, and whether it is beyond the horizon.
    subscribe: Option<(EntryId, bool)>,
    /// Good `subscribe`s beyond the horizon that a later one replaced.
    replaced: Vec<EntryId>,
    /// Good `settings` beyond the horizon.
    settings: Vec<EntryId>,
}

/// Reads the chats stream's entries in id order and plans the compaction.
///
/// Entries are judged exactly as the reader judges them (the engine's
/// [`Ingest`], with the entry's arrival and the skew), so "good" here is
/// what the engine applied. Only entries before `horizon` are deleted:
/// - a bad entry (it changed nothing);
/// - a good `subscribe` followed by a later good `subscribe` of its chat
///   (the latest decides whether the chat is active);
/// - a chat's good `settings` when it has two or more beyond the horizon:
///   they are patches, so one entry with the chat's settings in full, as
///   they stand after every entry read, is appended after everything read
///   and they are deleted. Its fields are all set, except an unbounded
///   `max_fdv_usd`, which JSON cannot write: left out, it stays unbounded,
///   since no good entry ever bounded it.
///
/// Token events (they belong in the partitions) are never touched.
#[derive(Debug)]
pub(crate) struct Planner {
    ingest: Ingest,
    skew: Nanos,
    horizon: EntryId,
    /// Every chat's settings as the engine has them after the entries read.
    settings: Chats,
    chats: HashMap<ChatId, ChatEntries>,
    bad: Vec<EntryId>,
    /// Entries read.
    pub read: u64,
}

impl Planner {
    /// A planner deleting only entries before `horizon`, judging events
    /// dated ahead of their entries with `skew`, as the reader does.
    pub(crate) fn new(horizon: EntryId, skew: Nanos) -> Planner {
        Planner {
            ingest: Ingest::new(),
            skew,
            horizon,
            settings: Chats::default(),
            chats: HashMap::new(),
            bad: Vec::new(),
            read: 0,
        }
    }

    /// Takes the next entry, in id order (`fields` is `None` for an entry
    /// Redis answers without them).
    pub(crate) fn entry(&mut self, id: EntryId, fields: Option<Vec<(Value, Value)>>) {
        self.read += 1;
        let old = id < self.horizon;
        let arrived = i64::try_from(id.ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        let event = match Body::of(fields) {
            Body::Event(value) => match self.ingest.line_arrived(&value, arrived, self.skew) {
                Outcome::Event(env) => Some(env.event),
                Outcome::Bad { .. } | Outcome::Blank => None,
            },
            Body::Bad { .. } => None,
        };
        match event {
            None if old => self.bad.push(id),
            None => {}
            Some(Event::Subscribe { chat_id, .. }) => {
                let chat = self.chats.entry(chat_id).or_default();
                if let Some((before, true)) = chat.subscribe.replace((id, old)) {
                    chat.replaced.push(before);
                }
            }
            Some(Event::Settings { chat_id, patch, .. }) => {
                self.settings.apply_settings(chat_id, &patch);
                if old {
                    self.chats.entry(chat_id).or_default().settings.push(id);
                }
            }
            Some(Event::Call { .. } | Event::Price { .. }) => {}
        }
    }

    /// The work, one item a chat with something to delete (and one for the
    /// bad entries); merged settings entries are dated `now`, which must
    /// not be later than the entries that will carry them.
    pub(crate) fn finish(self, now: Nanos) -> Vec<Work> {
        let mut work = Vec::new();
        if !self.bad.is_empty() {
            work.push(Work {
                chat: None,
                line: None,
                delete: self.bad,
            });
        }
        for (chat_id, entries) in self.chats {
            let mut delete = entries.replaced;
            let mut line = None;
            if entries.settings.len() >= 2 {
                let idx = self.settings.lookup(chat_id).expect("settings applied");
                let merged = merged_line(chat_id, self.settings.get(idx), now);
                // Longer than a line may be (a follow list near the bound),
                // it would be a bad entry: the chat's settings stay as they are.
                if merged.len() <= limits::MAX_LINE_BYTES {
                    line = Some(merged);
                    delete.extend(entries.settings);
                }
            }
            if !delete.is_empty() {
                work.push(Work {
                    chat: Some(chat_id),
                    line,
                    delete,
                });
            }
        }
        work
    }
}

/// `chat`'s settings in full, as one `settings` event at `now`.
fn merged_line(chat_id: ChatId, chat: &Chat, now: Nanos) -> Vec<u8> {
    let patch = SettingsPatch {
        min_callers: Some(chat.min_callers),
        lookback_minutes: Some(chat.lookback_minutes),
        min_fdv_usd: Some(chat.min_fdv_usd),
        max_fdv_usd: chat.max_fdv_usd.is_finite().then_some(chat.max_fdv_usd),
        follow: Some(chat.follow.to_vec()),
    };
    let mut line = Vec::with_capacity(160);
    Event::Settings {
        chat_id,
        at: now,
        patch: Box::new(patch),
    }
    .write_json(&mut line);
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests;
