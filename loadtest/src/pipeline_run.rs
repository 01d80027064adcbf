//! The `pipeline` scenario: the whole service path. A simulated market is
//! published to the input streams first; then `callwatch serve` starts on
//! them (as the release binary, a process of its own) and the scenario
//! times it from start until every entry is read, applied, persisted and
//! acknowledged (every consumer group with nothing pending and no lag), then
//! stops it with SIGTERM and checks it exits cleanly.
//!
//! The figure is events through the whole path per second: ingest, the
//! sharded engine, the Redis write-behind, the audit queue into PostgreSQL
//! (with `--database-url`), acknowledgement. Telegram is not in it (no
//! token): sending is paced at 30 messages/s by design and measured by the
//! `telegram` scenario.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callwatch_io::stream_ingest::publish;
use engine::sim::{Market, MarketConfig};
use indicatif::ProgressBar;

use crate::rebuild_run::db_of;

#[derive(Debug, Clone)]
pub struct Plan {
    pub redis_url: String,
    pub database_url: Option<String>,
    pub events: u64,
    pub partitions: u32,
    pub tokens: u64,
    pub chats: u64,
    pub seed: u64,
    pub callwatch: PathBuf,
    pub overwrite: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub events: u64,
    pub publish_secs: f64,
    pub secs: f64,
    pub audit_rows: Option<i64>,
}

impl Results {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// Whether every group on the input streams has read and acknowledged
/// everything.
async fn drained(con: &mut redis::aio::MultiplexedConnection, partitions: u32) -> bool {
    let mut streams: Vec<String> = (0..partitions).map(|p| format!("events:{p}")).collect();
    streams.push("events:chats".to_owned());
    for stream in streams {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(con)
            .await
        {
            Ok(g) => g,
            Err(_) => return false,
        };
        if groups.is_empty() {
            return false;
        }
        for g in groups {
            let zero = |k: &str| matches!(g.get(k), Some(redis::Value::Int(0)));
            if !(zero("pending") && zero("lag")) {
                return false;
            }
        }
    }
    true
}

pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let db = db_of(&plan.redis_url)?;
    anyhow::ensure!(plan.events > 0, "--events must be positive");
    anyhow::ensure!(
        plan.callwatch.is_file(),
        "no callwatch binary at {} (build it: cargo build --release -p callwatch, or pass --callwatch)",
        plan.callwatch.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut con = rt
        .block_on(redis::Client::open(plan.redis_url.as_str())?.get_multiplexed_async_connection())
        .context("cannot connect to Redis")?;
    rt.block_on(async {
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
        if size > 0 && !plan.overwrite {
            bail!("database {db} holds {size} keys; pass --overwrite to flush it, or name an empty one");
        }
        let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await?;
        Ok(())
    })?;

    // Publish first, so the service is timed on a backlog.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )?;
    let market = Market::new(MarketConfig {
        seed: plan.seed,
        tokens: plan.tokens,
        chats: plan.chats,
        start: now,
        ..MarketConfig::default()
    });
    let pb = ProgressBar::new(plan.events);
    let started = Instant::now();
    let mut lines = Vec::with_capacity(10_000);
    let mut left = plan.events;
    let mut market = market;
    while left > 0 {
        lines.clear();
        for event in market.by_ref().take(left.min(10_000) as usize) {
            let mut out = Vec::with_capacity(160);
            event.write_json(&mut out);
            while out.last() == Some(&b'\n') {
                out.pop();
            }
            lines.push(out);
        }
        left -= lines.len() as u64;
        rt.block_on(publish(&mut con, "", plan.partitions, &lines))?;
        pb.set_position(plan.events - left);
    }
    pb.finish_and_clear();
    let publish_secs = started.elapsed().as_secs_f64();

    let schema = format!("loadtest_pipeline_{}", std::process::id());
    let config =
        std::env::temp_dir().join(format!("callwatch-pipeline-{}.toml", std::process::id()));
    let postgres = plan.database_url.as_ref().map_or(String::new(), |url| {
        format!("[postgres]\nurl = \"{url}\"\nschema = \"{schema}\"\n")
    });
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\n{postgres}[ingest]\npartitions = {}\n[http]\nlisten = \"127.0.0.1:0\"\n",
            plan.redis_url, plan.partitions
        ),
    )?;
    let started = Instant::now();
    let mut child = Command::new(&plan.callwatch)
        .args(["serve", "--config"])
        .arg(&config)
        .env("CALLWATCH_LOG_LEVEL", "warn")
        .spawn()
        .with_context(|| format!("starting {}", plan.callwatch.display()))?;
    let pb = ProgressBar::new_spinner();
    pb.set_message("serve working through the backlog");
    let finished = rt.block_on(async {
        loop {
            if drained(&mut con, plan.partitions).await {
                return Ok(started.elapsed().as_secs_f64());
            }
            if let Some(status) = child.try_wait()? {
                bail!("serve exited early: {status}");
            }
            pb.tick();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    pb.finish_and_clear();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    let _ = std::fs::remove_file(&config);
    let secs = finished?;
    anyhow::ensure!(status.success(), "serve did not stop cleanly: {status}");

    let audit_rows = match &plan.database_url {
        Some(url) => Some(rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(conn);
            let n: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM \"{schema}\".alert_audit"),
                    &[],
                )
                .await?
                .get(0);
            client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await?;
            drop(client);
            let _ = driver.await;
            anyhow::Ok(n)
        })?),
        None => None,
    };
    rt.block_on(async {
        let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await?;
        anyhow::Ok(())
    })?;
    Ok(Results {
        events: plan.events,
        publish_secs,
        secs,
        audit_rows,
    })
}

pub fn table(r: &Results) -> String {
    format!(
        "  events                   {}\n  published in             {:.2} s\n  \
         serve, start to all acknowledged  {:.2} s\n  \
         through the whole path   {:.0} events/s\n  audit rows               {}\n",
        r.events,
        r.publish_secs,
        r.secs,
        r.events_per_sec(),
        r.audit_rows
            .map_or("(no --database-url)".to_owned(), |n| n.to_string())
    )
}

pub fn json(r: &Results) -> String {
    serde_json::json!({
        "scenario": "pipeline",
        "events": r.events,
        "publish_secs": (r.publish_secs * 1000.0).round() / 1000.0,
        "seconds": (r.secs * 1000.0).round() / 1000.0,
        "events_per_sec": r.events_per_sec().round(),
        "audit_rows": r.audit_rows,
    })
    .to_string()
}
