//! Audit and activity rows, durably: producers append them to a Redis
//! stream ([`AuditQueue`]); one [`AuditSink`] per stream reads them through
//! a consumer group and inserts them into PostgreSQL in batches,
//! acknowledging entries only after their batch has committed.
//!
//! Delivery is at least once from the stream and exactly once in the
//! tables: an entry whose batch committed but whose acknowledgement was
//! lost (a crash, a dropped connection) is delivered again, and lands on
//! its natural key with `ON CONFLICT DO NOTHING`:
//! - `alert_audit`: (chat_id, token, kind, threshold, alert_at). Times are
//!   stored to the microsecond, PostgreSQL's precision, so two alerts that
//!   differ only below a microsecond are one row.
//! - `activity_log`: `event_id`, the id of the stream entry that carried
//!   the row. Pushing the same activity twice makes two entries and so two
//!   rows; pushing an alert twice makes one row.
//!
//! A batch goes in one transaction, then `XACK` and `XDEL` together
//! (`MULTI`), so the stream only holds what has not landed yet. Alert rows
//! are first COPYed (binary) straight into the table under a savepoint; if
//! any is already there the COPY fails whole, is rolled back, and the rows
//! go through a staging table and `INSERT … SELECT … ON CONFLICT DO
//! NOTHING` (activity rows always do). While one batch commits, the one
//! before is acknowledged and the next is read and decoded.
//!
//! Several sinks may share a group, each under a consumer name of its own
//! that stays the same across restarts (an entry stays pending for the
//! consumer that read it until that name reads again).
//!
//! Failures:
//! - PostgreSQL down or failing: the batch is kept, the connection dropped
//!   and made again with exponential backoff (explicit connect and batch
//!   timeouts), for as long as it takes. Each attempt is reported as a
//!   [`SinkEvent`]; nothing is acknowledged meanwhile.
//! - Redis connection lost: the sink reconnects with backoff and reads its
//!   own pending entries again from the start. Other Redis errors (a key of
//!   the wrong type) end [`AuditSink::run`] with the error.
//! - A malformed entry (not one field, not a row this module wrote) is the
//!   one case of an entry acknowledged without a row: it is counted,
//!   reported as [`SinkEvent::Malformed`] with its id and reason, and
//!   acknowledged with its batch, so it cannot wedge the queue.
//!
//! Bounds: a batch is at most [`SinkConfig::batch_rows`] entries and the sink
//! holds at most three (committing, acknowledging, read). The stream is bounded by the producer's
//! [`AuditQueue::with_max_entries`]: a push onto a stream that already holds
//! that many entries (PostgreSQL down or behind) is refused with
//! [`AuditError::QueueFull`], never trimmed, since trimming would lose rows.
//! The sink deletes what it acknowledges, so the stream must belong to this
//! one group alone.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::effect::Effect;
use engine::time::Nanos;
use redis::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Transaction};

use crate::clock::system_time;

/// What an alert audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    CallAlert,
    MultiplierAlert,
}

impl AlertKind {
    /// The value of the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::CallAlert => "call_alert",
            AlertKind::MultiplierAlert => "multiplier_alert",
        }
    }
}

/// One row of `alert_audit`, as queued. The Telegram columns are filled
/// later, when the alert is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub chat_id: i64,
    /// The token's address.
    pub token: String,
    pub kind: AlertKind,
    /// The multiple reached; 0 for call alerts.
    pub threshold: f64,
    pub alert_at: Nanos,
    pub fdv_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdv_at_call: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// The channels that called the token (call alerts); stored as NULL
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<i64>,
}

impl AuditRow {
    /// The audit row of an alert; `None` for effects that are not alerts.
    /// A multiple too large for an f64 is stored as the largest finite one,
    /// as the alert's JSON prints it (JSON has no infinity).
    pub fn from_effect(effect: &Effect) -> Option<AuditRow> {
        fn finite(v: f64) -> f64 {
            if v.is_finite() {
                v
            } else {
                f64::MAX.copysign(v)
            }
        }
        match effect {
            Effect::CallAlert(a) => Some(AuditRow {
                chat_id: a.chat_id,
                token: a.token.to_string(),
                kind: AlertKind::CallAlert,
                threshold: 0.0,
                alert_at: a.at,
                fdv_usd: finite(a.fdv_usd),
                fdv_at_call: None,
                multiplier: None,
                callers: a.callers.clone(),
            }),
            Effect::MultiplierAlert(a) => Some(AuditRow {
                chat_id: a.chat_id,
                token: a.token.to_string(),
                kind: AlertKind::MultiplierAlert,
                threshold: a.threshold,
                alert_at: a.at,
                fdv_usd: finite(a.fdv_usd),
                fdv_at_call: Some(finite(a.fdv_at_call)),
                multiplier: Some(finite(a.multiplier)),
                callers: Vec::new(),
            }),
            // State-only effects (progress), and any the engine adds later
            // that are not alerts.
            _ => None,
        }
    }

    fn check(&self) -> Result<(), String> {
        let floats = [Some(self.threshold), Some(self.fdv_usd)]
            .into_iter()
            .chain([self.fdv_at_call, self.multiplier]);
        if floats.flatten().all(f64::is_finite) {
            Ok(())
        } else {
            Err("a number is not finite (JSON cannot carry it)".to_owned())
        }
    }
}

/// What a user did, as pushed; the queue gives it its `event_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub chat_id: i64,
    pub activity_type: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub created_at: Nanos,
}

/// One row of `activity_log`: an activity and the id of the stream entry
/// that carried it, its natural key.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    pub event_id: String,
    pub activity: Activity,
}

/// One queued row.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueRow {
    Audit(AuditRow),
    Activity(Activity),
}

/// The stream field that carries an [`AuditRow`] as JSON.
pub const AUDIT_FIELD: &str = "audit";
/// The stream field that carries an [`Activity`] as JSON.
pub const ACTIVITY_FIELD: &str = "activity";

impl QueueRow {
    /// The entry's one field and its JSON value.
    pub fn encode(&self) -> Result<(&'static str, Vec<u8>), String> {
        let encoded = match self {
            QueueRow::Audit(r) => {
                r.check()?;
                (AUDIT_FIELD, serde_json::to_vec(r))
            }
            QueueRow::Activity(a) => (ACTIVITY_FIELD, serde_json::to_vec(a)),
        };
        match encoded {
            (field, Ok(json)) => Ok((field, json)),
            (_, Err(e)) => Err(e.to_string()),
        }
    }

    /// The row an entry's field and value carry.
    pub fn decode(field: &[u8], value: &[u8]) -> Result<QueueRow, String> {
        let bad = |e: serde_json::Error| format!("value is not a row: {e}");
        match field {
            f if f == AUDIT_FIELD.as_bytes() => {
                let row: AuditRow = serde_json::from_slice(value).map_err(bad)?;
                row.check()?;
                Ok(QueueRow::Audit(row))
            }
            f if f == ACTIVITY_FIELD.as_bytes() => Ok(QueueRow::Activity(
                serde_json::from_slice(value).map_err(bad)?,
            )),
            other => Err(format!(
                "unknown field `{}`",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

/// Why queueing or sinking failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "the audit stream holds {len} entries, at its bound of {max}: \
         PostgreSQL is down or behind; nothing was pushed"
    )]
    QueueFull { len: u64, max: u64 },
    #[error("row {index} cannot be queued: {reason}; nothing was pushed")]
    Invalid { index: usize, reason: String },
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    #[error("invalid sink configuration: {0}")]
    Config(String),
}

/// The producer side: appends rows to one stream.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    stream: String,
    max_entries: u64,
}

impl AuditQueue {
    /// Entries a stream may hold before pushes are refused, by default.
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;

    /// A queue on `stream` (e.g. `{prefix}audit`).
    pub fn new(stream: impl Into<String>) -> AuditQueue {
        AuditQueue {
            stream: stream.into(),
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }

    /// Refuse pushes once the stream holds `max` entries.
    pub fn with_max_entries(mut self, max: u64) -> AuditQueue {
        self.max_entries = max;
        self
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Entries in the stream: pushed and not yet landed.
    pub async fn len(&self, con: &mut impl ConnectionLike) -> Result<u64, AuditError> {
        Ok(redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(con)
            .await?)
    }

    /// Appends `rows`, one entry each, in one pipeline. Every row is
    /// encoded before anything is sent, so an unencodable row pushes
    /// nothing. A push that fails on the connection may have appended some
    /// rows: pushing them again lands each alert once, but each activity
    /// again.
    pub async fn push_batch(
        &self,
        con: &mut impl ConnectionLike,
        rows: &[QueueRow],
    ) -> Result<(), AuditError> {
        let mut pipe = redis::pipe();
        for (index, row) in rows.iter().enumerate() {
            let (field, json) = row
                .encode()
                .map_err(|reason| AuditError::Invalid { index, reason })?;
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg(field)
                .arg(json)
                .ignore();
        }
        let len = self.len(con).await?;
        if len >= self.max_entries {
            return Err(AuditError::QueueFull {
                len,
                max: self.max_entries,
            });
        }
        let () = pipe.query_async(con).await?;
        Ok(())
    }
}

/// How a sink reads and writes. Checked by [`AuditSink::new`].
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The stream to drain. Required.
    pub stream: String,
    /// The consumer group (created at the stream's start if missing).
    /// Default `callwatch-audit`.
    pub group: String,
    /// This consumer's name in the group. A sink restarted under the same
    /// name first lands what it had read but not acknowledged. Default
    /// `sink-1`.
    pub consumer: String,
    /// The PostgreSQL schema holding the tables (see `migrate`). Default
    /// `callwatch`.
    pub schema: String,
    /// Entries per batch, 1 to 100,000. Default 5,000.
    pub batch_rows: usize,
    /// How long a read waits for new entries before the sink looks at its
    /// stop signal again. Default 200 ms.
    pub block: Duration,
    /// Limit on making a PostgreSQL or Redis connection, and on Redis's
    /// answers (beyond `block`). Default 5 s.
    pub connect_timeout: Duration,
    /// Limit on one batch's transaction; past it the connection is dropped
    /// and the batch retried. Default 60 s.
    pub batch_timeout: Duration,
    /// First wait before a retry; doubled each failure. Default 100 ms.
    pub backoff_min: Duration,
    /// Longest wait between retries. Default 5 s.
    pub backoff_max: Duration,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            stream: String::new(),
            group: "callwatch-audit".to_owned(),
            consumer: "sink-1".to_owned(),
            schema: "callwatch".to_owned(),
            batch_rows: 5_000,
            block: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            batch_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl SinkConfig {
    fn check(&self) -> Result<(), AuditError> {
        let fail = |m: &str| Err(AuditError::Config(m.to_owned()));
        if self.stream.is_empty() || self.group.is_empty() || self.consumer.is_empty() {
            return fail("stream, group and consumer must be named");
        }
        if !(1..=100_000).contains(&self.batch_rows) {
            return fail("batch_rows must be between 1 and 100,000");
        }
        if self.block.is_zero() || self.block > Duration::from_secs(60) {
            return fail("block must be between 1 ms and 60 s");
        }
        if self.connect_timeout.is_zero() || self.batch_timeout.is_zero() {
            return fail("timeouts must be positive");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return fail("backoff_min must be positive and at most backoff_max");
        }
        Ok(())
    }
}

/// Something the sink tells its caller about while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkEvent {
    /// An entry that is not a row; acknowledged and deleted without one.
    Malformed { id: String, reason: String },
    /// PostgreSQL failed; the batch is kept and tried again after `backoff`.
    PostgresRetry {
        error: String,
        attempt: u32,
        backoff: Duration,
    },
    /// The Redis connection failed; the sink reconnects after `backoff` and
    /// reads its pending entries again.
    RedisRetry {
        error: String,
        attempt: u32,
        backoff: Duration,
    },
}

/// Live counters, readable from other tasks while the sink runs.
#[derive(Debug, Default)]
pub struct SinkCounters {
    rows_committed: AtomicU64,
    rows_inserted: AtomicU64,
    batches: AtomicU64,
    postgres_retries: AtomicU64,
    redis_retries: AtomicU64,
    malformed: AtomicU64,
}

/// A reading of [`SinkCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Rows in committed batches, new or already present.
    pub rows_committed: u64,
    /// Rows those batches inserted.
    pub rows_inserted: u64,
    /// Rows already present (delivered again, or pushed twice):
    /// `rows_committed - rows_inserted`.
    pub duplicates: u64,
    /// Committed batches.
    pub batches: u64,
    pub postgres_retries: u64,
    pub redis_retries: u64,
    /// Entries acknowledged without a row.
    pub malformed: u64,
    /// Entries read but not landed when the sink stopped (PostgreSQL was
    /// down); they stay pending and are delivered again on restart.
    pub left_pending: u64,
}

impl SinkCounters {
    pub fn stats(&self) -> SinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (rows, inserted) = (get(&self.rows_committed), get(&self.rows_inserted));
        SinkStats {
            rows_committed: rows,
            rows_inserted: inserted,
            duplicates: rows - inserted,
            batches: get(&self.batches),
            postgres_retries: get(&self.postgres_retries),
            redis_retries: get(&self.redis_retries),
            malformed: get(&self.malformed),
            left_pending: 0,
        }
    }
}

/// Entries read together: the rows they carry and every id to acknowledge,
/// malformed ones included.
#[derive(Debug, Default)]
struct Batch {
    ids: Vec<String>,
    audit: Vec<AuditRow>,
    activity: Vec<ActivityRow>,
    malformed: Vec<SinkEvent>,
}

impl Batch {
    fn rows(&self) -> u64 {
        (self.audit.len() + self.activity.len()) as u64
    }
}

/// Where the next read starts: this consumer's pending entries after the
/// given id, or new entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    Pending(String),
    New,
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(config: &SinkConfig) -> Backoff {
        Backoff {
            next: config.backoff_min,
            min: config.backoff_min,
            max: config.backoff_max,
            attempt: 0,
        }
    }

    fn step(&mut self) -> (u32, Duration) {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempt += 1;
        (self.attempt, wait)
    }

    fn reset(&mut self) {
        self.next = self.min;
        self.attempt = 0;
    }
}

/// Sleeps `wait`, or less if stop is signalled; true if stop was signalled.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => *stop.borrow(),
        // A dropped sender counts as a stop.
        _ = stop.changed() => true,
    }
}

/// Errors that a new connection may cure.
fn transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("NOGROUP" | "LOADING" | "TRYAGAIN" | "MASTERDOWN")
        )
}

const AUDIT_COLUMNS: &str =
    "chat_id, token, kind, threshold, alert_at, fdv_usd, fdv_at_call, multiplier, callers";
const AUDIT_TYPES: &[Type] = &[
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8_ARRAY,
];
const ACTIVITY_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
];
/// Per-connection staging tables, emptied by every commit.
const STAGING_SQL: &str = "
    CREATE TEMP TABLE audit_in (
        chat_id bigint, token text, kind text, threshold float8, alert_at timestamptz,
        fdv_usd float8, fdv_at_call float8, multiplier float8, callers bigint[]
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE activity_in (
        event_id text, chat_id bigint, activity_type text, metadata text, created_at timestamptz
    ) ON COMMIT DELETE ROWS;";

/// The PostgreSQL side of the sink: one connection, made again after any
/// failure.
struct Postgres {
    config: tokio_postgres::Config,
    schema: String,
    connect_timeout: Duration,
    batch_timeout: Duration,
    client: Option<Client>,
    /// The last batch held rows already present (it was delivered again),
    /// so the next, likely delivered again too, skips the direct COPY.
    staging_next: bool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("schema", &self.schema)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// One try at a PostgreSQL step, with its limit.
async fn limited<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

impl Postgres {
    async fn connect(&self) -> Result<Client, String> {
        let (client, conn) =
            limited(self.connect_timeout, "connect", self.config.connect(NoTls)).await?;
        // The connection's own error reaches us through the client's calls.
        tokio::spawn(conn);
        limited(self.connect_timeout, "staging tables", async {
            client.batch_execute(STAGING_SQL).await?;
            client
                .execute(
                    "SELECT set_config('search_path', quote_ident($1), false)",
                    &[&self.schema],
                )
                .await
        })
        .await?;
        Ok(client)
    }

    /// One attempt at the batch: its rows inserted, or why not. The
    /// connection is dropped on failure.
    async fn try_commit(&mut self, batch: &Batch) -> Result<u64, String> {
        if batch.rows() == 0 {
            return Ok(0);
        }
        if self.client.is_none() {
            self.client = Some(self.connect().await?);
        }
        let client = self.client.as_mut().expect("connected above");
        let direct = !self.staging_next;
        let result = limited(self.batch_timeout, "batch", insert(client, batch, direct)).await;
        match &result {
            Ok(inserted) => self.staging_next = *inserted < batch.rows(),
            Err(_) => {
                // Perhaps committed without our hearing of it: delivered again.
                self.staging_next = true;
                self.client = None;
            }
        }
        result
    }
}

/// Copies audit rows into `table` (binary COPY); returns the rows copied.
async fn copy_audit(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[AuditRow],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({AUDIT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, AUDIT_TYPES));
    for r in rows {
        let callers = (!r.callers.is_empty()).then_some(r.callers.as_slice());
        writer
            .as_mut()
            .write(&[
                &r.chat_id,
                &r.token,
                &r.kind.as_str(),
                &r.threshold,
                &system_time(r.alert_at),
                &r.fdv_usd,
                &r.fdv_at_call,
                &r.multiplier,
                &callers as &(dyn ToSql + Sync),
            ])
            .await?;
    }
    writer.finish().await
}

/// The batch's transaction; returns the rows it inserted.
///
/// With `direct`, audit rows are first copied straight into `alert_audit`
/// under a savepoint: a batch delivered for the first time has no row
/// there yet, and this skips the staging table and the conflict probe
/// (about 1.5 times as fast). If any row is already there, the COPY fails
/// whole and is rolled back to the savepoint. Then, or without `direct`,
/// the rows go through the staging table and `ON CONFLICT DO NOTHING`.
async fn insert(
    client: &mut Client,
    batch: &Batch,
    direct: bool,
) -> Result<u64, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let mut inserted = 0;
    let mut staged = !batch.audit.is_empty();
    if staged && direct {
        let savepoint = tx.savepoint("direct").await?;
        match copy_audit(&savepoint, "alert_audit", &batch.audit).await {
            Ok(n) => {
                savepoint.commit().await?;
                inserted += n;
                staged = false;
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                savepoint.rollback().await?;
            }
            Err(e) => return Err(e),
        }
    }
    if staged {
        copy_audit(&tx, "audit_in", &batch.audit).await?;
        inserted += tx
            .execute(
                &format!(
                    "INSERT INTO alert_audit ({AUDIT_COLUMNS}) SELECT {AUDIT_COLUMNS} \
                     FROM audit_in ON CONFLICT DO NOTHING"
                ),
                &[],
            )
            .await?;
    }
    if !batch.activity.is_empty() {
        let sink = tx
            .copy_in("COPY activity_in FROM STDIN (FORMAT binary)")
            .await?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, ACTIVITY_TYPES));
        for r in &batch.activity {
            let a = &r.activity;
            let metadata = (!a.metadata.is_null()).then(|| a.metadata.to_string());
            writer
                .as_mut()
                .write(&[
                    &r.event_id,
                    &a.chat_id,
                    &a.activity_type,
                    &metadata,
                    &system_time(a.created_at) as &(dyn ToSql + Sync),
                ])
                .await?;
        }
        writer.finish().await?;
        inserted += tx
            .execute(
                "INSERT INTO activity_log (event_id, chat_id, activity_type, metadata, created_at) \
                 SELECT event_id, chat_id, activity_type, metadata::jsonb, created_at \
                 FROM activity_in ON CONFLICT DO NOTHING",
                &[],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The Redis side of the sink.
#[derive(Debug)]
struct Stream {
    client: redis::Client,
    config: SinkConfig,
    con: Option<MultiplexedConnection>,
}

impl Stream {
    /// A connection, with the group in place.
    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, redis::RedisError> {
        if self.con.is_none() {
            let c = &self.config;
            let limits = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(c.connect_timeout))
                .set_response_timeout(Some(c.block + c.connect_timeout));
            let mut con = self
                .client
                .get_multiplexed_async_connection_with_config(&limits)
                .await?;
            // From the stream's start: entries pushed before the group
            // existed are rows too.
            let created: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&c.stream)
                .arg(&c.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
                _ => {}
            }
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("connected above"))
    }

    /// Up to a batch of entries; `wait`: block for new ones.
    async fn read(&mut self, cursor: &Cursor, wait: bool) -> Result<Value, redis::RedisError> {
        let c = self.config.clone();
        let con = self.connection().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&c.group)
            .arg(&c.consumer)
            .arg("COUNT")
            .arg(c.batch_rows);
        let id = match cursor {
            Cursor::Pending(after) => after.as_str(),
            Cursor::New => {
                if wait {
                    cmd.arg("BLOCK").arg(c.block.as_millis() as u64);
                }
                ">"
            }
        };
        cmd.arg("STREAMS").arg(&c.stream).arg(id);
        cmd.query_async(con).await
    }

    /// Acknowledges and deletes, both or neither.
    async fn ack(&mut self, ids: &[String]) -> Result<(), redis::RedisError> {
        let (stream, group) = (self.config.stream.clone(), self.config.group.clone());
        let con = self.connection().await?;
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&stream)
            .arg(&group)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(ids)
            .ignore()
            .query_async(con)
            .await
    }
}

fn text(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Sorts an XREADGROUP reply into `batch`; returns the last id read.
fn absorb(reply: Value, batch: &mut Batch) -> Result<Option<String>, AuditError> {
    let unexpected = |what: &str| AuditError::Reply(what.to_owned());
    let streams: Vec<Value> = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop().expect("two items"),
                _ => Value::Nil,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return Err(unexpected("XREADGROUP answered neither nil nor streams")),
    };
    let mut last = None;
    for entries in streams {
        let Value::Array(entries) = entries else {
            return Err(unexpected("a stream's entries are not an array"));
        };
        for entry in entries {
            let Value::Array(parts) = entry else {
                return Err(unexpected("an entry is not an array"));
            };
            let mut parts = parts.into_iter();
            let id = parts
                .next()
                .and_then(text)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| unexpected("an entry has no id"))?;
            let decoded = match parts.next() {
                Some(Value::Array(fields)) if fields.len() == 2 => {
                    let mut fields = fields.into_iter().map(text);
                    match (fields.next().flatten(), fields.next().flatten()) {
                        (Some(f), Some(v)) => QueueRow::decode(&f, &v),
                        _ => Err("field or value is not a string".to_owned()),
                    }
                }
                Some(Value::Array(fields)) => {
                    Err(format!("{} items, not one field and value", fields.len()))
                }
                _ => Err("no fields (deleted while pending?)".to_owned()),
            };
            match decoded {
                Ok(QueueRow::Audit(r)) => batch.audit.push(r),
                Ok(QueueRow::Activity(activity)) => batch.activity.push(ActivityRow {
                    event_id: id.clone(),
                    activity,
                }),
                Err(reason) => batch.malformed.push(SinkEvent::Malformed {
                    id: id.clone(),
                    reason,
                }),
            }
            batch.ids.push(id.clone());
            last = Some(id);
        }
    }
    Ok(last)
}

/// The consumer side: drains one stream into PostgreSQL.
#[derive(Debug)]
pub struct AuditSink {
    stream: Stream,
    postgres: Postgres,
    counters: Arc<SinkCounters>,
}

impl AuditSink {
    /// A sink reading with `redis` and writing with `postgres` (for
    /// example `"host=… dbname=…".parse()?`). Connects lazily, in
    /// [`AuditSink::run`].
    pub fn new(
        config: SinkConfig,
        redis: redis::Client,
        mut postgres: tokio_postgres::Config,
    ) -> Result<AuditSink, AuditError> {
        config.check()?;
        if postgres.get_connect_timeout().is_none() {
            postgres.connect_timeout(config.connect_timeout);
        }
        Ok(AuditSink {
            postgres: Postgres {
                config: postgres,
                schema: config.schema.clone(),
                connect_timeout: config.connect_timeout,
                batch_timeout: config.batch_timeout,
                client: None,
                staging_next: false,
            },
            stream: Stream {
                client: redis,
                config,
                con: None,
            },
            counters: Arc::default(),
        })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<SinkCounters> {
        self.counters.clone()
    }

    /// Runs until `stop` turns true (or its sender is dropped): first this
    /// consumer's pending entries, then new ones. On stop it lands the
    /// batches it has read and returns; if PostgreSQL is down then, they
    /// stay pending (counted in `left_pending`) for the next run.
    ///
    /// Three batches move at once: while one commits, the one committed
    /// before is acknowledged and the next is read and decoded, so
    /// PostgreSQL waits for neither Redis nor decoding.
    pub async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        mut on_event: impl FnMut(SinkEvent),
    ) -> Result<SinkStats, AuditError> {
        let mut cursor = Cursor::Pending("0".to_owned());
        let mut backoff = Backoff::new(&self.stream.config);
        let mut in_hand: Option<Batch> = None;
        let mut to_ack: Option<Vec<String>> = None;
        loop {
            let stopping = *stop.borrow();
            if in_hand.is_none() && to_ack.is_none() && stopping {
                return Ok(self.counters.stats());
            }
            let (stream, postgres) = (&mut self.stream, &mut self.postgres);
            let commit = async {
                match &in_hand {
                    Some(batch) => Some(postgres.try_commit(batch).await),
                    None => None,
                }
            };
            // Wait for new entries only when there is nothing to commit.
            let wait = in_hand.is_none();
            let redis = async {
                if let Some(ids) = &to_ack
                    && let Err(e) = stream.ack(ids).await
                {
                    return (Err(e), None);
                }
                if stopping {
                    return (Ok(()), None);
                }
                let next = match stream.read(&cursor, wait).await {
                    Ok(reply) => Ok(sort(reply, &mut cursor)),
                    Err(e) => Err(e),
                };
                (Ok(()), Some(next))
            };
            let (committed, (acked, next)) = tokio::join!(commit, redis);
            let mut reconnected = false;

            // The batch in hand: committed, or retried until it is.
            if let Some(mut committed) = committed {
                let batch = in_hand.take().expect("a commit means a batch");
                let mut pg_backoff = Backoff::new(&self.stream.config);
                while let Err(error) = committed {
                    let (attempt, wait) = pg_backoff.step();
                    self.counters
                        .postgres_retries
                        .fetch_add(1, Ordering::Relaxed);
                    on_event(SinkEvent::PostgresRetry {
                        error,
                        attempt,
                        backoff: wait,
                    });
                    if sleep_or_stop(wait, &mut stop).await {
                        let read = match &next {
                            Some(Ok(Ok(b))) => b.ids.len(),
                            _ => 0,
                        };
                        let mut stats = self.counters.stats();
                        stats.left_pending = (batch.ids.len() + read) as u64;
                        return Ok(stats);
                    }
                    committed = self.postgres.try_commit(&batch).await;
                }
                let inserted = committed.expect("the loop ends on success");
                let c = &self.counters;
                c.rows_committed.fetch_add(batch.rows(), Ordering::Relaxed);
                c.rows_inserted.fetch_add(inserted, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.malformed
                    .fetch_add(batch.malformed.len() as u64, Ordering::Relaxed);
                // Acknowledged alongside the next commit.
                let Batch { ids, .. } = batch;
                if let Err(e) = acked {
                    reconnected = true;
                    if !self
                        .ack_until_done(e, &to_ack, &mut backoff, &mut stop, &mut on_event)
                        .await?
                    {
                        return Ok(self.counters.stats());
                    }
                }
                to_ack = Some(ids);
            } else {
                match acked {
                    Ok(()) => to_ack = None,
                    Err(e) => {
                        reconnected = true;
                        if !self
                            .ack_until_done(e, &to_ack, &mut backoff, &mut stop, &mut on_event)
                            .await?
                        {
                            return Ok(self.counters.stats());
                        }
                        to_ack = None;
                    }
                }
            }
            match next {
                Some(Ok(batch)) if !reconnected => {
                    let batch = batch?;
                    for event in &batch.malformed {
                        on_event(event.clone());
                    }
                    backoff.reset();
                    in_hand = Some(batch).filter(|b| !b.ids.is_empty());
                }
                Some(Err(e)) => {
                    if !self
                        .redis_failed(e, &mut backoff, &mut stop, &mut on_event)
                        .await?
                    {
                        return Ok(self.counters.stats());
                    }
                    reconnected = true;
                }
                // Stopping; or read on a connection since replaced, whose
                // entries are read again from the pending list.
                _ => {}
            }
            if reconnected {
                cursor = Cursor::Pending("0".to_owned());
            }
        }
    }

    /// Acknowledges `ids` after a failed try, reconnecting as often as it
    /// takes: they are committed, and an entry delivered again after a lost
    /// ack lands once. False if stop came first (they will be delivered
    /// again, and land as duplicates).
    async fn ack_until_done(
        &mut self,
        mut error: redis::RedisError,
        ids: &Option<Vec<String>>,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        let Some(ids) = ids else { return Ok(true) };
        loop {
            if !self.redis_failed(error, backoff, stop, on_event).await? {
                return Ok(false);
            }
            match self.stream.ack(ids).await {
                Ok(()) => return Ok(true),
                Err(e) => error = e,
            }
        }
    }

    /// Handles a Redis error: a lasting one is returned; for a transient
    /// one, the connection is dropped and the caller is told whether to go
    /// on (false: stop was signalled while waiting).
    async fn redis_failed(
        &mut self,
        e: redis::RedisError,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        if !transient(&e) {
            return Err(e.into());
        }
        self.stream.con = None;
        let (attempt, wait) = backoff.step();
        self.counters.redis_retries.fetch_add(1, Ordering::Relaxed);
        on_event(SinkEvent::RedisRetry {
            error: e.to_string(),
            attempt,
            backoff: wait,
        });
        Ok(!sleep_or_stop(wait, stop).await)
    }
}

/// The batch a reply carries, moving the cursor on. A pending read that
/// finds nothing more switches to new entries.
fn sort(reply: Value, cursor: &mut Cursor) -> Result<Batch, AuditError> {
    let mut batch = Batch::default();
    let last = absorb(reply, &mut batch)?;
    if let Cursor::Pending(after) = cursor {
        match last {
            Some(id) => *after = id,
            None => *cursor = Cursor::New,
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::effect::{CallAlert, MultiplierAlert, Progress};
    use engine::token::Token;

    fn audit() -> AuditRow {
        AuditRow {
            chat_id: -1001,
            token: "So11111111111111111111111111111111111111112".to_owned(),
            kind: AlertKind::MultiplierAlert,
            threshold: 2.5,
            alert_at: 1_795_000_000_123_456_789,
            fdv_usd: 1_562_500.0,
            fdv_at_call: Some(625_000.0),
            multiplier: Some(2.5),
            callers: Vec::new(),
        }
    }

    #[test]
    fn rows_round_trip_through_their_encoding() {
        let call = AuditRow {
            kind: AlertKind::CallAlert,
            threshold: 0.0,
            fdv_at_call: None,
            multiplier: None,
            callers: vec![-1002, -1001, 7],
            alert_at: -5,
            ..audit()
        };
        let activity = Activity {
            chat_id: 42,
            activity_type: "settings".to_owned(),
            metadata: serde_json::json!({"min_fdv_usd": 10_000, "note": "é\"\n"}),
            created_at: 1_795_000_000_000_000_000,
        };
        let bare = Activity {
            metadata: serde_json::Value::Null,
            ..activity.clone()
        };
        for row in [
            QueueRow::Audit(audit()),
            QueueRow::Audit(call),
            QueueRow::Activity(activity),
            QueueRow::Activity(bare),
        ] {
            let (field, json) = row.encode().unwrap();
            assert_eq!(QueueRow::decode(field.as_bytes(), &json).unwrap(), row);
        }
    }

    #[test]
    fn encoding_leaves_out_empty_fields() {
        let (_, json) = QueueRow::Audit(audit()).encode().unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(!json.contains("callers"), "{json}");
        let call = AuditRow {
            fdv_at_call: None,
            multiplier: None,
            ..audit()
        };
        let (_, json) = QueueRow::Audit(call).encode().unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(
            !json.contains("fdv_at_call") && !json.contains("multiplier\""),
            "{json}"
        );
    }

    #[test]
    fn rows_json_cannot_carry_are_refused() {
        let mut row = audit();
        row.multiplier = Some(f64::INFINITY);
        assert!(QueueRow::Audit(row).encode().is_err());
        let nan = br#"{"chat_id":1,"token":"t","kind":"call_alert","threshold":0,"alert_at":0,"fdv_usd":null}"#;
        assert!(QueueRow::decode(b"audit", nan).is_err());
    }

    #[test]
    fn malformed_entries_are_reasons_not_panics() {
        for (field, value) in [
            (&b"audit"[..], &b"{not json"[..]),
            (b"audit", br#"{"chat_id":1}"#),
            (
                b"audit",
                br#"{"chat_id":1,"token":"t","kind":"buy","threshold":0,"alert_at":0,"fdv_usd":1}"#,
            ),
            (b"activity", b"[]"),
            (b"other", b"{}"),
        ] {
            assert!(QueueRow::decode(field, value).is_err());
        }
    }

    #[test]
    fn alerts_become_audit_rows() {
        let token = Token::parse("So11111111111111111111111111111111111111112").unwrap();
        let call = Effect::CallAlert(CallAlert {
            seq: 1,
            chat_id: 5,
            token,
            at: 100,
            fdv_usd: 50_000.0,
            callers: vec![-3, -2],
            channel_id: -2,
        });
        let row = AuditRow::from_effect(&call).unwrap();
        assert_eq!(
            (row.kind, row.threshold, row.callers.as_slice()),
            (AlertKind::CallAlert, 0.0, &[-3, -2][..])
        );
        assert_eq!(row.token, token.to_string());
        let multiple = Effect::MultiplierAlert(MultiplierAlert {
            seq: 2,
            chat_id: 5,
            token,
            at: 200,
            threshold: 10.0,
            multiplier: f64::INFINITY,
            fdv_at_call: 1e-300,
            fdv_usd: 1e10,
            tracking_started: 100,
        });
        let row = AuditRow::from_effect(&multiple).unwrap();
        assert_eq!(row.kind.as_str(), "multiplier_alert");
        assert_eq!(row.multiplier, Some(f64::MAX));
        assert!(QueueRow::Audit(row).encode().is_ok());
        let silent = Effect::Progress(Progress {
            seq: 3,
            chat_id: 5,
            token: Token::parse("So11111111111111111111111111111111111111112").unwrap(),
            threshold: 2.0,
            tracking_started: 100,
        });
        assert_eq!(AuditRow::from_effect(&silent), None);
    }

    #[test]
    fn replies_sort_into_rows_ids_and_malformed_entries() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let (field, json) = QueueRow::Audit(audit()).encode().unwrap();
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk(b"1-0"),
                Value::Array(vec![bulk(field.as_bytes()), bulk(&json)]),
            ]),
            Value::Array(vec![bulk(b"1-1"), Value::Nil]),
            Value::Array(vec![
                bulk(b"2-0"),
                Value::Array(vec![
                    bulk(b"activity"),
                    bulk(br#"{"chat_id":3,"activity_type":"start","created_at":9}"#),
                ]),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![bulk(b"s"), entries])]);
        let mut batch = Batch::default();
        assert_eq!(absorb(reply, &mut batch).unwrap().as_deref(), Some("2-0"));
        assert_eq!(batch.ids, ["1-0", "1-1", "2-0"]);
        assert_eq!(batch.audit, [audit()]);
        assert_eq!(batch.activity[0].event_id, "2-0");
        assert!(matches!(&batch.malformed[..], [SinkEvent::Malformed { id, .. }] if id == "1-1"));
        assert_eq!(absorb(Value::Nil, &mut Batch::default()).unwrap(), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_limit_and_resets() {
        let config = SinkConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            ..SinkConfig::default()
        };
        let mut b = Backoff::new(&config);
        let waits: Vec<u128> = (0..4).map(|_| b.step().1.as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.step(), (1, Duration::from_millis(100)));
    }
}
