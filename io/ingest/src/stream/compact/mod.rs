//! Compaction of the chats stream: its length bounded by the number of
//! chats, not by the number of commands ever sent.
//!
//! The chats stream is where chat state lives, read in full at every start
//! (see "Groups and consumers" in the parent module), so it is never
//! trimmed by length. Instead an entry that a later entry for the same chat
//! fully supersedes is deleted (`XDEL`), and the state the engine builds
//! from the stream stays what it was: [`plan::Planner`] says which entries
//! those are, judging every entry as the reader does, and writes one
//! `settings` entry with a chat's settings in full where its patches are
//! merged. After a compaction, each chat has at most one `subscribe` and
//! one `settings` entry older than the horizon.
//!
//! # Safety
//!
//! - **Entries newer than the horizon** ([`StreamIngestConfig::compact_horizon_secs`],
//!   an hour by default) are never deleted: readers in flight and
//!   pending entries, which are that recent unless a process is down,
//!   are not disturbed.
//! - **Atomic, and checked against new entries.** A run reads the stream
//!   up to its last generated id, plans, then applies its work in chunks,
//!   each one Lua script that first checks that the last generated id is
//!   still the one the plan has seen; merged entries are appended after
//!   everything the plan read, so nothing it read can come after them. If
//!   entries came in meanwhile, the chats they name are dropped from the
//!   plan (a merged entry must not be appended after a newer change of its
//!   chat) and the rest is applied. So several processes may compact at
//!   the same time: each sees the other's merged entries as new ones.
//! - **Consumer groups.** Every process has a group of its own on the
//!   stream. Deleting an entry a group has already delivered and
//!   acknowledged changes nothing for it; one not yet delivered is never
//!   read, and the entry that superseded it, later in the stream, is. One
//!   delivered and still pending (its process down for longer than the
//!   horizon) comes back from Redis without its fields when read again:
//!   the reader sets it aside in the dead-letter stream as "deleted while
//!   pending" and acknowledges it, and the superseding entry follows. A
//!   reader that lags more than the horizon can meet a chat's later
//!   settings without the earlier ones for a moment; the merged entry
//!   after them gives it the same settings in the end.
//! - **The engine's clock.** Deleted entries take their times with them
//!   and merged ones are dated at the compaction (by Redis's clock), so a
//!   restarted engine's stream clock may differ by the skew allowed at
//!   most; chat events that old move nothing that token events do not.

mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callwatch_common::keys::{EVENT_FIELD, stream_key};
use callwatch_common::route::Route;
use callwatch_streams::EntryId;
use callwatch_streams::entry::entries_of;
use engine::event::ChatId;
use engine::parse::LineParser;
use redis::Value;
use redis::aio::ConnectionLike;
use tokio::sync::watch;

use super::{StreamError, StreamIngestConfig};
use plan::{Planner, Work};

/// Entries read per `XRANGE`.
const PAGE: usize = 1_000;
/// Entries deleted per script, at most: a chunk holds Redis for about a
/// millisecond.
const CHUNK: usize = 2_000;
/// Times a run finds new entries between its reading and a chunk before it
/// leaves the rest for the next run.
const MAX_CONFLICTS: u32 = 8;

/// The stream's last generated id, or nil when there is no stream.
const LAST_ID_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
end
";

/// One chunk: if the stream's last generated id is still ARGV[1], appends
/// the ARGV[3] lines that follow (field ARGV[2]) and deletes the ids after
/// them. Returns {applied (1 or 0), the last generated id, deleted}.
const APPLY_LUA: &str = r"
local function last_id()
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then return info[i + 1] end
    end
end
local seen = last_id()
if seen ~= ARGV[1] then return {0, seen, 0} end
local lines = tonumber(ARGV[3])
for i = 4, 3 + lines do
    redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i])
end
local deleted, ids = 0, {}
for i = 4 + lines, #ARGV do
    ids[#ids + 1] = ARGV[i]
    if #ids == 500 or i == #ARGV then
        deleted = deleted + redis.call('XDEL', KEYS[1], unpack(ids))
        ids = {}
    end
end
return {1, last_id(), deleted}
";

/// What compaction has done, counted while the service runs.
#[derive(Debug, Default)]
pub struct CompactCounters {
    /// Runs finished (at start and periodic).
    pub runs: AtomicU64,
    /// Runs that failed (Redis away); the next one tries again.
    pub failed: AtomicU64,
    /// Entries deleted, superseded by a later one of their chat or bad.
    pub deleted: AtomicU64,
    /// Merged `settings` entries appended.
    pub merged: AtomicU64,
    /// Chunks that found new entries since their run read the stream.
    pub conflicts: AtomicU64,
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Entries the run read.
    pub read: u64,
    pub deleted: u64,
    pub merged: u64,
    pub conflicts: u64,
}

/// `work` with no item deleting more than [`CHUNK`] entries: a longer one
/// is cut in pieces, its merged line in the first, so that it is appended
/// before any of the entries it supersedes goes.
fn split(work: Vec<Work>) -> Vec<Work> {
    let mut out = Vec::with_capacity(work.len());
    for mut w in work {
        while w.delete.len() > CHUNK {
            let rest = Work {
                chat: w.chat,
                line: None,
                delete: w.delete.split_off(CHUNK),
            };
            out.push(std::mem::replace(&mut w, rest));
        }
        out.push(w);
    }
    out
}

/// Compacts the chats stream under a key prefix.
#[derive(Debug, Clone)]
pub struct ChatCompactor {
    stream: String,
    horizon_ms: u64,
    skew: i64,
    every: Option<Duration>,
    counters: Arc<CompactCounters>,
}

impl ChatCompactor {
    /// The compactor the `[ingest]` settings describe.
    pub fn new(config: &StreamIngestConfig) -> ChatCompactor {
        ChatCompactor {
            stream: stream_key(&config.prefix, Route::Chats),
            horizon_ms: config.compact_horizon_secs.saturating_mul(1_000),
            skew: config.max_future_skew_nanos(),
            every: (config.compact_every_secs > 0)
                .then(|| Duration::from_secs(config.compact_every_secs)),
            counters: Arc::default(),
        }
    }

    /// Whether compaction is on (`compact_every_secs` above 0).
    pub fn enabled(&self) -> bool {
        self.every.is_some()
    }

    pub fn counters(&self) -> Arc<CompactCounters> {
        Arc::clone(&self.counters)
    }

    /// One run, counted; a failure is logged and counted, not returned:
    /// the next run tries again, and the stream is only longer meanwhile.
    pub async fn run_logged(&self, con: &mut impl ConnectionLike) {
        match self.run_once(con).await {
            Ok(done) => tracing::info!(
                read = done.read,
                deleted = done.deleted,
                merged = done.merged,
                conflicts = done.conflicts,
                "chats stream compacted"
            ),
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "chats stream compaction failed; next run retries");
            }
        }
    }

    /// Runs every `compact_every_secs` until `stop` (the first run after
    /// one period: [`ChatCompactor::run_logged`] is the one at start).
    pub async fn run_periodically(
        self,
        mut con: impl ConnectionLike,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(every) = self.every else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.wait_for(|&s| s) => return,
                () = tokio::time::sleep(every) => {}
            }
            self.run_logged(&mut con).await;
        }
    }

    /// Reads the stream, plans and applies; see the module's docs.
    pub async fn run_once(&self, con: &mut impl ConnectionLike) -> Result<Compacted, StreamError> {
        let Some((seen, work, read)) = self.plan(con).await? else {
            return Ok(Compacted::default());
        };
        let mut done = Compacted {
            read,
            ..Compacted::default()
        };
        self.apply(con, work, seen, &mut done).await?;
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        Ok(done)
    }

    /// The stream read up to its last generated id: that id, the work, and
    /// the entries read; `None` when there is no stream.
    async fn plan(
        &self,
        con: &mut impl ConnectionLike,
    ) -> Result<Option<(EntryId, Vec<Work>, u64)>, StreamError> {
        let Some(seen) = self.last_id(con).await? else {
            return Ok(None);
        };
        let now = callwatch_streams::clock::server_now(con).await?;
        let now_ms = u64::try_from(now / 1_000_000).unwrap_or(0);
        let horizon = EntryId {
            ms: now_ms.saturating_sub(self.horizon_ms),
            seq: 0,
        };
        let mut planner = Planner::new(horizon, self.skew);
        let mut from = "-".to_owned();
        loop {
            let page = self.range(con, &from, seen).await?;
            let n = page.len();
            for entry in page {
                from = format!("({}", entry.id);
                planner.entry(entry.id, entry.fields);
            }
            if n < PAGE {
                break;
            }
        }
        let read = planner.read;
        Ok(Some((seen, split(planner.finish(now)), read)))
    }

    /// Applies `work` chunk by chunk, each against the last id seen.
    async fn apply(
        &self,
        con: &mut impl ConnectionLike,
        mut work: Vec<Work>,
        mut seen: EntryId,
        done: &mut Compacted,
    ) -> Result<(), StreamError> {
        while !work.is_empty() {
            let mut ids = 0;
            let take = work
                .iter()
                .take_while(|w| {
                    let fits = ids == 0 || ids + w.delete.len() <= CHUNK;
                    ids += w.delete.len();
                    fits
                })
                .count();
            let chunk: Vec<Work> = work.drain(..take).collect();
            let (applied, last, deleted) = self.apply_chunk(con, &chunk, seen).await?;
            if applied {
                done.deleted += deleted;
                done.merged += chunk.iter().filter(|w| w.line.is_some()).count() as u64;
                self.counters.deleted.fetch_add(deleted, Ordering::Relaxed);
                self.counters.merged.fetch_add(
                    chunk.iter().filter(|w| w.line.is_some()).count() as u64,
                    Ordering::Relaxed,
                );
            } else {
                done.conflicts += 1;
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                if done.conflicts > u64::from(MAX_CONFLICTS) {
                    return Ok(());
                }
                let touched = self.chats_in(con, seen, last).await?;
                work.splice(0..0, chunk);
                work.retain(|w| w.chat.is_none_or(|c| !touched.contains(&c)));
            }
            seen = last;
        }
        Ok(())
    }

    /// One chunk through [`APPLY_LUA`]: whether it applied, the last id
    /// after it, and the entries deleted.
    async fn apply_chunk(
        &self,
        con: &mut impl ConnectionLike,
        chunk: &[Work],
        seen: EntryId,
    ) -> Result<(bool, EntryId, u64), StreamError> {
        let lines: Vec<&[u8]> = chunk.iter().filter_map(|w| w.line.as_deref()).collect();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPLY_LUA)
            .arg(1)
            .arg(&self.stream)
            .arg(seen)
            .arg(EVENT_FIELD)
            .arg(lines.len())
            .arg(lines);
        for w in chunk {
            cmd.arg(&w.delete);
        }
        let (applied, last, deleted): (i64, String, u64) = cmd.query_async(con).await?;
        let last = EntryId::parse(last.as_bytes())
            .ok_or(StreamError::Reply("the compaction script answered no id"))?;
        Ok((applied == 1, last, deleted))
    }

    async fn last_id(&self, con: &mut impl ConnectionLike) -> Result<Option<EntryId>, StreamError> {
        let id: Option<String> = redis::cmd("EVAL")
            .arg(LAST_ID_LUA)
            .arg(1)
            .arg(&self.stream)
            .query_async(con)
            .await?;
        id.map(|id| {
            EntryId::parse(id.as_bytes())
                .ok_or(StreamError::Reply("XINFO STREAM answered no last id"))
        })
        .transpose()
    }

    /// A page of entries from `from` (`-` or `(id`) up to `through`.
    async fn range(
        &self,
        con: &mut impl ConnectionLike,
        from: &str,
        through: EntryId,
    ) -> Result<Vec<callwatch_streams::Entry>, StreamError> {
        let reply: Vec<Value> = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg(from)
            .arg(through)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(con)
            .await?;
        Ok(entries_of(reply)?)
    }

    /// The chats named by the entries after `after` up to `through`: what
    /// came in while a run was planning.
    async fn chats_in(
        &self,
        con: &mut impl ConnectionLike,
        after: EntryId,
        through: EntryId,
    ) -> Result<HashSet<ChatId>, StreamError> {
        let mut parser = LineParser::default();
        let mut chats = HashSet::new();
        let mut from = format!("({after}");
        loop {
            let page = self.range(con, &from, through).await?;
            let n = page.len();
            for entry in page {
                from = format!("({}", entry.id);
                let Ok(value) = entry.sole_field(EVENT_FIELD) else {
                    continue;
                };
                if let Ok(
                    engine::Event::Settings { chat_id, .. }
                    | engine::Event::Subscribe { chat_id, .. },
                ) = parser.parse(&value)
                {
                    chats.insert(chat_id);
                }
            }
            if n < PAGE {
                return Ok(chats);
            }
        }
    }
}

#[cfg(test)]
mod tests;
