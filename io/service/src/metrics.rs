//! The service's figures: counters and gauges every stage updates, read by
//! `/metrics`, `/readyz` and the admins' `/stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callwatch_feed::metrics::FeedCounters;
use callwatch_ingest::stream::{CompactCounters, IngestCounters};
use callwatch_ledger::audit::SinkCounters;
use callwatch_payments::watcher::WatcherCounters;
use callwatch_state::writebehind::WriteBehind;
use callwatch_telegram::sender::{self, SenderStats};
use engine::router::ShardGauges;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;

use crate::commands::CommandCounters;
use crate::commands::ReceivingCounters;
use crate::ops::{Exposition, Readiness, Report};

/// A gauge that has no value yet (PostgreSQL not configured).
pub const ABSENT: u64 = u64::MAX;

/// Counters and gauges for `/metrics` and `/readyz`.
#[derive(Debug)]
pub struct Live {
    pub gauges: Arc<[ShardGauges]>,
    pub ingest: Arc<IngestCounters>,
    pub alerts_call: AtomicU64,
    pub alerts_multiplier: AtomicU64,
    pub applied_through: AtomicU64,
    pub acked_through: AtomicU64,
    /// The sender's own counters are the Telegram figures.
    pub sender: Mutex<Option<sender::Sender>>,
    pub write_behind: WriteBehind,
    pub redis_ok: AtomicU64,
    pub redis_latency_us: AtomicU64,
    /// 1 up, 0 down; [`ABSENT`] without PostgreSQL.
    pub postgres_ok: AtomicU64,
    pub postgres_latency_us: AtomicU64,
    /// Batches waiting in each shard's inbox, sampled by the reader.
    pub inbox_depth: Vec<AtomicU64>,
    /// Stream entry → alert decided, recorded and handed to the sender, µs:
    /// exact quantiles for the log at the end of a run.
    pub alert_latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// The same, in seconds, as `/metrics` shows it.
    pub alert_latency_seconds: Histogram,
    pub started: Instant,
    /// The sources' figures, when they run.
    pub sources: Mutex<Option<Arc<FeedCounters>>>,
    /// Calls kept that the sources were not told of (their queue full).
    pub calls_not_recorded: AtomicU64,
    /// What became of the charts of multiplier alerts.
    pub charts: Arc<crate::charts::ChartCounters>,
    /// The commands' figures: answered, over their chat's rate; notices.
    pub commands: Arc<CommandCounters>,
    /// The audit sink's counters, when PostgreSQL is configured.
    pub audit: Mutex<Option<Arc<SinkCounters>>>,
    /// Keys the start's rebuild skipped (not UTF-8, another type, not
    /// parsed).
    pub rebuild_skipped: AtomicU64,
    /// The payment watcher's counters (zero without payments).
    pub payments: Arc<WatcherCounters>,
    /// The chats stream's compaction, when it runs.
    pub compaction: Mutex<Option<Arc<CompactCounters>>>,
    /// What receiving the bot's updates refused and took.
    pub receiving: ReceivingCounters,
    /// Snapshots written and failed; the last one's size, its pause of
    /// the input (µs) and its write (µs).
    pub snapshots: [AtomicU64; 5],
}

/// One family's samples: label sets and values.
type Samples<'a> = Vec<(&'a [(&'a str, &'a str)], f64)>;

impl Live {
    /// Figures at zero for an engine of `shards` shards.
    pub fn new(
        gauges: Arc<[ShardGauges]>,
        ingest: Arc<IngestCounters>,
        write_behind: WriteBehind,
        shards: usize,
    ) -> Live {
        Live {
            gauges,
            ingest,
            alerts_call: AtomicU64::new(0),
            alerts_multiplier: AtomicU64::new(0),
            applied_through: AtomicU64::new(0),
            acked_through: AtomicU64::new(0),
            sender: Mutex::new(None),
            write_behind,
            redis_ok: AtomicU64::new(0),
            redis_latency_us: AtomicU64::new(0),
            postgres_ok: AtomicU64::new(ABSENT),
            postgres_latency_us: AtomicU64::new(0),
            inbox_depth: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            alert_latency: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("valid bounds"),
            ),
            alert_latency_seconds: crate::ops::latency_histogram(),
            started: Instant::now(),
            sources: Mutex::new(None),
            calls_not_recorded: AtomicU64::new(0),
            charts: Arc::default(),
            commands: Arc::default(),
            audit: Mutex::new(None),
            rebuild_skipped: AtomicU64::new(0),
            payments: Arc::default(),
            compaction: Mutex::new(None),
            receiving: ReceivingCounters::default(),
            snapshots: Default::default(),
        }
    }

    /// A snapshot written: `bytes`, after holding a shard's input for
    /// `pause` at most at one go, and writing for `write`.
    pub fn snapshot_written(&self, bytes: u64, pause: Duration, write: Duration) {
        let [written, _, size, paused, wrote] = &self.snapshots;
        written.fetch_add(1, Ordering::Relaxed);
        size.store(bytes, Ordering::Relaxed);
        paused.store(pause.as_micros() as u64, Ordering::Relaxed);
        wrote.store(write.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot_failed(&self) {
        self.snapshots[1].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, f: fn(&ShardGauges) -> &AtomicU64) -> u64 {
        self.gauges
            .iter()
            .map(|g| f(g).load(Ordering::Relaxed))
            .sum()
    }

    fn sender_stats(&self) -> Option<SenderStats> {
        self.sender.lock().as_ref().map(sender::Sender::stats)
    }

    /// The figures `/stats` shows admins.
    pub fn stats_rows(&self) -> Vec<(String, String)> {
        let ingest = self.ingest.stats();
        let up = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            1 => "up",
            0 => "down",
            _ => "not configured",
        };
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut rows = vec![
            (
                "uptime".to_owned(),
                format!("{} s", self.started.elapsed().as_secs()),
            ),
            ("events read".to_owned(), ingest.events.to_string()),
            ("dead-lettered".to_owned(), ingest.dead_lettered.to_string()),
            (
                "tokens held".to_owned(),
                self.sum(|g| &g.tokens).to_string(),
            ),
            (
                "tracked keys".to_owned(),
                self.sum(|g| &g.tracked).to_string(),
            ),
            (
                "processed records".to_owned(),
                self.sum(|g| &g.records).to_string(),
            ),
            ("call alerts".to_owned(), count(&self.alerts_call)),
            (
                "multiplier alerts".to_owned(),
                count(&self.alerts_multiplier),
            ),
            ("Redis".to_owned(), up(&self.redis_ok).to_owned()),
            ("PostgreSQL".to_owned(), up(&self.postgres_ok).to_owned()),
        ];
        if let Some(s) = self.sender_stats() {
            rows.push(("Telegram sent".to_owned(), s.sent.to_string()));
            rows.push(("Telegram queue".to_owned(), s.queued.to_string()));
            rows.push(("Telegram 429s".to_owned(), s.rate_limited.to_string()));
        }
        rows
    }

    /// The engine's families: per-shard events, tracked entries and inbox
    /// depths, alerts, and how far input is applied and acknowledged.
    fn engine_families(&self, e: &mut Exposition) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let shards: Vec<String> = (0..self.gauges.len()).map(|i| i.to_string()).collect();
        let labels: Vec<[(&str, &str); 1]> =
            shards.iter().map(|s| [("shard", s.as_str())]).collect();
        let per_shard = |f: fn(&ShardGauges) -> &AtomicU64| -> Samples<'_> {
            self.gauges
                .iter()
                .zip(&labels)
                .map(|(g, l)| (&l[..], f(g).load(Ordering::Relaxed) as f64))
                .collect()
        };
        let inbox: Samples<'_> = self
            .inbox_depth
            .iter()
            .zip(&labels)
            .map(|(d, l)| (&l[..], d.load(Ordering::Relaxed) as f64))
            .collect();
        e.counter(
            "callwatch_shard_events_total",
            "Events applied, per shard.",
            &per_shard(|g| &g.events),
        )
        .gauge(
            "callwatch_shard_tracked",
            "Tracked entries held, per shard.",
            &per_shard(|g| &g.tracked),
        )
        .counter(
            "callwatch_shard_followers_visited_total",
            "Chats calls looked at in the follower index, per shard.",
            &per_shard(|g| &g.followers_visited),
        )
        .gauge(
            "callwatch_shard_inbox_depth",
            "Batches waiting in each shard's inbox.",
            &inbox,
        )
        .counter(
            "callwatch_alerts_total",
            "Alerts decided, by kind.",
            &[
                (&[("kind", "call")], get(&self.alerts_call)),
                (&[("kind", "multiplier")], get(&self.alerts_multiplier)),
            ],
        )
        .counter(
            "callwatch_charts_total",
            "Charts of multiplier alerts, by outcome (all but drawn went as text).",
            &[
                (&[("outcome", "drawn")], get(&self.charts.drawn)),
                (&[("outcome", "busy")], get(&self.charts.busy)),
                (&[("outcome", "late")], get(&self.charts.late)),
                (&[("outcome", "failed")], get(&self.charts.failed)),
                (&[("outcome", "untracked")], get(&self.charts.untracked)),
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
        );
    }

    /// The input's families: stream entries by outcome, and in flight.
    fn ingest_families(&self, e: &mut Exposition) {
        let ingest = self.ingest.stats();
        e.counter(
            "callwatch_ingest_entries_total",
            "Stream entries taken, by what became of each: handed to the engine as an event (chat events handed out again at start included), or set aside in the dead-letter stream.",
            &[
                (&[("outcome", "event")], ingest.events as f64),
                (&[("outcome", "dead_letter")], ingest.dead_lettered as f64),
            ],
        )
        .counter(
            "callwatch_ingest_acked_total",
            "Stream entries acknowledged (events and dead letters alike).",
            &[(&[], ingest.acked as f64)],
        )
        .counter(
            "callwatch_ingest_reconnects_total",
            "Redis failures the stream ingest retried after a backoff.",
            &[(&[], ingest.reconnects as f64)],
        )
        .counter(
            "callwatch_ingest_skipped_total",
            "Entries read again after a reconnect that had been handed out already, and so were not handed out twice.",
            &[(&[], ingest.skipped as f64)],
        )
        .gauge(
            "callwatch_ingest_in_flight",
            "Events read and not yet acknowledged.",
            &[(&[], ingest.in_flight as f64)],
        );
    }

    /// The chats stream's compaction, when it runs: entries deleted and
    /// merged, runs by outcome.
    fn compaction_families(&self, e: &mut Exposition) {
        let Some(c) = self.compaction.lock().clone() else {
            return;
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        e.counter(
            "callwatch_chats_compacted_total",
            "Chats-stream entries deleted by compaction (superseded or bad), and merged settings entries written.",
            &[
                (&[("entries", "deleted")], get(&c.deleted)),
                (&[("entries", "merged")], get(&c.merged)),
            ],
        )
        .counter(
            "callwatch_chats_compactions_total",
            "Compaction runs of the chats stream, by outcome; conflicts are chunks that met new entries.",
            &[
                (&[("outcome", "done")], get(&c.runs)),
                (&[("outcome", "failed")], get(&c.failed)),
                (&[("outcome", "conflict")], get(&c.conflicts)),
            ],
        );
    }

    /// The stores' families: the write-behind's backlog, and each server's
    /// last health check.
    fn store_families(&self, e: &mut Exposition) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let pg = self.postgres_ok.load(Ordering::Relaxed);
        let if_pg = |v: f64| -> Samples<'static> {
            if pg == ABSENT {
                vec![]
            } else {
                vec![(&[][..], v)]
            }
        };
        let wb = self.write_behind.stats();
        e.gauge(
            "callwatch_write_behind_pending",
            "Redis changes not yet written.",
            &[(&[], wb.pending as f64)],
        )
        .counter(
            "callwatch_write_behind_set_aside_total",
            "Redis changes refused for their key (a key of another type), set aside in the dead-letter stream.",
            &[(&[], wb.set_aside as f64)],
        )
        .counter(
            "callwatch_snapshots_total",
            "Engine snapshots written, and failed to write.",
            &[
                (&[("outcome", "written")], get(&self.snapshots[0])),
                (&[("outcome", "failed")], get(&self.snapshots[1])),
            ],
        )
        .gauge(
            "callwatch_snapshot_last_bytes",
            "The size of the last snapshot written.",
            &[(&[], get(&self.snapshots[2]))],
        )
        .gauge(
            "callwatch_snapshot_last_pause_seconds",
            "The longest the last snapshot held a shard's input at one go (its cut, a step of writing, or a token written before a change).",
            &[(&[], get(&self.snapshots[3]) / 1e6)],
        )
        .gauge(
            "callwatch_snapshot_last_write_seconds",
            "How long writing and flushing the last snapshot took.",
            &[(&[], get(&self.snapshots[4]) / 1e6)],
        )
        .gauge(
            "callwatch_rebuild_skipped_keys",
            "Keys the start's rebuild skipped: not UTF-8, of another type, or not parsed.",
            &[(&[], get(&self.rebuild_skipped))],
        )
        .gauge(
            "callwatch_postgres_up",
            "Whether the last PostgreSQL health check answered (absent without PostgreSQL).",
            &if_pg(pg as f64),
        )
        .gauge(
            "callwatch_postgres_latency_seconds",
            "The last PostgreSQL health check's round trip.",
            &if_pg(get(&self.postgres_latency_us) / 1e6),
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
        );
    }

    /// The audit sink's families: entries by outcome (absent without
    /// PostgreSQL).
    fn audit_families(&self, e: &mut Exposition) {
        let Some(c) = self.audit.lock().clone() else {
            return;
        };
        let s = c.stats();
        e.counter(
            "callwatch_audit_entries_total",
            "Audit stream entries handled, by outcome; set_aside: rows PostgreSQL refuses, in the dead-letter stream.",
            &[
                (&[("outcome", "inserted")], s.rows_inserted as f64),
                (&[("outcome", "duplicate")], s.duplicates as f64),
                (&[("outcome", "set_aside")], s.set_aside as f64),
                (&[("outcome", "malformed")], s.malformed as f64),
            ],
        );
    }

    /// The payment watcher's families.
    fn payment_families(&self, e: &mut Exposition) {
        e.counter(
            "callwatch_payments_dropped_total",
            "Transactions that never finalized within payments.finality_timeout_slots, recorded as dropped.",
            &[(&[], self.payments.dropped.load(Ordering::Relaxed) as f64)],
        );
    }

    /// Telegram's families: messages by outcome, the queue, 429s.
    fn telegram_families(&self, e: &mut Exposition) {
        let sender = self.sender_stats();
        let of = |f: fn(&SenderStats) -> u64| sender.as_ref().map_or(0.0, |s| f(s) as f64);
        e.counter(
            "callwatch_telegram_messages_total",
            "Telegram messages, by outcome.",
            &[
                (&[("outcome", "sent")], of(|s| s.sent)),
                (&[("outcome", "failed")], of(|s| s.failed)),
                (&[("outcome", "chat_inactive")], of(|s| s.dropped_inactive)),
                (&[("outcome", "chat_full")], of(|s| s.rejected_chat_full)),
            ],
        )
        .gauge(
            "callwatch_telegram_queue_depth",
            "Messages queued for Telegram.",
            &[(&[], of(|s| s.queued))],
        )
        .counter(
            "callwatch_telegram_429_total",
            "429 answers from Telegram.",
            &[(&[], of(|s| s.rate_limited))],
        )
        .counter(
            "callwatch_telegram_flood_pauses_total",
            "Times 429s for several chats at once paused every chat (the bot over its overall limit).",
            &[(&[], of(|s| s.flood_pauses))],
        )
        .counter(
            "callwatch_telegram_shared_limits_total",
            "Sends the limits shared with the bot's other processes held back (waited), and reservations Redis did not answer (unavailable: nothing was sent).",
            &[
                (&[("outcome", "waited")], of(|s| s.shared_waits)),
                (&[("outcome", "unavailable")], of(|s| s.shared_unavailable)),
            ],
        );
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let c = &self.commands;
        e.counter(
            "callwatch_commands_total",
            "Commands received, by outcome: answered, or dropped over their chat's rate.",
            &[
                (&[("outcome", "answered")], get(&c.answered)),
                (&[("outcome", "rate_limited")], get(&c.rate_limited)),
            ],
        )
        .counter(
            "callwatch_notices_dropped_total",
            "Payment and reminder notices not queued: their chat's or the reply lane's queue was full.",
            &[(&[], get(&c.notices_dropped))],
        )
        .counter(
            "callwatch_unmatched_dust_total",
            "Unmatched payments below the dust threshold, not told to the admins.",
            &[(&[], get(&c.unmatched_dust))],
        );
    }

    /// The latencies as histograms (stream entry to alert, stream entry
    /// to the engine, a message's wait in the sender's queue), and the
    /// uptime.
    fn latency_families(&self, e: &mut Exposition) {
        e.histogram(
            "callwatch_alert_latency_seconds",
            "Stream entry to alert recorded and handed to the sender.",
            &self.alert_latency_seconds,
        )
        .histogram(
            "callwatch_ingest_lag_seconds",
            "Stream entry (when Redis took it) to its event handed to the engine; one observation per batch, its oldest entry.",
            &self.ingest.lag,
        );
        if let Some(sender) = self.sender.lock().as_ref() {
            e.histogram(
                "callwatch_telegram_queue_wait_seconds",
                "A message taken by the sender to its first attempt to send it.",
                &sender.queue_wait(),
            );
        }
        e.gauge(
            "callwatch_uptime_seconds",
            "Seconds since start.",
            &[(&[], self.started.elapsed().as_secs_f64())],
        );
    }
}

impl Live {
    /// The sources' families: posts, calls and prices by outcome, the
    /// scheduler's queue, each API's budget use, and how long a token waits
    /// between polls.
    fn source_families(&self, e: &mut Exposition) {
        let Some(c) = self.sources.lock().clone() else {
            return;
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        e.counter(
            "callwatch_sources_posts_total",
            "Channel posts read, by outcome.",
            &[
                (&[("outcome", "read")], c.posts.get() as f64),
                (&[("outcome", "set_aside")], c.posts_dead.get() as f64),
            ],
        )
        .counter(
            "callwatch_sources_calls_total",
            "Calls from posts, by outcome.",
            &[
                (&[("outcome", "published")], c.calls.get() as f64),
                (&[("outcome", "set_aside")], c.calls_dead.get() as f64),
                (
                    &[("outcome", "not_recorded")],
                    get(&self.calls_not_recorded),
                ),
            ],
        )
        .counter(
            "callwatch_sources_prices_total",
            "Prices fetched, by outcome.",
            &[
                (&[("outcome", "published")], c.prices.get() as f64),
                (&[("outcome", "unchanged")], c.prices_unchanged.get() as f64),
            ],
        )
        .gauge(
            "callwatch_sources_tokens",
            "Tokens the price scheduler tracks, by state.",
            &[
                (&[("state", "tracked")], get(&c.tracked)),
                (&[("state", "urgent")], get(&c.urgent)),
                (&[("state", "due")], get(&c.due)),
            ],
        );
        let names: Vec<[(&str, &str); 1]> =
            c.sources.iter().map(|(n, _)| [("source", *n)]).collect();
        let per = |f: fn(&callwatch_feed::pricer::SourceCounters) -> &AtomicU64| -> Samples<'_> {
            c.sources
                .iter()
                .zip(&names)
                .map(|((_, s), l)| (&l[..], get(f(s))))
                .collect()
        };
        e.counter(
            "callwatch_sources_requests_total",
            "Requests to each price source.",
            &per(|s| &s.requests),
        )
        .counter(
            "callwatch_sources_request_failures_total",
            "Requests that failed (429 included).",
            &per(|s| &s.failures),
        )
        .gauge(
            "callwatch_sources_budget_used",
            "Requests in the last minute, at the last request.",
            &per(|s| &s.used_last_minute),
        )
        .gauge(
            "callwatch_sources_budget_limit",
            "Requests a minute this process may send.",
            &per(|s| &s.limit_per_minute),
        );
        e.histogram(
            "callwatch_sources_poll_wait_seconds",
            "Time between two polls of a token.",
            &c.poll_wait,
        );
    }
}

impl Live {
    /// Receiving's families: what the webhook refused and took, and the
    /// group administrator checks.
    fn receiving_families(&self, e: &mut Exposition) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let (hook, rights) = (&self.receiving.webhook, &self.receiving.rights);
        let failures = get(&rights.lookup_failures);
        e.counter(
            "callwatch_telegram_webhook_requests_total",
            "Webhook requests, by outcome (all but queued were refused or dropped).",
            &[
                (&[("outcome", "queued")], get(&hook.queued)),
                (&[("outcome", "bad_secret")], get(&hook.refused_secret)),
                (&[("outcome", "too_large")], get(&hook.too_large)),
                (&[("outcome", "queue_full")], get(&hook.queue_full)),
                (&[("outcome", "unreadable")], get(&hook.unreadable)),
            ],
        )
        .counter(
            "callwatch_telegram_admin_lookups_total",
            "getChatMember lookups of group administrators, by outcome.",
            &[
                (&[("outcome", "answered")], get(&rights.lookups) - failures),
                (&[("outcome", "failed")], failures),
            ],
        )
        .counter(
            "callwatch_telegram_admin_cache_full_total",
            "Administrator answers not kept because the cache was full.",
            &[(&[], get(&rights.uncached))],
        )
        .counter(
            "callwatch_commands_refused_total",
            "Group commands refused, by reason.",
            &[
                (&[("reason", "not_group_admin")], get(&rights.refused)),
                (&[("reason", "admin_check_failed")], failures),
            ],
        );
    }
}

/// The build and the process: `callwatch_build_info` (1, labelled with
/// the version), and the standard `process_*` families read from
/// `/proc/self` (Linux; elsewhere only the build).
fn process_families(e: &mut Exposition) {
    e.gauge(
        "callwatch_build_info",
        "1, labelled with the running build's version.",
        &[(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    let Some(p) = ProcessStats::read() else {
        return;
    };
    e.counter(
        "process_cpu_seconds_total",
        "User and system CPU time spent, in seconds.",
        &[(&[], p.cpu_seconds)],
    )
    .gauge(
        "process_resident_memory_bytes",
        "Resident memory size, in bytes.",
        &[(&[], p.resident_bytes)],
    )
    .gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size, in bytes.",
        &[(&[], p.virtual_bytes)],
    )
    .gauge(
        "process_open_fds",
        "Open file descriptors.",
        &[(&[], p.open_fds)],
    )
    .gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        &[(&[], p.start_time_seconds)],
    );
}

/// What `/proc/self` says of this process.
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        // Clock ticks and pages as Linux gives them on every platform
        // callwatch runs on (x86-64, aarch64).
        const TICKS: f64 = 100.0;
        const PAGE: f64 = 4096.0;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
        let (vsize, rss) = (field(23)?, field(24)?);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Some(ProcessStats {
            cpu_seconds: (utime + stime) / TICKS,
            resident_bytes: rss * PAGE,
            virtual_bytes: vsize,
            open_fds,
            start_time_seconds: now - uptime + start / TICKS,
        })
    }
}

impl Report for Live {
    fn metrics(&self) -> String {
        let mut e = Exposition::new();
        self.engine_families(&mut e);
        self.ingest_families(&mut e);
        self.compaction_families(&mut e);
        self.store_families(&mut e);
        self.audit_families(&mut e);
        self.payment_families(&mut e);
        self.telegram_families(&mut e);
        self.receiving_families(&mut e);
        self.latency_families(&mut e);
        self.source_families(&mut e);
        process_families(&mut e);
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
        if pg != ABSENT {
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

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let p = ProcessStats::read().expect("/proc/self on Linux");
        assert!(p.resident_bytes > 1e6, "{}", p.resident_bytes);
        assert!(p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3.0, "{}", p.open_fds);
        assert!(p.cpu_seconds >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started moments ago, whatever the clock says.
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0,
            "{} against {now}",
            p.start_time_seconds
        );
    }
}
