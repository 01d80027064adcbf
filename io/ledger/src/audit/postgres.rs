//! The sink's PostgreSQL side: one connection, made again after any
//! failure, and a batch's rows landed in one transaction.

use std::pin::pin;
use std::time::Duration;

use callwatch_common::clock::system_time;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::AuditRow;
use super::sink::Batch;
use crate::classify::{ErrorClass, classify};
use crate::migrate::pg_detail;
use crate::server::PgServer;

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
pub(super) struct Postgres {
    pub(super) server: PgServer,
    pub(super) schema: String,
    pub(super) connect_timeout: Duration,
    pub(super) batch_timeout: Duration,
    pub(super) client: Option<Client>,
    /// The last batch held rows already present (it was delivered again),
    /// so the next, likely delivered again too, skips the direct COPY.
    pub(super) staging_next: bool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("schema", &self.schema)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a try at a batch failed, and what that calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) class: ErrorClass,
    /// The step that failed and PostgreSQL's answer (message, code).
    pub(super) message: String,
}

/// One try at a PostgreSQL step, with its limit; running out of time is
/// transient.
async fn limited<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| Failure {
            class: classify(&e),
            message: format!("{what}: {}", pg_detail(&e)),
        }),
        Err(_) => Err(Failure {
            class: ErrorClass::Transient,
            message: format!("{what}: no answer within {limit:?}"),
        }),
    }
}

impl Postgres {
    async fn connect(&self) -> Result<Client, Failure> {
        let (client, conn) =
            limited(self.connect_timeout, "connect", self.server.connect()).await?;
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
    /// connection is dropped on failure, unless the rows were at fault
    /// (the transaction is rolled back and the connection is sound).
    pub(super) async fn try_commit(&mut self, batch: &Batch) -> Result<u64, Failure> {
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
            Err(failure) => {
                // Perhaps committed without our hearing of it: delivered again.
                self.staging_next = true;
                if failure.class != ErrorClass::Data {
                    self.client = None;
                }
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
