//! `callwatch serve`: the live service (`callwatch_service`), started from
//! its settings, stopped by SIGTERM or Ctrl-C without losing an event.

use std::process::ExitCode;
use std::time::Duration;

use callwatch_service::{Service, Stopper};

use super::ConfigArgs;

/// Run the service (see `callwatch config` for its settings).
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The longest each step of a graceful stop may take, in seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_secs: u64,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    super::init_logging(&settings.log.level, settings.log.format == "json")?;
    tracing::info!(
        redis = %settings.redis.url,
        postgres = %settings.postgres.url,
        partitions = ?settings.owned_partitions(),
        "callwatch serve starting (`callwatch config` prints every setting)"
    );
    let service = Service::start(&settings)?;
    stop_on_signal(service.stopper())?;
    service.join(Duration::from_secs(args.shutdown_secs))?;
    Ok(ExitCode::SUCCESS)
}

/// Stops the service on SIGTERM or Ctrl-C, from a thread of its own.
fn stop_on_signal(stopper: Stopper) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("callwatch-signals".to_owned())
        .spawn(move || {
            rt.block_on(signalled());
            tracing::info!("stopping: no new events; draining");
            stopper.stop();
        })?;
    Ok(())
}

/// Completes at SIGTERM or Ctrl-C.
pub async fn signalled() {
    let term = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
