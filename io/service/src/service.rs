//! `callwatch serve`: the live service. Events in from Redis Streams,
//! decided by the sharded engine, kept in Redis and PostgreSQL, sent to
//! Telegram; observable at `/metrics`, `/healthz`, `/readyz`; stopped by
//! SIGTERM or Ctrl-C without losing an event.
//!
//! # Threads
//! - this thread reads batches from the stream ingest and submits them to
//!   the engine's router;
//! - the effects thread takes the engine's merged output in order, records
//!   each effect (write-behind, audit queue) and queues each alert for
//!   Telegram;
//! - the shard threads; tokio's workers run the I/O tasks.
//!
//! # Acknowledgement
//! A stream entry is acknowledged once every event up to it has been
//! applied, its effects recorded, and the persistence has settled (every
//! Redis change written, every audit row on the audit stream). Reading is
//! bounded by the ingest's window, so under a load that never lets the
//! persistence settle, reading pauses until it does.
//!
//! Calls are state too (the calls table that `min_callers` counts): each
//! call event is written behind as `calls:{token}:{channel_id}` and loaded
//! back by the rebuild.
//!
//! Alerts go to Telegram through a durable outbox
//! (`io::telegram::outbox`): appended before they are queued, deleted when
//! the sender answers for them, queued again at start if still there. So a
//! crash loses no alert; it may send again those Telegram had answered
//! and the service had not yet deleted.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use callwatch_io::audit::AlertKind;
use callwatch_io::health::{self, RedisTimeouts};
use callwatch_io::ops::{self, Exposition, Readiness, Report};
use callwatch_io::persist::{PersistConfig, Persistence};
use callwatch_io::rebuild::{bulk_connection_config, load_into};
use callwatch_io::stream_ingest::{EventBatch, IngestCounters, StreamIngest, StreamIngestConfig};
use callwatch_io::telegram::BotToken;
use callwatch_io::telegram::format::{self, Links};
use callwatch_io::telegram::names::{ChannelNames, NamesConfig};
use callwatch_io::telegram::outbox::Outbox;
use callwatch_io::telegram::sender::{self, Message, SenderConfig};
use callwatch_io::writebehind::{WriteBehind, WriteBehindConfig};
use engine::effect::Effect;
use engine::event::Event;
use engine::router::{self, ShardGauges};
use engine::token::Token;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::commands::EngineQuery;
use crate::settings::Settings;

/// Run the service (see `callwatch config` for its settings).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML configuration file [default: none, every value its default].
    #[arg(long, env = "CALLWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// The longest a graceful stop may take, in seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_secs: u64,
}

/// Counters and gauges for `/metrics` and `/readyz`.
struct Live {
    gauges: Arc<[ShardGauges]>,
    ingest: Arc<IngestCounters>,
    alerts_call: AtomicU64,
    alerts_multiplier: AtomicU64,
    applied_through: AtomicU64,
    acked_through: AtomicU64,
    /// The sender's own counters are the Telegram figures.
    sender: Mutex<Option<sender::Sender>>,
    write_behind: WriteBehind,
    redis_ok: AtomicU64,
    redis_latency_us: AtomicU64,
    /// 1 up, 0 down; absent (u64::MAX) without PostgreSQL.
    postgres_ok: AtomicU64,
    postgres_latency_us: AtomicU64,
    /// Batches waiting in each shard's inbox, sampled by the reader.
    inbox_depth: Vec<AtomicU64>,
    /// Stream entry → alert decided, recorded and handed to the sender, µs.
    alert_latency: Mutex<hdrhistogram::Histogram<u64>>,
    started: Instant,
}

impl Live {
    /// The figures `/stats` shows admins.
    fn stats_rows(&self) -> Vec<(String, String)> {
        let sum = |f: fn(&ShardGauges) -> &AtomicU64| -> u64 {
            self.gauges
                .iter()
                .map(|g| f(g).load(Ordering::Relaxed))
                .sum()
        };
        let ingest = self.ingest.stats();
        let up = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            1 => "up",
            0 => "down",
            _ => "not configured",
        };
        let mut rows = vec![
            (
                "uptime".to_owned(),
                format!("{} s", self.started.elapsed().as_secs()),
            ),
            ("events read".to_owned(), ingest.events.to_string()),
            ("dead-lettered".to_owned(), ingest.dead_lettered.to_string()),
            ("tokens held".to_owned(), sum(|g| &g.tokens).to_string()),
            ("tracked keys".to_owned(), sum(|g| &g.tracked).to_string()),
            (
                "processed records".to_owned(),
                sum(|g| &g.records).to_string(),
            ),
            (
                "call alerts".to_owned(),
                self.alerts_call.load(Ordering::Relaxed).to_string(),
            ),
            (
                "multiplier alerts".to_owned(),
                self.alerts_multiplier.load(Ordering::Relaxed).to_string(),
            ),
            ("Redis".to_owned(), up(&self.redis_ok).to_owned()),
            ("PostgreSQL".to_owned(), up(&self.postgres_ok).to_owned()),
        ];
        if let Some(s) = self.sender.lock().as_ref().map(sender::Sender::stats) {
            rows.push(("Telegram sent".to_owned(), s.sent.to_string()));
            rows.push(("Telegram queue".to_owned(), s.queued.to_string()));
            rows.push(("Telegram 429s".to_owned(), s.rate_limited.to_string()));
        }
        rows
    }
}

impl Report for Live {
    fn metrics(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut e = Exposition::new();
        let ingest = self.ingest.stats();
        let shards: Vec<String> = (0..self.gauges.len()).map(|i| i.to_string()).collect();
        let labels: Vec<[(&str, &str); 1]> =
            shards.iter().map(|s| [("shard", s.as_str())]).collect();
        let per_shard = |f: fn(&ShardGauges) -> &AtomicU64| -> Vec<(&[(&str, &str)], f64)> {
            self.gauges
                .iter()
                .zip(&labels)
                .map(|(g, l)| (&l[..], f(g).load(Ordering::Relaxed) as f64))
                .collect()
        };
        let ev = per_shard(|g| &g.events);
        let inbox: Vec<(&[(&str, &str)], f64)> = self
            .inbox_depth
            .iter()
            .zip(&labels)
            .map(|(d, l)| (&l[..], d.load(Ordering::Relaxed) as f64))
            .collect();
        let pg = self.postgres_ok.load(Ordering::Relaxed);
        let tr = per_shard(|g| &g.tracked);
        let sender = self.sender.lock().as_ref().map(sender::Sender::stats);
        let quantiles: Vec<(String, f64)> = {
            let h = self.alert_latency.lock();
            [0.5, 0.99, 0.999, 1.0]
                .iter()
                .map(|&q| (q.to_string(), h.value_at_quantile(q) as f64 / 1e6))
                .collect()
        };
        let latency_labels: Vec<[(&str, &str); 1]> = quantiles
            .iter()
            .map(|(q, _)| [("quantile", q.as_str())])
            .collect();
        let latency: Vec<(&[(&str, &str)], f64)> = latency_labels
            .iter()
            .zip(&quantiles)
            .map(|(l, (_, v))| (&l[..], *v))
            .collect();
        e.counter(
            "callwatch_shard_events_total",
            "Events applied, per shard.",
            &ev,
        )
        .gauge(
            "callwatch_shard_tracked",
            "Tracked entries held, per shard.",
            &tr,
        )
        .counter(
            "callwatch_ingest_entries_total",
            "Stream entries read, by outcome.",
            &[
                (&[("outcome", "event")], ingest.events as f64),
                (&[("outcome", "dead_letter")], ingest.dead_lettered as f64),
                (&[("outcome", "acked")], ingest.acked as f64),
            ],
        )
        .gauge(
            "callwatch_ingest_in_flight",
            "Events read and not yet acknowledged.",
            &[(&[], ingest.in_flight as f64)],
        )
        .counter(
            "callwatch_alerts_total",
            "Alerts decided, by kind.",
            &[
                (&[("kind", "call")], get(&self.alerts_call)),
                (&[("kind", "multiplier")], get(&self.alerts_multiplier)),
            ],
        )
        .gauge(
            "callwatch_applied_through_seq",
            "The last event applied by every shard.",
            &[(&[], get(&self.applied_through))],
        )
        .gauge(
            "callwatch_acked_through_seq",
            "The last event acknowledged.",
            &[(&[], get(&self.acked_through))],
        )
        .gauge(
            "callwatch_write_behind_pending",
            "Redis changes not yet written.",
            &[(&[], self.write_behind.stats().pending as f64)],
        )
        .gauge(
            "callwatch_shard_inbox_depth",
            "Batches waiting in each shard's inbox.",
            &inbox,
        )
        .gauge(
            "callwatch_postgres_up",
            "Whether the last PostgreSQL health check answered (absent without PostgreSQL).",
            &if pg == u64::MAX {
                vec![]
            } else {
                vec![(&[][..], pg as f64)]
            },
        )
        .gauge(
            "callwatch_postgres_latency_seconds",
            "The last PostgreSQL health check's round trip.",
            &if pg == u64::MAX {
                vec![]
            } else {
                vec![(&[][..], get(&self.postgres_latency_us) / 1e6)]
            },
        )
        .gauge(
            "callwatch_redis_up",
            "Whether the last Redis health check answered.",
            &[(&[], get(&self.redis_ok))],
        )
        .gauge(
            "callwatch_redis_latency_seconds",
            "The last Redis health check's round trip.",
            &[(&[], get(&self.redis_latency_us) / 1e6)],
        )
        .counter(
            "callwatch_telegram_messages_total",
            "Telegram messages, by outcome.",
            &[
                (
                    &[("outcome", "sent")],
                    sender.map_or(0.0, |s| s.sent as f64),
                ),
                (
                    &[("outcome", "failed")],
                    sender.map_or(0.0, |s| s.failed as f64),
                ),
                (
                    &[("outcome", "chat_inactive")],
                    sender.map_or(0.0, |s| s.dropped_inactive as f64),
                ),
            ],
        )
        .gauge(
            "callwatch_telegram_queue_depth",
            "Messages queued for Telegram.",
            &[(&[], sender.map_or(0.0, |s| s.queued as f64))],
        )
        .counter(
            "callwatch_telegram_429_total",
            "429 answers from Telegram.",
            &[(&[], sender.map_or(0.0, |s| s.rate_limited as f64))],
        )
        .gauge(
            "callwatch_alert_latency_seconds",
            "Stream entry to alert recorded and handed to the sender, by quantile, since start.",
            &latency,
        )
        .gauge(
            "callwatch_uptime_seconds",
            "Seconds since start.",
            &[(&[], self.started.elapsed().as_secs_f64())],
        );
        e.finish()
    }

    fn readiness(&self) -> Readiness {
        let redis = self.redis_ok.load(Ordering::Relaxed) == 1;
        let mut detail = vec![format!(
            "redis {} ({:.2} ms)",
            if redis { "ok" } else { "down" },
            self.redis_latency_us.load(Ordering::Relaxed) as f64 / 1000.0
        )];
        let pg = self.postgres_ok.load(Ordering::Relaxed);
        if pg != u64::MAX {
            detail.push(format!(
                "postgres {} ({:.2} ms)",
                if pg == 1 {
                    "ok"
                } else {
                    "down (audit rows wait in their queue)"
                },
                self.postgres_latency_us.load(Ordering::Relaxed) as f64 / 1000.0
            ));
        }
        // PostgreSQL down delays audit rows but loses none: still ready.
        Readiness {
            ready: redis,
            detail,
        }
    }
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .with_context(|| format!("log.level `{}`", settings.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let done = if settings.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    done.map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// Outbox entry ids of the alerts queued for Telegram, by chat and alert,
/// so that an answer from the sender deletes the right entry.
#[derive(Debug, Default)]
struct Queued {
    ids: HashMap<(i64, AlertId), VecDeque<String>>,
}

/// An alert's identity: token, kind, threshold bits, time.
type AlertId = (Token, AlertKind, u64, i64);

fn alert_id(tag: &sender::Tag) -> Option<AlertId> {
    match tag {
        sender::Tag::Alert(k) => Some((k.token, k.kind, k.threshold.to_bits(), k.at)),
        sender::Tag::Reply(_) => None,
    }
}

impl Queued {
    fn queued(&mut self, chat: i64, tag: &sender::Tag, id: String) {
        if let Some(a) = alert_id(tag) {
            self.ids.entry((chat, a)).or_default().push_back(id);
        }
    }

    /// Whether an alert like this one is queued for the chat already.
    fn holds(&self, chat: i64, tag: &sender::Tag) -> bool {
        alert_id(tag).is_some_and(|a| self.ids.contains_key(&(chat, a)))
    }

    /// The entry to delete for an answered message.
    fn answered(&mut self, chat: i64, tag: &sender::Tag) -> Vec<String> {
        let Some(a) = alert_id(tag) else {
            return Vec::new();
        };
        let key = (chat, a);
        let id = self.ids.get_mut(&key).and_then(VecDeque::pop_front);
        if self.ids.get(&key).is_some_and(VecDeque::is_empty) {
            self.ids.remove(&key);
        }
        id.into_iter().collect()
    }

    /// Every entry of a chat whose messages the sender dropped.
    fn chat_gone(&mut self, chat: i64) -> Vec<String> {
        let keys: Vec<_> = self.ids.keys().filter(|k| k.0 == chat).copied().collect();
        keys.into_iter()
            .flat_map(|k| self.ids.remove(&k).unwrap_or_default())
            .collect()
    }
}

/// `SELECT 1` within a second, connecting first if needed.
async fn pg_ping(url: &str, client: &mut Option<tokio_postgres::Client>) -> bool {
    let attempt = async {
        super::connected(url, client)
            .await?
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(()))
    )
}

/// Records, for each alert of a merged batch, the time from its event's
/// stream entry to now (it has been recorded and handed to the sender), and
/// forgets the entry times of every event through `upto_seq`.
fn record_latency(
    live: &Live,
    entered: &Mutex<VecDeque<(u64, u64)>>,
    effects: &[Effect],
    upto_seq: u64,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut entered = entered.lock();
    let mut h = live.alert_latency.lock();
    for e in effects.iter().filter(|e| e.is_alert()) {
        let seq = e.order_key().0;
        while entered.front().is_some_and(|&(s, _)| s < seq) {
            entered.pop_front();
        }
        if let Some(&(s, ms)) = entered.front()
            && s == seq
        {
            let _ = h.record(now_ms.saturating_sub(ms).max(1) * 1000);
        }
    }
    drop(h);
    while entered.front().is_some_and(|&(s, _)| s <= upto_seq) {
        entered.pop_front();
    }
}

/// Batches handed to the engine: (the last envelope's seq, or the previous
/// one if the batch had none; the batch's last seq).
type Submitted = Mutex<VecDeque<(u64, u64)>>;

/// A call event read but not yet written behind: (seq, token, channel, at,
/// fdv). The calls table in Redis must not run ahead of the records and
/// alerts: a restart that rebuilt a later call would count it as a caller
/// when an earlier, unacknowledged call is applied again.
type PendingCalls = Mutex<VecDeque<(u64, Token, i64, engine::time::Nanos, f64)>>;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    init_logging(&settings)?;
    let deadline = Duration::from_secs(args.shutdown_secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Connections made here are driven by this runtime.
    let _entered = rt.enter();
    let engine_config = settings.engine_config()?;
    let prefix = settings.redis.key_prefix.clone();
    let timeouts = RedisTimeouts {
        connect: Duration::from_millis(settings.redis.connect_timeout_ms),
        response: Duration::from_millis(settings.redis.response_timeout_ms),
        ..RedisTimeouts::default()
    };
    let masked = settings.masked();
    tracing::info!(
        redis = %masked.redis.url,
        postgres = %masked.postgres.url,
        partitions = ?settings.owned_partitions(),
        shards = engine_config.shards,
        "callwatch serve starting (`callwatch config` prints every setting)"
    );

    let database = (!settings.postgres.url.is_empty()).then(|| settings.postgres.url.clone());
    if let Some(url) = &database {
        let applied = super::migrate_database(
            &rt,
            url,
            &settings.postgres.schema,
            "postgres.url / DATABASE_URL",
        )?;
        tracing::info!(?applied, schema = %settings.postgres.schema, "migrations");
    }

    let (mut router, mut effects, workers) = router::start(&engine_config)?;
    let persist = Persistence::start(
        &PersistConfig {
            redis_url: settings.redis.url.clone(),
            database_url: database,
            schema: settings.postgres.schema.clone(),
            audit_stream: format!("{prefix}callwatch:audit"),
            audit_consumer: settings.ingest.consumer.clone(),
            write_behind: WriteBehindConfig {
                key_prefix: prefix.clone(),
                ttl_nanos: engine_config.ttl_nanos,
                capacity: settings.redis.write_behind_capacity,
                ..WriteBehindConfig::default()
            },
            timeouts: timeouts.clone(),
            ..PersistConfig::default()
        },
        rt.handle(),
    )
    .context("redis.url")?;

    let ingest = StreamIngest::new(
        StreamIngestConfig {
            prefix: prefix.clone(),
            partitions: settings.ingest.partitions,
            owned: settings.ingest.owned.clone(),
            group: settings.ingest.group.clone(),
            consumer: settings.ingest.consumer.clone(),
            batch: settings.ingest.batch,
            block: Duration::from_millis(settings.ingest.block_ms),
            min_idle: Duration::from_millis(settings.ingest.claim_idle_ms),
            timeouts: timeouts.clone(),
            ..StreamIngestConfig::default()
        },
        &settings.redis.url,
    )
    .context("ingest settings")?;
    let acker = ingest.acker();
    let live = Arc::new(Live {
        gauges: router.gauges(),
        ingest: ingest.counters(),
        alerts_call: AtomicU64::new(0),
        alerts_multiplier: AtomicU64::new(0),
        applied_through: AtomicU64::new(0),
        acked_through: AtomicU64::new(0),

        sender: Mutex::new(None),
        write_behind: persist.write_behind().clone(),
        redis_ok: AtomicU64::new(0),
        redis_latency_us: AtomicU64::new(0),
        postgres_ok: AtomicU64::new(u64::MAX),
        postgres_latency_us: AtomicU64::new(0),
        inbox_depth: (0..engine_config.shards)
            .map(|_| AtomicU64::new(0))
            .collect(),
        alert_latency: Mutex::new(
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        ),
        started: Instant::now(),
    });

    // Telegram, when there is a token: alerts go through a durable outbox.
    let outbox = Outbox::new(format!("{prefix}callwatch:outbox"));
    let outbox_con = health::managed_connection(&settings.redis.url, &timeouts)?;
    let queued = Arc::new(Mutex::new(Queued::default()));
    let telegram = if settings.telegram.token.is_empty() {
        tracing::warn!("no Telegram token: alerts are decided, kept and audited, not sent");
        None
    } else {
        let _entered = rt.enter();
        let t = &settings.telegram;
        let (sender, mut reports, task) = sender::Sender::start(
            BotToken::new(t.token.clone()),
            SenderConfig {
                api_url: t.api_url.clone(),
                chat_interval: Duration::from_secs_f64(1.0 / t.per_chat_per_sec),
                global_limit: t.global_per_sec.round().max(1.0) as u32,
                ..SenderConfig::default()
            },
        )?;
        let names = Arc::new(ChannelNames::new(
            NamesConfig {
                key_prefix: prefix.clone(),
                ..NamesConfig::default()
            },
            health::managed_connection(&settings.redis.url, &timeouts)?,
        ));
        let answered = Arc::clone(&queued);
        let (deleter, mut con) = (outbox.clone(), outbox_con.clone());
        let reading = rt.spawn(async move {
            while let Some(report) = reports.recv().await {
                let done = match report {
                    sender::Report::Sent { chat_id, tag, .. } => {
                        answered.lock().answered(chat_id, &tag)
                    }
                    sender::Report::Failed {
                        chat_id,
                        tag,
                        error,
                    } => {
                        tracing::error!(chat_id, error = %error, "Telegram message given up");
                        answered.lock().answered(chat_id, &tag)
                    }
                    sender::Report::Inactive {
                        chat_id, dropped, ..
                    } => {
                        tracing::info!(chat_id, dropped, "chat unreachable; its alerts dropped");
                        answered.lock().chat_gone(chat_id)
                    }
                };
                // Deleted at once; if Redis is down, the entry stays and is
                // sent again after a restart (a duplicate, never a loss).
                if let Err(e) = deleter.remove(&mut con, &done).await {
                    tracing::warn!(error = %e, "could not delete answered alerts from the outbox");
                }
            }
        });
        *live.sender.lock() = Some(sender.clone());
        // What a crash left unsent, first.
        let left = rt
            .block_on(outbox.load(&mut outbox_con.clone()))
            .context("reading the Telegram outbox")?;
        let mut broken = Vec::new();
        for (id, message) in left {
            match message {
                Ok(m) => {
                    queued.lock().queued(m.chat_id, &m.tag, id);
                    if rt.block_on(sender.send(m)).is_err() {
                        anyhow::bail!("the Telegram sender closed at start");
                    }
                }
                Err(why) => {
                    tracing::error!(%id, %why, "unreadable outbox entry deleted");
                    broken.push(id);
                }
            }
        }
        rt.block_on(outbox.remove(&mut outbox_con.clone(), &broken))?;
        Some((sender, names, (task, reading)))
    };

    // Health checks, every 2 s, for /readyz and /metrics.
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let live = Arc::clone(&live);
        let mut con = health::managed_connection(&settings.redis.url, &timeouts)?;
        let mut stop = stop_rx.clone();
        let pg_url = (!settings.postgres.url.is_empty()).then(|| settings.postgres.url.clone());
        rt.spawn(async move {
            let mut pg: Option<tokio_postgres::Client> = None;
            loop {
                if let Some(url) = &pg_url {
                    let t = Instant::now();
                    let ok = pg_ping(url, &mut pg).await;
                    live.postgres_ok.store(u64::from(ok), Ordering::Relaxed);
                    live.postgres_latency_us
                        .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                let ping = health::ping(&mut con, Duration::from_secs(1)).await;
                live.redis_ok.store(u64::from(ping.ok), Ordering::Relaxed);
                live.redis_latency_us
                    .store(ping.latency.as_micros() as u64, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
    let listen = settings
        .http
        .listen
        .parse()
        .expect("checked by the settings");
    let (listener, addr) = rt
        .block_on(ops::bind(listen))
        .with_context(|| format!("http.listen {listen}"))?;
    tracing::info!(%addr, "metrics, healthz and readyz listening");
    let ops_task = rt.spawn(ops::serve(
        listener,
        live.clone() as Arc<dyn Report>,
        stop_rx.clone(),
    ));

    // Stop on SIGTERM or Ctrl-C.
    {
        let stop_tx = stop_tx.clone();
        rt.spawn(async move {
            let term = async {
                #[cfg(unix)]
                {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
                #[cfg(not(unix))]
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
            tracing::info!("stopping: no new events; draining");
            let _ = stop_tx.send(true);
        });
    }

    // Commands, when there is a bot and this process receives for it.
    let (queries_tx, queries_rx) = mpsc::channel(64);
    let updates_task = match &telegram {
        Some((sender, names, _)) if settings.telegram.updates != "off" => {
            let stats_live = Arc::clone(&live);
            Some(super::commands::start(
                &rt,
                &settings,
                super::commands::Parts {
                    sender: sender.clone(),
                    names: Arc::clone(names),
                    queries: queries_tx,
                    stats: Box::new(move || stats_live.stats_rows()),
                    redis: health::managed_connection(&settings.redis.url, &timeouts)?,
                },
                stop_rx.clone(),
            )?)
        }
        _ => {
            drop(queries_tx);
            None
        }
    };

    let submitted: Submitted = Mutex::new(VecDeque::new());
    let pending_calls: PendingCalls = Mutex::new(VecDeque::new());
    // (seq, the entry's stream time in ms) of events submitted, for the
    // alert latency.
    let entered: Mutex<VecDeque<(u64, u64)>> = Mutex::new(VecDeque::new());
    let links = Links::default();
    let handle = rt.handle().clone();
    let effects_acker = acker.clone();
    let scoped = std::thread::scope(|scope| -> anyhow::Result<(u64, IngestTask)> {
        // The effects side: record, queue for Telegram, acknowledge.
        let effects_side = scope.spawn(|| -> anyhow::Result<u64> {
            let mut recorded = 0u64;
            let ack_when_settled = |recorded: u64| {
                let acked = live.acked_through.load(Ordering::Relaxed);
                if recorded > acked && persist.settled() {
                    effects_acker.ack_through(recorded);
                    live.acked_through.store(recorded, Ordering::Relaxed);
                }
            };
            loop {
                let merged = match effects.poll_merged()? {
                    router::Poll::Ready(m) => m,
                    router::Poll::Pending => {
                        ack_when_settled(recorded);
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    router::Poll::Finished => return Ok(recorded),
                };
                // Alerts reach the outbox before their state changes reach
                // the write-behind: a crash in between must leave an alert
                // to send, not a record that says it was sent. (The other
                // way round, the unacknowledged event is applied again at
                // restart against state that already holds its change, and
                // its alert is never made again.)
                let mut messages = Vec::new();
                for effect in &merged.effects {
                    match effect {
                        Effect::CallAlert(_) => live.alerts_call.fetch_add(1, Ordering::Relaxed),
                        Effect::MultiplierAlert(_) => {
                            live.alerts_multiplier.fetch_add(1, Ordering::Relaxed)
                        }
                        Effect::Progress(_) => continue,
                    };
                    if let Some((_, names, _)) = &telegram {
                        let callers = match effect {
                            Effect::CallAlert(a) => a.callers.clone(),
                            _ => Vec::new(),
                        };
                        let resolved = handle.block_on(names.resolve(&callers));
                        if let Some(rendered) = format::alert(effect, &resolved, &links)
                            && let Some(message) = Message::alert(effect, rendered)
                            // Already in the outbox from before a restart,
                            // and queued from there.
                            && !queued.lock().holds(message.chat_id, &message.tag)
                        {
                            messages.push(message);
                        }
                    }
                }
                if let Some((sender, _, _)) = &telegram
                    && !messages.is_empty()
                {
                    // Durable first (retried while Redis is away: an alert
                    // must not be lost), then queued.
                    let mut backoff = Duration::from_millis(50);
                    let ids = loop {
                        match handle.block_on(outbox.push(&mut outbox_con.clone(), &messages)) {
                            Ok(ids) => break ids,
                            Err(e) => {
                                tracing::warn!(error = %e, ?backoff, "outbox write failed; retrying");
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    };
                    for (message, id) in messages.into_iter().zip(ids) {
                        queued.lock().queued(message.chat_id, &message.tag, id);
                        if handle.block_on(sender.send(message)).is_err() {
                            anyhow::bail!("the Telegram sender closed while alerts were flowing");
                        }
                    }
                }
                // Audit rows too are durable before the state.
                persist.record_all(&merged.effects);
                // Calls join the stored state only now, in input order,
                // with the effects of every event up to them.
                {
                    let mut calls = pending_calls.lock();
                    while let Some(&(seq, token, channel, at, fdv)) = calls.front()
                        && seq <= merged.upto_seq
                    {
                        persist.record_call(token, channel, at, fdv);
                        calls.pop_front();
                    }
                }
                record_latency(&live, &entered, &merged.effects, merged.upto_seq);
                live.applied_through
                    .store(merged.upto_seq, Ordering::Relaxed);
                let mut queue = submitted.lock();
                while let Some(&(last_event, last_seq)) = queue.front()
                    && last_event <= merged.upto_seq
                {
                    recorded = last_seq;
                    queue.pop_front();
                }
                drop(queue);
                ack_when_settled(recorded);
            }
        });

        // Rebuild from Redis before reading events.
        let started = Instant::now();
        let loaded = rt.block_on(async {
            let con = redis::Client::open(settings.redis.url.as_str())?
                .get_multiplexed_async_connection_with_config(&bulk_connection_config())
                .await?;
            let loaded = load_into(
                &con,
                &prefix,
                &mut router,
                10_000,
                |s| tracing::warn!(key = %s.key, reason = %s.reason, "record skipped"),
                |_| {},
            )
            .await?;
            anyhow::Ok(loaded)
        });
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                let _ = router.finish();
                let _ = effects_side.join();
                return Err(e.context("rebuilding from Redis"));
            }
        };
        tracing::info!(
            keys = loaded.keys,
            processed = loaded.processed,
            skipped = loaded.skipped,
            seconds = started.elapsed().as_secs_f64(),
            "rebuilt from Redis; reading events"
        );

        // Read events (and the commands' questions, in turn with them)
        // until stopped.
        let (tx, rx) = mpsc::channel(4);
        let ingest_task = rt.spawn(ingest.run(tx, stop_rx.clone()));
        let mut feed = feed(&rt, rx, queries_rx);
        let mut last_event = 0u64;
        let mut engine_error = None;
        'read: while let Some(input) = feed.blocking_recv() {
            let batch = match input {
                Feed::Batch(b) => b,
                Feed::Query(q) => {
                    if let Err(e) = answer(&mut router, &handle, q) {
                        engine_error = Some(e);
                        break 'read;
                    }
                    continue;
                }
            };
            {
                let mut entered = entered.lock();
                for (env, ms) in batch.envelopes.iter().zip(&batch.entered_ms) {
                    entered.push_back((env.seq, *ms));
                }
            }
            for env in batch.envelopes {
                last_event = env.seq;
                if let Event::Call {
                    token,
                    channel_id,
                    at,
                    fdv_usd,
                } = &env.event
                {
                    pending_calls
                        .lock()
                        .push_back((env.seq, *token, *channel_id, *at, *fdv_usd));
                }
                if let Err(e) = router.submit(env) {
                    engine_error = Some(e);
                    break 'read;
                }
            }
            submitted.lock().push_back((last_event, *batch.seqs.end()));
            if let Err(e) = router.flush() {
                engine_error = Some(e);
                break;
            }
            for (gauge, depth) in live.inbox_depth.iter().zip(router.inbox_depths()) {
                gauge.store(depth as u64, Ordering::Relaxed);
            }
        }
        // Stopped (or the engine failed): let every event applied so far
        // through, in order.
        let _ = stop_tx.send(true);
        drop(feed);
        let finished = router.finish();
        let recorded = effects_side
            .join()
            .map_err(|_| anyhow::anyhow!("the effects thread panicked"))??;
        if let Some(e) = engine_error {
            return Err(e.into());
        }
        finished?;
        Ok((recorded, ingest_task))
    });
    let _ = stop_tx.send(true);
    let (recorded, ingest_task) = scoped?;
    workers.join().context("a shard stopped")?;

    // Everything applied is recorded: write it out, then acknowledge it.
    let stats = persist
        .close(deadline)
        .context("writing the last state and audit rows")?;
    acker.ack_through(recorded);
    live.acked_through.store(recorded, Ordering::Relaxed);
    drop(acker);
    tracing::info!(?stats, "state and audit written");
    if let Some(task) = updates_task {
        // The dispatcher holds the sender for its replies: it goes first.
        match rt.block_on(async { tokio::time::timeout(deadline, task).await }) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "receiving commands failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the command dispatcher panicked"),
            Err(_) => tracing::warn!("the command dispatcher did not stop in time"),
        }
    }
    if let Some((sender, _, (task, reading))) = telegram {
        drop(sender);
        *live.sender.lock() = None;
        let closed = rt.block_on(task.close(deadline));
        // Every report is in once the sender has gone.
        let _ = rt.block_on(reading);
        if !closed.unsent.is_empty() {
            tracing::warn!(
                unsent = closed.unsent.len(),
                "Telegram messages not delivered by the deadline"
            );
        }
    }
    let ingest_stats = rt
        .block_on(async { tokio::time::timeout(deadline, ingest_task).await })
        .context("the stream ingest did not finish in time")?
        .context("the stream ingest task")??;
    let _ = rt.block_on(ops_task);
    {
        let h = live.alert_latency.lock();
        if !h.is_empty() {
            tracing::info!(
                alerts = h.len(),
                p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms = h.max() as f64 / 1000.0,
                "alert latency, stream entry to handed to the sender"
            );
        }
    }
    tracing::info!(
        events = ingest_stats.events,
        dead_lettered = ingest_stats.dead_lettered,
        acked = ingest_stats.acked,
        left_pending = ingest_stats.left_pending,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// What the reading thread takes, in turn.
enum Feed {
    Batch(EventBatch),
    Query(EngineQuery),
}

/// One channel of event batches and engine questions, so that the thread
/// feeding the router takes both in turn. Ends when the ingest ends.
fn feed(
    rt: &tokio::runtime::Runtime,
    mut batches: mpsc::Receiver<EventBatch>,
    mut queries: mpsc::Receiver<EngineQuery>,
) -> mpsc::Receiver<Feed> {
    let (tx, rx) = mpsc::channel(4);
    rt.spawn(async move {
        let mut asking = true;
        loop {
            // Not biased: under a backlog batches are always ready, and a
            // question must still get its turn.
            let next = tokio::select! {
                b = batches.recv() => match b {
                    Some(b) => Feed::Batch(b),
                    None => return,
                },
                q = queries.recv(), if asking => match q {
                    Some(q) => Feed::Query(q),
                    None => {
                        asking = false;
                        continue;
                    }
                },
            };
            if tx.send(next).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Puts a question to the shards, in order with the events submitted
/// before it; a blocking task gathers the shards' answers.
fn answer(
    router: &mut router::Router,
    handle: &tokio::runtime::Handle,
    query: EngineQuery,
) -> Result<(), router::EngineStopped> {
    fn gather<T: Send + 'static>(
        handle: &tokio::runtime::Handle,
        shards: usize,
        answers: crossbeam_channel::Receiver<Vec<T>>,
        reply: tokio::sync::oneshot::Sender<Vec<T>>,
    ) {
        handle.spawn_blocking(move || {
            let mut all = Vec::new();
            for _ in 0..shards {
                match answers.recv_timeout(Duration::from_secs(10)) {
                    Ok(part) => all.extend(part),
                    Err(_) => return,
                }
            }
            let _ = reply.send(all);
        });
    }
    let shards = router.shards();
    match query {
        EngineQuery::Tracked { chat_id, reply } => {
            gather(handle, shards, router.tracked_by(chat_id)?, reply);
        }
        EngineQuery::Outcomes { since, reply } => {
            gather(handle, shards, router.call_outcomes(since)?, reply);
        }
    }
    Ok(())
}

type IngestTask = tokio::task::JoinHandle<
    Result<callwatch_io::stream_ingest::IngestStats, callwatch_io::stream_ingest::StreamError>,
>;
