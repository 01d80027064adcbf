//! `callwatch feed`: the sources alone, to be scaled apart from the
//! engine: calls read from the raw-posts stream (which `serve`'s bot and
//! outside readers fill) and prices of the tracked tokens, published to
//! the input streams `serve` reads.

use std::process::ExitCode;

use anyhow::Context;
use callwatch_feed::Feed;
use tokio::sync::watch;

use super::ConfigArgs;

/// Run the sources only: channel posts to calls, DEX data to prices.
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    super::init_logging(&settings.log.level, settings.log.format == "json")?;
    anyhow::ensure!(
        settings.sources.any(),
        "sources.calls and sources.prices are both off: there is nothing to run"
    );
    let engine = settings.engine_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _entered = rt.enter();
    let feed = Feed::new(
        settings.sources.clone(),
        &settings.redis.key_prefix,
        settings.ingest.partitions,
        engine.ttl_nanos,
        settings.redis.connect()?,
    )?;
    let (stop, stopped) = watch::channel(false);
    rt.spawn(async move {
        super::serve::signalled().await;
        tracing::info!("stopping the sources");
        let _ = stop.send(true);
    });
    tracing::info!(
        calls = settings.sources.calls,
        prices = settings.sources.prices,
        "callwatch feed running"
    );
    rt.block_on(feed.run(stopped))
        .context("the sources failed")?;
    Ok(ExitCode::SUCCESS)
}
