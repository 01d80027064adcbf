//! The subcommands, one file each, and the flags they share.

use anyhow::{Context, bail};
use engine::EngineConfig;
use engine::time::NANOS_PER_SEC;

pub mod commands;
pub mod config;
pub mod demo;
pub mod generate;
pub mod migrate;
pub mod rebuild;
pub mod replay;
pub mod serve;

/// Connects to PostgreSQL at `url` and applies the migrations `schema`
/// lacks, returning their versions; `hint` says where the URL came from,
/// for the error when it does not connect.
pub fn migrate_database(
    rt: &tokio::runtime::Runtime,
    url: &str,
    schema: &str,
    hint: &str,
) -> anyhow::Result<Vec<i32>> {
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            // The URL may hold a password: the error names the server only.
            .with_context(|| format!("cannot connect to PostgreSQL (check {hint})"))?;
        let driver = tokio::spawn(conn);
        let applied = callwatch_io::migrate::migrate(&mut client, schema).await;
        drop(client);
        let _ = driver.await;
        Ok(applied?)
    })
}

/// The client in `slot`, connecting to `url` first when there is none or
/// it has closed: for the service's tasks that keep one PostgreSQL
/// connection and make it again after a failure.
pub async fn connected<'a>(
    url: &str,
    slot: &'a mut Option<tokio_postgres::Client>,
) -> Result<&'a mut tokio_postgres::Client, tokio_postgres::Error> {
    if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        // Its error reaches the caller through the client's next call.
        tokio::spawn(connection);
        *slot = Some(client);
    }
    Ok(slot.as_mut().expect("connected above"))
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
        };
        assert!(args.config().is_err());
    }
}
