//! The consumer side of the audit queue: [`AuditSink`] drains one stream
//! into PostgreSQL through a consumer group, acknowledging and deleting
//! entries only after their batch has committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::keys::dead_letter_key;
use callwatch_streams::Conn;
use callwatch_streams::connection::{RedisEndpoint, RedisTimeouts};
use callwatch_streams::log::{DeadLetter, DeadLetters};
use callwatch_streams::{Consumer, Entry, EntryId, ReadFrom};
use tokio::sync::watch;

use super::poison::{Poison, sift};
use super::postgres::{Failure, Postgres};
use super::{ActivityRow, AuditError, AuditRow, QueueRow};
use crate::classify::ErrorClass;
use crate::server::PgServer;

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
    /// Where rows PostgreSQL refuses for their data are set aside, with
    /// PostgreSQL's reason. Default `events:dead`, trimmed to about
    /// 1,000,000 entries.
    pub dead_letters: DeadLetters,
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
            dead_letters: DeadLetters {
                stream: dead_letter_key(""),
                max_len: 1_000_000,
            },
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
        if self.dead_letters.stream.is_empty() || self.dead_letters.max_len == 0 {
            return fail("the dead-letter stream must be named and hold at least one entry");
        }
        Ok(())
    }
}

/// Something the sink tells its caller about while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkEvent {
    /// An entry that is not a row; acknowledged and deleted without one.
    Malformed { id: String, reason: String },
    /// A row PostgreSQL refuses for its data (`reason`: its answer, with
    /// the SQLSTATE); added to the dead-letter stream, then acknowledged
    /// and deleted, while the rest of its batch landed.
    SetAside { id: String, reason: String },
    /// PostgreSQL failed; the batch is kept and tried again after `backoff`.
    /// `lasting`: the failure is neither the connection's nor the rows'
    /// (a missing table, a denied grant): it lasts until an operator acts.
    PostgresRetry {
        error: String,
        lasting: bool,
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
    set_aside: AtomicU64,
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
    /// Rows PostgreSQL refused for their data, set aside in the
    /// dead-letter stream (and acknowledged): not in `rows_committed`.
    pub set_aside: u64,
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
            set_aside: get(&self.set_aside),
            left_pending: 0,
        }
    }
}

/// Entries read together: the rows they carry and every id to acknowledge,
/// malformed ones included.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) ids: Vec<EntryId>,
    pub(super) audit: Vec<AuditRow>,
    /// The entry of each audit row.
    pub(super) audit_ids: Vec<EntryId>,
    pub(super) activity: Vec<ActivityRow>,
    pub(super) malformed: Vec<SinkEvent>,
}

impl Batch {
    pub(super) fn rows(&self) -> u64 {
        (self.audit.len() + self.activity.len()) as u64
    }

    /// The batch `entries` carry: each a row, or malformed with its reason.
    fn of(entries: Vec<Entry>) -> Batch {
        let mut batch = Batch::default();
        for entry in entries {
            let decoded = entry
                .only_field()
                .and_then(|(field, value)| QueueRow::decode(&field, &value));
            match decoded {
                Ok(QueueRow::Audit(r)) => {
                    batch.audit.push(r);
                    batch.audit_ids.push(entry.id);
                }
                Ok(QueueRow::Activity(activity)) => batch.activity.push(ActivityRow {
                    event_id: entry.id.to_string(),
                    activity,
                }),
                Err(reason) => batch.malformed.push(SinkEvent::Malformed {
                    id: entry.id.to_string(),
                    reason,
                }),
            }
            batch.ids.push(entry.id);
        }
        batch
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

/// The sink's Redis side: one consumer of the stream's group, on a
/// connection made again after any failure.
#[derive(Debug)]
struct Reader {
    redis: RedisEndpoint,
    stream: String,
    consumer: Consumer,
    batch_rows: usize,
    block: Duration,
    connect_timeout: Duration,
    dead_letters: DeadLetters,
    con: Option<Conn>,
}

impl Reader {
    /// A connection, with the group in place.
    async fn connection(&mut self) -> callwatch_streams::Result<&mut Conn> {
        if self.con.is_none() {
            let timeouts = RedisTimeouts {
                connect: self.connect_timeout,
                response: self.block + self.connect_timeout,
                retries: 0,
                ..RedisTimeouts::default()
            };
            let mut con = self.redis.managed(&timeouts)?;
            self.consumer.create_group(&mut con, &self.stream).await?;
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("connected above"))
    }

    /// Up to a batch of entries from `from`; `wait`: block for new ones.
    async fn read(&mut self, from: ReadFrom, wait: bool) -> callwatch_streams::Result<Vec<Entry>> {
        let block = (wait && from == ReadFrom::New).then_some(self.block);
        let (consumer, stream, count) =
            (self.consumer.clone(), self.stream.clone(), self.batch_rows);
        let con = self.connection().await?;
        let streams = consumer.read(con, &[(&stream, from)], count, block).await?;
        Ok(streams
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .collect())
    }

    /// Acknowledges and deletes, both or neither.
    async fn ack(&mut self, ids: &[EntryId]) -> callwatch_streams::Result<()> {
        let (consumer, stream) = (self.consumer.clone(), self.stream.clone());
        let con = self.connection().await?;
        consumer.ack_and_delete(con, &stream, ids).await
    }

    /// Adds `poison` to the dead-letter stream, each row with its entry,
    /// value and reason, in one pipeline.
    async fn dead_letter(&mut self, poison: &[Poison]) -> callwatch_streams::Result<()> {
        let mut pipe = redis::pipe();
        for p in poison {
            self.dead_letters.add_to(
                &mut pipe,
                &DeadLetter {
                    stream: &self.stream,
                    id: p.id,
                    value: Some((p.field, &p.value)),
                    reason: &p.reason,
                },
            );
        }
        let con = self.connection().await?;
        let () = pipe.query_async(con).await?;
        Ok(())
    }
}

/// What one turn of the loop brought: the commit of the batch in hand (if
/// there was one), the acknowledgement of the one before, the next read.
struct Turn {
    committed: Option<Result<u64, Failure>>,
    acked: callwatch_streams::Result<()>,
    next: Option<callwatch_streams::Result<Vec<Entry>>>,
}

/// The consumer side: drains one stream into PostgreSQL.
#[derive(Debug)]
pub struct AuditSink {
    reader: Reader,
    postgres: Postgres,
    counters: Arc<SinkCounters>,
    backoff: (Duration, Duration),
}

impl AuditSink {
    /// A sink reading from `redis` (a URL, or an endpoint with TLS or on a
    /// cluster) and writing with `postgres` (for example `"host=…
    /// dbname=…".parse()?`). Connects lazily, in [`AuditSink::run`].
    pub fn new(
        config: SinkConfig,
        redis: impl Into<RedisEndpoint>,
        mut postgres: PgServer,
    ) -> Result<AuditSink, AuditError> {
        config.check()?;
        if postgres.config().get_connect_timeout().is_none() {
            postgres.set_connect_timeout(config.connect_timeout);
        }
        Ok(AuditSink {
            postgres: Postgres {
                server: postgres,
                schema: config.schema.clone(),
                connect_timeout: config.connect_timeout,
                batch_timeout: config.batch_timeout,
                client: None,
                staging_next: false,
            },
            reader: Reader {
                redis: redis.into(),
                consumer: Consumer::new(config.group, config.consumer),
                stream: config.stream,
                batch_rows: config.batch_rows,
                block: config.block,
                connect_timeout: config.connect_timeout,
                dead_letters: config.dead_letters,
                con: None,
            },
            counters: Arc::default(),
            backoff: (config.backoff_min, config.backoff_max),
        })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<SinkCounters> {
        self.counters.clone()
    }

    fn new_backoff(&self) -> Backoff {
        Backoff::new(self.backoff.0, self.backoff.1)
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
        let mut from = ReadFrom::Pending(EntryId::ZERO);
        let mut backoff = self.new_backoff();
        let mut in_hand: Option<Batch> = None;
        let mut to_ack: Option<Vec<EntryId>> = None;
        loop {
            let stopping = *stop.borrow();
            if in_hand.is_none() && to_ack.is_none() && stopping {
                return Ok(self.counters.stats());
            }
            let turn = self
                .turn(in_hand.as_ref(), to_ack.as_deref(), from, stopping)
                .await;
            let committed = match turn.committed {
                Some(committed) => {
                    let batch = in_hand.take().expect("a commit means a batch");
                    let read = match &turn.next {
                        Some(Ok(entries)) => entries.len(),
                        _ => 0,
                    };
                    let done = self.commit_until_done(&batch, committed, &mut stop, &mut on_event);
                    if !done.await? {
                        let mut stats = self.counters.stats();
                        stats.left_pending = (batch.ids.len() + read) as u64;
                        return Ok(stats);
                    }
                    Some(batch.ids)
                }
                None => None,
            };
            let mut reconnected = turn.acked.is_err();
            if let Err(e) = turn.acked
                && !self
                    .ack_until_done(e, to_ack.as_deref(), &mut backoff, &mut stop, &mut on_event)
                    .await?
            {
                return Ok(self.counters.stats());
            }
            // Acknowledged alongside the next commit.
            to_ack = committed;
            match turn.next {
                Some(Ok(entries)) if !reconnected => {
                    in_hand = self.take(entries, &mut from, &mut on_event);
                    backoff.reset();
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
                from = ReadFrom::Pending(EntryId::ZERO);
            }
        }
    }

    /// Commits the batch in hand, acknowledges the one before and reads the
    /// next, all at once (reading waits for new entries only when there is
    /// nothing to commit).
    async fn turn(
        &mut self,
        in_hand: Option<&Batch>,
        to_ack: Option<&[EntryId]>,
        from: ReadFrom,
        stopping: bool,
    ) -> Turn {
        let (reader, postgres) = (&mut self.reader, &mut self.postgres);
        let commit = async {
            match in_hand {
                Some(batch) => Some(postgres.try_commit(batch).await),
                None => None,
            }
        };
        let wait = in_hand.is_none();
        let redis = async {
            if let Some(ids) = to_ack
                && let Err(e) = reader.ack(ids).await
            {
                return (Err(e), None);
            }
            if stopping {
                return (Ok(()), None);
            }
            (Ok(()), Some(reader.read(from, wait).await))
        };
        let (committed, (acked, next)) = tokio::join!(commit, redis);
        Turn {
            committed,
            acked,
            next,
        }
    }

    /// The batch `entries` make, reporting its malformed entries and moving
    /// `from` on: a pending read that finds nothing more switches to new
    /// entries. `None` when there is nothing to commit or acknowledge.
    fn take(
        &self,
        entries: Vec<Entry>,
        from: &mut ReadFrom,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Option<Batch> {
        if matches!(from, ReadFrom::Pending(_)) {
            *from = match entries.last() {
                Some(last) => ReadFrom::Pending(last.id),
                None => ReadFrom::New,
            };
        }
        let batch = Batch::of(entries);
        for event in &batch.malformed {
            on_event(event.clone());
        }
        Some(batch).filter(|b| !b.ids.is_empty())
    }

    /// Retries `batch` until it commits (true), or stop comes (false: it
    /// stays pending). A batch that fails for its data lands without its
    /// poison rows, which go to the dead-letter stream first (see
    /// `poison`); a Redis error that lasts, meanwhile, is returned.
    async fn commit_until_done(
        &mut self,
        batch: &Batch,
        mut committed: Result<u64, Failure>,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        let mut backoff = self.new_backoff();
        let (inserted, landed, poison) = loop {
            let failure = match committed {
                Ok(inserted) => break (inserted, batch.rows(), Vec::new()),
                Err(f) if f.class == ErrorClass::Data => {
                    match sift(&mut self.postgres, batch, f.message).await {
                        Ok(s) => break (s.inserted, s.landed, s.poison),
                        Err(f) => f,
                    }
                }
                Err(f) => f,
            };
            let wait = backoff.next_delay();
            self.counters
                .postgres_retries
                .fetch_add(1, Ordering::Relaxed);
            on_event(SinkEvent::PostgresRetry {
                error: failure.message,
                lasting: failure.class == ErrorClass::Lasting,
                attempt: backoff.attempts(),
                backoff: wait,
            });
            if sleep_or_stop(wait, stop).await {
                return Ok(false);
            }
            committed = self.postgres.try_commit(batch).await;
        };
        if !self.set_aside(&poison, stop, on_event).await? {
            return Ok(false);
        }
        let c = &self.counters;
        c.rows_committed.fetch_add(landed, Ordering::Relaxed);
        c.rows_inserted.fetch_add(inserted, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.malformed
            .fetch_add(batch.malformed.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Adds `poison` to the dead-letter stream, reconnecting as often as it
    /// takes, and reports each row; only then may its entry be
    /// acknowledged. False if stop came first (the batch stays pending, and
    /// the search is made again on the next run).
    async fn set_aside(
        &mut self,
        poison: &[Poison],
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        if poison.is_empty() {
            return Ok(true);
        }
        let mut backoff = self.new_backoff();
        while let Err(e) = self.reader.dead_letter(poison).await {
            if !self.redis_failed(e, &mut backoff, stop, on_event).await? {
                return Ok(false);
            }
        }
        self.counters
            .set_aside
            .fetch_add(poison.len() as u64, Ordering::Relaxed);
        for p in poison {
            on_event(SinkEvent::SetAside {
                id: p.id.to_string(),
                reason: p.reason.clone(),
            });
        }
        Ok(true)
    }

    /// Acknowledges `ids` after a failed try, reconnecting as often as it
    /// takes: they are committed, and an entry delivered again after a lost
    /// ack lands once. False if stop came first (they will be delivered
    /// again, and land as duplicates).
    async fn ack_until_done(
        &mut self,
        mut error: callwatch_streams::Error,
        ids: Option<&[EntryId]>,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        let Some(ids) = ids else { return Ok(true) };
        loop {
            if !self.redis_failed(error, backoff, stop, on_event).await? {
                return Ok(false);
            }
            match self.reader.ack(ids).await {
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
        e: callwatch_streams::Error,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut impl FnMut(SinkEvent),
    ) -> Result<bool, AuditError> {
        if !e.is_transient() {
            return Err(e.into());
        }
        self.reader.con = None;
        let wait = backoff.next_delay();
        self.counters.redis_retries.fetch_add(1, Ordering::Relaxed);
        on_event(SinkEvent::RedisRetry {
            error: e.to_string(),
            attempt: backoff.attempts(),
            backoff: wait,
        });
        Ok(!sleep_or_stop(wait, stop).await)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn audit() -> AuditRow {
        crate::audit::rows::sample_row()
    }

    #[test]
    fn entries_sort_into_rows_ids_and_malformed_entries() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let (field, json) = QueueRow::Audit(audit()).encode().unwrap();
        let entries = callwatch_streams::entry::entries_of(vec![
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
        ])
        .unwrap();
        let batch = Batch::of(entries);
        let ids: Vec<String> = batch.ids.iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["1-0", "1-1", "2-0"]);
        assert_eq!(batch.audit, [audit()]);
        assert_eq!(batch.activity[0].event_id, "2-0");
        assert!(matches!(&batch.malformed[..], [SinkEvent::Malformed { id, .. }] if id == "1-1"));
        assert_eq!(batch.rows(), 2);
    }
}
