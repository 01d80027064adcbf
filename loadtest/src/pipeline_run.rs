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
use callwatch_ingest::stream::{input_drained, publish};
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
    /// Publish at this many events per second while the service runs (the
    /// latency phase) instead of as a backlog before it starts.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub events: u64,
    pub publish_secs: f64,
    pub secs: f64,
    pub audit_rows: Option<i64>,
    /// With a rate: the service's alert latency quantiles (seconds), stream
    /// entry to handed to the sender, as its /metrics reports them.
    pub latency: Vec<(String, f64)>,
    pub rate: Option<f64>,
}

impl Results {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
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

    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )?;
    // The market ends now: the service keeps state in Redis for a week from
    // the events' own times, and an event dated ahead of its arrival is not
    // what a producer sends.
    let defaults = MarketConfig::default();
    let span = defaults
        .step_nanos
        .saturating_mul(i64::try_from(plan.events).unwrap_or(i64::MAX));
    let mut market = Market::new(MarketConfig {
        seed: plan.seed,
        tokens: plan.tokens,
        chats: plan.chats,
        start: now.saturating_sub(span),
        ..defaults
    });
    // Publishes up to `n` more events; returns how many.
    let mut left = plan.events;
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(10_000);
    let mut publish_some = |con: &mut redis::aio::MultiplexedConnection,
                            n: u64,
                            left: &mut u64|
     -> anyhow::Result<u64> {
        lines.clear();
        for event in market.by_ref().take((*left).min(n) as usize) {
            let mut out = Vec::with_capacity(160);
            event.write_json(&mut out);
            while out.last() == Some(&b'\n') {
                out.pop();
            }
            lines.push(out);
        }
        *left -= lines.len() as u64;
        rt.block_on(publish(con, "", plan.partitions, &lines))?;
        Ok(lines.len() as u64)
    };

    let schema = format!("loadtest_pipeline_{}", std::process::id());
    let config =
        std::env::temp_dir().join(format!("callwatch-pipeline-{}.toml", std::process::id()));
    let postgres = plan.database_url.as_ref().map_or(String::new(), |url| {
        format!("[postgres]\nurl = \"{url}\"\nschema = \"{schema}\"\n")
    });
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\n{postgres}[ingest]\npartitions = {}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            plan.redis_url, plan.partitions
        ),
    )?;
    let spawn = || {
        Command::new(&plan.callwatch)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CALLWATCH_LOG_LEVEL", "warn")
            .spawn()
            .with_context(|| format!("starting {}", plan.callwatch.display()))
    };

    let pb = ProgressBar::new(plan.events);
    let (mut child, started, publish_secs) = match plan.rate {
        None => {
            // A backlog first, then the service timed on it.
            let t = Instant::now();
            while left > 0 {
                publish_some(&mut con, 10_000, &mut left)?;
                pb.set_position(plan.events - left);
            }
            let publish_secs = t.elapsed().as_secs_f64();
            (spawn()?, Instant::now(), publish_secs)
        }
        Some(rate) => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let child = spawn()?;
            // Ready when /healthz answers.
            let t = Instant::now();
            while scrape(port, "/healthz").is_err() {
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(30),
                    "serve did not come up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let started = Instant::now();
            let tick = Duration::from_millis(10);
            let per_tick = (rate * tick.as_secs_f64()).max(1.0);
            let mut due = 0.0f64;
            let mut next = Instant::now();
            while left > 0 {
                due += per_tick;
                let n = due.floor() as u64;
                due -= n as f64;
                publish_some(&mut con, n, &mut left)?;
                pb.set_position(plan.events - left);
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let publish_secs = started.elapsed().as_secs_f64();
            (child, started, publish_secs)
        }
    };
    pb.finish_and_clear();
    let pb = ProgressBar::new_spinner();
    pb.set_message("serve working through the events");
    let finished = rt.block_on(async {
        loop {
            if input_drained(&mut con, "", plan.partitions).await {
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
    let latency = if plan.rate.is_some() {
        let text = scrape(port, "/metrics").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("callwatch_alert_latency_seconds{quantile=\""))
            .filter_map(|l| {
                let (q, v) = l.split_once("\"} ")?;
                Some((q.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    } else {
        Vec::new()
    };
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
        latency,
        rate: plan.rate,
    })
}

/// One GET to the service's ops endpoint; the body if it answered 200.
fn scrape(port: u16, path: &str) -> std::io::Result<String> {
    match callwatch_service::ops::get(&format!("127.0.0.1:{port}"), path)? {
        (200, body) => Ok(body),
        (status, _) => Err(std::io::Error::other(format!("{path} answered {status}"))),
    }
}

pub fn table(r: &Results) -> String {
    let latency: String = r
        .latency
        .iter()
        .map(|(q, v)| format!("  alert latency q{q:<6}    {:.1} ms\n", v * 1000.0))
        .collect();
    latency
        + &format!(
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
        "rate": r.rate,
        "latency_seconds": r.latency.iter().map(|(q, v)| (q.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
    })
    .to_string()
}
