//! What a start hands out again before reading: entries the group
//! delivered and saw acknowledged, after the position the engine's state
//! already covers. Without a snapshot that is the chats stream from its
//! start (the chat state lives nowhere else); after one, every stream
//! from the snapshot's position. Pending entries are left out: they are
//! read again with the other pending ones, in their order. Streams are
//! merged in hand-out order, as reads are.

use std::collections::HashSet;

use callwatch_streams::EntryId;
use callwatch_streams::entry::entries_of;
use redis::Value;
use tokio::sync::{mpsc, watch};

use super::order::{Body, Entry, OrderKey, take_ordered};
use super::reader::{Handing, Reader, Step};
use super::{EventBatch, StreamError};

/// One stream's part of the history.
#[derive(Debug)]
struct Span {
    /// The last entry fetched; `None`: from the stream's start.
    after: Option<EntryId>,
    /// The group's last delivered entry: later ones are new.
    through: EntryId,
    /// This stream's pending entries.
    pending: HashSet<EntryId>,
    done: bool,
}

/// The history still to hand out.
#[derive(Debug, Default)]
pub(super) struct History {
    spans: Vec<Option<Span>>,
    /// Fetched and not yet handed out.
    held: Vec<Entry>,
}

impl Reader<'_> {
    /// The history, and each stream's position at start: what the state
    /// the engine starts from covers. `resume` holds the positions a
    /// snapshot covers (the state starts from it); without one, the state
    /// comes from a rebuild of what was acknowledged, so each stream is
    /// covered through its last delivered entry, and only the chats
    /// stream's history is handed out again.
    pub(super) async fn start_history(&mut self) -> Result<History, StreamError> {
        let mut history = History::default();
        for stream in 0..self.layout.keys.len() {
            let (key, consumer) = (&self.layout.keys[stream], self.layout.consumer(stream));
            let through = consumer.last_delivered(&mut self.con, key).await?;
            let after = match &self.resume {
                Some(positions) => positions[stream],
                None if stream == 0 => None,
                None => {
                    self.applied[stream] = Some(through).filter(|&t| t != EntryId::ZERO);
                    history.spans.push(None);
                    continue;
                }
            };
            self.applied[stream] = after;
            if through == EntryId::ZERO || after.is_some_and(|a| a >= through) {
                history.spans.push(None);
                continue;
            }
            let pending = consumer
                .pending_ids(&mut self.con, key, self.config.batch)
                .await?;
            history.spans.push(Some(Span {
                after,
                through,
                pending,
                done: false,
            }));
        }
        Ok(history)
    }

    /// Hands out the next part of the history: a page fetched from each
    /// stream that has none held, then every held entry up to the
    /// earliest last-fetched one among streams not yet done.
    pub(super) async fn replay(
        &mut self,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let Some(mut history) = self.history.take() else {
            return Ok(Step::Go);
        };
        let mut limit = None::<OrderKey>;
        for stream in 0..history.spans.len() {
            let Some(span) = history.spans[stream].as_mut().filter(|s| !s.done) else {
                continue;
            };
            let held = history.held.iter().any(|e| e.stream as usize == stream);
            if !held {
                let key = &self.layout.keys[stream];
                let page = fetch(&mut self.con, key, span, self.config.batch).await?;
                history
                    .held
                    .extend(page.into_iter().map(|(id, body)| Entry {
                        stream: stream as u32,
                        id,
                        body,
                    }));
            }
            if !span.done
                && let Some(after) = span.after
            {
                let end = (after.ms, stream as u32, after.seq);
                limit = Some(limit.map_or(end, |l| l.min(end)));
            }
        }
        let fed = take_ordered(&mut history.held, limit);
        let finished = history.held.is_empty() && history.spans.iter().flatten().all(|s| s.done);
        if !finished {
            self.history = Some(history);
        }
        self.hand_out(fed, Handing::Replay, out, stop).await
    }
}

/// The next page of `span`'s stream: entries after `span.after` through
/// `span.through`, pending ones left out; marks the span done at its end.
async fn fetch(
    con: &mut callwatch_streams::Conn,
    key: &str,
    span: &mut Span,
    count: usize,
) -> Result<Vec<(EntryId, Body)>, StreamError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg(span.after.map_or("-".to_owned(), |a| format!("({a}")))
        .arg(span.through)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    let Value::Array(entries) = reply else {
        return Err(StreamError::Reply("XRANGE answered no array"));
    };
    span.done = entries.len() < count;
    let mut page = Vec::with_capacity(entries.len());
    for callwatch_streams::Entry { id, fields } in entries_of(entries)? {
        span.after = Some(id);
        if !span.pending.contains(&id) {
            page.push((id, Body::of(fields)));
        }
    }
    Ok(page)
}
