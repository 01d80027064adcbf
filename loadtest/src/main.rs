//! `loadtest`: callwatch's load-test harness.
//!
//! Scenarios, one subcommand each:
//! - `engine`: the sharded engine in process, with millions of tracked
//!   keys, driven at full speed and at half of it; optionally side by side
//!   with the predecessor's design (`--baseline seed`).
//! - `rebuild`: fill a Redis database with predecessor-format keys and time
//!   loading them back, the predecessor's way and callwatch's.
//! - `audit`: alert audit rows through the Redis stream into PostgreSQL.
//! - `writebehind`: engine effects through the Redis write-behind.
//! - `telegram`: a backlog of alerts through the Telegram sender to a fake
//!   Bot API that enforces Telegram's limits.
//! - `jitter`: the machine's own scheduling jitter.
//! - `pipeline`: a published market through `callwatch serve`, timed until
//!   every entry is acknowledged.
//!
//! # Layout
//! - `market`: the synthetic market (keys, prices, calls).
//! - `engine_run`: the `engine` scenario.
//! - `seed`: the predecessor's algorithm, for comparison.
//! - `rebuild_run`: the `rebuild` scenario.
//! - `audit_run`: the `audit` scenario.
//! - `pipeline_run`: the `pipeline` scenario.
//! - `writebehind_run`: the `writebehind` scenario.
//! - `telegram_run`: the `telegram` scenario.
//! - `report`: summary table, JSON line, HTML report.
//! - `mem`: resident memory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use callwatch_common::secret::SecretUrl;
use clap::{Parser, Subcommand, ValueEnum};

mod audit_run;
mod engine_run;
mod market;
mod mem;
mod pipeline_run;
mod rebuild_run;
mod report;
mod schedule_run;
mod seed;
mod snapshot_run;
mod telegram_run;
mod writebehind_run;

// The same allocator as the service, so memory per key is what it would be.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load tests for callwatch.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// The engine in process: build tracked keys, drive price updates.
    Engine(EngineArgs),
    /// Measure the machine's own scheduling jitter: how often a spinning
    /// thread loses the CPU, and for how long. A floor under any latency
    /// figure measured on the same machine.
    Jitter(JitterArgs),
    /// Fill a Redis database with predecessor-format keys, then time
    /// loading them back: the predecessor's way and callwatch's.
    Rebuild(RebuildArgs),
    /// Hold tracked keys in the engine, snapshot it to a directory, then
    /// time starting again from that snapshot.
    Snapshot(snapshot_run::SnapshotArgs),
    /// Push alert audit rows into a Redis stream, then time the sink that
    /// lands them in PostgreSQL (a schema of its own, dropped at the end).
    Audit(AuditArgs),
    /// Record call and multiplier alerts as fast as the Redis write-behind
    /// takes them and time their keys landing in Redis (a database of its
    /// own, flushed at the start and the end).
    Writebehind(WritebehindArgs),
    /// Queue a backlog of alerts for many chats and time the Telegram
    /// sender delivering them to a fake Bot API that answers 429 to
    /// anything over Telegram's limits.
    Telegram(TelegramArgs),
    /// Publish a simulated market to the input streams, run `callwatch
    /// serve` on it and time it until every entry is acknowledged.
    Pipeline(PipelineArgs),
    /// The price sources' scheduler over many tracked tokens on a request
    /// budget, on a simulated clock: how long tokens wait between polls.
    Schedule(ScheduleArgs),
}

#[derive(Debug, clap::Args)]
struct ScheduleArgs {
    /// Tracked tokens.
    #[arg(long, default_value_t = 1_000_000)]
    tokens: u64,
    /// Requests a minute (DexScreener's default budget: 300).
    #[arg(long, default_value_t = 300)]
    requests_per_minute: u32,
    /// Simulated minutes.
    #[arg(long, default_value_t = 480)]
    minutes: u64,
    /// New calls a minute; each makes its token urgent for an hour.
    #[arg(long, default_value_t = 50)]
    calls_per_minute: u64,
    /// Share of tokens valued near their next crossing (urgent).
    #[arg(long, default_value_t = 0.001)]
    near_share: f64,
    /// The ceiling, seconds: the longest a token should wait.
    #[arg(long, default_value_t = 1_800)]
    ceiling_secs: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also print one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Feed {
    /// Popular tokens get most updates (Zipf), as trading activity does.
    Zipf,
    /// Every token is updated at the same pace, as a feed that polls them.
    Uniform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// The predecessor's algorithm: one locked map, a loop over every user
    /// per update, 5 s / 2 % gating, O(n) LRU.
    Seed,
}

#[derive(Debug, clap::Args)]
struct EngineArgs {
    /// Tracked (token, chat) keys to build.
    #[arg(long, default_value_t = 1_000_000)]
    tracked_keys: u64,
    /// Distinct tokens; popularity follows a Zipf law.
    #[arg(long, default_value_t = 100_000)]
    tokens: u64,
    /// Subscribed chats (each follows 3 channels).
    #[arg(long, default_value_t = 100_000)]
    chats: u64,
    /// Calling channels.
    #[arg(long, default_value_t = 500)]
    channels: u64,
    /// Price updates (and calls) to drive at full speed; half as many are
    /// then driven at half that rate for latency.
    #[arg(long, default_value_t = 20_000_000)]
    updates: u64,
    /// Stop the full-speed phase after this many seconds, if sooner.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Share of stream events that are calls.
    #[arg(long, default_value_t = 0.0001)]
    call_share: f64,
    /// Chance that a price update is a pump (3–20x in one step), and again
    /// that it is a dump. A pump of a popular token alerts thousands of
    /// chats in one event.
    #[arg(long, default_value_t = 0.000_01)]
    pump_rate: f64,
    /// How price updates pick their token.
    #[arg(long, value_enum, default_value_t = Feed::Zipf)]
    feed: Feed,
    /// Shard threads [default: the number of cores].
    #[arg(long)]
    shards: Option<usize>,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Do not pin shard threads.
    #[arg(long)]
    no_pin: bool,
    /// In the half-speed phase, cut a batch when its oldest event has
    /// waited this long, in microseconds.
    #[arg(long, default_value_t = 10)]
    max_delay_us: u64,
    /// Rate of the paced phase, in events per second [default: half the
    /// full-speed rate just measured].
    #[arg(long, value_name = "PER_SEC")]
    latency_rate: Option<f64>,
    /// Distinct stream events generated (then cycled).
    #[arg(long, default_value_t = 4_000_000)]
    pool: usize,
    /// Events the router hands a shard per channel operation [default:
    /// the engine's, 1024].
    #[arg(long)]
    batch_events: Option<usize>,
    /// Batches an inbox holds before the router waits [default: the
    /// engine's, 64].
    #[arg(long)]
    inbox_batches: Option<usize>,
    /// Also run a baseline design on the same keys and prices.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Wall-clock limit for the baseline run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    baseline_secs: f64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Write an HTML report (latency curves, throughput over time) here,
    /// with `.hgrm` percentile files and `timeline.csv` beside it.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Draw the report in DIR (an earlier `--report`) beside this run's.
    #[arg(long, value_name = "DIR", requires = "report")]
    compare: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct JitterArgs {
    /// How long to spin, in seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Pin the spinning thread to this core.
    #[arg(long)]
    core: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct RebuildArgs {
    /// The Redis server and database to fill (flushed first and after),
    /// e.g. redis://127.0.0.1:6379/13.
    #[arg(long)]
    redis_url: SecretUrl,
    /// Multiplier keys to write and load.
    #[arg(long, default_value_t = 2_500_000)]
    keys: u64,
    /// Distinct tokens the keys spread over (Zipf).
    #[arg(long, default_value_t = 100_000)]
    tokens: u64,
    /// Distinct chats.
    #[arg(long, default_value_t = 100_000)]
    chats: u64,
    /// Shard threads [default: the number of cores].
    #[arg(long)]
    shards: Option<usize>,
    /// SCAN's COUNT hint for callwatch's loader.
    #[arg(long, default_value_t = callwatch_state::rebuild::SCAN_COUNT)]
    scan_count: usize,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Flush the database even if it already holds keys.
    #[arg(long)]
    overwrite: bool,
    /// Leave the keys in Redis at the end.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// The Redis server and database for the stream (one key, deleted at
    /// the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379/14")]
    redis_url: SecretUrl,
    /// The PostgreSQL database to create a schema in.
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=5432 dbname=test user=postgres"
    )]
    database_url: SecretUrl,
    /// Audit rows to push and land.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// The sink's batch, in entries (1 to 100,000).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Rows per pushed pipeline.
    #[arg(long, default_value_t = 10_000)]
    push_chunk: usize,
    /// Consumers in the sink's group, each with its own connections.
    #[arg(long, default_value_t = 1)]
    sinks: usize,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct WritebehindArgs {
    /// The Redis server and database to write (flushed first and after).
    #[arg(long, default_value = "redis://127.0.0.1:6379/15")]
    redis_url: SecretUrl,
    /// Call alerts to record; each writes two keys.
    #[arg(long, default_value_t = 1_000_000)]
    alerts: u64,
    /// Share of alerts that later reach a threshold.
    #[arg(long, default_value_t = 0.3)]
    threshold_share: f64,
    /// Keys per pipeline.
    #[arg(long, default_value_t = 4096)]
    batch_keys: usize,
    /// The buffer's bound, in keys.
    #[arg(long, default_value_t = 1_000_000)]
    capacity: usize,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Flush the database even if it already holds keys.
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TelegramArgs {
    /// Alerts queued at once.
    #[arg(long, default_value_t = 3_000)]
    alerts: u64,
    /// Chats they are spread over.
    #[arg(long, default_value_t = 300)]
    chats: u64,
    /// Messages per second overall.
    #[arg(long, default_value_t = 30)]
    global_limit: u32,
    /// Least time between two messages to one chat, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    chat_interval_ms: u64,
    /// Keep the limits in this Redis, as `serve` shares them with the bot's
    /// other processes (`telegram.limits = "redis"`): each send reserved
    /// there first, under a key prefix of the run's own (its keys expire).
    /// Without it, the sender keeps them alone.
    #[arg(long)]
    shared_redis: Option<SecretUrl>,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct PipelineArgs {
    /// The Redis server and database for the streams and state (flushed
    /// first and after).
    #[arg(long, default_value = "redis://127.0.0.1:6379/7")]
    redis_url: SecretUrl,
    /// Also land audit rows in this PostgreSQL (a schema of its own,
    /// dropped at the end).
    #[arg(long)]
    database_url: Option<SecretUrl>,
    /// Events to publish and run through the service.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Input partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Distinct tokens in the market.
    #[arg(long, default_value_t = 2_000)]
    tokens: u64,
    /// Subscribed chats.
    #[arg(long, default_value_t = 200)]
    chats: u64,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The callwatch binary [default: `callwatch` beside this one].
    #[arg(long)]
    callwatch: Option<PathBuf>,
    /// Flush the database even if it already holds keys.
    #[arg(long)]
    overwrite: bool,
    /// Publish at this many events/s while serve runs, and report its
    /// alert latency, instead of timing it on a backlog.
    #[arg(long)]
    rate: Option<f64>,
    /// `--redis-url` is a node of a Redis Cluster (database 0): serve runs
    /// with `redis.cluster = true` (`scripts/redis-cluster` starts a local
    /// one).
    #[arg(long)]
    cluster: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.scenario {
        Scenario::Engine(args) => engine(&args),
        Scenario::Jitter(args) => jitter(&args),
        Scenario::Rebuild(args) => rebuild(&args),
        Scenario::Snapshot(args) => snapshot_run::run(&args),
        Scenario::Audit(args) => audit(&args),
        Scenario::Writebehind(args) => writebehind(&args),
        Scenario::Telegram(args) => telegram(&args),
        Scenario::Pipeline(args) => pipeline(&args),
        Scenario::Schedule(args) => schedule(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn schedule(a: &ScheduleArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.tokens > 0, "--tokens must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.near_share),
        "--near-share must be in [0, 1]"
    );
    let config = callwatch_sources::schedule::ScheduleConfig {
        ceiling_secs: a.ceiling_secs,
        ..Default::default()
    };
    let problems = config.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    let batch = config.batch;
    println!(
        "loadtest schedule: {} tokens, {} requests/min x {} tokens = {} tokens/min, {} simulated minutes, {} calls/min",
        a.tokens,
        a.requests_per_minute,
        batch,
        u64::from(a.requests_per_minute) * batch as u64,
        a.minutes,
        a.calls_per_minute
    );
    let r = schedule_run::run(&schedule_run::Plan {
        tokens: a.tokens,
        requests_per_minute: a.requests_per_minute,
        minutes: a.minutes,
        calls_per_minute: a.calls_per_minute,
        near_share: a.near_share,
        config,
        seed: a.seed,
    });
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p);
    let rows = [
        ("urgent tokens", &r.urgent),
        ("all tokens", &r.all),
        ("all, at start", &r.start),
    ];
    for (name, h) in rows {
        println!(
            "  {name:<14} polls {:>9}  wait between polls (s): p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}",
            h.len(),
            q(h, 0.5),
            q(h, 0.9),
            q(h, 0.99),
            h.max()
        );
    }
    println!(
        "  requests {}  polls {}  due at the end {}  scheduler time {:.2} s ({:.0} polls/s)",
        r.requests,
        r.polls,
        r.due_at_end,
        r.scheduler_secs,
        r.polls as f64 / r.scheduler_secs.max(1e-9)
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "tokens": r.tokens,
                "requests": r.requests,
                "polls": r.polls,
                "due_at_end": r.due_at_end,
                "scheduler_secs": r.scheduler_secs,
                "urgent_wait_secs": {"p50": q(&r.urgent, 0.5), "p90": q(&r.urgent, 0.9), "p99": q(&r.urgent, 0.99), "max": r.urgent.max()},
                "all_wait_secs": {"p50": q(&r.all, 0.5), "p90": q(&r.all, 0.9), "p99": q(&r.all, 0.99), "max": r.all.max()},
                "start_wait_secs": {"p50": q(&r.start, 0.5), "p90": q(&r.start, 0.9), "p99": q(&r.start, 0.99), "max": r.start.max()},
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn jitter(a: &JitterArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.secs > 0.0 && a.secs <= 600.0,
        "--secs must be between 0 and 600"
    );
    if let Some(core) = a.core {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        let id = ids
            .into_iter()
            .find(|c| c.id == core)
            .ok_or_else(|| anyhow::anyhow!("core {core} is not available to this process"))?;
        anyhow::ensure!(
            core_affinity::set_for_current(id),
            "could not pin to core {core}"
        );
    }
    const BOUNDS_US: [u64; 6] = [10, 50, 100, 500, 1_000, 10_000];
    let mut over = [0u64; 6];
    let mut lost_ns = 0u64;
    let start = std::time::Instant::now();
    let limit = Duration::from_secs_f64(a.secs);
    let mut last = start;
    let mut reads = 0u64;
    while last.duration_since(start) < limit {
        let now = std::time::Instant::now();
        let gap = now.duration_since(last).as_nanos() as u64;
        for (i, b) in BOUNDS_US.iter().enumerate() {
            if gap > b * 1_000 {
                over[i] += 1;
            }
        }
        if gap > 10_000 {
            lost_ns += gap;
        }
        last = now;
        reads += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{reads} clock reads in {secs:.1} s; gaps between consecutive reads:");
    for (b, n) in BOUNDS_US.iter().zip(over) {
        println!(
            "  over {b:>6} µs: {n:>8} ({:.1} per second)",
            n as f64 / secs
        );
    }
    println!(
        "time lost in gaps over 10 µs: {:.2} ms per second",
        lost_ns as f64 / 1e6 / secs
    );
    Ok(ExitCode::SUCCESS)
}

fn rebuild(a: &RebuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.tokens > 0 && a.chats > 0,
        "--tokens and --chats must be positive"
    );
    anyhow::ensure!(
        a.keys <= a.tokens * a.chats,
        "--keys {} is more than --tokens × --chats allows (one key per token and chat)",
        a.keys
    );
    anyhow::ensure!(a.scan_count > 0, "--scan-count must be positive");
    let plan = rebuild_run::Plan {
        redis_url: a.redis_url.clone(),
        market: market::Spec {
            seed: a.seed,
            tokens: a.tokens,
            chats: a.chats,
            channels: 500,
            keys: a.keys,
            call_share: 0.0,
            pump_rate: 0.0,
            zipf_feed: true,
        },
        shards: a
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        scan_count: a.scan_count,
        overwrite: a.overwrite,
        keep: a.keep,
    };
    eprintln!("loadtest rebuild: {} keys over {} tokens", a.keys, a.tokens);
    let r = rebuild_run::run(&plan)?;
    println!("{}", rebuild_run::table(&r));
    if a.json {
        println!("{}", rebuild_run::json(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn audit(a: &AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.rows > 0, "--rows must be positive");
    anyhow::ensure!(a.push_chunk > 0, "--push-chunk must be positive");
    anyhow::ensure!(
        (1..=16).contains(&a.sinks),
        "--sinks must be between 1 and 16"
    );
    let plan = audit_run::Plan {
        redis_url: a.redis_url.clone(),
        database_url: a.database_url.clone(),
        rows: a.rows,
        batch: a.batch,
        push_chunk: a.push_chunk,
        sinks: a.sinks,
        seed: a.seed,
    };
    eprintln!(
        "loadtest audit: {} rows, {} consumer(s), batches of {}",
        a.rows, a.sinks, a.batch
    );
    let r = audit_run::run(&plan)?;
    println!("{}", audit_run::table(&r));
    if a.json {
        println!("{}", audit_run::json(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn writebehind(a: &WritebehindArgs) -> anyhow::Result<ExitCode> {
    let plan = writebehind_run::Plan {
        redis_url: a.redis_url.clone(),
        alerts: a.alerts,
        threshold_share: a.threshold_share,
        batch_keys: a.batch_keys,
        capacity: a.capacity,
        seed: a.seed,
        overwrite: a.overwrite,
    };
    eprintln!(
        "loadtest writebehind: {} call alerts ({} keys), pipelines of {} keys",
        a.alerts,
        2 * a.alerts,
        a.batch_keys
    );
    let r = writebehind_run::run(&plan)?;
    println!("{}", writebehind_run::table(&r));
    if a.json {
        println!("{}", writebehind_run::json(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn telegram(a: &TelegramArgs) -> anyhow::Result<ExitCode> {
    let plan = telegram_run::Plan {
        alerts: a.alerts,
        chats: a.chats,
        global_limit: a.global_limit,
        chat_interval: Duration::from_millis(a.chat_interval_ms),
        shared_redis: a.shared_redis.clone(),
        seed: a.seed,
    };
    eprintln!(
        "loadtest telegram: {} alerts to {} chats, {}/s overall, 1 per {} ms per chat, limits {}",
        a.alerts,
        a.chats,
        a.global_limit,
        a.chat_interval_ms,
        if a.shared_redis.is_some() {
            "shared in Redis"
        } else {
            "in process"
        }
    );
    let r = telegram_run::run(&plan)?;
    println!("{}", telegram_run::table(&r));
    if a.json {
        println!("{}", telegram_run::json(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn pipeline(a: &PipelineArgs) -> anyhow::Result<ExitCode> {
    let callwatch = match &a.callwatch {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("callwatch"))
            .ok_or_else(|| anyhow::anyhow!("where this binary lives"))?,
    };
    let plan = pipeline_run::Plan {
        redis_url: a.redis_url.clone(),
        database_url: a.database_url.clone(),
        events: a.events,
        partitions: a.partitions,
        tokens: a.tokens,
        chats: a.chats,
        seed: a.seed,
        callwatch,
        overwrite: a.overwrite,
        rate: a.rate,
        cluster: a.cluster,
    };
    eprintln!(
        "loadtest pipeline: {} events over {} partitions through callwatch serve{}",
        a.events,
        a.partitions,
        if a.cluster {
            ", on a Redis Cluster"
        } else {
            ""
        }
    );
    let r = pipeline_run::run(&plan)?;
    println!("{}", pipeline_run::table(&r));
    if a.json {
        println!("{}", pipeline_run::json(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn engine(a: &EngineArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.tokens > 0 && a.chats > 0 && a.channels > 0,
        "--tokens, --chats and --channels must be positive"
    );
    anyhow::ensure!(
        a.tracked_keys <= a.tokens * a.chats,
        "--tracked-keys {} is more than --tokens × --chats allows (one key per token and chat)",
        a.tracked_keys
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.call_share),
        "--call-share must be between 0 and 1"
    );
    anyhow::ensure!(a.updates >= 2, "--updates must be at least 2");
    anyhow::ensure!(
        (0.0..=0.5).contains(&a.pump_rate),
        "--pump-rate must be between 0 and 0.5"
    );
    anyhow::ensure!(
        a.latency_rate.is_none_or(|r| r > 0.0 && r.is_finite()),
        "--latency-rate must be a positive number of events per second"
    );
    let shards = a
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let plan = engine_run::Plan {
        market: market::Spec {
            seed: a.seed,
            tokens: a.tokens,
            chats: a.chats,
            channels: a.channels,
            keys: a.tracked_keys,
            call_share: a.call_share,
            pump_rate: a.pump_rate,
            zipf_feed: a.feed == Feed::Zipf,
        },
        shards,
        updates: a.updates,
        duration: a.duration.map(Duration::from_secs_f64),
        pin: !a.no_pin,
        max_delay: Duration::from_micros(a.max_delay_us),
        baseline: a.baseline.is_some(),
        baseline_limit: Duration::from_secs_f64(a.baseline_secs),
        pool: a.pool,
        latency_rate: a.latency_rate,
        batch_events: a.batch_events,
        inbox_batches: a.inbox_batches,
    };
    eprintln!(
        "loadtest engine: {} tracked keys over {} tokens and {} chats, {} shard(s), seed {}",
        a.tracked_keys, a.tokens, a.chats, shards, a.seed
    );
    // Read before the run: a wrong directory should not cost a run.
    let compared = a
        .compare
        .as_deref()
        .map(report::Compared::load)
        .transpose()?;
    let results = engine_run::run(&plan)?;
    println!("{}", report::table(&results));
    if let Some(dir) = &a.report {
        let path = report::html(&results, dir, compared.as_ref())?;
        eprintln!("report written to {}", path.display());
    }
    if a.json {
        println!("{}", report::json(&results));
    }
    Ok(ExitCode::SUCCESS)
}
