//! Payments in the receiving process: the watcher that credits transfers
//! (and tells the chat, or the admins when a payment matches nothing), and
//! the reminders before and at expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use callwatch_ledger::migrate::pg_detail;
use callwatch_ledger::pg::connected;
use callwatch_ledger::server::PgServer;
use callwatch_payments::Ledger;
use callwatch_payments::config::lamports_to_sol;
use callwatch_payments::expiry::ReminderKind;
use callwatch_payments::watcher::{Outcome, Watcher};
use callwatch_telegram::commands::{esc, when};
use callwatch_telegram::sender::{self, Message};
use engine::event::ChatId;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};

/// Ids for the messages the service sends on its own (confirmations,
/// reminders), apart from the update ids replies carry.
static NOTICE_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// Queues a notice for `chat_id` in the sender's reply lane.
pub(crate) async fn notify(sender: &sender::Sender, chat_id: ChatId, text: String) {
    let id = NOTICE_ID.fetch_add(1, Ordering::Relaxed);
    if sender
        .send(Message::reply(chat_id, id, text))
        .await
        .is_err()
    {
        tracing::warn!(chat_id, "notice not queued: the sender has closed");
    }
}

/// How often reminders and expiry are looked for.
const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// What the payment tasks need.
#[derive(Debug, Clone)]
pub struct PaymentParts {
    pub ledger: Ledger,
    pub database: PgServer,
    pub redis: ConnectionManager,
    pub sender: sender::Sender,
    pub admins: Vec<i64>,
}

/// Starts the payment watcher (credits, then a confirmation to the chat;
/// what matches nothing, a note to the admins) and the reminder loop (3
/// days and 1 day before expiry, and at expiry). Both stop with `stop`;
/// call inside the runtime.
pub fn start(parts: &PaymentParts, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let watcher = Watcher::new(parts.ledger.clone()).context("payments")?;
    let (tx, outcomes) = mpsc::channel(64);
    {
        let (database, redis, stop) = (parts.database.clone(), parts.redis.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = watcher.run(&database, redis, tx, stop).await {
                tracing::error!(error = %e, "the payment watcher stopped");
            }
        });
    }
    tokio::spawn(tell(outcomes, parts.sender.clone(), parts.admins.clone()));
    tokio::spawn(remind_loop(parts.clone(), stop.clone()));
    Ok(())
}

/// Tells chats and admins what became of each payment.
async fn tell(mut outcomes: mpsc::Receiver<Outcome>, sender: sender::Sender, admins: Vec<i64>) {
    while let Some(outcome) = outcomes.recv().await {
        match outcome {
            Outcome::Credited {
                chat_id,
                plan,
                days,
                expires_at,
                signature,
                lamports,
            } => {
                tracing::info!(chat_id, %plan, %signature, lamports, "payment credited");
                let text = format!(
                    "Payment received: {} SOL for <b>{}</b> ({days} days). You are \
                     subscribed until {}. Thank you!",
                    lamports_to_sol(lamports),
                    esc(&plan),
                    when(expires_at)
                );
                notify(&sender, chat_id, text).await;
            }
            Outcome::Unmatched {
                signature,
                reason,
                chat_id,
            } => {
                tracing::warn!(%signature, %reason, ?chat_id, "payment matched no quote");
                if let Some(chat_id) = chat_id {
                    let text = format!(
                        "Your payment <code>{signature}</code> could not be credited \
                         ({}). An admin will look at it.",
                        esc(&reason.to_string())
                    );
                    notify(&sender, chat_id, text).await;
                }
                for &admin in &admins {
                    let text = format!(
                        "Unmatched payment <code>{signature}</code>: {}. /unmatched \
                         lists them; /resolve credits one.",
                        esc(&reason.to_string())
                    );
                    notify(&sender, admin, text).await;
                }
            }
            Outcome::Pending { signature } => {
                tracing::debug!(%signature, "payment not yet finalized");
            }
            Outcome::AlreadySeen { .. } | Outcome::Ignored { .. } => {}
        }
    }
}

/// A round of reminders every [`REMINDER_EVERY`], until `stop`.
async fn remind_loop(mut parts: PaymentParts, mut stop: watch::Receiver<bool>) {
    let mut pg: Option<tokio_postgres::Client> = None;
    loop {
        if let Err(e) = remind(&mut parts, &mut pg).await {
            tracing::warn!(error = %e, "reminders not sent this round");
            pg = None;
        }
        tokio::select! {
            () = tokio::time::sleep(REMINDER_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One round of reminders and expiry notices.
async fn remind(
    parts: &mut PaymentParts,
    pg: &mut Option<tokio_postgres::Client>,
) -> anyhow::Result<()> {
    let client = connected(&parts.database, pg)
        .await
        .map_err(|e| anyhow::anyhow!(pg_detail(&e)))?;
    let now = SystemTime::now();
    for r in parts.ledger.due_reminders(client, now).await? {
        let left = match r.kind {
            ReminderKind::ThreeDays => "3 days",
            ReminderKind::OneDay => "1 day",
        };
        let text = format!(
            "Your subscription ends in less than {left}, on {}. /subscribe to renew: the \
             time you have left is kept.",
            when(r.expires_at)
        );
        notify(&parts.sender, r.chat_id, text).await;
    }
    for chat_id in parts
        .ledger
        .expire_due(client, &mut parts.redis, now)
        .await?
    {
        notify(
            &parts.sender,
            chat_id,
            "Your subscription has ended, so alerts have stopped. /subscribe to renew.".to_owned(),
        )
        .await;
    }
    Ok(())
}
