//! The `engine` scenario: build millions of tracked keys in the sharded
//! engine, then drive price updates (and a share of calls) through it at
//! full speed and at half of that, timing each sampled event from the
//! moment it is handed to the router to the moment its batch's effects
//! come out merged.
//!
//! # Layout
//! - `alone`: shard 0 on its own once the engine has stopped.
//! - `baseline`: the predecessor's design on the same keys and prices.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use engine::EngineConfig;
use engine::event::{Envelope, Event, SettingsPatch};
use engine::router::{self, Effects, Merged, Poll, Router};
use engine::shard::Restore;
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::market::{Market, T0, Tick};
use crate::mem::{own_run_queue_wait, rss_bytes, run_queue_waits};

mod alone;
mod baseline;

/// Every `SAMPLE`-th event is timed. At 30 million events a second, a
/// clock read for every 16th took 8 % of the driver's time (perf); one in
/// 64 still gives 300,000 samples at full speed and 150,000 at half.
const SAMPLE: u64 = 64;
/// In the paced phase, the driver looks for finished batches every this
/// many events (at 20 million a second, every 0.8 µs).
const DRAIN_EVERY: u64 = 16;
/// Slots of the submit-time ring; far more than can be in flight.
const RING: usize = 1 << 20;

/// What the scenario is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub market: crate::market::Spec,
    pub shards: usize,
    pub updates: u64,
    pub duration: Option<Duration>,
    pub pin: bool,
    /// The longest an event may wait in the router before its batch is cut,
    /// in the paced (half-rate) phase.
    pub max_delay: Duration,
    pub baseline: bool,
    pub baseline_limit: Duration,
    pub pool: usize,
    /// The paced phase's rate; half the full-speed rate when `None`.
    pub latency_rate: Option<f64>,
    /// The engine's batch size and inbox depth, when not its defaults.
    pub batch_events: Option<usize>,
    pub inbox_batches: Option<usize>,
}

/// Everything measured, as printed and as JSON.
#[derive(Debug, Default)]
pub struct Results {
    pub tracked_keys: u64,
    pub tokens: u64,
    pub chats: u64,
    pub shards: usize,
    pub build_secs: f64,
    pub bytes_per_key: f64,
    pub rss_after_build_bytes: u64,
    pub updates: u64,
    pub calls: u64,
    pub updates_per_sec: f64,
    pub alerts: u64,
    pub latency_at_max: Option<Histogram<u64>>,
    pub half_rate: f64,
    pub half_updates: u64,
    pub half_achieved_per_sec: f64,
    /// How long, in the paced phase, the driver and the most delayed shard
    /// waited for a CPU that another task held: the machine's share of the
    /// latency tail. `None` where /proc does not say.
    pub half_driver_wait_ns: Option<u64>,
    pub half_shard_wait_ns: Option<u64>,
    pub latency: Option<Histogram<u64>>,
    pub shard_noncrossing_per_sec: f64,
    pub shard_noncrossing_alerts: u64,
    pub shard_mixed_per_sec: f64,
    /// Time to apply one call on shard 0 alone, the stream's calls again.
    pub call_cost: Option<Histogram<u64>>,
    pub timeline: Vec<(f64, f64)>,
    pub baseline: Option<BaselineResults>,
}

#[derive(Debug, Default, Clone)]
pub struct BaselineResults {
    pub updates: u64,
    pub processed: u64,
    pub updates_per_sec: f64,
    pub notifications: u64,
    pub missed_crossings: u64,
    pub engine_crossings: u64,
    /// Price updates per second over the run, as (seconds since its
    /// start, rate), as [`Results::timeline`] is for the engine.
    pub timeline: Vec<(f64, f64)>,
}

/// What draining the effects found: alerts, latencies, progress marks.
struct Drain {
    alerts: u64,
    at_max: Histogram<u64>,
    at_half: Histogram<u64>,
    timeline: Vec<(f64, u64)>,
    done_seq: u64,
    last_mark: Instant,
}

/// State shared between the driver and the consumer.
struct Shared {
    start: Instant,
    /// Submit time (ns since `start`) of sampled seq `s`, at `s / SAMPLE % RING`.
    submitted: Vec<AtomicU64>,
    /// Sampled events from this seq on belong to the half-rate phase.
    half_from_seq: AtomicU64,
    /// Merged batches drained so far.
    batches_done: AtomicU64,
    /// The consumer thread hands the effects back once it has drained this
    /// many batches.
    stop_after: AtomicU64,
    /// Set when phase 1 starts: the timeline starts there.
    timeline_from: AtomicU64,
}

impl Shared {
    /// Nothing submitted yet and no phase begun; the ring allocated and
    /// zeroed.
    fn new() -> Self {
        Shared {
            start: Instant::now(),
            submitted: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            half_from_seq: AtomicU64::new(u64::MAX),
            batches_done: AtomicU64::new(0),
            stop_after: AtomicU64::new(u64::MAX),
            timeline_from: AtomicU64::new(0),
        }
    }

    /// Records when sampled event `seq` was handed to the router. Reads the
    /// clock only for sampled events: at millions of events a second, a
    /// clock read per event would be a fifth of the driver's own cost.
    fn stamp(&self, seq: u64, at: impl FnOnce() -> Instant) {
        if seq.is_multiple_of(SAMPLE) {
            let t = at().duration_since(self.start).as_nanos() as u64;
            self.submitted[((seq / SAMPLE) as usize) % RING].store(t, Ordering::Release);
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60 * NANOS_PER_SEC as u64, 3).expect("valid bounds")
}

impl Drain {
    fn new() -> Self {
        Drain {
            alerts: 0,
            at_max: histogram(),
            at_half: histogram(),
            timeline: Vec::new(),
            done_seq: 0,
            last_mark: Instant::now(),
        }
    }

    /// Records one merged batch: its alerts, and the latency of each
    /// sampled event it completes. Then gives its vector back to `effects`
    /// for the shards to fill again.
    fn take(&mut self, merged: Merged, effects: &Effects, shared: &Shared) {
        let now_ns = shared.start.elapsed().as_nanos() as u64;
        self.alerts += merged.effects.len() as u64;
        let half_from = shared.half_from_seq.load(Ordering::Acquire);
        for k in (self.done_seq / SAMPLE + 1)..=(merged.upto_seq / SAMPLE) {
            let seq = k * SAMPLE;
            let t = shared.submitted[(k as usize) % RING].load(Ordering::Acquire);
            if t == 0 || t > now_ns {
                continue;
            }
            let hist = if seq >= half_from {
                &mut self.at_half
            } else {
                &mut self.at_max
            };
            hist.saturating_record(now_ns - t);
        }
        self.done_seq = self.done_seq.max(merged.upto_seq);
        shared.batches_done.fetch_add(1, Ordering::Release);
        let from = shared.timeline_from.load(Ordering::Acquire);
        if from > 0 && self.last_mark.elapsed() >= Duration::from_millis(100) {
            self.last_mark = Instant::now();
            self.timeline
                .push((now_ns as f64 / 1e9, self.done_seq.saturating_sub(from)));
        }
        effects.recycle(merged.effects);
    }
}

/// The consumer thread: drains until told to hand the effects back (or
/// the engine stops).
fn consume(mut effects: Effects, shared: &Shared) -> anyhow::Result<(Drain, Effects)> {
    let mut drain = Drain::new();
    loop {
        let stop = shared.stop_after.load(Ordering::Acquire);
        if shared.batches_done.load(Ordering::Acquire) >= stop {
            return Ok((drain, effects));
        }
        match effects.next_merged()? {
            Some(merged) => drain.take(merged, &effects, shared),
            None => return Ok((drain, effects)),
        }
    }
}

/// Waits until the consumer has seen every batch handed out so far.
fn settle(router: &Router, shared: &Shared) {
    while shared.batches_done.load(Ordering::Acquire) < router.batches() {
        thread::sleep(Duration::from_micros(200));
    }
}

/// Drains on this thread until every batch handed out so far is merged.
fn drain_all(
    router: &Router,
    effects: &mut Effects,
    drain: &mut Drain,
    shared: &Shared,
) -> anyhow::Result<()> {
    while shared.batches_done.load(Ordering::Acquire) < router.batches() {
        match effects.poll_merged()? {
            Poll::Ready(merged) => drain.take(merged, effects, shared),
            Poll::Pending => std::hint::spin_loop(),
            Poll::Finished => break,
        }
    }
    Ok(())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Stream time between two events: on average each token gets a price
/// every 5 s of stream time, as a live feed would.
fn step_nanos(tokens: u64) -> Nanos {
    (5 * NANOS_PER_SEC / tokens.max(1) as i64).max(1)
}

/// Starts loading the address of the token a few ticks after `i`. The
/// token table (100,000 addresses, 3.3 MB) is out of cache for all but the
/// popular tokens, and the driver, which copies each address into its
/// event, would otherwise wait for it: a cost of this harness that a
/// stream reader, handed the address in the message it parsed, does not
/// pay.
fn prefetch_token(market: &Market, pool: &[Tick], i: usize) {
    if let Some(tick) = pool.get(i + DRIVER_AHEAD) {
        engine::prefetch::prefetch(&market.tokens[tick.token() as usize]);
    }
}

/// How many ticks ahead the driver asks for a token's address.
const DRIVER_AHEAD: usize = 8;

fn envelope(tick: &Tick, tokens: &[Token], channels: u64, seq: u64, at: Nanos) -> Envelope {
    let event = match *tick {
        Tick::Price { token, fdv_usd } => Event::Price {
            token: tokens[token as usize],
            fdv_usd,
            at,
        },
        Tick::Call {
            token,
            channel,
            fdv_usd,
        } => Event::Call {
            token: tokens[token as usize],
            channel_id: Market::channel_id(u64::from(channel) % channels),
            fdv_usd,
            at,
        },
    };
    Envelope {
        seq,
        clock: at,
        event,
    }
}

/// Runs the scenario, phase by phase: build the keys, drive the stream at
/// full speed and then paced, measure shard 0 alone, and the seed's design
/// when asked.
pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let spec = &plan.market;
    let market = Market::new(spec.clone());
    let mut res = Results {
        tracked_keys: spec.keys,
        tokens: spec.tokens,
        chats: spec.chats,
        shards: plan.shards,
        ..Results::default()
    };
    let config = engine_config(plan);
    // The harness's own ring is allocated (and touched) before the memory
    // baseline, so that bytes per key counts the engine alone.
    let shared = Arc::new(Shared::new());
    let rss_before = rss_bytes();
    let (mut router, effects, workers) = router::start(&config).context("starting the engine")?;
    let consumer = spawn_consumer(effects, &shared)?;
    pin_driver(plan.pin);
    let seq = build(&mut router, &shared, &market, rss_before, &mut res)?;

    // The stream: a pool of ticks, cycled.
    let pool = market.ticks(plan.pool.min(plan.updates as usize).max(1), spec.seed + 1);
    let (drain, effects) = take_effects(&mut router, &shared, consumer)?;
    let mut driver = Driver {
        plan,
        market: &market,
        pool: &pool,
        shared: &shared,
        router,
        effects,
        drain,
        seq,
        at: T0 + NANOS_PER_SEC,
        step: step_nanos(spec.tokens),
    };
    driver.full_speed(&mut res)?;
    driver.paced(&mut res)?;
    // The effects' receiving end stays open until the run ends, as it
    // always has: the shards are joined with their outboxes still read.
    let (drain, _effects, at) = driver.finish()?;
    let mut states = workers.join().context("a shard stopped")?;
    res.alerts = drain.alerts;
    res.latency_at_max = Some(drain.at_max);
    res.latency = Some(drain.at_half);
    res.timeline = rates(&drain.timeline);

    // One shard on this thread: pre-parsed prices, no router, no channels.
    let (noncross, alerts, mixed) = alone::shard_alone(&mut states[0], &market, plan.shards, &pool);
    res.call_cost = Some(alone::call_cost(
        &mut states[0],
        &market,
        plan.shards,
        &pool,
        at + NANOS_PER_SEC,
    ));
    res.shard_noncrossing_per_sec = noncross;
    res.shard_noncrossing_alerts = alerts;
    res.shard_mixed_per_sec = mixed;
    drop(states);

    if plan.baseline {
        res.baseline = Some(baseline::run(
            &market,
            &pool,
            plan.baseline_limit,
            plan.updates,
        ));
    }
    Ok(res)
}

/// The engine's defaults, but for what the plan sets: shards, pinning and,
/// when given, the batch size and inbox depth.
fn engine_config(plan: &Plan) -> EngineConfig {
    let defaults = EngineConfig::default();
    EngineConfig {
        shards: plan.shards,
        pin_threads: plan.pin,
        batch_events: plan.batch_events.unwrap_or(defaults.batch_events),
        inbox_batches: plan.inbox_batches.unwrap_or(defaults.inbox_batches),
        ..defaults
    }
}

/// The consumer thread, until the driver takes the effects back.
type Consumer = thread::JoinHandle<anyhow::Result<(Drain, Effects)>>;

/// Starts the consumer thread, which drains the effects while the keys are
/// built: the driver is busy submitting them and would not look.
fn spawn_consumer(effects: Effects, shared: &Arc<Shared>) -> std::io::Result<Consumer> {
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("loadtest-consumer".into())
        .spawn(move || consume(effects, &shared))
}

/// With `pin`, moves this thread, the driver, to the core the shards leave
/// free (the engine pins shards to the others), so the scheduler never puts
/// it beside a spinning shard. Called only once the engine and the consumer
/// have started: they would otherwise inherit this thread's narrowed
/// affinity.
fn pin_driver(pin: bool) {
    if pin && let Some(first) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
        let _ = core_affinity::set_for_current(first);
    }
}

/// Builds the state a rebuild would load: every chat subscribed and
/// following its channels, then every tracked key. Timed until the
/// consumer has seen every batch, for `build_secs`; then the resident
/// memory it added, per key. Returns the last seq submitted.
fn build(
    router: &mut Router,
    shared: &Shared,
    market: &Market,
    rss_before: u64,
    res: &mut Results,
) -> anyhow::Result<u64> {
    let spec = &market.spec;
    let build_start = Instant::now();
    let pb = bar(spec.chats + spec.keys, "building");
    let seq = subscribe_chats(router, market, &pb)?;
    restore_keys(router, market, &pb)?;
    router.compact()?;
    settle(router, shared);
    pb.finish_and_clear();
    res.build_secs = build_start.elapsed().as_secs_f64();
    res.rss_after_build_bytes = rss_bytes();
    res.bytes_per_key =
        res.rss_after_build_bytes.saturating_sub(rss_before) as f64 / spec.keys.max(1) as f64;
    Ok(seq)
}

/// Subscribes every chat for a year, following three channels drawn at
/// random (fewer where a draw repeats): what decides who a call alerts.
/// Returns the last seq submitted.
fn subscribe_chats(router: &mut Router, market: &Market, pb: &ProgressBar) -> anyhow::Result<u64> {
    let spec = &market.spec;
    let mut seq = 0u64;
    let mut rng = engine::sim::Rng::new(spec.seed ^ 0x6368_6174);
    for c in 0..spec.chats {
        let chat_id = Market::chat_id(c);
        let mut follow: Vec<i64> = (0..3)
            .map(|_| Market::channel_id(rng.below(spec.channels)))
            .collect();
        follow.sort_unstable();
        follow.dedup();
        for event in [
            Event::Subscribe {
                chat_id,
                at: T0,
                expires_at: T0 + 365 * 86_400 * NANOS_PER_SEC,
                plan: None,
            },
            Event::Settings {
                chat_id,
                at: T0,
                patch: Box::new(SettingsPatch {
                    follow: Some(follow.clone()),
                    ..SettingsPatch::default()
                }),
            },
        ] {
            seq += 1;
            router.submit(Envelope {
                seq,
                clock: T0,
                event,
            })?;
        }
        if c % 4096 == 0 {
            pb.set_position(c);
        }
    }
    Ok(seq)
}

/// Restores every tracked key into its shard, as a rebuild from Redis
/// does: tracking that started at `T0`, no threshold reached yet.
fn restore_keys(router: &mut Router, market: &Market, pb: &ProgressBar) -> anyhow::Result<()> {
    let mut n = 0u64;
    for (t, chat_id, fdv_at_call) in market.keys() {
        router.restore(Restore {
            token: market.tokens[t as usize],
            chat_id,
            fdv_at_call,
            started: T0,
            last_threshold: None,
        })?;
        n += 1;
        if n.is_multiple_of(65_536) {
            pb.set_position(market.spec.chats + n);
        }
    }
    Ok(())
}

/// Stops the consumer thread and takes the effects back. From here the
/// driver drains them itself, between batches: a consumer thread would be
/// woken for every batch, and on two cores every wake-up takes time from
/// the driver or the shard.
fn take_effects(
    router: &mut Router,
    shared: &Shared,
    consumer: Consumer,
) -> anyhow::Result<(Drain, Effects)> {
    shared
        .stop_after
        .store(router.batches() + 1, Ordering::Release);
    router.flush()?; // an empty cut wakes the consumer to see the stop
    consumer.join().expect("consumer does not panic")
}

/// The stream side of a run, once the keys are built: the engine's two
/// ends, what draining has found, and where the stream has got to. One
/// thread, this one, both submits and drains, so one value owns both ends.
///
/// The phases copy `seq` and `at` into locals for their loops and store
/// them back after: the loops are the measured code, and locals keep them
/// what they were before the phases became methods (counters in
/// registers, not fields written back around every call into the engine).
struct Driver<'a> {
    plan: &'a Plan,
    market: &'a Market,
    /// The stream's ticks, cycled.
    pool: &'a [Tick],
    shared: &'a Shared,
    router: Router,
    effects: Effects,
    drain: Drain,
    /// The seq of the last event submitted.
    seq: u64,
    /// The stream time of the last event submitted.
    at: Nanos,
    /// Stream time between two events.
    step: Nanos,
}

impl Driver<'_> {
    /// Phase 1: the stream as fast as the engine takes it, for
    /// `updates_per_sec` and the latency at that rate. Timed from the first
    /// event until every batch is merged; stops early at `--duration`.
    fn full_speed(&mut self, res: &mut Results) -> anyhow::Result<()> {
        let (plan, market, pool, shared) = (self.plan, self.market, self.pool, self.shared);
        let (router, effects, drain) = (&mut self.router, &mut self.effects, &mut self.drain);
        let (mut seq, mut at, step) = (self.seq, self.at, self.step);
        let channels = plan.market.channels;
        let pb = bar(plan.updates, "full speed");
        shared.timeline_from.store(seq.max(1), Ordering::Release);
        let phase_start = Instant::now();
        let mut sent = 0u64;
        // The pool index, wrapped by hand: a division per event would be the
        // harness's own cost, not the engine's.
        let mut i = 0usize;
        while sent < plan.updates {
            prefetch_token(market, pool, i);
            let tick = &pool[i];
            seq += 1;
            at += step;
            if matches!(tick, Tick::Call { .. }) {
                res.calls += 1;
            }
            shared.stamp(seq, Instant::now);
            let batches = router.batches();
            router.submit(envelope(tick, &market.tokens, channels, seq, at))?;
            if router.batches() != batches {
                while let Poll::Ready(merged) = effects.poll_merged()? {
                    drain.take(merged, effects, shared);
                }
            }
            sent += 1;
            i += 1;
            if i == pool.len() {
                i = 0;
            }
            if sent.is_multiple_of(65_536) {
                pb.set_position(sent);
                if plan.duration.is_some_and(|d| phase_start.elapsed() >= d) {
                    break;
                }
            }
        }
        router.flush()?;
        drain_all(router, effects, drain, shared)?;
        let secs = phase_start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        res.updates = sent;
        res.updates_per_sec = sent as f64 / secs;
        (self.seq, self.at) = (seq, at);
        Ok(())
    }

    /// Phase 2: half as many events at half the full-speed rate (or at
    /// `--latency-rate`), paced, with batches cut at least every
    /// `max_delay`: the latency at a rate the engine holds. Also how long
    /// the driver and the shards waited for a CPU meanwhile, the machine's
    /// share of the latency tail.
    fn paced(&mut self, res: &mut Results) -> anyhow::Result<()> {
        res.half_rate = self.plan.latency_rate.unwrap_or(res.updates_per_sec / 2.0);
        res.half_updates = res.updates / 2;
        let pb = bar(res.half_updates, "half speed");
        self.shared
            .half_from_seq
            .store(self.seq + 1, Ordering::Release);
        let waits_before = CpuWaits::read();
        let phase_start = Instant::now();
        self.paced_events(res.half_rate, res.half_updates, phase_start, &pb)?;
        self.router.flush()?;
        drain_all(
            &self.router,
            &mut self.effects,
            &mut self.drain,
            self.shared,
        )?;
        res.half_achieved_per_sec = res.half_updates as f64 / phase_start.elapsed().as_secs_f64();
        (res.half_driver_wait_ns, res.half_shard_wait_ns) = waits_before.since();
        pb.finish_and_clear();
        Ok(())
    }

    /// The paced phase's events: `count` of them at `rate` a second from
    /// `phase_start`. This thread drains the effects while it waits for the
    /// next event's time.
    fn paced_events(
        &mut self,
        rate: f64,
        count: u64,
        phase_start: Instant,
        pb: &ProgressBar,
    ) -> anyhow::Result<()> {
        let (plan, market, pool, shared) = (self.plan, self.market, self.pool, self.shared);
        let (router, effects, drain) = (&mut self.router, &mut self.effects, &mut self.drain);
        let (mut seq, mut at, step) = (self.seq, self.at, self.step);
        let channels = plan.market.channels;
        let nanos_per_event = 1e9 / rate;
        let mut oldest_pending: Option<Instant> = None;
        // The clock is read for pacing only once the schedule has caught up
        // with the last reading: behind schedule, the events already due go
        // out back to back, as they would from a reader catching up. A clock
        // read per event held this phase below the rate it was asked for. A
        // timed event is stamped when it is submitted (ingest, for this
        // harness), with a reading of its own.
        let mut now = phase_start;
        for i in 0..count {
            let due = phase_start + Duration::from_nanos((i as f64 * nanos_per_event) as u64);
            // Cut a batch once its oldest event has waited `max_delay`: often
            // enough for latency, rarely enough that a batch carries tens of
            // events rather than one (a channel operation per event would eat
            // the rate this phase is meant to hold).
            while now < due {
                if oldest_pending.is_some_and(|t| now.duration_since(t) >= plan.max_delay) {
                    router.flush()?;
                    oldest_pending = None;
                }
                if let Poll::Ready(merged) = effects.poll_merged()? {
                    drain.take(merged, effects, shared);
                }
                now = Instant::now();
            }
            let k = i as usize % pool.len();
            prefetch_token(market, pool, k);
            let tick = &pool[k];
            seq += 1;
            at += step;
            shared.stamp(seq, Instant::now);
            let batches = router.batches();
            // Drain what is ready every few events, not only while ahead of
            // schedule: an effect counts as out when it is ready, and a
            // consumer that looked only when idle would add its own delay. A
            // look is a read of a line a shard writes, so not every event.
            if i.is_multiple_of(DRAIN_EVERY) {
                while let Poll::Ready(merged) = effects.poll_merged()? {
                    drain.take(merged, effects, shared);
                }
            }
            router.submit(envelope(tick, &market.tokens, channels, seq, at))?;
            if router.batches() != batches {
                oldest_pending = None;
            } else if oldest_pending.is_none() {
                oldest_pending = Some(now);
            }
            if i.is_multiple_of(65_536) {
                pb.set_position(i);
            }
        }
        (self.seq, self.at) = (seq, at);
        Ok(())
    }

    /// Closes the inboxes and drains what the shards still had. Returns
    /// what draining found, the effects' receiving end and the stream time
    /// of the last event.
    fn finish(self) -> anyhow::Result<(Drain, Effects, Nanos)> {
        let Driver {
            shared,
            router,
            mut effects,
            mut drain,
            at,
            ..
        } = self;
        router.finish()?;
        while let Some(merged) = effects.next_merged()? {
            drain.take(merged, &effects, shared);
        }
        Ok((drain, effects, at))
    }
}

/// How long the driver (this thread) and each shard thread had waited for
/// a CPU another task held, as /proc said at one moment.
struct CpuWaits {
    driver_ns: Option<u64>,
    /// By thread id.
    shards_ns: Vec<(u64, u64)>,
}

impl CpuWaits {
    fn read() -> Self {
        CpuWaits {
            driver_ns: own_run_queue_wait(),
            shards_ns: run_queue_waits(router::SHARD_THREAD_NAME),
        }
    }

    /// The driver's wait since this reading, and the longest any shard
    /// waited since it.
    fn since(&self) -> (Option<u64>, Option<u64>) {
        let driver_ns = own_run_queue_wait()
            .zip(self.driver_ns)
            .map(|(after, before)| after.saturating_sub(before));
        let shard_ns = run_queue_waits(router::SHARD_THREAD_NAME)
            .iter()
            .filter_map(|(tid, after)| {
                let (_, before) = self.shards_ns.iter().find(|(t, _)| t == tid)?;
                Some(after.saturating_sub(*before))
            })
            .max();
        (driver_ns, shard_ns)
    }
}

/// Throughput between consecutive timeline marks.
fn rates(marks: &[(f64, u64)]) -> Vec<(f64, f64)> {
    marks
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0)))
        .collect()
}
