//! Subscriptions and the payments behind them. PostgreSQL is the system of
//! record: a credit commits there first, in one transaction with its payment
//! row, and only then is the Redis copy (`subscription:{chat_id}`, the
//! predecessor's JSON) written. The predecessor did it the other way round
//! and logged PostgreSQL failures as "non-fatal", so a subscription could
//! exist only in a cache.
//!
//! A payment's transaction signature is unique in `payments`, and so is a
//! grant's id (the command that made it): crediting the same signature or
//! grant again changes nothing. A renewal extends from the current
//! expiry when that is later than now. If the Redis copy cannot be written
//! after the commit, the credit still stands and the error says so;
//! [`SubscriptionStore::sync_redis`] rewrites every copy from PostgreSQL (the
//! service runs it at start).

use std::time::SystemTime;

use engine::time::{self, Nanos};
use tokio_postgres::{Client, Transaction};

use callwatch_common::clock::{nanos_of, system_time};
use callwatch_common::keys::{EVENT_FIELD, SUBSCRIPTION_TTL_SECS, stream_key, subscription_key};
use callwatch_common::route::Route;

/// Tells the engine that `chat_id`'s subscription now runs until
/// `expires_at`: the `subscribe` event, stamped by Redis's clock (the one
/// that stamps its entry), appended to the chats stream under `prefix`.
/// Every credit, paid or granted, ends with it.
pub async fn announce(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    chat_id: i64,
    plan: &str,
    expires_at: Nanos,
) -> callwatch_streams::Result<()> {
    let now = callwatch_streams::clock::server_now(con).await?;
    let mut line = Vec::new();
    engine::Event::Subscribe {
        chat_id,
        at: now,
        expires_at,
        plan: Some(plan.into()),
    }
    .write_json(&mut line);
    let chats = stream_key(prefix, Route::Chats);
    callwatch_streams::log::append(con, &chats, EVENT_FIELD, &[line.trim_ascii_end()]).await?;
    Ok(())
}

/// Who pays: a Solana transfer, or an admin's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A verified transfer, named by its transaction signature.
    Solana {
        signature: String,
        reference: Option<String>,
    },
    /// An admin's grant, named by the admin's chat id and by the command
    /// that made it (`grant_id`, unique: the same id credits once).
    Grant { granted_by: i64, grant_id: String },
}

/// One credit of a plan to a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    pub chat_id: i64,
    pub plan: String,
    pub days: u32,
    pub source: Source,
    /// Decimal text, e.g. "0.5" (NUMERIC in PostgreSQL).
    pub amount_sol: Option<String>,
    pub amount_usd: Option<String>,
}

/// What a credit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credited {
    /// Committed; the subscription now runs until `expires_at`.
    New { payment_id: i64, expires_at: Nanos },
    /// This signature or grant id was credited before; nothing changed.
    AlreadyCredited,
}

/// A grant as recorded, for a repeat of its command to compare with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGrant {
    pub chat_id: i64,
    pub days: u32,
    pub granted_by: Option<i64>,
}

/// A credit's payment row, checked: what its source names.
struct Row<'a> {
    method: &'static str,
    signature: Option<&'a str>,
    reference: Option<&'a str>,
    granted_by: Option<i64>,
    grant_id: Option<&'a str>,
    days: i32,
}

impl Row<'_> {
    fn of(credit: &Credit) -> Result<Row<'_>, CreditError> {
        if credit.chat_id == 0 || credit.days == 0 || credit.plan.is_empty() {
            return Err(CreditError::Invalid(
                "a credit needs a chat, a plan and at least one day".to_owned(),
            ));
        }
        let days = i32::try_from(credit.days)
            .map_err(|_| CreditError::Invalid(format!("{} days", credit.days)))?;
        let row = match &credit.source {
            Source::Solana {
                signature,
                reference,
            } => Row {
                method: "solana",
                signature: Some(signature.as_str()),
                reference: reference.as_deref(),
                granted_by: None,
                grant_id: None,
                days,
            },
            Source::Grant {
                granted_by,
                grant_id,
            } => Row {
                method: "grant",
                signature: None,
                reference: None,
                granted_by: Some(*granted_by),
                grant_id: Some(grant_id.as_str()),
                days,
            },
        };
        if row.signature.is_some_and(str::is_empty) || row.grant_id.is_some_and(str::is_empty) {
            return Err(CreditError::Invalid(
                "an empty signature or grant id".to_owned(),
            ));
        }
        Ok(row)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("the credit is not valid: {0}")]
    Invalid(String),
    #[error("PostgreSQL: {}", crate::migrate::pg_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The credit is committed in PostgreSQL; only its Redis copy is
    /// missing, and `sync_redis` restores it.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A Redis copy that does not read as the predecessor's JSON.
    #[error("{key} is unreadable: {why}")]
    BadCopy { key: String, why: String },
    #[error("committed in PostgreSQL, but the Redis copy failed: {error}")]
    RedisCopy {
        credited: Credited,
        error: redis::RedisError,
    },
}

/// The subscription store of one PostgreSQL schema and Redis key prefix.
#[derive(Debug, Clone)]
pub struct SubscriptionStore {
    schema: String,
    key_prefix: String,
}

impl SubscriptionStore {
    /// `schema` must already be migrated; `key_prefix` is empty in
    /// production.
    pub fn new(schema: &str, key_prefix: &str) -> Self {
        SubscriptionStore {
            schema: schema.to_owned(),
            key_prefix: key_prefix.to_owned(),
        }
    }

    fn key(&self, chat_id: i64) -> String {
        format!("{}{}", self.key_prefix, subscription_key(chat_id))
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema.replace('"', "\"\""))
    }

    /// Credits a plan: payment row and subscription in one transaction,
    /// then the Redis copy. `now` is the moment a renewal of a lapsed
    /// subscription starts from.
    pub async fn credit(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        credit: &Credit,
        now: SystemTime,
    ) -> Result<Credited, CreditError> {
        let tx = pg.transaction().await?;
        let credited = self.credit_in(&tx, credit, now).await?;
        let Credited::New { expires_at, .. } = credited else {
            tx.rollback().await?;
            return Ok(credited);
        };
        tx.commit().await?;
        if let Err(error) = self.copy_credit(redis, credit, expires_at).await {
            return Err(CreditError::RedisCopy { credited, error });
        }
        Ok(credited)
    }

    /// The Redis copy of a committed credit: the chat active until
    /// `expires_at`.
    pub async fn copy_credit(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        credit: &Credit,
        expires_at: Nanos,
    ) -> redis::RedisResult<()> {
        let until = system_time(expires_at);
        self.write_copy(redis, credit.chat_id, &credit.plan, until, "active")
            .await
    }

    /// The PostgreSQL half of [`credit`](Self::credit), inside the caller's
    /// transaction, so that the credit commits (or not) with whatever else
    /// the caller decided in it: the payment row (unless its signature or
    /// grant id is recorded already: then nothing, and `AlreadyCredited`)
    /// and the subscription extended. The caller commits, then writes the
    /// Redis copy.
    pub async fn credit_in(
        &self,
        tx: &Transaction<'_>,
        credit: &Credit,
        now: SystemTime,
    ) -> Result<Credited, CreditError> {
        let row = Row::of(credit)?;
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO {} (chat_id, payment_method, signature, reference, plan, days, \
                     amount_sol, amount_usd, granted_by, grant_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::numeric, $8::text::numeric, $9, \
                     $10) ON CONFLICT DO NOTHING RETURNING id",
                    self.table("payments")
                ),
                &[
                    &credit.chat_id,
                    &row.method,
                    &row.signature,
                    &row.reference,
                    &credit.plan,
                    &row.days,
                    &credit.amount_sol,
                    &credit.amount_usd,
                    &row.granted_by,
                    &row.grant_id,
                ],
            )
            .await?;
        let Some(inserted) = inserted else {
            return Ok(Credited::AlreadyCredited);
        };
        let payment_id: i64 = inserted.get(0);
        let extended = tx
            .query_one(
                &format!(
                    "INSERT INTO {t} AS s (chat_id, plan, status, expires_at, payment_method, \
                     amount_sol, amount_usd, updated_at) \
                     VALUES ($1, $2, 'active', $3::timestamptz + make_interval(days => $4), $5, \
                     $6::text::numeric, $7::text::numeric, $3::timestamptz) \
                     ON CONFLICT (chat_id) DO UPDATE SET \
                     plan = EXCLUDED.plan, status = 'active', \
                     expires_at = GREATEST(s.expires_at, $3::timestamptz) + make_interval(days => $4), \
                     payment_method = EXCLUDED.payment_method, \
                     amount_sol = EXCLUDED.amount_sol, amount_usd = EXCLUDED.amount_usd, \
                     updated_at = $3::timestamptz \
                     RETURNING expires_at",
                    t = self.table("subscriptions")
                ),
                &[
                    &credit.chat_id,
                    &credit.plan,
                    &now,
                    &row.days,
                    &row.method,
                    &credit.amount_sol,
                    &credit.amount_usd,
                ],
            )
            .await?;
        Ok(Credited::New {
            payment_id,
            expires_at: nanos_of(extended.get(0)),
        })
    }

    /// The grant recorded under `grant_id`, if any.
    pub async fn recorded_grant(
        &self,
        pg: &Client,
        grant_id: &str,
    ) -> Result<Option<RecordedGrant>, CreditError> {
        let row = pg
            .query_opt(
                &format!(
                    "SELECT chat_id, days, granted_by FROM {} WHERE grant_id = $1",
                    self.table("payments")
                ),
                &[&grant_id],
            )
            .await?;
        Ok(row.map(|r| RecordedGrant {
            chat_id: r.get(0),
            days: r.get::<_, i32>(1).unsigned_abs(),
            granted_by: r.get(2),
        }))
    }

    /// Rewrites `chat_id`'s Redis copy from PostgreSQL: the way to finish a
    /// credit whose copy was cut short. Its plan and expiry; `None` when
    /// the chat has no subscription.
    pub async fn copy_from_record(
        &self,
        pg: &Client,
        redis: &mut impl redis::aio::ConnectionLike,
        chat_id: i64,
    ) -> Result<Option<(String, Nanos)>, CreditError> {
        let row = pg
            .query_opt(
                &format!(
                    "SELECT plan, expires_at, status FROM {} WHERE chat_id = $1",
                    self.table("subscriptions")
                ),
                &[&chat_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (plan, expires_at): (String, SystemTime) = (row.get(0), row.get(1));
        self.write_copy(redis, chat_id, &plan, expires_at, row.get(2))
            .await?;
        Ok(Some((plan, nanos_of(expires_at))))
    }

    /// The plan and expiry in a chat's Redis copy; `None` without one.
    pub async fn read_copy(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        chat_id: i64,
    ) -> Result<Option<(String, Nanos)>, CreditError> {
        #[derive(serde::Deserialize)]
        struct Copy {
            #[serde(default)]
            plan: String,
            expires_at: String,
        }
        let key = self.key(chat_id);
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(redis).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let bad = |why: String| CreditError::BadCopy {
            key: key.clone(),
            why,
        };
        let copy: Copy = serde_json::from_str(&value).map_err(|e| bad(e.to_string()))?;
        let expires_at =
            time::parse_rfc3339(&copy.expires_at).map_err(|e| bad(format!("expires_at: {e}")))?;
        Ok(Some((copy.plan, expires_at)))
    }

    /// The predecessor's `subscription:{chat_id}` JSON, for a year.
    pub async fn write_copy(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        chat_id: i64,
        plan: &str,
        expires_at: SystemTime,
        status: &str,
    ) -> redis::RedisResult<()> {
        let value = serde_json::json!({
            "plan": plan,
            "expires_at": time::format_rfc3339(nanos_of(expires_at)),
            "status": status,
        });
        redis::cmd("SET")
            .arg(self.key(chat_id))
            .arg(value.to_string())
            .arg("EX")
            .arg(SUBSCRIPTION_TTL_SECS)
            .query_async(redis)
            .await
    }

    /// Rewrites the Redis copy of every subscription from PostgreSQL;
    /// returns how many.
    pub async fn sync_redis(
        &self,
        pg: &Client,
        redis: &mut impl redis::aio::ConnectionLike,
    ) -> Result<u64, CreditError> {
        let rows = pg
            .query(
                &format!(
                    "SELECT chat_id, plan, expires_at, status FROM {}",
                    self.table("subscriptions")
                ),
                &[],
            )
            .await?;
        for row in &rows {
            self.write_copy(redis, row.get(0), row.get(1), row.get(2), row.get(3))
                .await?;
        }
        Ok(rows.len() as u64)
    }

    /// When a chat's subscription ends, from the system of record.
    pub async fn expires_at(
        &self,
        pg: &Client,
        chat_id: i64,
    ) -> Result<Option<Nanos>, CreditError> {
        let row = pg
            .query_opt(
                &format!(
                    "SELECT expires_at FROM {} WHERE chat_id = $1",
                    self.table("subscriptions")
                ),
                &[&chat_id],
            )
            .await?;
        Ok(row.map(|r| nanos_of(r.get(0))))
    }
}
