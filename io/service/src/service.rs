//! [`Service::start`]: the live service put together, stage by stage, and
//! [`Service::join`]: taken apart again in the order that keeps everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use callwatch_common::keys::audit_key;
use callwatch_common::secret::SecretUrl;
use callwatch_ingest::stream::{Acker, ChatCompactor, IngestStats, StreamError, StreamIngest};
use callwatch_ledger::pg::connect_and_migrate;
use callwatch_state::rebuild::{SCAN_COUNT, bulk_connection_config, load_into};
use callwatch_state::rebuild_cluster::load_cluster_into;
use engine::EngineConfig;
use engine::router::{self, EngineStopped, Merged, Router, Workers};
use tokio::sync::{mpsc, watch};

use crate::alerts::{AlertTasks, Alerts};
use crate::charts::Charts;
use crate::commands::{self, EngineAsk, UpdatesTask};
use crate::dashboard;
use crate::health::HealthChecks;
use crate::keeper::{Keeper, SenderClosed};
use crate::keeping::ServiceKeep;
use crate::metrics::Live;
use crate::ops::{self, Report};
use crate::persist::{PersistConfig, Persistence};
use crate::reader::{self, Reader};
use crate::settings::Settings;
use crate::snapshots;
use crate::sources::{self, Sources};

/// Merged batches of effects between the engine and the keeper, at most.
const MERGED_DEPTH: usize = 4;
/// Submitted batches' records between the reader and the keeper, at most.
const SUBMITTED_DEPTH: usize = 1_024;
/// Event batches between the ingest and the reader, at most.
const BATCHES_DEPTH: usize = 4;
/// Questions for the engine waiting their turn, at most.
const QUERIES_DEPTH: usize = 64;

/// Stops a running service; cheap to clone (for a signal handler).
#[derive(Debug, Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    /// No new events: the service drains and [`Service::join`] returns.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A running service: events in from Redis Streams, decided by the
/// sharded engine, kept in Redis and PostgreSQL, sent to Telegram.
#[derive(Debug)]
pub struct Service {
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    live: Arc<Live>,
    http: SocketAddr,
    stages: Stages,
}

/// Everything [`Service::join`] takes apart.
#[derive(Debug)]
struct Stages {
    reader: JoinHandle<(Router, Result<(), EngineStopped>)>,
    pump: JoinHandle<Result<(), EngineStopped>>,
    keeper: tokio::task::JoinHandle<Result<u64, SenderClosed>>,
    workers: Workers,
    persist: Arc<Persistence>,
    acker: Acker,
    ingest: tokio::task::JoinHandle<Result<IngestStats, StreamError>>,
    alerts: Option<(Alerts, AlertTasks)>,
    updates: Option<UpdatesTask>,
    sources: Option<Sources>,
    ops: tokio::task::JoinHandle<()>,
    compaction: Option<tokio::task::JoinHandle<()>>,
    /// Writes snapshots; joined last, after the final acknowledgement.
    snapshot_writer: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts the service: migrations, the engine and its persistence,
    /// Telegram (what a crash left in the outbox first), the health checks
    /// and `/metrics`, the commands; then the engine is rebuilt from Redis,
    /// the chats stream compacted, and only then are events read.
    pub fn start(settings: &Settings) -> anyhow::Result<Service> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let _entered = rt.enter();
        let engine_config = settings.engine_config()?;
        migrate(&rt, settings)?;
        let mut ingest = StreamIngest::new(settings.ingest_config(), settings.redis.endpoint())
            .context("ingest settings")?;
        let loaded = snapshots::load_at_start(
            &settings.snapshot,
            &engine_config,
            &mut ingest,
            &rt,
            &settings.redis.endpoint(),
        );
        let from_snapshot = loaded.is_some();
        let (mut router, effects, workers) =
            router::start_from(&engine_config, loaded.unwrap_or_default())?;
        let persist = Arc::new(
            Persistence::start(&persist_config(settings, &engine_config), rt.handle())
                .context("redis.url")?,
        );
        let acker = ingest.acker();
        let live = Arc::new(Live::new(
            router.gauges(),
            ingest.counters(),
            persist.write_behind().clone(),
            engine_config.shards,
        ));
        *live.audit.lock() = persist.audit_counters();
        let (stop, stop_rx) = watch::channel(false);
        let alerts = start_alerts(&rt, settings, &live)?;
        let (queries_tx, queries) = mpsc::channel(QUERIES_DEPTH);
        // One asker for the commands and the dashboard: their questions
        // take turns together and share the leaderboards.
        let engine_ask = Arc::new(EngineAsk::new(queries_tx.clone()));
        let charts = alerts.as_ref().and_then(|(a, _)| a.charts.clone());
        let dashboard = rt.block_on(dashboard::start(
            settings,
            Arc::clone(&engine_ask),
            charts,
            Arc::clone(&live),
        ))?;
        let (pages, dashboard_links) = match dashboard {
            Some(d) => (d.routes, Some(d.links)),
            None => (axum::Router::new(), None),
        };
        let (http, ops) = start_ops(&rt, settings, &live, pages, &stop_rx)?;
        let sources = sources::start(settings, &engine_config, queries_tx, &stop_rx)?;
        if let Some(s) = &sources {
            *live.sources.lock() = Some(Arc::clone(&s.counters));
        }
        let updates = start_commands(
            settings,
            alerts.as_ref(),
            &live,
            engine_ask,
            dashboard_links,
            &stop_rx,
        )?;

        // The output side first: the rebuild's restores make (empty)
        // batches of output too, and a shard waits while its output is full.
        let (merged_tx, merged) = mpsc::channel(MERGED_DEPTH);
        let (submitted_tx, submitted) = mpsc::channel(SUBMITTED_DEPTH);
        let pump = pump(effects, merged_tx)?;
        let keep = ServiceKeep {
            alerts: alerts.as_ref().map(|(a, _)| a.clone()),
            persist: Arc::clone(&persist),
            acker: acker.clone(),
            live: Arc::clone(&live),
            sources: sources.as_ref().map(|s| s.calls.clone()),
        };
        let keeper = rt.spawn(Keeper::new(keep).run(merged, submitted));
        if !from_snapshot && let Err(e) = rebuild(&rt, settings, &mut router, &live) {
            let _ = stop.send(true);
            drop(router);
            return Err(e);
        }
        let (snapshots, snapshot_writer) = snapshots::start(
            &settings.snapshot,
            &engine_config,
            &ingest,
            acker.settled(),
            Arc::clone(&live),
            rt.handle().clone(),
        )?
        .unzip();

        let compaction = start_compaction(&rt, settings, &live, &stop_rx)?;
        let (batches_tx, batches) = mpsc::channel(BATCHES_DEPTH);
        let ingest = rt.spawn(ingest.run(batches_tx, stop_rx.clone()));
        let reader = Reader {
            router,
            feed: reader::feed(batches, queries),
            submitted: submitted_tx,
            live: Arc::clone(&live),
            handle: rt.handle().clone(),
            snapshots,
            prices: alerts.is_some() && settings.charts.enabled,
        };
        let reader = std::thread::Builder::new()
            .name("callwatch-read".to_owned())
            .spawn(move || reader.run())
            .context("starting the reading thread")?;
        drop(_entered);
        Ok(Service {
            rt,
            stop,
            live,
            http,
            stages: Stages {
                reader,
                pump,
                keeper,
                workers,
                persist,
                acker,
                ingest,
                alerts,
                updates,
                sources,
                ops,
                compaction,
                snapshot_writer,
            },
        })
    }

    /// A handle that stops the service, for a signal handler.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Stops reading events; [`Service::join`] then drains and returns.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The service's figures, as `/metrics` shows them.
    pub fn metrics(&self) -> String {
        self.live.metrics()
    }

    /// Waits until the service stops (see [`Service::stop`]) or fails, then
    /// takes it apart in the order that keeps everything: every event read
    /// is applied and its effects kept; state and audit rows are written;
    /// then the input is acknowledged, the commands stop, and Telegram
    /// sends what is queued. `deadline` bounds each step that waits on a
    /// server.
    pub fn join(self, deadline: Duration) -> anyhow::Result<()> {
        let Service {
            rt,
            stop,
            live,
            stages,
            ..
        } = self;
        let _entered = rt.enter();
        let outcome = stages.drain(&rt, &stop, deadline);
        log_latency(&live);
        let ingest_stats = outcome?;
        tracing::info!(
            events = ingest_stats.events,
            dead_lettered = ingest_stats.dead_lettered,
            acked = ingest_stats.acked,
            left_pending = ingest_stats.left_pending,
            "stopped"
        );
        Ok(())
    }
}

impl Stages {
    /// The shutdown, step by step; see [`Service::join`].
    fn drain(
        self,
        rt: &tokio::runtime::Runtime,
        stop: &watch::Sender<bool>,
        deadline: Duration,
    ) -> anyhow::Result<IngestStats> {
        let (router, read) = self
            .reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
        // Stopped, or the engine failed: let every event applied so far
        // through, in order.
        let _ = stop.send(true);
        let finished = router.finish();
        let pumped = self.pump.join();
        let kept = rt.block_on(self.keeper);
        self.workers.join().context("a shard stopped")?;
        read?;
        finished?;
        pumped.map_err(|_| anyhow::anyhow!("the effects thread panicked"))??;
        let recorded = kept.context("the keeper panicked")??;

        // Everything applied is recorded: write it out, then acknowledge it.
        let persist = Arc::try_unwrap(self.persist)
            .map_err(|_| anyhow::anyhow!("the persistence is still shared at the stop"))?;
        let stats = rt
            .block_on(persist.shutdown(deadline))
            .context("writing the last state and audit rows")?;
        self.acker.ack_through(recorded);
        drop(self.acker);
        tracing::info!(?stats, "state and audit written");
        if let Some(task) = self.updates {
            // The dispatcher holds the sender for its replies: it goes first.
            match rt.block_on(tokio::time::timeout(deadline, task)) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "receiving commands failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "the command dispatcher panicked"),
                Err(_) => tracing::warn!("the command dispatcher did not stop in time"),
            }
        }
        if let Some((alerts, tasks)) = self.alerts {
            drop(alerts);
            rt.block_on(tasks.sender.close(deadline));
            // Every report is in once the sender has gone.
            let _ = rt.block_on(tasks.reports);
        }
        let ingest = rt
            .block_on(tokio::time::timeout(deadline, self.ingest))
            .context("the stream ingest did not finish in time")?
            .context("the stream ingest task")??;
        if let Some(sources) = self.sources {
            match rt.block_on(tokio::time::timeout(deadline, sources.feed)) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "the sources failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "the sources panicked"),
                Err(_) => tracing::warn!("the sources did not stop in time"),
            }
        }
        if let Some(task) = self.compaction {
            // Each chunk is one script: stopping between them loses nothing.
            let _ = rt.block_on(tokio::time::timeout(deadline, task));
        }
        if let Some(writer) = self.snapshot_writer {
            // The last snapshot waited for the final acknowledgement above.
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("the snapshot thread panicked"))?;
        }
        let _ = rt.block_on(self.ops);
        Ok(ingest)
    }
}

/// The persistence's settings, from the service's.
fn persist_config(settings: &Settings, engine: &EngineConfig) -> PersistConfig {
    PersistConfig {
        redis: settings.redis.endpoint(),
        database_url: settings.postgres.url().map(SecretUrl::from),
        schema: settings.postgres.schema.clone(),
        audit_stream: audit_key(&settings.redis.key_prefix),
        audit_consumer: settings.ingest.consumer.clone(),
        dead_letters: settings.dead_letters(),
        write_behind: settings.write_behind_config(engine),
        timeouts: settings.redis.timeouts(),
        ..PersistConfig::default()
    }
}

/// Applies the migrations PostgreSQL lacks, when it is configured.
fn migrate(rt: &tokio::runtime::Runtime, settings: &Settings) -> anyhow::Result<()> {
    if let Some(url) = settings.postgres.url() {
        let schema = &settings.postgres.schema;
        let applied = rt.block_on(connect_and_migrate(
            url,
            schema,
            "postgres.url / DATABASE_URL",
        ))?;
        tracing::info!(?applied, %schema, "migrations");
    }
    Ok(())
}

/// Telegram, when there is a token: the sender, and what a crash left in
/// the outbox queued again.
fn start_alerts(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    live: &Live,
) -> anyhow::Result<Option<(Alerts, AlertTasks)>> {
    if !settings.telegram.enabled() {
        tracing::warn!("no Telegram token: alerts are decided, kept and audited, not sent");
        return Ok(None);
    }
    let con = settings.redis.connect()?;
    let engine = settings.engine_config()?;
    let charts = settings.charts.enabled.then(|| {
        Arc::new(Charts::new(
            &settings.charts,
            &engine.thresholds,
            engine.ttl_nanos,
            Arc::clone(&live.charts),
        ))
    });
    let (alerts, tasks) =
        Alerts::start(&settings.telegram, &settings.redis.key_prefix, &con, charts)?;
    *live.sender.lock() = Some(alerts.sender.clone());
    rt.block_on(alerts.restore())?;
    Ok(Some((alerts, tasks)))
}

/// The chats stream compacted once, before anything reads it, then every
/// `ingest.compact_every_secs` in a task (none when that is 0). A failed
/// run is logged and counted; the service goes on with a longer stream.
fn start_compaction(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    live: &Live,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let compactor = ChatCompactor::new(&settings.ingest_config());
    if !compactor.enabled() {
        return Ok(None);
    }
    *live.compaction.lock() = Some(compactor.counters());
    let mut con = settings.redis.connect()?;
    rt.block_on(compactor.run_logged(&mut con));
    Ok(Some(
        rt.spawn(compactor.run_periodically(con, stop.clone())),
    ))
}

/// The health checks, and the HTTP server of `/metrics`, `/healthz` and
/// `/readyz`, with the dashboard's `pages` beside them.
fn start_ops(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    live: &Arc<Live>,
    pages: axum::Router,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let checks = HealthChecks {
        live: Arc::clone(live),
        redis: settings.redis.connect()?,
        postgres: settings.postgres.server().context("postgres.url")?,
    };
    rt.spawn(checks.run(stop.clone()));
    let listen = settings
        .http
        .listen
        .parse()
        .context("http.listen is checked by the settings")?;
    let (listener, addr) = rt
        .block_on(ops::bind(listen))
        .with_context(|| format!("http.listen {listen}"))?;
    tracing::info!(%addr, "metrics, healthz and readyz listening");
    let report = Arc::clone(live) as Arc<dyn Report>;
    Ok((
        addr,
        rt.spawn(ops::serve(listener, report, pages, stop.clone())),
    ))
}

/// The commands, when there is a bot and this process receives for it.
fn start_commands(
    settings: &Settings,
    alerts: Option<&(Alerts, AlertTasks)>,
    live: &Arc<Live>,
    engine: Arc<EngineAsk>,
    dashboard: Option<callwatch_dashboard::Links>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<UpdatesTask>> {
    let Some((alerts, _)) = alerts.filter(|_| settings.telegram.receives()) else {
        return Ok(None);
    };
    let stats_live = Arc::clone(live);
    let parts = commands::Parts {
        alerts: alerts.clone(),
        engine,
        dashboard,
        stats: Box::new(move || stats_live.stats_rows()),
        redis: settings.redis.connect()?,
        redis_posts: settings.redis.connect()?,
        counters: Arc::clone(&live.commands),
        payment_counters: Arc::clone(&live.payments),
        receiving: live.receiving.clone(),
    };
    Ok(Some(commands::start(settings, parts, stop)?))
}

/// The engine's merged output, handed to the keeper as it comes. If the
/// keeper has gone (it failed), the output is drained and dropped, so the
/// engine can still finish.
fn pump(
    mut effects: router::Effects,
    merged: mpsc::Sender<Merged>,
) -> anyhow::Result<JoinHandle<Result<(), EngineStopped>>> {
    std::thread::Builder::new()
        .name("callwatch-effects".to_owned())
        .spawn(move || {
            let mut keeper_gone = false;
            while let Some(m) = effects.next_merged()? {
                if !keeper_gone && merged.blocking_send(m).is_err() {
                    keeper_gone = true;
                }
            }
            Ok(())
        })
        .context("starting the effects thread")
}

/// Loads the engine's state back from Redis, before any event is read.
fn rebuild(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    router: &mut Router,
    live: &Live,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = rt.block_on(async {
        let redis = settings.redis.endpoint();
        if redis.cluster {
            let con = settings.redis.connect()?;
            let loaded = load_cluster_into(
                &con,
                &settings.redis.key_prefix,
                router,
                SCAN_COUNT,
                log_skipped,
            )
            .await?;
            return anyhow::Ok(loaded);
        }
        let con = redis
            .client()?
            .get_multiplexed_async_connection_with_config(&bulk_connection_config())
            .await
            .map_err(|e| redis.explain(e))?;
        let loaded = load_into(
            &con,
            &settings.redis.key_prefix,
            router,
            SCAN_COUNT,
            log_skipped,
            |_| {},
        )
        .await?;
        anyhow::Ok(loaded)
    });
    let loaded = loaded.context("rebuilding from Redis")?;
    live.rebuild_skipped
        .store(loaded.skipped, Ordering::Relaxed);
    tracing::info!(
        keys = loaded.keys,
        processed = loaded.processed,
        skipped = loaded.skipped,
        seconds = started.elapsed().as_secs_f64(),
        "rebuilt from Redis; reading events"
    );
    Ok(())
}

/// A record the rebuild could not use, in the log.
fn log_skipped(s: callwatch_state::rebuild::Skipped) {
    tracing::warn!(key = %s.key, reason = %s.reason, "record skipped");
}

/// The alert latency since start, in the log.
fn log_latency(live: &Live) {
    let h = live.alert_latency.lock();
    if !h.is_empty() {
        tracing::info!(
            alerts = h.len(),
            p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms = h.max() as f64 / 1000.0,
            alerts_kept_through = live.applied_through.load(Ordering::Relaxed),
            "alert latency, stream entry to handed to the sender"
        );
    }
}
