//! Payments that matched nothing: money that arrived naming no quote, too
//! little, too late, or a failed transfer that named one. The watcher keeps
//! them; an admin looks at them and may credit one to a chat. The credit
//! carries the transaction's own signature, so it can happen only once,
//! whoever tries and however often.

use std::time::SystemTime;

use engine::time::Nanos;
use tokio_postgres::Client;

use super::config::lamports_to_sol;
use super::matching::Reason;
use super::{Ledger, PaymentError, Result};
use callwatch_common::clock::nanos_of;
use callwatch_ledger::subscriptions::{Credit, Source};

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
    Credited { expires_at: Nanos },
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
    /// records who decided. Once: the credit carries the payment's
    /// signature, and a resolved payment stays resolved.
    pub async fn resolve_unmatched(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        resolution: &Resolution<'_>,
        now: SystemTime,
    ) -> Result<Resolved> {
        let table = self.table("unmatched_payments");
        let select = format!(
            "SELECT received, reference, resolved_by, resolved_chat_id FROM {table} \
             WHERE signature = $1"
        );
        let row = pg
            .query_opt(&select, &[&resolution.signature])
            .await?
            .ok_or_else(|| PaymentError::NotFound(resolution.signature.to_owned()))?;
        if let (Some(resolved_by), Some(chat_id)) = (row.get(2), row.get(3)) {
            return Ok(Resolved::AlreadyResolved {
                resolved_by,
                chat_id,
            });
        }
        let plan = self.config.plan(resolution.plan)?;
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
        let expires_at = self.credit_and_announce(pg, redis, &credit, now).await?;
        let marked = pg
            .execute(
                &format!(
                    "UPDATE {table} SET resolved_by = $2, resolved_chat_id = $3, resolved_at = $4 \
                     WHERE signature = $1 AND resolved_at IS NULL"
                ),
                &[
                    &resolution.signature,
                    &resolution.admin_chat_id,
                    &resolution.chat_id,
                    &now,
                ],
            )
            .await?;
        if marked == 0 {
            // Another admin got there first.
            let row = pg.query_one(&select, &[&resolution.signature]).await?;
            return Ok(Resolved::AlreadyResolved {
                resolved_by: row.get(2),
                chat_id: row.get(3),
            });
        }
        tracing::info!(
            signature = resolution.signature,
            chat_id = resolution.chat_id,
            admin = resolution.admin_chat_id,
            "unmatched payment credited by an admin"
        );
        Ok(Resolved::Credited { expires_at })
    }
}
