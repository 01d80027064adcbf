//! The `snapshot` scenario: an engine holding a given number of tracked
//! keys (each a tracked entry and its processed record, as `serve` holds
//! them after a call alert), snapshotted to a directory while prices keep
//! coming, then started again from that snapshot, timing each step and the
//! longest pause of the input the snapshot caused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use callwatch_state::snapshots::SnapshotStore;
use engine::EngineConfig;
use engine::event::{Envelope, Event};
use engine::router;
use engine::shard::{Restore, RestoreRecord, Status};
use indicatif::ProgressBar;

use crate::market::{Market, Spec, T0};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Tracked keys the engine holds: each a tracked entry and its
    /// processed record (two of the predecessor's keys).
    #[arg(long, default_value_t = 10_000_000)]
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
    /// The directory to write the snapshot into (a fresh temporary one by
    /// default, deleted at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Before loading, ask the kernel to drop its page cache (needs root),
    /// so the file is read from disk as after a reboot.
    #[arg(long)]
    cold: bool,
    /// The seed for every random draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default)]
struct Results {
    keys: u64,
    tokens: u64,
    build: Duration,
    encode: Duration,
    pause: Duration,
    prices_during: u64,
    write: Duration,
    bytes: u64,
    read: Duration,
    check: Duration,
    decode: Duration,
    start_to_ready: Duration,
    cold: bool,
}

pub fn run(a: &SnapshotArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        a.tokens > 0 && a.chats > 0,
        "--tokens and --chats must be positive"
    );
    anyhow::ensure!(
        a.keys <= a.tokens * a.chats,
        "--keys {} is more than --tokens × --chats allows (one key per token and chat)",
        a.keys
    );
    let config = EngineConfig {
        shards: a
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ..EngineConfig::default()
    };
    let temp = a.dir.is_none();
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("callwatch-snapshot-{}", std::process::id()))
    });
    let store = SnapshotStore::new(&dir, 1);
    let result = measure(a, &config, &store);
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = result?;
    if a.json {
        println!("{}", json(&r));
    } else {
        print!("{}", table(&r));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn measure(
    a: &SnapshotArgs,
    config: &EngineConfig,
    store: &SnapshotStore,
) -> anyhow::Result<Results> {
    let market = Market::new(Spec {
        seed: a.seed,
        tokens: a.tokens,
        chats: a.chats,
        channels: 500,
        keys: a.keys,
        call_share: 0.0,
        pump_rate: 0.0,
        zipf_feed: true,
    });
    let mut r = Results {
        keys: a.keys,
        cold: a.cold,
        ..Results::default()
    };
    eprintln!(
        "loadtest snapshot: building {} tracked keys over {} tokens",
        a.keys, a.tokens
    );
    let (mut router, effects, workers) = router::start(config)?;
    let drained = drain(effects);
    let started = Instant::now();
    let pb = ProgressBar::new(a.keys);
    for (n, (t, chat_id, fdv)) in market.keys().enumerate() {
        let token = market.tokens[t as usize];
        router.restore(Restore {
            token,
            chat_id,
            fdv_at_call: fdv,
            started: T0,
            last_threshold: None,
        })?;
        let channel = Market::channel_id(u64::from(t) % 500);
        router.restore_record(RestoreRecord {
            token,
            chat_id,
            status: Status::Accepted,
            last_check: T0,
            checked: vec![(channel, T0)],
        })?;
        if n % 100_000 == 0 {
            pb.set_position(n as u64);
        }
    }
    router.compact()?;
    pb.finish_and_clear();

    eprintln!("loadtest snapshot: taking the snapshot while prices go on, then writing it");
    let asked = Instant::now();
    r.build = asked.duration_since(started);
    let taking = router.snapshot(config.thresholds.clone())?;
    let waiter = std::thread::spawn(move || taking.wait());
    // Prices for the held tokens while the shards write their parts: the
    // input goes on, and the shards time their longest step.
    let mut seq = router.last_seq();
    while !waiter.is_finished() {
        for _ in 0..4096 {
            seq += 1;
            let token = market.tokens[(seq % a.tokens) as usize];
            router.submit(Envelope {
                seq,
                clock: T0,
                event: Event::Price {
                    token,
                    fdv_usd: 1.0,
                    at: T0,
                },
            })?;
            r.prices_during += 1;
        }
        router.flush()?;
    }
    let taken = waiter.join().expect("the snapshot's waiter panicked")?;
    r.encode = asked.elapsed();
    r.pause = taken.longest_pause;
    r.tokens = taken.image.tokens;
    let written = store.write(&taken.image, b"{}")?;
    r.write = written.took;
    r.bytes = written.bytes;
    drop(taken);
    router.finish()?;
    drop(workers.join()?);
    drained.join().expect("the effects drain panicked");

    if a.cold {
        drop_page_cache()?;
    }
    eprintln!(
        "loadtest snapshot: starting again from {}",
        written.path.display()
    );
    let started = Instant::now();
    let newest = store.load_newest(config)?;
    let loaded = newest.loaded.ok_or_else(|| {
        anyhow::anyhow!(
            "the snapshot just written did not load: {:?}",
            newest.refused
        )
    })?;
    let (router, effects, workers) = router::start_from(config, loaded.states)?;
    r.start_to_ready = started.elapsed();
    let drained = drain(effects);
    (r.read, r.check, r.decode) = (loaded.read, loaded.check, loaded.decode);
    router.finish()?;
    let states = workers.join()?;
    drained.join().expect("the effects drain panicked");
    let held: u64 = states.iter().map(|s| s.stats().tracked).sum();
    anyhow::ensure!(held == a.keys, "loaded {held} tracked keys of {}", a.keys);
    Ok(r)
}

/// Takes the shards' (empty) outputs until they stop, so that they never
/// wait on a full outbox.
fn drain(mut effects: router::Effects) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || while let Ok(Some(_)) = effects.next_batch() {})
}

/// Writes dirty pages out and drops the clean ones, so the next read
/// comes from the disk.
fn drop_page_cache() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|e| {
        anyhow::anyhow!("--cold: cannot drop the page cache ({e}); run as root or without --cold")
    })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn table(r: &Results) -> String {
    format!(
        "  tracked keys (entry + processed record each)  {}\n  tokens  {}\n  \
         build by restore  {:.2} s\n  snapshot: taken in {:.3} s while {} prices were applied, \
         the longest pause of the input {:.1} ms; write + fsync {:.3} s, {:.1} MB\n  start from it ({}): read {:.3} s, check {:.3} s, \
         decode {:.3} s; start to ready {:.3} s\n",
        r.keys,
        r.tokens,
        r.build.as_secs_f64(),
        r.encode.as_secs_f64(),
        r.prices_during,
        r.pause.as_secs_f64() * 1e3,
        r.write.as_secs_f64(),
        r.bytes as f64 / 1e6,
        if r.cold {
            "cold page cache"
        } else {
            "warm page cache"
        },
        r.read.as_secs_f64(),
        r.check.as_secs_f64(),
        r.decode.as_secs_f64(),
        r.start_to_ready.as_secs_f64(),
    )
}

fn json(r: &Results) -> String {
    serde_json::json!({
        "scenario": "snapshot",
        "keys": r.keys,
        "tokens": r.tokens,
        "build_secs": secs(r.build),
        "encode_secs": secs(r.encode),
        "longest_pause_secs": (r.pause.as_secs_f64() * 1e6).round() / 1e6,
        "prices_during_snapshot": r.prices_during,
        "write_secs": secs(r.write),
        "snapshot_secs": secs(r.encode + r.write),
        "bytes": r.bytes,
        "cold": r.cold,
        "read_secs": secs(r.read),
        "check_secs": secs(r.check),
        "decode_secs": secs(r.decode),
        "start_to_ready_secs": secs(r.start_to_ready),
    })
    .to_string()
}
