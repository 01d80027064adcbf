//! The `audit` scenario: alert audit rows through the durable queue into
//! PostgreSQL. Rows are pushed into a Redis stream (pipelined XADD), then
//! one `AuditSink` drains the stream into a schema of the scenario's own;
//! both are timed over the whole run. The schema and the stream are
//! removed at the end, also after a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callwatch_common::secret::SecretUrl;
use callwatch_ledger::audit::{
    AlertKind, AuditError, AuditQueue, AuditRow, AuditSink, QueueRow, SinkConfig, SinkCounters,
    SinkEvent, SinkStats,
};
use callwatch_ledger::migrate::migrate;
use callwatch_ledger::server::PgServer;
use callwatch_streams::connection::RedisEndpoint;
use engine::sim::{self, Rng};
use indicatif::ProgressBar;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::market::T0;

/// What the scenario is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub redis_url: SecretUrl,
    pub database_url: SecretUrl,
    pub rows: u64,
    /// The sink's batch, in entries.
    pub batch: usize,
    /// Rows per pushed pipeline.
    pub push_chunk: usize,
    /// Consumers in the sink's group.
    pub sinks: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub rows: u64,
    pub batch: usize,
    pub sinks: usize,
    pub push_secs: f64,
    pub sink_secs: f64,
    pub sink: SinkStats,
    /// Rows found in the table at the end.
    pub landed: u64,
}

/// Distinct tokens the alerts are about.
const TOKENS: u64 = 10_000;
const THRESHOLDS: [f64; 4] = [2.0, 3.0, 5.0, 10.0];

/// Alert `i`, drawn from `rng`: a quarter are call alerts with three
/// callers, the rest multiplier alerts. Times are a microsecond apart, so
/// every row has a natural key of its own.
fn alert(i: u64, rng: &mut Rng, tokens: &[String]) -> QueueRow {
    let call = rng.below(4) == 0;
    let fdv_at_call = 20_000.0 * (1.0 + 99.0 * rng.unit());
    let threshold = THRESHOLDS[rng.below(4) as usize];
    QueueRow::Audit(AuditRow {
        chat_id: 1_000_000 + rng.below(100_000) as i64,
        token: tokens[rng.zipf(TOKENS) as usize].clone(),
        kind: if call {
            AlertKind::CallAlert
        } else {
            AlertKind::MultiplierAlert
        },
        threshold: if call { 0.0 } else { threshold },
        alert_at: T0 + i as i64 * 1_000,
        fdv_usd: if call {
            fdv_at_call
        } else {
            fdv_at_call * threshold
        },
        fdv_at_call: (!call).then_some(fdv_at_call),
        multiplier: (!call).then_some(threshold),
        callers: if call {
            (0..3)
                .map(|_| -1_001_000_000_000 - rng.below(500) as i64)
                .collect()
        } else {
            Vec::new()
        },
    })
}

pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let redis = RedisEndpoint::new(plan.redis_url.clone()).client()?;
        // A pipeline of thousands of XADDs may take longer than the
        // client's default half-second answer limit.
        let limits = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        let mut con = redis
            .get_multiplexed_async_connection_with_config(&limits)
            .await
            .context("cannot connect to Redis")?;
        let (mut client, conn) = PgServer::parse(plan.database_url.expose())?
            .connect()
            .await
            .context("cannot connect to PostgreSQL")?;
        tokio::spawn(conn);
        let schema = format!("loadtest_audit_{}", std::process::id());
        let stream = format!("loadtest:{}:audit", std::process::id());
        let result = async {
            migrate(&mut client, &schema).await?;
            measure(plan, &mut con, &client, &schema, &stream).await
        }
        .await;
        // Removed whatever happened above.
        let dropped = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
        let deleted: redis::RedisResult<i64> =
            redis::cmd("DEL").arg(&stream).query_async(&mut con).await;
        // Said even when the run failed, so nothing is left unnoticed.
        if let Err(e) = &dropped {
            eprintln!("loadtest audit: schema {schema} was not dropped: {e}");
        }
        if let Err(e) = &deleted {
            eprintln!("loadtest audit: stream {stream} was not deleted: {e}");
        }
        let results = result?;
        dropped.context("dropping the scenario's schema")?;
        deleted.context("deleting the scenario's stream")?;
        Ok(results)
    })
}

/// The measured part of the run, in the scenario's schema and stream:
/// push every row, then sink them all into PostgreSQL, then count the rows
/// that landed.
async fn measure(
    plan: &Plan,
    con: &mut MultiplexedConnection,
    client: &tokio_postgres::Client,
    schema: &str,
    stream: &str,
) -> anyhow::Result<Results> {
    let mut res = Results {
        rows: plan.rows,
        batch: plan.batch,
        sinks: plan.sinks,
        ..Results::default()
    };
    let mut rng = Rng::new(plan.seed);
    let tokens: Vec<String> = (0..TOKENS)
        .map(|_| sim::token(&mut rng).to_string())
        .collect();
    res.push_secs = push(plan, con, stream, &mut rng, &tokens).await?;

    let sinks = Sinks::start(plan, schema, stream)?;
    res.sink_secs = sinks.wait_committed(plan.rows).await?;
    for s in sinks.stop().await? {
        res.sink.rows_committed += s.rows_committed;
        res.sink.rows_inserted += s.rows_inserted;
        res.sink.duplicates += s.duplicates;
        res.sink.batches += s.batches;
        res.sink.postgres_retries += s.postgres_retries;
        res.sink.redis_retries += s.redis_retries;
        res.sink.malformed += s.malformed;
    }
    res.landed = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".alert_audit"),
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64;
    if res.landed != plan.rows {
        bail!("{} rows landed, not {}", res.landed, plan.rows);
    }
    Ok(res)
}

/// Push: encode and XADD, one pipeline per chunk, into a stream bounded
/// above the rows so none is refused. Returns the seconds spent in the
/// pushes alone: drawing the rows is not timed.
async fn push(
    plan: &Plan,
    con: &mut MultiplexedConnection,
    stream: &str,
    rng: &mut Rng,
    tokens: &[String],
) -> anyhow::Result<f64> {
    let queue = AuditQueue::new(stream).with_max_entries(plan.rows + 1);
    let pb = ProgressBar::new(plan.rows);
    let mut pushing = Duration::ZERO;
    let mut chunk = Vec::with_capacity(plan.push_chunk);
    let mut i = 0;
    while i < plan.rows {
        chunk.clear();
        let end = (i + plan.push_chunk as u64).min(plan.rows);
        chunk.extend((i..end).map(|n| alert(n, rng, tokens)));
        let started = Instant::now();
        queue.push_batch(con, &chunk).await?;
        pushing += started.elapsed();
        i = end;
        pb.set_position(i);
    }
    pb.finish_and_clear();
    Ok(pushing.as_secs_f64())
}

/// The sink's consumers, running: `sinks` of one group, each a task with
/// its own connections, counters to watch, and one signal to stop them.
struct Sinks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<SinkStats, AuditError>>>,
    counters: Vec<Arc<SinkCounters>>,
}

impl Sinks {
    /// Starts the consumers on the full stream; each says on stderr what
    /// it skipped or retried.
    fn start(plan: &Plan, schema: &str, stream: &str) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut counters = Vec::new();
        for n in 1..=plan.sinks {
            let config = SinkConfig {
                stream: stream.to_owned(),
                consumer: format!("sink-{n}"),
                schema: schema.to_owned(),
                batch_rows: plan.batch,
                ..SinkConfig::default()
            };
            let mut sink = AuditSink::new(
                config,
                RedisEndpoint::new(plan.redis_url.clone()),
                plan.database_url.expose().parse()?,
            )?;
            counters.push(sink.counters());
            let stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                sink.run(stop_rx, |e| match e {
                    SinkEvent::Malformed { id, reason } => {
                        eprintln!("malformed entry {id}: {reason}");
                    }
                    SinkEvent::SetAside { id, reason } => {
                        eprintln!("entry {id} set aside: {reason}");
                    }
                    SinkEvent::PostgresRetry { error, .. } => {
                        eprintln!("PostgreSQL: {error}; retrying");
                    }
                    SinkEvent::RedisRetry { error, .. } => eprintln!("Redis: {error}; retrying"),
                })
                .await
            }));
        }
        Ok(Sinks {
            stop,
            tasks,
            counters,
        })
    }

    /// Sink: the seconds from the full stream to `rows` rows committed in
    /// PostgreSQL. Fails, and stops the consumers, if no row is committed
    /// for a minute or a consumer ends.
    async fn wait_committed(&self, rows: u64) -> anyhow::Result<f64> {
        let committed = || -> u64 { self.counters.iter().map(|c| c.stats().rows_committed).sum() };
        let pb = ProgressBar::new(rows);
        let started = Instant::now();
        let (mut last, mut last_change) = (0, Instant::now());
        let secs = loop {
            let done = committed();
            if done >= rows {
                break started.elapsed().as_secs_f64();
            }
            if done != last {
                (last, last_change) = (done, Instant::now());
            } else if last_change.elapsed() > Duration::from_secs(60)
                || self.tasks.iter().any(|t| t.is_finished())
            {
                let _ = self.stop.send(true);
                bail!("the sink stopped making progress at {done} of {rows} rows");
            }
            pb.set_position(done);
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        pb.finish_and_clear();
        Ok(secs)
    }

    /// Stops the consumers; returns what each says it did.
    async fn stop(self) -> anyhow::Result<Vec<SinkStats>> {
        self.stop.send(true)?;
        let mut stats = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            stats.push(task.await??);
        }
        Ok(stats)
    }
}

fn per_sec(rows: u64, secs: f64) -> f64 {
    rows as f64 / secs.max(1e-9)
}

/// The summary table.
pub fn table(r: &Results) -> String {
    format!(
        "  rows                         {}\n  \
         push (encode, pipelined XADD)  {:.2} s, {:.0} rows/s\n  \
         sink (stream → committed)      {:.2} s, {:.0} rows/s ({} consumer(s), {} batches of up to {}, \
         {} duplicates, {} PostgreSQL retries)\n  \
         landed                       {}\n",
        r.rows,
        r.push_secs,
        per_sec(r.rows, r.push_secs),
        r.sink_secs,
        per_sec(r.rows, r.sink_secs),
        r.sinks,
        r.sink.batches,
        r.batch,
        r.sink.duplicates,
        r.sink.postgres_retries,
        r.landed,
    )
}

/// The JSON line.
pub fn json(r: &Results) -> String {
    serde_json::json!({
        "scenario": "audit",
        "rows": r.rows,
        "batch": r.batch,
        "sinks": r.sinks,
        "push_seconds": (r.push_secs * 1000.0).round() / 1000.0,
        "push_rows_per_sec": per_sec(r.rows, r.push_secs).round(),
        "sink_seconds": (r.sink_secs * 1000.0).round() / 1000.0,
        "sink_rows_per_sec": per_sec(r.rows, r.sink_secs).round(),
        "batches": r.sink.batches,
        "duplicates": r.sink.duplicates,
        "postgres_retries": r.sink.postgres_retries,
        "landed": r.landed,
    })
    .to_string()
}
