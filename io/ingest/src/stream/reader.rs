//! The reader: one consumer over the chats stream and the owned
//! partitions, handing entries out in the order the module's docs state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::keys::EVENT_FIELD;
use callwatch_streams::classify::has_code;
use callwatch_streams::entry::{entries_of, streams_of};
use callwatch_streams::log::{DeadLetter, DeadLetters};
use callwatch_streams::{EntryId, ReadFrom};
use engine::event::limits;
use engine::ingest::{Ingest, Outcome};
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};

use super::ack::{InFlight, Shared};
use super::order::{Body, Cursor, Entry, OrderKey, Position, take_ordered};
use super::{EventBatch, IngestCounters, Layout, StreamError, StreamIngestConfig};

pub(super) enum Step {
    Go,
    Stop,
}

pub(super) struct Reader<'a> {
    pub(super) config: &'a StreamIngestConfig,
    pub(super) layout: &'a Layout,
    pub(super) dead_letters: DeadLetters,
    pub(super) con: ConnectionManager,
    pub(super) ingest: &'a mut Ingest,
    pub(super) shared: &'a Shared,
    /// The last `seq` handed out, for [`Acker::ack_through`]'s check.
    pub(super) handed: &'a AtomicU64,
    pub(super) streams: Vec<Position>,
    /// Read, in no order, waiting to be handed out.
    pub(super) held: Vec<Entry>,
    /// The chats stream's history still to hand out again, at start.
    pub(super) history: Option<History>,
    pub(super) backoff: Backoff,
}

/// The chats stream's entries that this consumer's group delivered and
/// that were acknowledged: the chat state a restarted process must learn
/// again before anything else. Its pending chat entries are left out; they
/// are read again with the partitions' pending ones, in their order.
#[derive(Debug)]
pub(super) struct History {
    /// The last entry taken from the history.
    after: Option<EntryId>,
    /// The group's last delivered entry: later ones are new.
    through: EntryId,
    /// This consumer's pending chat entries.
    pending: HashSet<EntryId>,
}

/// Whether entries go out for the first time or again from the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handing {
    Read,
    Replay,
}

impl Reader<'_> {
    pub(super) async fn run(
        &mut self,
        out: mpsc::Sender<EventBatch>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let mut prepared = false;
        let mut claim = true;
        loop {
            if stop_requested(&stop) {
                return Ok(());
            }
            let step = if prepared {
                self.step(&out, &mut stop).await
            } else {
                self.prepare(claim).await.map(|()| Step::Go)
            };
            let e = match step {
                Ok(Step::Go) => {
                    // Claims are for the start only: later, an entry older
                    // than one handed out would be skipped as read again.
                    (prepared, claim) = (true, false);
                    self.backoff.reset();
                    continue;
                }
                Ok(Step::Stop) => return Ok(()),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            if matches!(&e, StreamError::Redis(e) if has_code(e, "NOGROUP")) {
                prepared = false;
            }
            // Whatever was read on the failed connection is pending: read
            // it again from the start, handed-out entries skipped.
            self.held.clear();
            for s in &mut self.streams {
                s.cursor = Cursor::Pending(EntryId::ZERO);
            }
            self.shared
                .counters
                .reconnects
                .fetch_add(1, Ordering::Relaxed);
            let wait = self.backoff.next_delay();
            tracing::warn!(error = %e, ?wait, "stream ingest: Redis failed, retrying");
            if stop_during(wait, &mut stop).await {
                return Ok(());
            }
        }
    }

    /// Groups made, stale entries claimed if `claim`, and every stream set
    /// to read its pending entries from the start.
    async fn prepare(&mut self, claim: bool) -> Result<(), StreamError> {
        for (stream, key) in self.layout.keys.iter().enumerate() {
            self.layout
                .consumer(stream)
                .create_group(&mut self.con, key)
                .await?;
        }
        // The chat group is this consumer's alone: nothing to claim there.
        let claimed = if claim { &self.layout.keys[1..] } else { &[] };
        for key in claimed {
            let n = self
                .layout
                .partitions
                .claim_idle(
                    &mut self.con,
                    key,
                    self.config.claim_idle(),
                    self.config.batch,
                )
                .await?;
            self.shared.counters.claimed.fetch_add(n, Ordering::Relaxed);
        }
        if claim {
            self.history = self.chat_history().await?;
        }
        for s in &mut self.streams {
            s.cursor = Cursor::Pending(EntryId::ZERO);
        }
        Ok(())
    }

    /// The chat group's last delivered entry and pending entries, which
    /// bound the history to hand out again; `None` if it delivered nothing.
    async fn chat_history(&mut self) -> Result<Option<History>, StreamError> {
        let (key, chats) = (&self.layout.keys[0], &self.layout.chats);
        let through = chats.last_delivered(&mut self.con, key).await?;
        if through == EntryId::ZERO {
            return Ok(None);
        }
        let pending = chats
            .pending_ids(&mut self.con, key, self.config.batch)
            .await?;
        Ok(Some(History {
            after: None,
            through,
            pending,
        }))
    }

    /// Hands out the next part of the chats stream's history.
    async fn replay(
        &mut self,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let Some(History { after, through, .. }) = self.history else {
            return Ok(Step::Go);
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.layout.keys[0])
            .arg(after.map_or("-".to_owned(), |a| format!("({a}")))
            .arg(through)
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(&mut self.con)
            .await?;
        let Value::Array(entries) = reply else {
            return Err(StreamError::Reply("XRANGE answered no array"));
        };
        let done = entries.len() < self.config.batch;
        let mut fed = Vec::with_capacity(entries.len());
        let history = self.history.as_mut().expect("checked above");
        for callwatch_streams::Entry { id, fields } in entries_of(entries)? {
            history.after = Some(id);
            if !history.pending.contains(&id) {
                fed.push(Entry {
                    stream: 0,
                    id,
                    body: Body::of(fields),
                });
            }
        }
        if done {
            self.history = None;
        }
        self.hand_out(fed, Handing::Replay, out, stop).await
    }

    /// One read, and what it lets go out.
    async fn step(
        &mut self,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        if self.history.is_some() {
            return self.replay(out, stop).await;
        }
        let pending = self
            .streams
            .iter()
            .any(|s| matches!(s.cursor, Cursor::Pending(_)));
        if !pending {
            for s in &mut self.streams {
                s.cursor = Cursor::New;
            }
        }
        // Until every stream's pending entries are read, only those.
        let included: Vec<usize> = (0..self.streams.len())
            .filter(|&i| !pending || matches!(self.streams[i].cursor, Cursor::Pending(_)))
            .collect();
        let count = loop {
            let in_window = self.shared.window.lock().len();
            let room = self
                .config
                .window
                .saturating_sub(in_window + self.held.len());
            let count = (room / included.len()).min(self.config.batch);
            if count > 0 {
                break count;
            }
            if in_window == 0 {
                // Held entries fill the window and no acknowledgement will
                // make room: let them go out of strict order.
                let fed = take_ordered(&mut self.held, None);
                return self.hand_out(fed, Handing::Read, out, stop).await;
            }
            tokio::select! {
                () = self.shared.room.notified() => {}
                () = stop_signal(stop) => return Ok(Step::Stop),
            }
        };
        let (read, limit) = self.read(&included, count).await?;
        if read == 0 && self.held.is_empty() {
            if pending {
                return Ok(Step::Go);
            }
            return self.wait_for_entries(stop).await;
        }
        let fed = take_ordered(&mut self.held, limit);
        self.hand_out(fed, Handing::Read, out, stop).await
    }

    /// One MULTI of XREADGROUPs over the `included` streams, `count` entries
    /// each at most, into `held`. Returns the entries added and the order
    /// key up to which the order is known: the earliest end of a read that
    /// `count` cut short.
    async fn read(
        &mut self,
        included: &[usize],
        count: usize,
    ) -> Result<(usize, Option<OrderKey>), StreamError> {
        let (chats, parts) = match included.split_first() {
            Some((0, parts)) => (true, parts),
            _ => (false, included),
        };
        let from = |p: &Position| match p.cursor {
            Cursor::Pending(after) => ReadFrom::Pending(after),
            Cursor::New | Cursor::Drained => ReadFrom::New,
        };
        let layout = self.layout;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if chats {
            let chat = [(layout.keys[0].as_str(), from(&self.streams[0]))];
            pipe.add_command(layout.chats.read_cmd(&chat, count, None));
        }
        if !parts.is_empty() {
            let streams: Vec<(&str, ReadFrom)> = parts
                .iter()
                .map(|&i| (layout.keys[i].as_str(), from(&self.streams[i])))
                .collect();
            pipe.add_command(layout.partitions.read_cmd(&streams, count, None));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con).await?;
        let mut answered = vec![false; self.streams.len()];
        let (mut read, mut limit) = (0, None::<OrderKey>);
        for reply in replies {
            for (key, entries) in streams_of(reply)? {
                let stream = included
                    .iter()
                    .copied()
                    .find(|&i| self.layout.keys[i].as_bytes() == key)
                    .ok_or(StreamError::Reply("XREADGROUP answered another stream"))?;
                answered[stream] = true;
                let got = entries.len();
                let pos = &mut self.streams[stream];
                let mut last = None;
                for callwatch_streams::Entry { id, fields } in entries {
                    last = Some(id);
                    if pos.handed.is_some_and(|h| id <= h) {
                        self.shared.counters.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.held.push(Entry {
                        stream: stream as u32,
                        id,
                        body: Body::of(fields),
                    });
                    read += 1;
                }
                if let Some(last) = last {
                    pos.seen = pos.seen.max(Some(last));
                    if got >= count {
                        let end = (last.ms, stream as u32, last.seq);
                        limit = Some(limit.map_or(end, |l| l.min(end)));
                    }
                }
                if let Cursor::Pending(_) = pos.cursor {
                    pos.cursor = match last {
                        Some(last) if got >= count => Cursor::Pending(last),
                        _ => Cursor::Drained,
                    };
                }
            }
        }
        for &i in included {
            if !answered[i] && matches!(self.streams[i].cursor, Cursor::Pending(_)) {
                self.streams[i].cursor = Cursor::Drained;
            }
        }
        Ok((read, limit))
    }

    /// Waits (XREAD BLOCK, which takes nothing) until a stream has an entry
    /// after the last one seen, or `block` passes, or stop.
    async fn wait_for_entries(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(self.config.block_ms)
            .arg("STREAMS")
            .arg(&self.layout.keys);
        for s in &self.streams {
            match s.seen {
                Some(id) => cmd.arg(id),
                None => cmd.arg("$"),
            };
        }
        // Unlike XREADGROUP, an XREAD dropped half-way loses nothing.
        let reply: Value = tokio::select! {
            reply = cmd.query_async(&mut self.con) => reply?,
            () = stop_signal(stop) => return Ok(Step::Stop),
        };
        for (key, entries) in streams_of(reply)? {
            let stream = self.layout.keys.iter().position(|k| k.as_bytes() == key);
            if let (Some(stream), Some(entry)) = (stream, entries.last()) {
                let seen = &mut self.streams[stream].seen;
                *seen = (*seen).max(Some(entry.id));
            }
        }
        Ok(Step::Go)
    }

    /// Numbers and checks `fed` (in hand-out order), dead-letters the bad
    /// entries and acknowledges them, then sends the good ones out. Entries
    /// replayed from the chats stream's history were acknowledged (or
    /// dead-lettered) in an earlier run: they go out again and that is all.
    async fn hand_out(
        &mut self,
        fed: Vec<Entry>,
        handing: Handing,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let first_seq = self.ingest.seq() + 1;
        let mut envelopes = Vec::with_capacity(fed.len());
        let mut entered_ms = Vec::with_capacity(fed.len());
        let mut flights = Vec::with_capacity(fed.len());
        let mut dead = Vec::new();
        let mut last_ids = vec![None; self.streams.len()];
        let replay = handing == Handing::Replay;
        if !replay {
            IngestCounters::add(&self.shared.counters.read, fed.len());
        }
        let skew = self.config.max_future_skew_nanos();
        for Entry { stream, id, body } in fed {
            last_ids[stream as usize] = Some(id);
            let arrived = i64::try_from(id.ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000);
            let (event, reason) = match body {
                Body::Event(value) => match self.ingest.line_arrived(&value, arrived, skew) {
                    Outcome::Event(env) => {
                        flights.push(InFlight {
                            seq: env.seq,
                            stream,
                            id,
                        });
                        envelopes.push(env);
                        entered_ms.push(id.ms);
                        continue;
                    }
                    Outcome::Bad { error, .. } => (Some(value), error.to_string()),
                    Outcome::Blank => (Some(value), "the event is blank".to_owned()),
                },
                Body::Bad { event, reason } => (event, reason),
            };
            if !replay {
                dead.push((stream, id, event, reason));
            }
        }
        if !dead.is_empty() {
            self.dead_letter(&dead).await?;
        }
        if !envelopes.is_empty() {
            // Reserved first, so that a stop while the caller is slow
            // leaves nothing half handed out.
            let permit = tokio::select! {
                permit = out.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(Step::Stop),
                },
                () = stop_signal(stop) => return Ok(Step::Stop),
            };
            let last_seq = self.ingest.seq();
            let n = envelopes.len();
            let counters = &self.shared.counters;
            if !replay {
                self.shared.window.lock().entries.extend(flights);
                IngestCounters::add(&counters.in_flight, n);
            }
            self.handed.store(last_seq, Ordering::Release);
            permit.send(EventBatch {
                envelopes,
                entered_ms,
                seqs: first_seq..=last_seq,
            });
            IngestCounters::add(
                if replay {
                    &counters.replayed
                } else {
                    &counters.events
                },
                n,
            );
        }
        // The history's entries are not the read position: pending ones
        // after them are still to be read.
        if !replay {
            for (pos, last) in self.streams.iter_mut().zip(last_ids) {
                pos.handed = pos.handed.max(last);
            }
        }
        Ok(Step::Go)
    }

    /// Adds the bad entries to the dead-letter stream, then acknowledges
    /// them: never the other way round.
    async fn dead_letter(
        &mut self,
        dead: &[(u32, EntryId, Option<Vec<u8>>, String)],
    ) -> Result<(), StreamError> {
        let mut pipe = redis::pipe();
        for (stream, id, event, reason) in dead {
            let value = event
                .as_deref()
                .map(|e| (EVENT_FIELD, &e[..e.len().min(limits::MAX_LINE_BYTES)]));
            self.dead_letters.add_to(
                &mut pipe,
                &DeadLetter {
                    stream: &self.layout.keys[*stream as usize],
                    id: *id,
                    value,
                    reason,
                },
            );
        }
        let () = pipe.query_async(&mut self.con).await?;
        let () = self
            .layout
            .ack_pipeline(dead.iter().map(|d| (d.0, d.1)))
            .query_async(&mut self.con)
            .await?;
        let counters = &self.shared.counters;
        IngestCounters::add(&counters.dead_lettered, dead.len());
        IngestCounters::add(&counters.acked, dead.len());
        Ok(())
    }
}

pub(super) fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Completes when stop turns true or its sender is dropped.
async fn stop_signal(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// Sleeps `wait`; true if stop came first.
async fn stop_during(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        () = stop_signal(stop) => true,
        () = tokio::time::sleep(wait) => false,
    }
}
