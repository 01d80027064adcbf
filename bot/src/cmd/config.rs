//! `callwatch config`: the service's configuration as it would start, from
//! its file and the environment, checked, with every secret masked.

use std::process::ExitCode;

use super::ConfigArgs;

/// Print the resolved configuration (file, then environment) with secrets
/// masked; fail with every problem named if it would not start.
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    print!("{}", settings.to_masked_toml());
    let engine = settings.engine_config()?;
    let owned = settings.owned_partitions();
    println!(
        "\n# resolved: {} shard(s); reads {} of {} partition(s): {:?}; Telegram {}",
        engine.shards,
        owned.len(),
        settings.ingest.partitions,
        owned,
        if settings.telegram.enabled() {
            "on"
        } else {
            "off (no token)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
