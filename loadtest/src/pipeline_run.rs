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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callwatch_common::secret::SecretUrl;
use callwatch_ingest::stream::{Publisher, input_drained};
use callwatch_ledger::server::PgServer;
use callwatch_streams::Conn;
use callwatch_streams::connection::{RedisEndpoint, RedisTimeouts};
use engine::sim::{Market, MarketConfig};
use indicatif::ProgressBar;
use tokio::runtime::Runtime;

use crate::rebuild_run::db_of;

#[derive(Debug, Clone)]
pub struct Plan {
    pub redis_url: SecretUrl,
    pub database_url: Option<SecretUrl>,
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
    /// `redis_url` is a node of a Redis Cluster.
    pub cluster: bool,
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

/// Runs the scenario: an empty database, the market published (as a
/// backlog before serve starts, or paced while it runs), serve timed until
/// every entry is acknowledged, then stopped, and what it left cleaned up.
pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let db = db_of(plan.redis_url.expose())?;
    anyhow::ensure!(plan.events > 0, "--events must be positive");
    anyhow::ensure!(
        plan.callwatch.is_file(),
        "no callwatch binary at {} (build it: cargo build --release -p callwatch, or pass --callwatch)",
        plan.callwatch.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoint = RedisEndpoint {
        cluster: plan.cluster,
        ..RedisEndpoint::new(plan.redis_url.clone())
    };
    // A pipeline of thousands of XADDs may take longer than the default
    // answer limit.
    // The connection starts its tasks on the runtime it is made in.
    let _runtime = rt.enter();
    let mut con = endpoint.managed(&RedisTimeouts {
        response: Duration::from_secs(60),
        ..RedisTimeouts::default()
    })?;
    rt.block_on(async {
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .context("cannot connect to Redis")?;
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
        if size > 0 && !plan.overwrite {
            bail!("database {db} holds {size} keys; pass --overwrite to flush it, or name an empty one");
        }
        let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await?;
        Ok(())
    })?;

    let mut feed = MarketFeed::new(plan)?;
    feed.publisher = if plan.cluster {
        Publisher::for_cluster("", plan.partitions)?
    } else {
        Publisher::new("", plan.partitions)?
    };
    let serve = Serve::configure(plan)?;
    let pb = ProgressBar::new(plan.events);
    let (mut child, started, publish_secs) = match plan.rate {
        None => feed.backlog(&rt, &mut con, &serve, &pb)?,
        Some(rate) => feed.paced(&rt, &mut con, &serve, &pb, rate)?,
    };
    pb.finish_and_clear();
    let finished = wait_drained(&rt, &mut con, plan.partitions, started, &mut child);
    let latency = if plan.rate.is_some() {
        serve.latency()
    } else {
        Vec::new()
    };
    let status = serve.stop(child)?;
    let secs = finished?;
    anyhow::ensure!(status.success(), "serve did not stop cleanly: {status}");

    let audit_rows = match &plan.database_url {
        Some(url) => Some(rt.block_on(audit_rows(url.expose(), &serve.schema))?),
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

/// Serve as the publishing phase leaves it: the process, when its timing
/// started, and the seconds publishing took.
type Published = (Child, Instant, f64);

/// The simulated market, published to the input streams a chunk at a
/// time.
struct MarketFeed {
    market: Market,
    publisher: Publisher,
    events: u64,
    /// Events not published yet.
    left: u64,
    /// One chunk's JSON lines, the buffer kept from chunk to chunk.
    lines: Vec<Vec<u8>>,
}

impl MarketFeed {
    /// `plan.events` events of a market that ends now: the service keeps
    /// state in Redis for a week from the events' own times, and an event
    /// dated ahead of its arrival is not what a producer sends.
    fn new(plan: &Plan) -> anyhow::Result<Self> {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos(),
        )?;
        let defaults = MarketConfig::default();
        let span = defaults
            .step_nanos
            .saturating_mul(i64::try_from(plan.events).unwrap_or(i64::MAX));
        let market = Market::new(MarketConfig {
            seed: plan.seed,
            tokens: plan.tokens,
            chats: plan.chats,
            start: now.saturating_sub(span),
            ..defaults
        });
        Ok(MarketFeed {
            market,
            publisher: Publisher::new("", plan.partitions)?,
            events: plan.events,
            left: plan.events,
            lines: Vec::with_capacity(10_000),
        })
    }

    /// Publishes up to `n` more events.
    fn publish(&mut self, rt: &Runtime, con: &mut Conn, n: u64) -> anyhow::Result<()> {
        self.lines.clear();
        for event in self.market.by_ref().take(self.left.min(n) as usize) {
            let mut out = Vec::with_capacity(160);
            event.write_json(&mut out);
            while out.last() == Some(&b'\n') {
                out.pop();
            }
            self.lines.push(out);
        }
        self.left -= self.lines.len() as u64;
        rt.block_on(self.publisher.publish(con, &self.lines))?;
        Ok(())
    }

    /// Without a rate: every event published as a backlog first, then
    /// serve started and timed on it from its start, so that the figure is
    /// serve's throughput alone.
    fn backlog(
        &mut self,
        rt: &Runtime,
        con: &mut Conn,
        serve: &Serve,
        pb: &ProgressBar,
    ) -> anyhow::Result<Published> {
        let t = Instant::now();
        while self.left > 0 {
            self.publish(rt, con, 10_000)?;
            pb.set_position(self.events - self.left);
        }
        let publish_secs = t.elapsed().as_secs_f64();
        Ok((serve.spawn()?, Instant::now(), publish_secs))
    }

    /// With a rate: serve started and ready first, then the events
    /// published at `rate` a second, in 10 ms ticks, while it runs: the
    /// latency phase, timed from the first tick.
    fn paced(
        &mut self,
        rt: &Runtime,
        con: &mut Conn,
        serve: &Serve,
        pb: &ProgressBar,
        rate: f64,
    ) -> anyhow::Result<Published> {
        anyhow::ensure!(rate > 0.0, "--rate must be positive");
        let child = serve.spawn()?;
        serve.wait_ready()?;
        let started = Instant::now();
        let tick = Duration::from_millis(10);
        let per_tick = (rate * tick.as_secs_f64()).max(1.0);
        let mut due = 0.0f64;
        let mut next = Instant::now();
        while self.left > 0 {
            due += per_tick;
            let n = due.floor() as u64;
            due -= n as f64;
            self.publish(rt, con, n)?;
            pb.set_position(self.events - self.left);
            next += tick;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let publish_secs = started.elapsed().as_secs_f64();
        Ok((child, started, publish_secs))
    }
}

/// `callwatch serve` as this scenario runs it: from a config file of its
/// own, which names the Redis database, the PostgreSQL schema (with
/// `--database-url`) and a free port for its ops endpoint.
struct Serve<'a> {
    binary: &'a Path,
    config: PathBuf,
    schema: String,
    port: u16,
}

impl<'a> Serve<'a> {
    /// Picks the schema and the port and writes the config file.
    fn configure(plan: &'a Plan) -> anyhow::Result<Self> {
        let schema = format!("loadtest_pipeline_{}", std::process::id());
        let config =
            std::env::temp_dir().join(format!("callwatch-pipeline-{}.toml", std::process::id()));
        let postgres = plan.database_url.as_ref().map_or(String::new(), |url| {
            format!(
                "[postgres]\nurl = \"{}\"\nschema = \"{schema}\"\n",
                url.expose()
            )
        });
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        std::fs::write(
            &config,
            format!(
                "[redis]\nurl = \"{}\"\ncluster = {}\n{postgres}[ingest]\npartitions = {}\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [sources]\ncalls = false\nprices = false\n[snapshot]\nenabled = false\n",
                plan.redis_url.expose(),
                plan.cluster,
                plan.partitions
            ),
        )?;
        Ok(Serve {
            binary: &plan.callwatch,
            config,
            schema,
            port,
        })
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        Command::new(self.binary)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CALLWATCH_LOG_LEVEL", "warn")
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }

    /// Waits until /healthz answers, for at most 30 s.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        while scrape(self.port, "/healthz").is_err() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "serve did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The alert latency quantiles, estimated from the histogram serve's
    /// /metrics reports (within a bucket's width, a third); none if it
    /// does not answer.
    fn latency(&self) -> Vec<(String, f64)> {
        let text = scrape(self.port, "/metrics").unwrap_or_default();
        let quantiles = [0.5, 0.99, 0.999];
        let values = callwatch_service::ops::histogram_quantiles(
            &text,
            "callwatch_alert_latency_seconds",
            &quantiles,
        );
        quantiles
            .iter()
            .zip(values)
            .filter_map(|(q, v)| Some((q.to_string(), v?)))
            .collect()
    }

    /// Stops serve with SIGTERM, as a supervisor would, and removes the
    /// config file; returns how serve exited.
    fn stop(&self, mut child: Child) -> anyhow::Result<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait()?;
        let _ = std::fs::remove_file(&self.config);
        Ok(status)
    }
}

/// Waits until every consumer group has nothing pending and no lag: every
/// entry read, applied, persisted and acknowledged. Returns the seconds
/// since `started`; an error if serve exits first.
fn wait_drained(
    rt: &Runtime,
    con: &mut Conn,
    partitions: u32,
    started: Instant,
    child: &mut Child,
) -> anyhow::Result<f64> {
    let pb = ProgressBar::new_spinner();
    pb.set_message("serve working through the events");
    let finished = rt.block_on(async {
        loop {
            if input_drained(con, "", partitions).await {
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
    finished
}

/// The rows serve landed in the schema's audit table; then drops the
/// schema.
async fn audit_rows(url: &str, schema: &str) -> anyhow::Result<i64> {
    let (client, conn) = PgServer::parse(url)?.connect().await?;
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
