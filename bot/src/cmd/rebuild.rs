//! `callwatch rebuild`: loads every tracked entry from Redis into a fresh
//! engine, as the service does on start, and says how long it took.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use callwatch_io::rebuild::load_multipliers;
use engine::router;

use super::EngineArgs;

/// Load every multiplier record from Redis into the engine and time it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Redis server and database, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// SCAN's COUNT hint: keys asked for per round trip.
    #[arg(long, default_value_t = 10_000)]
    scan_count: usize,
    /// Print one JSON object (keys, skipped, tokens, seconds, keys_per_sec).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.scan_count > 0, "--scan-count must be positive");
    let config = args.engine.config()?;
    let client =
        redis::Client::open(args.redis_url.as_str()).context("--redis-url is not a Redis URL")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let (mut router, mut effects, workers) = router::start(&config)?;
    // Restores make no alerts, but every batch has an output to take.
    let drain = std::thread::spawn(move || while let Ok(Some(_)) = effects.next_batch() {});
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_message("loading multiplier records");
    let mut shown = 0;
    let mut send_error = None;
    let loaded = rt.block_on(async {
        let con = client
            .get_multiplexed_async_connection_with_config(&bulk_config())
            .await
            .context("cannot connect to Redis (check --redis-url / REDIS_URL)")?;
        load_multipliers(
            &con,
            args.scan_count,
            |r| {
                if send_error.is_none()
                    && let Err(e) = router.restore(r)
                {
                    send_error = Some(e);
                }
            },
            |s| {
                shown += 1;
                if shown <= 10 {
                    eprintln!("skipped {}: {}", s.key, s.reason);
                }
            },
            |n| progress.set_position(n),
        )
        .await
        .context("reading from Redis")
    })?;
    progress.finish_and_clear();
    if let Some(e) = send_error {
        return Err(e.into());
    }
    router.compact()?;
    router.finish()?;
    drain.join().expect("the drain thread does not panic");
    let states = workers.join()?;
    let seconds = started.elapsed().as_secs_f64();
    let tokens: u64 = states.iter().map(|s| s.stats().tokens).sum();
    let per_sec = loaded.keys as f64 / seconds.max(1e-9);
    if args.json {
        println!(
            "{{\"keys\": {}, \"skipped\": {}, \"tokens\": {}, \"seconds\": {:.3}, \"keys_per_sec\": {:.0}}}",
            loaded.keys, loaded.skipped, tokens, seconds, per_sec
        );
    } else {
        println!(
            "rebuilt {} tracked entries over {} tokens in {:.2} s ({:.0} keys/s); {} keys skipped",
            loaded.keys, tokens, seconds, per_sec, loaded.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Bulk commands (a FLUSHDB of millions of keys, an MGET of ten thousand)
/// can take far longer than the client's default 500 ms response timeout.
fn bulk_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
        .set_response_timeout(Some(std::time::Duration::from_secs(60)))
}
