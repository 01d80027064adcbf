//! `callwatch rebuild`: loads every multiplier and processed record from
//! Redis into a fresh engine, as the service does on start, and says how
//! long it took.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use callwatch_common::secret::SecretUrl;
use callwatch_state::rebuild::{bulk_connection_config, into_fresh_engine};

use super::{ConfigArgs, EngineArgs};

/// Load every multiplier and processed record from Redis into the engine and time it.
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The Redis server and database, e.g. redis://127.0.0.1:6379/0
    /// [default: redis.url, or REDIS_URL].
    #[arg(long)]
    redis_url: Option<SecretUrl>,
    /// SCAN's COUNT hint: keys asked for per round trip.
    #[arg(long, default_value_t = callwatch_state::rebuild::SCAN_COUNT)]
    scan_count: usize,
    /// Print one JSON object (keys, processed, skipped, tokens, seconds, keys_per_sec).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.scan_count > 0, "--scan-count must be positive");
    let config = args.engine.config()?;
    let settings = args.config.settings()?;
    let mut redis = settings.redis.endpoint();
    if let Some(url) = &args.redis_url {
        redis.url = url.clone();
    }
    anyhow::ensure!(
        !redis.cluster,
        "callwatch rebuild reads one Redis server, and redis.cluster is set: on a cluster, \
         serve rebuilds from every master by itself when it starts without a snapshot"
    );
    let client = redis
        .client()
        .context("--redis-url (or redis.url, redis.ca_file)")?;
    let prefix = &settings.redis.key_prefix;
    let rt = super::runtime()?;
    let started = Instant::now();
    let progress = indicatif::ProgressBar::hidden();
    let mut shown = 0;
    let (loaded, states) = rt.block_on(async {
        let mut con = client
            .get_multiplexed_async_connection_with_config(&bulk_connection_config())
            .await
            .map_err(|e| redis.explain(e))
            .context("cannot connect to Redis (check --redis-url / REDIS_URL / redis.url)")?;
        // The database's size bounds the records to load: the bar's length.
        let size: u64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .context("DBSIZE")?;
        progress.set_length(size);
        progress.set_style(
            indicatif::ProgressStyle::with_template(
                "loading {pos}/{len} keys [{bar:40}] {per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        into_fresh_engine(
            &con,
            prefix,
            &config,
            args.scan_count,
            |s| {
                shown += 1;
                if shown <= 10 {
                    eprintln!("skipped {}: {}", s.key, s.reason);
                }
            },
            |n| progress.set_position(n),
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let tokens: u64 = states.iter().map(|s| s.stats().tokens).sum();
    let per_sec = loaded.keys as f64 / seconds.max(1e-9);
    if args.json {
        println!(
            "{{\"keys\": {}, \"processed\": {}, \"skipped\": {}, \"tokens\": {}, \"seconds\": {:.3}, \"keys_per_sec\": {:.0}}}",
            loaded.keys, loaded.processed, loaded.skipped, tokens, seconds, per_sec
        );
    } else {
        println!(
            "rebuilt {} records ({} multiplier, {} processed) over {} tokens in {:.2} s ({:.0} keys/s); {} keys skipped",
            loaded.keys,
            loaded.keys - loaded.processed,
            loaded.processed,
            tokens,
            seconds,
            per_sec,
            loaded.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}
