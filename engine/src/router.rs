//! The sharded runtime: a router that splits events by token, one pinned
//! thread per shard, and an ordered stream of effects out.
//!
//! ```text
//!  Router ──batch──▶ inbox[i] (bounded) ──▶ shard thread i ──▶ outbox[i] (bounded)
//!                                                                   │
//!  Effects ◀── merge batch b of every shard, sort by (seq, chat) ◀─┘
//! ```
//!
//! The router cuts the input into batches and hands every shard one batch
//! per cut (perhaps empty), so batch `b` of every shard covers the same
//! input lines. [`Effects`] therefore reads batch `b` from shard 0, 1, …
//! N−1 and sorts it: the output is in input order and the same for any N.
//! Token events go to one shard (by [`Token::route_hash`]); chat events to
//! all. Inboxes and outboxes are crossbeam's bounded array channels, so a
//! slow consumer blocks the shards, which block the router: back-pressure
//! all the way to the reader, never an unbounded queue.
//!
//! Buffers go round: the shards hand emptied input batches back to the
//! router, and [`Effects`] hands emptied effect vectors back to the shards
//! (those it merged, and those its consumer gives back with
//! [`Effects::recycle`]). A fresh vector per batch was grown by doubling
//! on the shard and freed on the consumer's thread, every batch: the
//! reallocations and page faults were a few per cent of a call-heavy
//! replay, on the shard, the stage that limits it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::{ConfigError, EngineConfig};
use crate::effect::Effect;
use crate::event::Envelope;
use crate::shard::{
    AheadHashes, CallOutcome, Holding, Near, Restore, RestoreCall, RestoreRecord, ShardState,
    ShardStats,
};
use crate::snapshot::{ShardPart, Taking};
use crate::time::Nanos;
use crate::token::Token;

/// The shard that owns `token` among `shards`. Fixed forever: stream
/// partitions and stored state rely on it.
#[inline]
pub fn shard_of(token: &Token, shards: usize) -> usize {
    let n = shards as u64;
    // The same value as `%` for a power of two, without a division (tens
    // of cycles, on every event routed).
    if n.is_power_of_two() {
        (token.route_hash() & (n - 1)) as usize
    } else {
        (token.route_hash() % n) as usize
    }
}

/// What a shard's inbox carries: input events, and entries loaded from
/// storage.
enum Input {
    Event(Envelope),
    Restore(Restore),
    RestoreRecord(RestoreRecord),
    RestoreCall(RestoreCall),
    /// Trim spare capacity (after a rebuild).
    Compact,
    /// Answer with a chat's tracked entries on this shard.
    TrackedBy(i64, Sender<Vec<Holding>>),
    /// Answer with this shard's calls made since a time, with their peaks.
    CallOutcomes(Nanos, Sender<Vec<CallOutcome>>),
    /// Answer with this shard's tokens valued at least this share of their
    /// next crossing.
    Near(f64, Sender<Vec<Near>>),
    /// Cut this shard (numbered so) for a snapshot, and write it.
    Snapshot(usize, Sender<ShardPart>),
}

struct Batch {
    id: u64,
    /// The highest `seq` the router had taken when it cut this batch.
    upto_seq: u64,
    items: Vec<Input>,
}

struct Output {
    id: u64,
    upto_seq: u64,
    /// The shard's oldest event not fully applied (a call still deciding,
    /// or an event held for one): its alerts, and those of later events,
    /// may still come in later outputs.
    unfinished_from: Option<u64>,
    effects: Vec<Effect>,
}

/// The effects of one batch of input, merged across shards. Once done
/// with `effects`, hand the vector back with [`Effects::recycle`].
#[derive(Debug, Default)]
pub struct Merged {
    /// In output order: by `seq`, then chat.
    pub effects: Vec<Effect>,
    /// Every event with a `seq` up to this one has been applied.
    pub upto_seq: u64,
}

/// A shard thread has gone: it panicked, or the engine was shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine has stopped (a shard thread exited)")]
pub struct EngineStopped;

/// Counters a shard publishes after every batch, for the io side to sample.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub events: AtomicU64,
    pub alerts: AtomicU64,
    pub tokens: AtomicU64,
    pub tracked: AtomicU64,
    pub records: AtomicU64,
    /// [`ShardStats::followers_visited`].
    pub followers_visited: AtomicU64,
}

impl ShardGauges {
    fn publish(&self, s: &ShardStats) {
        self.events.store(s.events, Ordering::Relaxed);
        self.alerts
            .store(s.call_alerts + s.multiplier_alerts, Ordering::Relaxed);
        self.tokens.store(s.tokens, Ordering::Relaxed);
        self.tracked.store(s.tracked, Ordering::Relaxed);
        self.records.store(s.records, Ordering::Relaxed);
        self.followers_visited
            .store(s.followers_visited, Ordering::Relaxed);
    }
}

/// The input side: give it envelopes in input order.
pub struct Router {
    inboxes: Vec<Sender<Batch>>,
    pending: Vec<Vec<Input>>,
    last_seq: u64,
    pending_events: usize,
    batch_events: usize,
    next_batch: u64,
    gauges: Arc<[ShardGauges]>,
    /// Emptied batches the shards hand back, so that cutting a batch
    /// allocates nothing (fresh ones cost page faults at high rates).
    spare: Receiver<Vec<Input>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("shards", &self.inboxes.len())
            .field("pending_events", &self.pending_events)
            .finish_non_exhaustive()
    }
}

/// The output side: alerts in input order, a batch at a time.
#[derive(Debug)]
pub struct Effects {
    outboxes: Vec<Receiver<Output>>,
    /// Emptied effect vectors for the shards to fill again. Bounded like
    /// the router's pool of input batches: when it is full, a vector given
    /// back is dropped; when it is empty, a shard starts a fresh one.
    pool: Sender<Vec<Effect>>,
    next_batch: u64,
    /// A batch `poll_merged` has begun: its outputs from shards before
    /// `partial_from`.
    partial: Merged,
    partial_from: usize,
    /// The oldest unfinished event among the outputs of that batch.
    partial_unfinished: Option<u64>,
    /// Alerts of events some shard has not finished, kept back until every
    /// alert before them is out.
    backlog: Vec<Effect>,
}

/// What `Effects::poll_merged` found.
#[derive(Debug)]
pub enum Poll {
    Ready(Merged),
    /// Some shard has not finished the next batch yet.
    Pending,
    /// Every shard has stopped after the router finished.
    Finished,
}

/// The shard threads; join them to get their final state.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<JoinHandle<ShardState>>,
}

/// Shard threads are named this, then `-` and the shard's number. The
/// name is 15 bytes, so it survives Linux's cut of thread names to 15
/// (in `/proc/*/task/*/comm`, `top -H`, `perf`) whole.
pub const SHARD_THREAD_NAME: &str = "callwatch-shard";
const _: () = assert!(SHARD_THREAD_NAME.len() <= 15);

/// Starts the shard threads.
pub fn start(config: &EngineConfig) -> Result<(Router, Effects, Workers), ConfigError> {
    start_from(config, Vec::new())
}

/// Starts the shard threads from states loaded before
/// ([`crate::snapshot::load`]), one per shard in order; with none, from
/// empty shards.
pub fn start_from(
    config: &EngineConfig,
    loaded: Vec<ShardState>,
) -> Result<(Router, Effects, Workers), ConfigError> {
    config.validate()?;
    assert!(
        loaded.is_empty() || loaded.len() == config.shards,
        "one loaded state per shard"
    );
    let mut loaded = loaded.into_iter();
    let cores = shard_cores(config);
    let gauges: Arc<[ShardGauges]> = (0..config.shards).map(|_| ShardGauges::default()).collect();
    let mut inboxes = Vec::with_capacity(config.shards);
    let (spare_tx, spare) = bounded::<Vec<Input>>(config.inbox_batches);
    let (pool, pool_rx) = bounded::<Vec<Effect>>(config.inbox_batches);
    let mut outboxes = Vec::with_capacity(config.shards);
    let mut handles = Vec::with_capacity(config.shards);
    for i in 0..config.shards {
        let (in_tx, in_rx) = bounded::<Batch>(config.inbox_batches);
        let (out_tx, out_rx) = bounded::<Output>(config.inbox_batches);
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let wait = if config.shards <= cores.len() {
            Wait::Spin(EXCLUSIVE_CORE_POLLS)
        } else if !cores.is_empty() {
            Wait::Yield(SHARED_CORE_YIELDS)
        } else {
            Wait::Park
        };
        let rules = config.rules();
        let state = loaded.next();
        let fanout_slice = config.fanout_slice;
        let step_records = config.snapshot_step_records;
        let gauges = Arc::clone(&gauges);
        let spare_tx = spare_tx.clone();
        let pool_rx = pool_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{SHARD_THREAD_NAME}-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    // Best effort: a container may forbid pinning.
                    let _ = core_affinity::set_for_current(core);
                }
                let mut state = state.unwrap_or_else(|| ShardState::new(rules));
                state.set_fanout_slice(fanout_slice);
                state.set_snapshot_step(step_records);
                run_shard(
                    &mut state, &in_rx, &out_tx, &spare_tx, &pool_rx, &gauges[i], wait,
                );
                state
            })
            .expect("spawning a shard thread");
        inboxes.push(in_tx);
        outboxes.push(out_rx);
        handles.push(handle);
    }
    let router = Router {
        pending: (0..config.shards)
            .map(|_| Vec::with_capacity(config.batch_events))
            .collect(),
        inboxes,
        last_seq: 0,
        pending_events: 0,
        batch_events: config.batch_events,
        next_batch: 0,
        gauges,
        spare,
    };
    Ok((
        router,
        Effects {
            outboxes,
            pool,
            next_batch: 0,
            partial: Merged::default(),
            partial_from: 0,
            partial_unfinished: None,
            backlog: Vec::new(),
        },
        Workers { handles },
    ))
}

/// The cores shards are pinned to, round-robin: all but the first
/// `reserved_cores`, so the ingest thread (the busiest one when parsing
/// JSON) is never preempted by a pinned shard. Measured on 2 cores: pinning
/// shards to every core made replay 30 % slower than not pinning at all.
fn shard_cores(config: &EngineConfig) -> Vec<core_affinity::CoreId> {
    if !config.pin_threads {
        return Vec::new();
    }
    let all = core_affinity::get_core_ids().unwrap_or_default();
    all.get(config.reserved_cores..)
        .map_or_else(Vec::new, <[_]>::to_vec)
}

/// How a shard waits for its next batch. A parked thread takes tens of
/// microseconds to wake (hundreds on a virtual machine whose idle vCPU
/// halts), which would dominate latency when batches arrive every few
/// microseconds, so a shard polls its inbox for a while before it parks
/// as usual (an idle engine still costs no CPU):
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// With a core of its own: spin on `try_recv` for up to this many
    /// tries (a few hundred microseconds).
    Spin(u32),
    /// Pinned to a core it shares with other shards: between tries, yield
    /// the core (to a shard that has work) for up to this many tries. A
    /// spin would only delay the shard it shares the core with.
    Yield(u32),
    /// Unpinned: park at once; the scheduler places the threads.
    Park,
}

fn recv_waiting<T>(rx: &Receiver<T>, wait: Wait) -> Result<T, crossbeam_channel::RecvError> {
    let (tries, yielding) = match wait {
        Wait::Spin(n) => (n, false),
        Wait::Yield(n) => (n, true),
        Wait::Park => (0, false),
    };
    for _ in 0..tries {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(crossbeam_channel::RecvError);
            }
            Err(crossbeam_channel::TryRecvError::Empty) if yielding => std::thread::yield_now(),
            Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    rx.recv()
}

/// The largest effect vector kept for reuse, in effects (about 2 MB). A
/// burst that grew one past this frees it instead, so the pool does not
/// hold the burst's memory for the rest of the run. Steady batches stay
/// far below: a call-heavy replay (200 chats, 9 % calls) peaks at 1 500.
const MAX_POOLED_EFFECTS: usize = 16 * 1024;

/// Spin budget of a shard with a core to itself.
const EXCLUSIVE_CORE_POLLS: u32 = 50_000;

/// Yield budget of a shard that shares its core (a yield is a system
/// call, about a microsecond: a few milliseconds in all).
const SHARED_CORE_YIELDS: u32 = 2_000;

/// A shard's loop: take a batch, apply it, tidy a little, hand on the
/// effects. A call still deciding its followers ([`crate::shard`]'s
/// fan-out) goes on between batches while the inbox is empty; a batch
/// that arrives meanwhile takes its turn, and the output says how far it
/// is complete. A snapshot being written goes on a step after each batch
/// and while the inbox is empty. Effect vectors come from `pool`, which
/// [`Effects`] refills. Returns when the router is gone.
fn run_shard(
    state: &mut ShardState,
    inbox: &Receiver<Batch>,
    outbox: &Sender<Output>,
    spare: &Sender<Vec<Input>>,
    pool: &Receiver<Vec<Effect>>,
    gauges: &ShardGauges,
    wait: Wait,
) {
    let mut next = None;
    loop {
        let mut batch = match next.take() {
            Some(b) => b,
            None => match next_batch(state, inbox, wait) {
                Some(b) => b,
                None => return,
            },
        };
        let mut effects = pool.try_recv().unwrap_or_default();
        apply_batch(state, &batch.items, &mut effects);
        // Sweeping a few token slots per batch keeps expiry incremental:
        // no pause proportional to the whole state.
        state.maintain(16 + batch.items.len() / 8);
        state.snapshot_step();
        next = work_while_idle(state, inbox, &mut effects);
        gauges.publish(&state.stats());
        // The emptied batch goes back to the router for reuse; if the pool
        // is full it is simply dropped.
        batch.items.clear();
        let _ = spare.try_send(batch.items);
        let output = Output {
            id: batch.id,
            upto_seq: batch.upto_seq,
            unfinished_from: state.unfinished_from(),
            effects,
        };
        if outbox.send(output).is_err() {
            return;
        }
    }
}

/// The next batch, writing the snapshot being written while none comes;
/// `None` once the router is gone.
fn next_batch(state: &mut ShardState, inbox: &Receiver<Batch>, wait: Wait) -> Option<Batch> {
    while state.is_snapshotting() {
        match inbox.try_recv() {
            Ok(b) => return Some(b),
            Err(crossbeam_channel::TryRecvError::Empty) => state.snapshot_step(),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                state.finish_snapshot();
                return None;
            }
        }
    }
    recv_waiting(inbox, wait).ok()
}

/// Applies one batch's items in order. Anything but an event (a query, a
/// restore) first waits for every call still deciding.
fn apply_batch(state: &mut ShardState, items: &[Input], effects: &mut Vec<Effect>) {
    let mut ahead = AheadHashes::default();
    for (i, item) in items.iter().enumerate() {
        ahead.prefetch(state, i, |j| match items.get(j) {
            Some(Input::Event(env)) => Some(env),
            _ => None,
        });
        if let Input::Event(env) = item {
            state.apply_hashed(env, ahead.take(i), effects);
            continue;
        }
        state.finish_fanouts(effects);
        match item {
            Input::Event(_) => unreachable!("applied above"),
            Input::Restore(r) => state.restore(r),
            Input::RestoreRecord(r) => state.restore_record(r),
            Input::RestoreCall(r) => state.restore_call(r),
            Input::Compact => state.shrink_to_fit(),
            // The asker may have given up; that is its business.
            Input::TrackedBy(chat, reply) => {
                let _ = reply.send(state.tracked_by(*chat));
            }
            Input::CallOutcomes(since, reply) => {
                let _ = reply.send(state.call_outcomes(*since));
            }
            Input::Near(share, reply) => {
                let _ = reply.send(state.near(*share));
            }
            Input::Snapshot(shard, reply) => state.begin_snapshot(*shard, reply.clone()),
        }
    }
}

/// Works the calls still deciding while no batch waits. Returns the batch
/// that arrived first, if one did; with the router gone, finishes them.
fn work_while_idle(
    state: &mut ShardState,
    inbox: &Receiver<Batch>,
    effects: &mut Vec<Effect>,
) -> Option<Batch> {
    while state.has_unfinished() {
        match inbox.try_recv() {
            Ok(b) => return Some(b),
            Err(crossbeam_channel::TryRecvError::Empty) => state.work_slice(usize::MAX, effects),
            Err(crossbeam_channel::TryRecvError::Disconnected) => state.finish_fanouts(effects),
        }
    }
    None
}

/// `items.push(Input::Event(env))`, written straight into the vector's
/// spare room ([`crate::push_in_place`]): with a plain `push`, each copy
/// read back 16 bytes that were just stored as two halves, which on the
/// router, copying every event, was the largest stall.
#[inline(always)]
fn push_event(items: &mut Vec<Input>, env: Envelope) {
    crate::push_in_place(items, Input::Event(env));
    let len = items.len() - 1;
    // A batch's memory was last read by a shard on the other core, which
    // still holds its lines: each first store to one waited for the line
    // to come back, and the router's stores queued behind it (three
    // quarters of `submit`'s samples, at the copy). Asked for a few slots
    // early, the lines arrive while earlier events are written.
    crate::prefetch::prefetch_for_write(items.as_ptr().wrapping_add(len + WRITE_AHEAD));
}

/// How many slots past the one it fills `push_event` asks for, to write.
const WRITE_AHEAD: usize = 8;

impl Router {
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Batches handed to the shards so far (each shard got one per cut).
    pub fn batches(&self) -> u64 {
        self.next_batch
    }

    /// Counters per shard, updated after every batch.
    pub fn gauges(&self) -> Arc<[ShardGauges]> {
        Arc::clone(&self.gauges)
    }

    /// Events waiting in each shard's inbox, in batches.
    pub fn inbox_depths(&self) -> Vec<usize> {
        self.inboxes.iter().map(Sender::len).collect()
    }

    /// Queues one event; hands a batch to every shard when enough are
    /// queued. Blocks while an inbox is full.
    #[inline]
    pub fn submit(&mut self, env: Envelope) -> Result<(), EngineStopped> {
        self.last_seq = self.last_seq.max(env.seq);
        match env.event.token() {
            Some(token) => {
                let i = shard_of(token, self.inboxes.len());
                push_event(&mut self.pending[i], env);
            }
            None => {
                let (last, rest) = self.pending.split_last_mut().expect("at least one shard");
                for p in rest {
                    p.push(Input::Event(env.clone()));
                }
                last.push(Input::Event(env));
            }
        }
        self.count_pending()
    }

    /// Queues an entry loaded from storage for the shard that owns its
    /// token; like `submit`, it may hand batches on and block.
    pub fn restore(&mut self, r: Restore) -> Result<(), EngineStopped> {
        let i = shard_of(&r.token, self.inboxes.len());
        self.pending[i].push(Input::Restore(r));
        self.count_pending()
    }

    /// Asks every shard for a chat's tracked entries, in order with the
    /// events submitted before; the answers (one per shard) arrive on the
    /// returned channel once the shards reach this point.
    pub fn tracked_by(&mut self, chat_id: i64) -> Result<Receiver<Vec<Holding>>, EngineStopped> {
        self.ask_every_shard(|reply| Input::TrackedBy(chat_id, reply))
    }

    /// Asks every shard for its calls made at or after `since` (with a
    /// known value at the call) and their peaks, as `tracked_by` asks: one
    /// answer per shard, in order with the events submitted before.
    pub fn call_outcomes(
        &mut self,
        since: Nanos,
    ) -> Result<Receiver<Vec<CallOutcome>>, EngineStopped> {
        self.ask_every_shard(|reply| Input::CallOutcomes(since, reply))
    }

    /// Asks every shard for its tokens valued at least `share` of the value
    /// at which they next cross a threshold (the price sources poll those
    /// first), as `tracked_by` asks.
    pub fn near(&mut self, share: f64) -> Result<Receiver<Vec<Near>>, EngineStopped> {
        self.ask_every_shard(|reply| Input::Near(share, reply))
    }

    /// Queues `question` for every shard and hands the batch on; the
    /// channel has room for every answer, so no shard waits on the asker.
    fn ask_every_shard<T>(
        &mut self,
        question: impl Fn(Sender<T>) -> Input,
    ) -> Result<Receiver<T>, EngineStopped> {
        let (tx, rx) = bounded(self.pending.len());
        for p in &mut self.pending {
            p.push(question(tx.clone()));
        }
        self.flush()?;
        Ok(rx)
    }

    /// Asks every shard for a snapshot of itself once it has applied
    /// every event submitted before (each call decided): one cut of the
    /// input for all shards, at `seq` [`Router::last_seq`]. Each shard
    /// writes its chats at the cut and goes on with later events, writing
    /// its tokens a step at a time between them (each as it was at the
    /// cut); [`Taking::wait`] gathers the parts.
    pub fn snapshot(&mut self, thresholds: Vec<f64>) -> Result<Taking, EngineStopped> {
        let upto_seq = self.last_seq;
        let shards = self.pending.len();
        let (tx, rx) = bounded(shards);
        for (i, p) in self.pending.iter_mut().enumerate() {
            p.push(Input::Snapshot(i, tx.clone()));
        }
        self.flush()?;
        Ok(Taking::new(rx, shards, thresholds, upto_seq))
    }

    /// The highest `seq` submitted so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Queues a call loaded from storage, as `restore` does.
    pub fn restore_call(&mut self, r: RestoreCall) -> Result<(), EngineStopped> {
        let i = shard_of(&r.token, self.inboxes.len());
        self.pending[i].push(Input::RestoreCall(r));
        self.count_pending()
    }

    /// Queues a processed record loaded from storage, as `restore` does.
    pub fn restore_record(&mut self, r: RestoreRecord) -> Result<(), EngineStopped> {
        let i = shard_of(&r.token, self.inboxes.len());
        self.pending[i].push(Input::RestoreRecord(r));
        self.count_pending()
    }

    /// Asks every shard to give back spare capacity once it reaches this
    /// point of the input; for the end of a rebuild.
    pub fn compact(&mut self) -> Result<(), EngineStopped> {
        for p in &mut self.pending {
            p.push(Input::Compact);
        }
        self.flush()
    }

    #[inline]
    fn count_pending(&mut self) -> Result<(), EngineStopped> {
        self.pending_events += 1;
        if self.pending_events >= self.batch_events {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands what is queued to the shards now (one batch each, perhaps
    /// empty). Call it when the input pauses or ends.
    pub fn flush(&mut self) -> Result<(), EngineStopped> {
        let id = self.next_batch;
        self.next_batch += 1;
        for (inbox, pending) in self.inboxes.iter().zip(&mut self.pending) {
            let next = match self.spare.try_recv() {
                Ok(v) => v,
                // Sized to what this shard got last time, not to the whole
                // batch: with N shards a token event lands in just one.
                Err(_) => Vec::with_capacity(pending.len()),
            };
            let items = std::mem::replace(pending, next);
            inbox
                .send(Batch {
                    id,
                    upto_seq: self.last_seq,
                    items,
                })
                .map_err(|_| EngineStopped)?;
        }
        self.pending_events = 0;
        Ok(())
    }

    /// Flushes what is queued and closes the inboxes; the shards finish
    /// their work and stop.
    pub fn finish(mut self) -> Result<(), EngineStopped> {
        if self.pending_events > 0 {
            self.flush()?;
        }
        Ok(())
    }
}

impl Effects {
    /// The effects of the next batch of input, in output order; `Ok(None)`
    /// once every shard has stopped after the router finished. Hand the
    /// vector back with `recycle` when done with it.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Effect>>, EngineStopped> {
        Ok(self.next_merged()?.map(|m| m.effects))
    }

    /// Takes the next merged batch if every shard has finished it, without
    /// blocking: for a thread that both feeds and drains the engine.
    pub fn poll_merged(&mut self) -> Result<Poll, EngineStopped> {
        while self.partial_from < self.outboxes.len() {
            match self.outboxes[self.partial_from].try_recv() {
                Ok(out) => self.take(out),
                Err(crossbeam_channel::TryRecvError::Empty) => return Ok(Poll::Pending),
                Err(crossbeam_channel::TryRecvError::Disconnected) if self.partial_from == 0 => {
                    return Ok(Poll::Finished);
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(EngineStopped),
            }
        }
        Ok(Poll::Ready(self.complete()))
    }

    /// Like `next_batch`, and says how far the input has been applied.
    pub fn next_merged(&mut self) -> Result<Option<Merged>, EngineStopped> {
        while self.partial_from < self.outboxes.len() {
            match self.outboxes[self.partial_from].recv() {
                Ok(out) => self.take(out),
                Err(_) if self.partial_from == 0 => return Ok(None),
                Err(_) => return Err(EngineStopped),
            }
        }
        Ok(Some(self.complete()))
    }

    /// Takes back an effect vector for a shard to fill again (it is
    /// cleared here): a consumer done with a batch (`Merged::effects`, or
    /// what `next_batch` returned) passes it here, so that steady output
    /// allocates nothing. Optional; a vector not given back is just freed.
    pub fn recycle(&self, mut effects: Vec<Effect>) {
        if (1..=MAX_POOLED_EFFECTS).contains(&effects.capacity()) {
            effects.clear();
            // A full pool has enough for the shards; drop this one.
            let _ = self.pool.try_send(effects);
        }
    }

    /// Adds the next shard's output to the batch being merged.
    fn take(&mut self, mut out: Output) {
        assert_eq!(
            out.id, self.next_batch,
            "shard outputs arrive in batch order"
        );
        self.partial.upto_seq = out.upto_seq;
        self.partial_unfinished = match (self.partial_unfinished, out.unfinished_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.partial.effects.is_empty() {
            std::mem::swap(&mut self.partial.effects, &mut out.effects);
        } else {
            self.partial.effects.append(&mut out.effects);
        }
        self.recycle(out.effects);
        self.partial_from += 1;
    }

    /// Hands out the batch every shard has contributed to, in output
    /// order: every alert of an event before the oldest one some shard
    /// has not finished, with those kept back from earlier batches.
    fn complete(&mut self) -> Merged {
        self.partial_from = 0;
        self.next_batch += 1;
        let mut merged = std::mem::take(&mut self.partial);
        merged.effects.append(&mut self.backlog);
        merged.effects.sort_unstable_by_key(Effect::order_key);
        if let Some(from) = self.partial_unfinished.take() {
            let cut = merged.effects.partition_point(|e| e.order_key().0 < from);
            self.backlog = merged.effects.split_off(cut);
            merged.upto_seq = merged.upto_seq.min(from.saturating_sub(1));
        }
        merged
    }
}

impl Workers {
    /// Waits for every shard thread and returns their final states.
    pub fn join(self) -> Result<Vec<ShardState>, EngineStopped> {
        self.handles
            .into_iter()
            .map(|h| h.join().map_err(|_| EngineStopped))
            .collect()
    }
}
