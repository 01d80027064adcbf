//! Payments in the receiving process: the watcher that credits transfers
//! (and tells the chat, or the admins when a payment matches nothing), and
//! the reminders before and at expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use callwatch_ledger::migrate::pg_detail;
use callwatch_ledger::pg::connected;
use callwatch_ledger::server::PgServer;
use callwatch_payments::Ledger;
use callwatch_payments::config::lamports_to_sol;
use callwatch_payments::expiry::ReminderKind;
use callwatch_payments::watcher::{Outcome, Watcher, WatcherCounters};
use callwatch_streams::Conn;
use callwatch_telegram::commands::{esc, when};
use callwatch_telegram::sender::{self, Message, Rejected};
use engine::event::ChatId;
use tokio::sync::{mpsc, watch};

use super::limit::CommandCounters;

/// Ids for the messages the service sends on its own (confirmations,
/// reminders), apart from the update ids replies carry.
static NOTICE_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// Queues a notice for `chat_id` in the sender's reply lane without
/// waiting: the payment watcher and the reminders never stall behind a
/// full queue (a chat that floods the bot fills its own share of it). A
/// notice with no room is dropped, logged and counted; what it told is
/// kept in the ledger (`/status` shows a subscription).
pub(crate) fn notify(
    sender: &sender::Sender,
    counters: &CommandCounters,
    chat_id: ChatId,
    text: String,
) {
    let id = NOTICE_ID.fetch_add(1, Ordering::Relaxed);
    match sender.try_send(Message::reply(chat_id, id, text)) {
        Ok(()) => {}
        Err(Rejected::Closed(_)) => {
            tracing::warn!(chat_id, "notice not queued: the sender has closed");
        }
        Err(e) => {
            counters.notices_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(chat_id, "notice dropped: {e}");
        }
    }
}

/// How often reminders and expiry are looked for.
const REMINDER_EVERY: Duration = Duration::from_secs(60);
/// At most one note to the admins about unmatched payments per this long
/// (the first after a quiet spell goes at once; the rest are gathered).
pub(crate) const ADMIN_NOTE_EVERY: Duration = Duration::from_secs(60);
/// Unmatched payments listed by name in one note to the admins.
const ADMIN_NOTE_LINES: usize = 10;

/// What the payment tasks need.
#[derive(Debug, Clone)]
pub struct PaymentParts {
    pub ledger: Ledger,
    pub database: PgServer,
    pub redis: Conn,
    pub sender: sender::Sender,
    pub admins: Vec<i64>,
    pub counters: Arc<CommandCounters>,
    /// The watcher counts into these (`/metrics`).
    pub watcher_counters: Arc<WatcherCounters>,
}

/// Starts the payment watcher (credits, then a confirmation to the chat;
/// what matches nothing, a note to the admins) and the reminder loop (3
/// days and 1 day before expiry, and at expiry). Both stop with `stop`;
/// call inside the runtime.
pub fn start(parts: &PaymentParts, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let watcher = Watcher::new(parts.ledger.clone())
        .context("payments")?
        .with_counters(Arc::clone(&parts.watcher_counters));
    let (tx, outcomes) = mpsc::channel(64);
    {
        let (database, redis, stop) = (parts.database.clone(), parts.redis.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = watcher.run(&database, redis, tx, stop).await {
                tracing::error!(error = %e, "the payment watcher stopped");
            }
        });
    }
    let teller = Teller {
        sender: parts.sender.clone(),
        admins: parts.admins.clone(),
        counters: Arc::clone(&parts.counters),
        dust_lamports: parts.ledger.config().dust_lamports,
        every: ADMIN_NOTE_EVERY,
    };
    tokio::spawn(teller.run(outcomes));
    tokio::spawn(remind_loop(parts.clone(), stop.clone()));
    Ok(())
}

/// Tells chats and admins what became of each payment, never waiting on
/// the sender, so that the watcher never waits on it.
#[derive(Debug, Clone)]
pub(crate) struct Teller {
    pub sender: sender::Sender,
    pub admins: Vec<i64>,
    pub counters: Arc<CommandCounters>,
    /// Unmatched payments that brought less are told to nobody.
    pub dust_lamports: u64,
    /// At most one note to the admins per this long.
    pub every: Duration,
}

/// Unmatched payments not yet told to the admins.
#[derive(Debug, Default)]
struct AdminNote {
    lines: Vec<String>,
    more: usize,
    last_sent: Option<tokio::time::Instant>,
}

impl Teller {
    /// Until the watcher stops: each outcome told as it comes; the
    /// admins' note gathered and sent at most once per `every`.
    pub(crate) async fn run(self, mut outcomes: mpsc::Receiver<Outcome>) {
        let mut note = AdminNote::default();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                outcome = outcomes.recv() => match outcome {
                    Some(outcome) => self.tell(outcome, &mut note),
                    None => break,
                },
                _ = tick.tick() => self.tell_admins(&mut note),
            }
        }
        self.tell_admins(&mut note);
    }

    fn tell(&self, outcome: Outcome, note: &mut AdminNote) {
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
                notify(&self.sender, &self.counters, chat_id, text);
            }
            Outcome::Unmatched {
                signature,
                reason,
                chat_id,
                lamports,
            } => {
                tracing::warn!(%signature, %reason, ?chat_id, lamports, "payment matched no quote");
                if lamports < self.dust_lamports {
                    self.counters.unmatched_dust.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if let Some(chat_id) = chat_id {
                    let text = format!(
                        "Your payment <code>{signature}</code> could not be credited \
                         ({}). An admin will look at it.",
                        esc(&reason.to_string())
                    );
                    notify(&self.sender, &self.counters, chat_id, text);
                }
                let line = format!(
                    "<code>{signature}</code>: {} ({} SOL)",
                    esc(&reason.to_string()),
                    lamports_to_sol(lamports)
                );
                self.unmatched(line, note);
            }
            Outcome::Pending { signature } => {
                tracing::debug!(%signature, "payment not yet finalized");
            }
            Outcome::Dropped {
                signature,
                slot,
                finalized_slot,
            } => {
                let text = format!(
                    "Transaction <code>{signature}</code> (slot {slot}) never finalized: \
                     the cluster finalized slot {finalized_slot} without it. Recorded as \
                     dropped and not credited; if the RPC node pruned it and it paid, \
                     check it on chain and /grant the plan."
                );
                for &admin in &self.admins {
                    notify(&self.sender, &self.counters, admin, text.clone());
                }
            }
            Outcome::AlreadySeen { .. } | Outcome::Ignored { .. } => {}
        }
    }

    /// One unmatched payment for the admins: told at once after a quiet
    /// spell, else gathered into the next note.
    fn unmatched(&self, line: String, note: &mut AdminNote) {
        if note.lines.len() < ADMIN_NOTE_LINES {
            note.lines.push(line);
        } else {
            note.more += 1;
        }
        let quiet = note.last_sent.is_none_or(|at| at.elapsed() >= self.every);
        if quiet {
            self.tell_admins(note);
        }
    }

    /// Sends the gathered note, if any, to every admin.
    fn tell_admins(&self, note: &mut AdminNote) {
        if note.lines.is_empty() {
            return;
        }
        let count = note.lines.len() + note.more;
        let mut text = if count == 1 {
            format!("Unmatched payment {}.", note.lines[0])
        } else {
            let mut t = format!("<b>{count} unmatched payments</b>:\n");
            for line in &note.lines {
                t.push_str("• ");
                t.push_str(line);
                t.push('\n');
            }
            if note.more > 0 {
                t.push_str(&format!("…and {} more.\n", note.more));
            }
            t
        };
        text.push_str(" /unmatched lists them; /resolve credits one.");
        for &admin in &self.admins {
            notify(&self.sender, &self.counters, admin, text.clone());
        }
        note.lines.clear();
        note.more = 0;
        note.last_sent = Some(tokio::time::Instant::now());
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
        notify(&parts.sender, &parts.counters, r.chat_id, text);
    }
    for chat_id in parts
        .ledger
        .expire_due(client, &mut parts.redis, now)
        .await?
    {
        notify(
            &parts.sender,
            &parts.counters,
            chat_id,
            "Your subscription has ended, so alerts have stopped. /subscribe to renew.".to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "payments_tests.rs"]
mod tests;
