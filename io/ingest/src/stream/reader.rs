//! The reader: one consumer over the chats stream and the owned
//! partitions, handing entries out in the order the module's docs state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::keys::EVENT_FIELD;
use callwatch_streams::Conn;
use callwatch_streams::classify::has_code;
use callwatch_streams::cluster::send_all;
use callwatch_streams::connection::RedisEndpoint;
use callwatch_streams::entry::streams_of;
use callwatch_streams::log::{DeadLetter, DeadLetters};
use callwatch_streams::{EntryId, ReadFrom};
use engine::event::limits;
use engine::ingest::{Ingest, Outcome};
use redis::Value;
use tokio::sync::{mpsc, watch};

use super::ack::{InFlight, Shared};
use super::history::History;
use super::order::{Body, Cursor, Entry, OrderKey, Position, take_ordered};
use super::{EventBatch, IngestCounters, Layout, StreamError, StreamIngestConfig};

/// How often the reader of a cluster looks for new entries when it has
/// none, at most.
const CLUSTER_POLL_MS: u64 = 10;

pub(super) enum Step {
    Go,
    Stop,
}

pub(super) struct Reader<'a> {
    pub(super) config: &'a StreamIngestConfig,
    pub(super) layout: &'a Layout,
    pub(super) dead_letters: DeadLetters,
    pub(super) con: Conn,
    /// Where `con` goes, to make it anew.
    pub(super) redis: &'a RedisEndpoint,
    pub(super) ingest: &'a mut Ingest,
    pub(super) shared: &'a Shared,
    /// The last `seq` handed out, for [`Acker::ack_through`]'s check.
    pub(super) handed: &'a AtomicU64,
    pub(super) streams: Vec<Position>,
    /// Read, in no order, waiting to be handed out.
    pub(super) held: Vec<Entry>,
    /// The history still to hand out again, at start.
    pub(super) history: Option<History>,
    /// Each stream's position in the snapshot the engine started from.
    pub(super) resume: Option<Vec<Option<EntryId>>>,
    /// Each stream's last entry the engine's state covers once what was
    /// handed out is applied ([`EventBatch::positions`]).
    pub(super) applied: Vec<Option<EntryId>>,
    pub(super) backoff: Backoff,
}

/// How entries go out: read for the first time in order, read again
/// (pending ones, after a start or a reconnect), or again from the
/// history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handing {
    Read,
    Again,
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
            if self.con.is_cluster() && matches!(&e, StreamError::Redis(e) if has_code(e, "MOVED"))
            {
                // A slot moved (a failover) under a transaction, which the
                // cluster client does not always learn from: a new
                // connection asks the cluster for its map.
                self.con = self.redis.managed(&self.config.timeouts)?;
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
            self.history = Some(self.start_history().await?);
        }
        for s in &mut self.streams {
            s.cursor = Cursor::Pending(EntryId::ZERO);
        }
        Ok(())
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
        let handing = if pending {
            Handing::Again
        } else {
            Handing::Read
        };
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
                return self.hand_out(fed, handing, out, stop).await;
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
        self.hand_out(fed, handing, out, stop).await
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
        if self.con.is_cluster() {
            return self.read_each(included, count).await;
        }
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
            self.take_reply(included, reply, count, &mut answered, &mut read, &mut limit)?;
        }
        self.drained_unanswered(included, &answered);
        Ok((read, limit))
    }

    /// The read of a cluster, whose streams lie on different nodes: each
    /// stream read on its own, all at once, each in a transaction with its
    /// node's `TIME`. A stream read whole is known up to that instant, so
    /// the order is known up to the earliest of those instants and of the
    /// ends of reads `count` cut short: entries after it wait for the next
    /// read, as entries after a cut do on one server.
    async fn read_each(
        &mut self,
        included: &[usize],
        count: usize,
    ) -> Result<(usize, Option<OrderKey>), StreamError> {
        let mut sent = Vec::with_capacity(included.len());
        for &i in included {
            let from = match self.streams[i].cursor {
                Cursor::Pending(after) => ReadFrom::Pending(after),
                Cursor::New | Cursor::Drained => ReadFrom::New,
            };
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("TIME")
                .add_command(self.layout.consumer(i).read_cmd(
                    &[(self.layout.keys[i].as_str(), from)],
                    count,
                    None,
                ));
            let mut con = self.con.clone();
            sent.push(tokio::spawn(async move {
                pipe.query_async::<(Vec<u64>, Value)>(&mut con).await
            }));
        }
        let mut answered = vec![false; self.streams.len()];
        let (mut read, mut limit) = (0, None::<OrderKey>);
        let mut replies = Vec::with_capacity(sent.len());
        for s in sent {
            replies.push(
                s.await
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))??,
            );
        }
        for (time, reply) in replies {
            let cut =
                self.take_reply(included, reply, count, &mut answered, &mut read, &mut limit)?;
            if !cut {
                let &[secs, micros] = time.as_slice() else {
                    return Err(StreamError::Reply("TIME answered something else"));
                };
                // Everything of this stream up to its node's millisecond is
                // in hand.
                let known = (secs * 1_000 + micros / 1_000, u32::MAX, u64::MAX);
                limit = Some(limit.map_or(known, |l| l.min(known)));
            }
        }
        self.drained_unanswered(included, &answered);
        Ok((read, limit))
    }

    /// Takes one XREADGROUP reply into `held`; returns whether `count` cut
    /// any of its streams short.
    fn take_reply(
        &mut self,
        included: &[usize],
        reply: Value,
        count: usize,
        answered: &mut [bool],
        read: &mut usize,
        limit: &mut Option<OrderKey>,
    ) -> Result<bool, StreamError> {
        let mut cut = false;
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
                *read += 1;
            }
            if let Some(last) = last {
                pos.seen = pos.seen.max(Some(last));
                if got >= count {
                    let end = (last.ms, stream as u32, last.seq);
                    *limit = Some(limit.map_or(end, |l| l.min(end)));
                    cut = true;
                }
            }
            if let Cursor::Pending(_) = pos.cursor {
                pos.cursor = match last {
                    Some(last) if got >= count => Cursor::Pending(last),
                    _ => Cursor::Drained,
                };
            }
        }
        Ok(cut)
    }

    /// A stream reading its pending entries that the read did not answer
    /// for has none left.
    fn drained_unanswered(&mut self, included: &[usize], answered: &[bool]) {
        for &i in included {
            if !answered[i] && matches!(self.streams[i].cursor, Cursor::Pending(_)) {
                self.streams[i].cursor = Cursor::Drained;
            }
        }
    }

    /// Waits (XREAD BLOCK, which takes nothing) until a stream has an entry
    /// after the last one seen, or `block` passes, or stop.
    async fn wait_for_entries(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        if self.con.is_cluster() {
            // One XREAD cannot span a cluster's slots, and one blocked on a
            // node would hold that node's reads back: poll instead.
            let poll = Duration::from_millis(self.config.block_ms.min(CLUSTER_POLL_MS));
            return Ok(if stop_during(poll, stop).await {
                Step::Stop
            } else {
                Step::Go
            });
        }
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
    pub(super) async fn hand_out(
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
            for (applied, last) in self.applied.iter_mut().zip(&last_ids) {
                *applied = (*applied).max(*last);
            }
            if !replay && let Some(&oldest) = entered_ms.iter().min() {
                let now_ms = callwatch_common::clock::now() / 1_000_000;
                let lag_ms = u64::try_from(now_ms).unwrap_or(0).saturating_sub(oldest);
                counters.lag.observe(lag_ms as f64 / 1e3);
            }
            permit.send(EventBatch {
                envelopes,
                entered_ms,
                seqs: first_seq..=last_seq,
                positions: self.applied.clone(),
                replayed: replay,
                in_order: handing == Handing::Read,
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
        let acks = self.layout.ack_pipeline(dead.iter().map(|d| (d.0, d.1)));
        send_all(&mut self.con, &acks).await?;
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
