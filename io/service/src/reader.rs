//! The reading stage: the one thread that feeds the engine's router, in
//! input order, with the stream ingest's batches and, in turn with them,
//! the questions commands put to the engine (so an answer reflects every
//! event read before it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callwatch_ingest::stream::EventBatch;
use engine::event::{ChatId, Event};
use engine::router::{EngineStopped, Router};
use engine::shard::{CallOutcome, Holding, Near};
use engine::time::Nanos;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::keeper::{Call, Price, Submitted};
use crate::metrics::Live;
use crate::snapshots::Snapshots;

/// A question for the engine, answered once the shards reach it: in turn
/// with the events read before it.
#[derive(Debug)]
pub enum EngineQuery {
    /// A chat's tracked entries (`/tracked`).
    Tracked {
        chat_id: ChatId,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    /// Calls since a time and their peaks (`/top`).
    Outcomes {
        since: Nanos,
        reply: oneshot::Sender<Vec<CallOutcome>>,
    },
    /// Tokens valued at least `share` of their next crossing (the price
    /// sources poll those first).
    Near {
        share: f64,
        reply: oneshot::Sender<Vec<Near>>,
    },
}

/// What the reading thread takes, in turn.
#[derive(Debug)]
pub enum Feed {
    Batch(EventBatch),
    Query(EngineQuery),
    /// A second passed: time-driven work (a periodic snapshot) is due even
    /// when no event comes.
    Tick,
}

/// How often the reading thread is woken when no event comes.
const TICK: Duration = Duration::from_secs(1);

/// Batches the reader has in hand at most, between the ingest and it.
const FEED_DEPTH: usize = 4;

/// One channel of event batches and engine questions, so that the thread
/// feeding the router takes both in turn. Ends when the ingest ends.
pub fn feed(
    mut batches: mpsc::Receiver<EventBatch>,
    mut queries: mpsc::Receiver<EngineQuery>,
) -> mpsc::Receiver<Feed> {
    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    tokio::spawn(async move {
        let mut asking = true;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Not biased: under a backlog batches are always ready, and a
            // question must still get its turn.
            let next = tokio::select! {
                b = batches.recv() => match b {
                    Some(b) => Feed::Batch(b),
                    None => return,
                },
                q = queries.recv(), if asking => match q {
                    Some(q) => Feed::Query(q),
                    None => {
                        asking = false;
                        continue;
                    }
                },
                _ = tick.tick() => {
                    // Never queued behind a backlog: batches wake the
                    // reader then anyway.
                    if tx.try_send(Feed::Tick).is_err() && tx.is_closed() {
                        return;
                    }
                    continue;
                }
            };
            if tx.send(next).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The reading thread's parts.
#[derive(Debug)]
pub struct Reader {
    pub router: Router,
    pub feed: mpsc::Receiver<Feed>,
    /// To the keeper: what each batch submitted, for acknowledgement.
    pub submitted: mpsc::Sender<Submitted>,
    pub live: Arc<Live>,
    pub handle: Handle,
    /// Snapshots, when they are on.
    pub snapshots: Option<Snapshots>,
    /// Whether the keeper is handed each batch's prices (for charts).
    pub prices: bool,
}

impl Reader {
    /// Feeds the router until the feed ends (the ingest stopped) or the
    /// engine fails; hands the router back, to be finished.
    pub fn run(mut self) -> (Router, Result<(), EngineStopped>) {
        let result = self.read();
        (self.router, result)
    }

    fn read(&mut self) -> Result<(), EngineStopped> {
        let mut last_event = 0u64;
        while let Some(input) = self.feed.blocking_recv() {
            let batch = match input {
                Feed::Batch(b) => b,
                Feed::Query(q) => {
                    answer(&mut self.router, &self.handle, q)?;
                    continue;
                }
                Feed::Tick => {
                    if let Some(s) = &mut self.snapshots {
                        s.maybe_take(&mut self.router, false)?;
                    }
                    continue;
                }
            };
            // The record goes first: the keeper must know a replayed
            // batch before its effects come.
            let record = record_of(&batch, &mut last_event, self.prices);
            if self.submitted.blocking_send(record).is_err() {
                // A keeper gone has failed, and says why itself.
                return Ok(());
            }
            if let Some(s) = &mut self.snapshots {
                s.submitted(&batch);
            }
            for env in batch.envelopes {
                self.router.submit(env)?;
            }
            self.router.flush()?;
            for (gauge, depth) in self.live.inbox_depth.iter().zip(self.router.inbox_depths()) {
                gauge.store(depth as u64, Ordering::Relaxed);
            }
            if let Some(s) = &mut self.snapshots {
                s.maybe_take(&mut self.router, false)?;
            }
        }
        // A graceful stop: one more at the last event read.
        if let Some(s) = &mut self.snapshots {
            s.maybe_take(&mut self.router, true)?;
        }
        Ok(())
    }
}

/// What the keeper needs of a batch: its last `seq`s, its calls (none for
/// a replayed batch, whose calls were kept before), entry times, and with
/// `prices` its price events.
fn record_of(batch: &EventBatch, last_event: &mut u64, prices: bool) -> Submitted {
    let mut record = Submitted {
        last_seq: *batch.seqs.end(),
        entered: batch
            .envelopes
            .iter()
            .map(|e| e.seq)
            .zip(batch.entered_ms.iter().copied())
            .collect(),
        replayed: batch.replayed,
        ..Submitted::default()
    };
    for env in &batch.envelopes {
        *last_event = env.seq;
        if let Event::Price { token, at, fdv_usd } = &env.event
            && prices
        {
            record.prices.push(Price {
                token: *token,
                at: *at,
                fdv_usd: *fdv_usd,
            });
        }
        if let Event::Call {
            token,
            channel_id,
            at,
            fdv_usd,
        } = &env.event
            && !batch.replayed
        {
            record.calls.push(Call {
                seq: env.seq,
                token: *token,
                channel_id: *channel_id,
                at: *at,
                fdv_usd: *fdv_usd,
            });
        }
    }
    record.last_event = *last_event;
    record
}

/// Puts a question to the shards, in order with the events submitted
/// before it; a blocking task gathers the shards' answers.
fn answer(router: &mut Router, handle: &Handle, query: EngineQuery) -> Result<(), EngineStopped> {
    fn gather<T: Send + 'static>(
        handle: &Handle,
        shards: usize,
        answers: crossbeam_channel::Receiver<Vec<T>>,
        reply: tokio::sync::oneshot::Sender<Vec<T>>,
    ) {
        handle.spawn_blocking(move || {
            let mut all = Vec::new();
            for _ in 0..shards {
                match answers.recv_timeout(Duration::from_secs(10)) {
                    Ok(part) => all.extend(part),
                    Err(_) => return,
                }
            }
            let _ = reply.send(all);
        });
    }
    let shards = router.shards();
    match query {
        EngineQuery::Tracked { chat_id, reply } => {
            gather(handle, shards, router.tracked_by(chat_id)?, reply);
        }
        EngineQuery::Outcomes { since, reply } => {
            gather(handle, shards, router.call_outcomes(since)?, reply);
        }
        EngineQuery::Near { share, reply } => {
            gather(handle, shards, router.near(share)?, reply);
        }
    }
    Ok(())
}
