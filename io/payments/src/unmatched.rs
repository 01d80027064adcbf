//! Payments that matched nothing: money that arrived naming no quote, too
//! little, too late, or a failed transfer that named one. The watcher keeps
//! them; an admin looks at them and may credit one to a chat. The claim of
//! the payment and its credit are one transaction, and the credit carries
//! the transaction's own signature, so it can happen only once, whoever
//! tries, however often and however many at once.

use std::time::SystemTime;

use engine::time::Nanos;
use tokio_postgres::Client;

use super::config::lamports_to_sol;
use super::matching::Reason;
use super::{Ledger, PaymentError, Result};
use callwatch_common::clock::nanos_of;
use callwatch_ledger::subscriptions::{Credit, Credited, Source};

/// The admin's list shows at most this many, oldest first.
pub const LIST_LIMIT: i64 = 100;

/// A transaction kept because it matched nothing, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedPayment {
    pub signature: String,
    pub reason: Reason,
    /// What the receiving address's balance did, in lamports.
    pub received_lamports: i64,
    /// The quote it named, and that quote's chat, if any.
    pub reference: Option<String>,
    pub chat_id: Option<i64>,
    pub block_time: Option<Nanos>,
    pub seen_at: Nanos,
}

/// An admin's decision: credit the payment `signature` to `chat_id` as
/// `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution<'a> {
    pub signature: &'a str,
    pub chat_id: i64,
    pub plan: &'a str,
    pub admin_chat_id: i64,
}

/// What resolving did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Credited; the chat's subscription now ends at `expires_at`.
    /// `announced` is false when the Redis copy or the engine's
    /// `subscribe` event could not be written after the commit.
    Credited { expires_at: Nanos, announced: bool },
    /// An admin resolved it before; nothing changed.
    AlreadyResolved { resolved_by: i64, chat_id: i64 },
}

impl Ledger {
    /// The unresolved unmatched payments, oldest first, at most
    /// [`LIST_LIMIT`].
    pub async fn list_unmatched(&self, pg: &Client) -> Result<Vec<UnmatchedPayment>> {
        let rows = pg
            .query(
                &format!(
                    "SELECT signature, reason, received, wanted, reference, chat_id, block_time, \
                     seen_at FROM {} WHERE resolved_at IS NULL ORDER BY seen_at, signature \
                     LIMIT $1",
                    self.table("unmatched_payments")
                ),
                &[&LIST_LIMIT],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let signature: String = r.get(0);
                let code: &str = r.get(1);
                let received_lamports: i64 = r.get(2);
                let reason =
                    Reason::from_code(code, received_lamports, r.get(3)).ok_or_else(|| {
                        PaymentError::Record(format!("{signature}: unknown reason `{code}`"))
                    })?;
                Ok(UnmatchedPayment {
                    signature,
                    reason,
                    received_lamports,
                    reference: r.get(4),
                    chat_id: r.get(5),
                    block_time: r.get::<_, Option<SystemTime>>(6).map(nanos_of),
                    seen_at: nanos_of(r.get(7)),
                })
            })
            .collect()
    }

    /// Credits an unmatched payment to a chat, as an admin decided, and
    /// records who decided. The claim (the payment marked resolved, if no
    /// one had) and the credit commit in one transaction: of two admins
    /// resolving one payment at once, one credits and the other waits on
    /// the claim and is told who did; a claim never stands without its
    /// credit, nor a credit without its claim. Then the Redis copy and the
    /// `subscribe` event; if those fail, the credit stands and says so
    /// (`announced: false`), and resolving the payment again, which finds
    /// it resolved, writes them again.
    pub async fn resolve_unmatched(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        resolution: &Resolution<'_>,
        now: SystemTime,
    ) -> Result<Resolved> {
        // An unknown plan claims nothing.
        let plan = self.config.plan(resolution.plan)?;
        let table = self.table("unmatched_payments");
        let tx = pg.transaction().await?;
        let claimed = tx
            .query_opt(
                &format!(
                    "UPDATE {table} SET resolved_by = $2, resolved_chat_id = $3, \
                     resolved_at = $4 WHERE signature = $1 AND resolved_at IS NULL \
                     RETURNING received, reference"
                ),
                &[
                    &resolution.signature,
                    &resolution.admin_chat_id,
                    &resolution.chat_id,
                    &now,
                ],
            )
            .await?;
        let Some(row) = claimed else {
            tx.rollback().await?;
            return self.already_resolved(pg, redis, resolution.signature).await;
        };
        let received: i64 = row.get(0);
        let credit = Credit {
            chat_id: resolution.chat_id,
            plan: plan.name.clone(),
            days: plan.days,
            source: Source::Solana {
                signature: resolution.signature.to_owned(),
                reference: row.get(1),
            },
            amount_sol: u64::try_from(received)
                .ok()
                .filter(|&l| l > 0)
                .map(lamports_to_sol),
            amount_usd: None,
        };
        let Credited::New { expires_at, .. } = self.store.credit_in(&tx, &credit, now).await?
        else {
            // Credited before its claim was recorded (a resolve cut short
            // when the two were separate): the claim names the chat paid.
            tx.execute(
                &format!(
                    "UPDATE {table} SET resolved_chat_id = p.chat_id FROM {} p \
                     WHERE {table}.signature = $1 AND p.signature = $1",
                    self.table("payments")
                ),
                &[&resolution.signature],
            )
            .await?;
            tx.commit().await?;
            return self.already_resolved(pg, redis, resolution.signature).await;
        };
        tx.commit().await?;
        tracing::info!(
            signature = resolution.signature,
            chat_id = resolution.chat_id,
            admin = resolution.admin_chat_id,
            "unmatched payment credited by an admin"
        );
        let announced = self
            .copy_and_announce(redis, &credit, expires_at)
            .await
            .inspect_err(|e| {
                tracing::warn!(
                    signature = resolution.signature,
                    error = %e,
                    "resolved payment credited; its copy or subscribe event failed"
                );
            })
            .is_ok();
        Ok(Resolved::Credited {
            expires_at,
            announced,
        })
    }

    /// The Redis copy and the `subscribe` event of a committed credit.
    async fn copy_and_announce(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        credit: &Credit,
        expires_at: Nanos,
    ) -> Result<()> {
        self.store.copy_credit(redis, credit, expires_at).await?;
        self.announce(redis, credit.chat_id, &credit.plan, expires_at)
            .await
    }

    /// Who resolved `signature`, for chat which; `NotFound` if it is not
    /// an unmatched payment. The chat's copy and `subscribe` event are
    /// written again from PostgreSQL on the way (logged if that fails), so
    /// a resolve whose announcement was cut short is finished by the next.
    async fn already_resolved(
        &self,
        pg: &Client,
        redis: &mut impl redis::aio::ConnectionLike,
        signature: &str,
    ) -> Result<Resolved> {
        let row = pg
            .query_opt(
                &format!(
                    "SELECT resolved_by, resolved_chat_id FROM {} WHERE signature = $1",
                    self.table("unmatched_payments")
                ),
                &[&signature],
            )
            .await?
            .ok_or_else(|| PaymentError::NotFound(signature.to_owned()))?;
        let (resolved_by, chat_id): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        let (Some(resolved_by), Some(chat_id)) = (resolved_by, chat_id) else {
            // Between our claim's rollback and this read nothing un-resolves
            // a payment; the CHECKs keep the three columns together.
            return Err(PaymentError::Record(format!(
                "{signature} is neither claimable nor resolved"
            )));
        };
        if let Err(e) = self.announce_from_record(pg, redis, chat_id).await {
            tracing::warn!(%signature, chat_id, error = %e, "resolved payment not announced again");
        }
        Ok(Resolved::AlreadyResolved {
            resolved_by,
            chat_id,
        })
    }
}
