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
    // Listening before the start, which answers commands while it is
    // still rebuilding: a SIGTERM then stops the service once started,
    // rather than kill it as the default action would.
    let signals = Signals::listen()?;
    let service = Service::start(&settings)?;
    signals.stop(service.stopper())?;
    service.join(Duration::from_secs(args.shutdown_secs))?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and Ctrl-C, listened for from the moment this is made: one
/// that comes before [`Signals::stop`] is kept, not lost.
struct Signals {
    rt: tokio::runtime::Runtime,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        #[cfg(unix)]
        let (term, interrupt) = {
            use tokio::signal::unix::{SignalKind, signal};
            let _entered = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(Signals {
            rt,
            #[cfg(unix)]
            term,
            #[cfg(unix)]
            interrupt,
        })
    }

    /// Stops the service at the first signal, from a thread of its own.
    fn stop(self, stopper: Stopper) -> anyhow::Result<()> {
        std::thread::Builder::new()
            .name("callwatch-signals".to_owned())
            .spawn(move || {
                #[cfg(unix)]
                {
                    let Signals {
                        rt,
                        mut term,
                        mut interrupt,
                    } = self;
                    rt.block_on(async {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = interrupt.recv() => {}
                        }
                    });
                }
                #[cfg(not(unix))]
                self.rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
                tracing::info!("stopping: no new events; draining");
                stopper.stop();
            })?;
        Ok(())
    }
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
