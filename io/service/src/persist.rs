//! Everything that keeps the engine's decisions, put together: the Redis
//! write-behind of its state, and the audit queue (a Redis stream) with the
//! sink that lands it in PostgreSQL. A command that runs the engine makes
//! one [`Persistence`], hands it every effect, and closes it at the end.
//!
//! Audit rows go from [`Persistence::record`] through a bounded channel to
//! a task that pushes them in pipelines. That channel is one place the
//! engine's output can wait on Redis: when `audit_buffer` rows are waiting
//! (Redis down for that long), `record` blocks rather than lose a row of
//! the system of record. [`Persistence::push_audit`], for a service that
//! applies unacknowledged events again after a crash, pushes a batch's rows
//! itself, retrying while Redis is away, before the batch's state changes
//! go to [`Persistence::record_state`], which waits for room in the
//! write-behind rather than drop a change (see
//! `callwatch_state::writebehind` for its bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::effect::Effect;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use callwatch_common::backoff::Backoff;
use callwatch_common::secret::SecretUrl;
use callwatch_ledger::audit::{
    AuditError, AuditQueue, AuditRow, AuditSink, QueueRow, SinkConfig, SinkCounters, SinkEvent,
    SinkStats,
};
use callwatch_ledger::server::PgServer;
use callwatch_state::writebehind::{
    self, Flusher, WriteBehind, WriteBehindConfig, WriteBehindStats,
};
use callwatch_streams::connection::{RedisEndpoint, RedisTimeouts};
use callwatch_streams::log::DeadLetters;

/// Where state and history go.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub redis: RedisEndpoint,
    /// PostgreSQL connection string; without it no audit rows are made.
    pub database_url: Option<SecretUrl>,
    /// The PostgreSQL schema (already migrated).
    pub schema: String,
    /// The audit stream's key.
    pub audit_stream: String,
    /// This process's name in the audit stream's consumer group: each
    /// process of a deployment needs its own.
    pub audit_consumer: String,
    /// Audit rows waiting to be pushed before `record` blocks.
    pub audit_buffer: usize,
    /// Where the sink sets aside rows PostgreSQL refuses.
    pub dead_letters: DeadLetters,
    pub write_behind: WriteBehindConfig,
    pub timeouts: RedisTimeouts,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            redis: RedisEndpoint::default(),
            database_url: None,
            schema: "callwatch".to_owned(),
            audit_stream: "callwatch:audit".to_owned(),
            audit_consumer: "sink-1".to_owned(),
            audit_buffer: 1_000_000,
            dead_letters: SinkConfig::default().dead_letters,
            write_behind: WriteBehindConfig::default(),
            timeouts: RedisTimeouts::default(),
        }
    }
}

/// What was kept, at the close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistStats {
    pub write_behind: WriteBehindStats,
    /// Audit rows pushed onto the stream.
    pub audit_pushed: u64,
    /// What the sink landed (`None` without PostgreSQL).
    pub audit: Option<SinkStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("PostgreSQL connection string: {0}")]
    DatabaseUrl(String),
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Unwritten(#[from] writebehind::Unwritten),
    #[error("the audit pusher stopped: {0}")]
    Pusher(String),
}

/// The running persistence of one engine.
#[derive(Debug)]
pub struct Persistence {
    wb: WriteBehind,
    flusher: Flusher,
    audit_tx: Option<mpsc::Sender<QueueRow>>,
    pusher: Option<tokio::task::JoinHandle<Result<u64, PersistError>>>,
    sink: Option<(watch::Sender<bool>, SinkTask)>,
    sink_counters: Option<Arc<SinkCounters>>,
    queue: AuditQueue,
    con: callwatch_streams::Conn,
    handle: Handle,
    /// Audit rows handed to the pusher, and of those pushed.
    rows_sent: AtomicU64,
    rows_pushed: Arc<AtomicU64>,
}

type SinkTask = tokio::task::JoinHandle<Result<SinkStats, PersistError>>;

/// Rows per XADD pipeline.
const PUSH_BATCH: usize = 2_000;

impl Persistence {
    /// Starts the write-behind, and with a database the audit pusher and
    /// sink, on the runtime of `handle`.
    pub fn start(config: &PersistConfig, handle: &Handle) -> Result<Persistence, PersistError> {
        let _entered = handle.enter();
        let con = config.redis.managed(&config.timeouts)?;
        let (wb, flusher) = writebehind::start(config.write_behind.clone(), con.clone());
        let (mut audit_tx, mut pusher, mut sink, mut sink_counters) = (None, None, None, None);
        let rows_pushed = Arc::new(AtomicU64::new(0));
        if let Some(url) = &config.database_url {
            let pg = PgServer::parse(url.expose())
                .map_err(|e| PersistError::DatabaseUrl(e.to_string()))?;
            let (tx, rx) = mpsc::channel(config.audit_buffer.max(1));
            let queue = AuditQueue::new(config.audit_stream.clone());
            pusher =
                Some(handle.spawn(push_loop(queue, rx, con.clone(), Arc::clone(&rows_pushed))));
            audit_tx = Some(tx);
            let mut audit = AuditSink::new(
                SinkConfig {
                    stream: config.audit_stream.clone(),
                    consumer: config.audit_consumer.clone(),
                    schema: config.schema.clone(),
                    dead_letters: config.dead_letters.clone(),
                    ..SinkConfig::default()
                },
                config.redis.clone(),
                pg,
            )?;
            sink_counters = Some(audit.counters());
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = handle.spawn(async move {
                let stats = audit.run(stop_rx, log_sink_event).await?;
                Ok(stats)
            });
            sink = Some((stop_tx, task));
        }
        Ok(Persistence {
            wb,
            flusher,
            audit_tx,
            pusher,
            sink,
            sink_counters,
            queue: AuditQueue::new(config.audit_stream.clone()),
            con,
            handle: handle.clone(),
            rows_sent: AtomicU64::new(0),
            rows_pushed,
        })
    }

    /// Takes one effect: its Redis changes and, with a database, its audit
    /// row. Call from a plain thread (it may block on a full audit buffer).
    pub fn record(&self, effect: &Effect) -> Result<(), PersistError> {
        self.wb.record(effect);
        if let Some(tx) = &self.audit_tx
            && let Some(row) = AuditRow::from_effect(effect)
        {
            tx.blocking_send(QueueRow::Audit(row))
                .map_err(|_| PersistError::Pusher("it is no longer running".to_owned()))?;
            self.rows_sent.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    /// Pushes the audit rows of `effects` onto the audit stream, retried
    /// while Redis is away, and returns once they are there. Without a
    /// database there are none. See the service's `Keeper` for why a
    /// batch's rows go before its state.
    pub async fn push_audit(&self, effects: &[Effect]) {
        if self.audit_tx.is_none() {
            return;
        }
        let mut rows: Vec<QueueRow> = effects
            .iter()
            .filter_map(AuditRow::from_effect)
            .map(QueueRow::Audit)
            .collect();
        if !rows.is_empty() {
            push_until_done(&self.queue, &mut self.con.clone(), &mut rows, || {}).await;
        }
    }

    /// Takes the state changes of `effects` into the write-behind, waiting
    /// for room in it: a change is never dropped, so input acknowledged
    /// once [`Persistence::settled`] says so is input whose state is kept.
    pub async fn record_state(&self, effects: &[Effect]) {
        self.wb.keep(effects).await;
    }

    /// Whether everything recorded so far is durable: every Redis change
    /// written and every audit row on the stream. Read a position before
    /// asking: if this says yes, everything recorded up to it is durable.
    pub fn settled(&self) -> bool {
        self.rows_pushed.load(Ordering::Acquire) >= self.rows_sent.load(Ordering::Acquire)
            && self.wb.stats().pending == 0
    }

    /// Takes a call event, which is state (the calls table) whether or not
    /// it alerted anyone; waits for room like [`Persistence::record_state`].
    pub async fn record_call(
        &self,
        token: engine::token::Token,
        channel_id: i64,
        at: engine::time::Nanos,
        fdv_usd: f64,
    ) {
        self.wb.keep_call(token, channel_id, at, fdv_usd).await;
    }

    /// The write-behind, for its counters.
    pub fn write_behind(&self) -> &WriteBehind {
        &self.wb
    }

    /// The audit sink's counters, when there is a database.
    pub fn audit_counters(&self) -> Option<Arc<SinkCounters>> {
        self.sink_counters.clone()
    }

    /// Writes everything held, pushes every audit row, lets the sink land
    /// them, and stops; waits at most `deadline` for each stage. Call from a
    /// plain thread; [`Persistence::shutdown`] is the same from a task.
    pub fn close(self, deadline: Duration) -> Result<PersistStats, PersistError> {
        let handle = self.handle.clone();
        handle.block_on(self.shutdown(deadline))
    }

    /// [`Persistence::close`], awaited.
    pub async fn shutdown(self, deadline: Duration) -> Result<PersistStats, PersistError> {
        let Persistence {
            flusher,
            audit_tx,
            pusher,
            sink,
            queue,
            mut con,
            ..
        } = self;
        drop(audit_tx);
        let write_behind = flusher.close(deadline).await?;
        let mut stats = PersistStats {
            write_behind,
            ..PersistStats::default()
        };
        if let Some(pusher) = pusher {
            stats.audit_pushed = within(deadline, "audit rows still unpushed", pusher).await??;
        }
        if let Some((stop, task)) = sink {
            // Everything is on the stream: let the sink drain it (the sink
            // deletes what it lands), then stop it.
            let drained = tokio::time::timeout(deadline, async {
                while queue.len(&mut con).await? > 0 && !task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<_, PersistError>(())
            })
            .await;
            match drained {
                Ok(result) => result?,
                Err(_) => tracing::warn!(
                    "audit rows still on the stream at the deadline; they land on the next start"
                ),
            }
            let _ = stop.send(true);
            stats.audit = Some(within(deadline, "the audit sink did not finish", task).await??);
        }
        Ok(stats)
    }
}

/// A task's result within `deadline`, or an error that says `what`.
async fn within<T>(
    deadline: Duration,
    what: &str,
    task: tokio::task::JoinHandle<T>,
) -> Result<T, PersistError> {
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PersistError::Pusher(e.to_string())),
        Err(_) => Err(PersistError::Pusher(format!("{what} by the deadline"))),
    }
}

fn log_sink_event(event: SinkEvent) {
    match event {
        SinkEvent::Malformed { id, reason } => {
            tracing::error!(%id, %reason, "malformed audit entry acknowledged without a row");
        }
        SinkEvent::SetAside { id, reason } => {
            tracing::error!(%id, %reason, "audit row PostgreSQL refuses set aside in the dead-letter stream");
        }
        SinkEvent::PostgresRetry {
            error,
            lasting: true,
            attempt,
            backoff,
        } => {
            tracing::error!(%error, attempt, ?backoff, "audit sink: PostgreSQL refuses every batch until an operator acts; retrying")
        }
        SinkEvent::PostgresRetry {
            error,
            lasting: false,
            attempt,
            backoff,
        } => tracing::warn!(%error, attempt, ?backoff, "audit sink: PostgreSQL failed, retrying"),
        SinkEvent::RedisRetry {
            error,
            attempt,
            backoff,
        } => tracing::warn!(%error, attempt, ?backoff, "audit sink: Redis failed, retrying"),
    }
}

/// Pushes `rows` in one pipeline, retried (with backoff) until it succeeds.
/// A row the stream cannot carry (a non-finite number) would be refused
/// forever: it is reported, taken out of `rows`, and `dropped` is called.
async fn push_until_done(
    queue: &AuditQueue,
    con: &mut callwatch_streams::Conn,
    rows: &mut Vec<QueueRow>,
    mut dropped: impl FnMut(),
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match queue.push_batch(con, rows).await {
            Ok(()) => return,
            Err(AuditError::Invalid { index, reason }) => {
                tracing::error!(%reason, "audit row dropped: it cannot be encoded");
                rows.remove(index);
                dropped();
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, ?wait, "pushing audit rows failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Pushes audit rows in pipelines until the channel closes; a failed push
/// is retried (with backoff) until it succeeds, so no row is dropped.
async fn push_loop(
    queue: AuditQueue,
    mut rx: mpsc::Receiver<QueueRow>,
    mut con: callwatch_streams::Conn,
    pushed_count: Arc<AtomicU64>,
) -> Result<u64, PersistError> {
    let mut pushed = 0u64;
    let mut rows = Vec::with_capacity(PUSH_BATCH);
    loop {
        if rx.recv_many(&mut rows, PUSH_BATCH).await == 0 {
            return Ok(pushed);
        }
        // Handled, if not pushed: `settled` must not wait for it.
        push_until_done(&queue, &mut con, &mut rows, || {
            pushed_count.fetch_add(1, Ordering::Release);
        })
        .await;
        pushed += rows.len() as u64;
        pushed_count.fetch_add(rows.len() as u64, Ordering::Release);
        rows.clear();
    }
}
