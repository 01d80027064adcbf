//! The end of a subscription: reminders 3 days and 1 day before, and the
//! lapse itself. Time is passed in, so tests run on a clock they control.
//!
//! A reminder is recorded as sent in the same statement that finds it due
//! (`INSERT … ON CONFLICT DO NOTHING RETURNING`), so each is handed out
//! once per expiry however often, and by however many processes, it is
//! asked for. A renewal moves the expiry and so earns fresh reminders. A
//! reminder handed out but not delivered (the process died) is not handed
//! out again: a missed reminder is cheaper than a repeated one.

use std::time::SystemTime;

use engine::time::Nanos;
use tokio_postgres::Client;

use super::{Ledger, PaymentError, Result};
use callwatch_common::clock::nanos_of;

/// At most this many reminders per call; the rest come with the next.
pub const REMINDER_BATCH: i64 = 1_000;

/// Which reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReminderKind {
    /// Due from 3 days before expiry until 1 day before.
    ThreeDays,
    /// Due in the last day.
    OneDay,
}

impl ReminderKind {
    fn code(self) -> &'static str {
        match self {
            ReminderKind::ThreeDays => "3d",
            ReminderKind::OneDay => "1d",
        }
    }

    fn from_code(code: &str) -> Option<ReminderKind> {
        [ReminderKind::ThreeDays, ReminderKind::OneDay]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// A reminder to send: `chat_id`'s subscription ends at `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    pub chat_id: i64,
    pub expires_at: Nanos,
    pub kind: ReminderKind,
}

impl Ledger {
    /// The reminders due at `now` that were not handed out before, marked
    /// as handed out; soonest expiry first. Only the most urgent is due: a
    /// subscription in its last day gets the 1-day reminder, not both.
    pub async fn due_reminders(&self, pg: &Client, now: SystemTime) -> Result<Vec<Reminder>> {
        let rows = pg
            .query(
                &format!(
                    "INSERT INTO {reminders} (chat_id, expires_at, kind, sent_at) \
                     SELECT s.chat_id, s.expires_at, k.kind, $1::timestamptz \
                     FROM {subscriptions} s, (VALUES \
                         ('3d', interval '3 days', interval '1 day'), \
                         ('1d', interval '1 day', interval '0')) AS k(kind, opens, closes) \
                     WHERE s.status = 'active' \
                     AND s.expires_at - k.opens <= $1::timestamptz \
                     AND $1::timestamptz < s.expires_at - k.closes \
                     ORDER BY s.expires_at LIMIT $2 \
                     ON CONFLICT DO NOTHING RETURNING chat_id, expires_at, kind",
                    reminders = self.table("subscription_reminders"),
                    subscriptions = self.table("subscriptions"),
                ),
                &[&now, &REMINDER_BATCH],
            )
            .await?;
        let mut due = rows
            .iter()
            .map(|r| {
                let code: &str = r.get(2);
                let kind = ReminderKind::from_code(code).ok_or_else(|| {
                    PaymentError::Record(format!("unknown reminder kind `{code}`"))
                })?;
                Ok(Reminder {
                    chat_id: r.get(0),
                    expires_at: nanos_of(r.get(1)),
                    kind,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        due.sort_unstable_by_key(|r| (r.expires_at, r.chat_id, r.kind));
        Ok(due)
    }

    /// Marks every active subscription that ended by `now` expired, in
    /// PostgreSQL and in its Redis copy, together: if a copy cannot be
    /// written, nothing is marked and the next call tries again. Returns
    /// the chats whose subscription lapsed.
    pub async fn expire_due(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        now: SystemTime,
    ) -> Result<Vec<i64>> {
        let tx = pg.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "UPDATE {} SET status = 'expired', updated_at = $1 \
                     WHERE status = 'active' AND expires_at <= $1 \
                     RETURNING chat_id, plan, expires_at",
                    self.table("subscriptions")
                ),
                &[&now],
            )
            .await?;
        let mut lapsed = Vec::with_capacity(rows.len());
        for row in &rows {
            let chat_id: i64 = row.get(0);
            self.store
                .write_copy(redis, chat_id, row.get(1), row.get(2), "expired")
                .await?;
            lapsed.push(chat_id);
        }
        tx.commit().await?;
        lapsed.sort_unstable();
        Ok(lapsed)
    }
}
