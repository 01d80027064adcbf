//! `callwatch config`: the service's configuration as it would start, from
//! its file and the environment, checked, with every secret masked.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::Settings;

/// Print the resolved configuration (file, then environment) with secrets
/// masked; fail with every problem named if it would not start.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML configuration file [default: none, every value its default].
    #[arg(long, env = "CALLWATCH_CONFIG")]
    config: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    print!("{}", settings.to_masked_toml());
    let engine = settings.engine_config()?;
    let owned = settings.owned_partitions();
    println!(
        "\n# resolved: {} shard(s); reads {} of {} partition(s): {:?}; Telegram {}",
        engine.shards,
        owned.len(),
        settings.ingest.partitions,
        owned,
        if settings.telegram.token.is_empty() {
            "off (no token)"
        } else {
            "on"
        }
    );
    Ok(ExitCode::SUCCESS)
}
