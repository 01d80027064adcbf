//! The subcommands, one file each, and the flags and set-up they share.

use std::path::PathBuf;

use anyhow::{Context, bail};
use callwatch_service::Settings;
use engine::EngineConfig;
use engine::time::NANOS_PER_SEC;

pub mod config;
pub mod demo;
pub mod feed;
pub mod generate;
pub mod migrate;
pub mod rebuild;
pub mod replay;
pub mod serve;

/// The configuration flag every subcommand that reaches Redis or
/// PostgreSQL takes; the environment variables of `serve --help` apply to
/// all of them (`REDIS_URL`, `DATABASE_URL`, `CALLWATCH_SCHEMA`, …).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The TOML configuration file [default: none, every value its default].
    #[arg(long, env = "CALLWATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The service's settings: the file, then the environment, checked.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Settings::load(self.config.as_deref())
    }
}

/// The environment variables, for `--help`.
pub fn environment_help() -> String {
    let mut text = String::from("Environment (overrides the file):\n");
    for (name, what) in callwatch_service::settings::ENVIRONMENT {
        text.push_str(&format!("  {name:<28} {what}\n"));
    }
    text
}

/// Logging to stderr for every subcommand: `RUST_LOG` when set, else
/// `level`; JSON lines when `json`.
pub fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&from_env)
                .with_context(|| format!("RUST_LOG `{from_env}`"))?
        }
        _ => tracing_subscriber::EnvFilter::try_new(level)
            .with_context(|| format!("log.level `{level}`"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let done = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    done.map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// A current-thread runtime, for the commands that talk to a server once.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Engine flags common to the commands that run the engine.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Shard threads [default: the number of cores]. The output does not
    /// depend on it.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Multiples that alert, ascending.
    #[arg(long, value_name = "LIST", default_value = "2,5,10,20,50,100")]
    pub thresholds: String,
    /// How long processed records and tracked entries live, in hours.
    #[arg(long, value_name = "HOURS", default_value_t = 168.0)]
    pub ttl_hours: f64,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Followers a call decides before its shard applies the next event; a
    /// call with more is decided in slices between later events. The
    /// output does not depend on it.
    #[arg(long, value_name = "N", default_value_t = EngineConfig::default().fanout_slice)]
    pub fanout_slice: usize,
}

impl EngineArgs {
    /// The checked engine configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let mut cfg = EngineConfig::default();
        if let Some(n) = self.shards {
            cfg.shards = n;
        }
        cfg.thresholds = parse_thresholds(&self.thresholds)?;
        let ttl = self.ttl_hours * 3600.0 * NANOS_PER_SEC as f64;
        if !(ttl >= 1.0 && ttl < i64::MAX as f64) {
            bail!(
                "--ttl-hours must be a positive number of hours, got {}",
                self.ttl_hours
            );
        }
        cfg.ttl_nanos = ttl as i64;
        cfg.pin_threads = !self.no_pin;
        cfg.fanout_slice = self.fanout_slice;
        cfg.validate().context("invalid engine flags")?;
        Ok(cfg)
    }
}

fn parse_thresholds(list: &str) -> anyhow::Result<Vec<f64>> {
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("--thresholds: `{s}` is not a number"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_validate() {
        assert_eq!(parse_thresholds("2, 5,10").unwrap(), [2.0, 5.0, 10.0]);
        assert!(parse_thresholds("2,x").is_err());
        let args = EngineArgs {
            shards: Some(1),
            thresholds: "5,2".into(),
            ttl_hours: 1.0,
            no_pin: true,
            fanout_slice: 1,
        };
        assert!(args.config().is_err());
        let args = EngineArgs {
            thresholds: "2,5".into(),
            fanout_slice: 0,
            ..args
        };
        let err = format!("{:#}", args.config().unwrap_err());
        assert!(err.contains("fanout_slice must be positive"), "{err}");
    }
}
