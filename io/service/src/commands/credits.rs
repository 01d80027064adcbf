//! The credits admins make from the chat: `/grant` and `/resolve`, each
//! once however often its command comes, each finishing on a repeat what
//! a failure left undone.
//!
//! - A grant is recorded under its grant id (the admin's command message,
//!   unique in PostgreSQL, in the credit's transaction). The same id again
//!   credits nothing; it rewrites the Redis copy from PostgreSQL and
//!   publishes the `subscribe` event again, which finishes a grant whose
//!   event was lost after the commit.
//! - A resolve claims the unmatched payment and credits it in one
//!   transaction (`payments::unmatched`), then tells the chat credited.

use callwatch_common::clock::system_time;
use callwatch_ledger::subscriptions::{Credit, CreditError, Credited, Source};
use callwatch_payments::PaymentError;
use callwatch_payments::unmatched::{Resolution, Resolved};
use callwatch_telegram::commands::{Applied, BackendError, esc, when};
use engine::event::ChatId;
use engine::time::Nanos;

use super::payments::notify;
use super::{ServiceBackend, unavailable};

impl ServiceBackend {
    /// [`Backend::grant`](callwatch_telegram::commands::Backend::grant):
    /// the credit once per grant id, then the `subscribe` event (its
    /// failure makes the grant `announced: false`, not an error).
    pub(super) async fn grant_once(
        &self,
        credit: &Credit,
        now: Nanos,
    ) -> Result<Applied, BackendError> {
        let chat_id = credit.chat_id;
        let (plan, expires_at) = {
            let mut pg = self.postgres().await?;
            let client = pg.as_mut().expect("connected above");
            let credited = self
                .subscriptions
                .credit(client, &mut self.redis.clone(), credit, system_time(now))
                .await;
            let recorded = match credited {
                Ok(c) => Ok(c),
                // Committed; the Redis copy is rewritten by a repeat, or at
                // the next start.
                Err(CreditError::RedisCopy { credited, error }) => {
                    tracing::warn!(chat_id, %error, "grant committed; its Redis copy failed");
                    Ok(credited)
                }
                Err(e) => Err(e),
            };
            let done = match recorded {
                Ok(Credited::New { expires_at, .. }) => Ok(("grant".to_owned(), expires_at)),
                Ok(Credited::AlreadyCredited) => self.granted_before(client, credit).await,
                Err(e) => Err(e),
            };
            done.map_err(|e| {
                if matches!(e, CreditError::Postgres(_)) {
                    *pg = None;
                }
                credit_failed(e)
            })?
        };
        let announced = self.publish_subscribe(chat_id, &plan, expires_at).await;
        if let Err(e) = &announced {
            tracing::warn!(chat_id, error = %e, "grant recorded, not announced yet");
        }
        Ok(Applied {
            expires_at,
            announced: announced.is_ok(),
        })
    }

    /// A grant whose id is recorded already: refused if that id granted
    /// something else; otherwise the chat's copy written again from
    /// PostgreSQL, and its plan and expiry to announce again.
    async fn granted_before(
        &self,
        pg: &tokio_postgres::Client,
        credit: &Credit,
    ) -> Result<(String, Nanos), CreditError> {
        let Source::Grant { grant_id, .. } = &credit.source else {
            unreachable!("a grant's source")
        };
        let recorded = self.subscriptions.recorded_grant(pg, grant_id).await?;
        let same = recorded
            .as_ref()
            .is_some_and(|g| (g.chat_id, g.days) == (credit.chat_id, credit.days));
        if !same {
            let was = recorded.map_or_else(
                || "something else".to_owned(),
                |g| format!("{} days to {}", g.days, g.chat_id),
            );
            return Err(CreditError::Invalid(format!(
                "The grant {grant_id} was recorded as {was}; a new /grant without an id makes \
                 another."
            )));
        }
        let copied = self
            .subscriptions
            .copy_from_record(pg, &mut self.redis.clone(), credit.chat_id)
            .await?;
        copied.ok_or_else(|| {
            CreditError::Invalid(format!("chat {} has no subscription", credit.chat_id))
        })
    }

    /// [`Backend::resolve`](callwatch_telegram::commands::Backend::resolve):
    /// claimed and credited once; the chat credited is told.
    pub(super) async fn resolve_once(
        &self,
        resolution: &Resolution<'_>,
        now: Nanos,
    ) -> Result<Applied, BackendError> {
        let ledger = self.ledger()?;
        let mut pg = self.postgres().await?;
        let client = pg.as_mut().expect("connected above");
        let resolved = ledger
            .resolve_unmatched(
                client,
                &mut self.redis.clone(),
                resolution,
                system_time(now),
            )
            .await;
        match resolved {
            Ok(Resolved::Credited {
                expires_at,
                announced,
            }) => {
                let text = format!(
                    "Your payment <code>{}</code> was applied by an admin: <b>{}</b>. You are \
                     subscribed until {}. Thank you!",
                    esc(resolution.signature),
                    esc(resolution.plan),
                    when(expires_at)
                );
                notify(&self.notices, &self.counters, resolution.chat_id, text);
                Ok(Applied {
                    expires_at,
                    announced,
                })
            }
            Ok(Resolved::AlreadyResolved {
                resolved_by,
                chat_id,
            }) => Err(BackendError::Refused(format!(
                "That payment was already resolved by {resolved_by}, for chat {chat_id}."
            ))),
            Err(PaymentError::NotFound(sig)) => Err(BackendError::Refused(format!(
                "No unmatched payment has the signature {sig}."
            ))),
            Err(PaymentError::UnknownPlan(name)) => Err(BackendError::Refused(format!(
                "There is no plan \"{name}\"."
            ))),
            Err(e) => Err(self.payment_failed(&mut pg, e)),
        }
    }
}

/// The credit of `/grant`: `days` to `chat_id` by `admin`, named by
/// `grant_id`.
pub(super) fn granted(admin: i64, grant_id: &str, chat_id: ChatId, days: u32) -> Credit {
    Credit {
        chat_id,
        plan: "grant".to_owned(),
        days,
        source: Source::Grant {
            granted_by: admin,
            grant_id: grant_id.to_owned(),
        },
        amount_sol: None,
        amount_usd: None,
    }
}

/// A grant's failure as the admin sees it: a refusal in words, or storage
/// away.
fn credit_failed(e: CreditError) -> BackendError {
    match e {
        CreditError::Invalid(why) => BackendError::Refused(why),
        e => unavailable("grant", e),
    }
}
