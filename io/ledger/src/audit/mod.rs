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
//! Failures, sorted by [`crate::classify`]:
//! - PostgreSQL down or failing (transient: the connection lost, the server
//!   shutting down, a serialization failure; or lasting: a missing table, a
//!   denied grant): the batch is kept, the connection dropped and made again
//!   with exponential backoff (explicit connect and batch timeouts), for as
//!   long as it takes. Each attempt is reported as a [`SinkEvent`]; nothing
//!   is acknowledged meanwhile.
//! - Rows PostgreSQL refuses for their data (a NUL in a text, 22021; JSON
//!   it cannot store, 22P05; any error of class 22, 23 or 54): retrying
//!   would fail forever and hold up every row behind them. The batch is
//!   halved until the refused rows are found (`poison`); every other row
//!   lands, and each refused one is added to the dead-letter stream
//!   ([`SinkConfig::dead_letters`]) with its entry id, its value and
//!   PostgreSQL's reason, counted ([`SinkStats::set_aside`]), reported as
//!   [`SinkEvent::SetAside`], and only then acknowledged with its batch.
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

mod poison;
mod postgres;
mod queue;
mod rows;
mod sink;

pub use queue::AuditQueue;
pub use rows::{ACTIVITY_FIELD, AUDIT_FIELD, Activity, ActivityRow, AlertKind, AuditRow, QueueRow};
pub use sink::{AuditSink, SinkConfig, SinkCounters, SinkEvent, SinkStats};

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

impl From<callwatch_streams::Error> for AuditError {
    fn from(e: callwatch_streams::Error) -> Self {
        match e {
            callwatch_streams::Error::Redis(e) => AuditError::Redis(e),
            callwatch_streams::Error::Reply(what) => AuditError::Reply(what.to_owned()),
        }
    }
}
