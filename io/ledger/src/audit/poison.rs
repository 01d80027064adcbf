//! Rows PostgreSQL refuses for their data (a NUL in a text, JSON it cannot
//! store): found by halving the batch that failed, so that every other row
//! lands, and handed back to be set aside in the dead-letter stream.
//!
//! A batch that fails for its data ([`ErrorClass::Data`]) is split in two
//! and each half tried on its own; a half that fails for its data is split
//! again, down to single rows, which are the poison. With `k` poison rows
//! among `n` that is at most about `2k·log2(n)` transactions, and one when
//! nothing is wrong. A failure of another kind (the connection lost) ends
//! the search; the caller retries the whole batch, and what had landed
//! lands again as duplicates, on its natural key.

use std::ops::Range;

use callwatch_streams::EntryId;

use super::postgres::{Failure, Postgres};
use super::sink::Batch;
use super::{ActivityRow, QueueRow};
use crate::classify::ErrorClass;

/// A row PostgreSQL refuses: the entry that carried it, its field and value
/// as queued, and PostgreSQL's reason.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Poison {
    pub(super) id: EntryId,
    pub(super) field: &'static str,
    pub(super) value: Vec<u8>,
    pub(super) reason: String,
}

/// What a search landed: rows inserted and already present, and the poison.
#[derive(Debug, Default)]
pub(super) struct Sifted {
    pub(super) inserted: u64,
    pub(super) landed: u64,
    pub(super) poison: Vec<Poison>,
}

impl Batch {
    /// The rows at `range` of the batch's rows (audit rows first, then
    /// activities), as a batch of their own; malformed entries stay out.
    fn part(&self, range: Range<usize>) -> Batch {
        let audits = self.audit.len();
        let audit = range.start.min(audits)..range.end.min(audits);
        let activity = range.start.saturating_sub(audits)..range.end.saturating_sub(audits);
        let activity_rows = &self.activity[activity];
        Batch {
            ids: self.audit_ids[audit.clone()]
                .iter()
                .copied()
                .chain(activity_rows.iter().map(activity_id))
                .collect(),
            audit: self.audit[audit.clone()].to_vec(),
            audit_ids: self.audit_ids[audit].to_vec(),
            activity: activity_rows.to_vec(),
            malformed: Vec::new(),
        }
    }

    /// The one row of a batch of one, as poison with `reason`.
    fn poison(&self, reason: String) -> Poison {
        let (id, row) = match (self.audit.first(), self.activity.first()) {
            (Some(audit), _) => (self.audit_ids[0], QueueRow::Audit(audit.clone())),
            (None, Some(activity)) => (
                activity_id(activity),
                QueueRow::Activity(activity.activity.clone()),
            ),
            (None, None) => unreachable!("a batch of one row"),
        };
        let (field, value) = row
            .encode()
            .expect("a row decoded from its encoding encodes again");
        Poison {
            id,
            field,
            value,
            reason,
        }
    }
}

/// An activity row's entry id, which its `event_id` names.
fn activity_id(row: &ActivityRow) -> EntryId {
    EntryId::parse(row.event_id.as_bytes()).expect("event_id is the entry's id")
}

/// Lands every row of `batch` but those PostgreSQL refuses for their data,
/// and returns those with PostgreSQL's reason. `batch` has just failed for
/// its data as a whole. A failure of another class is returned as it is.
pub(super) async fn sift(
    postgres: &mut Postgres,
    batch: &Batch,
    reason: String,
) -> Result<Sifted, Failure> {
    let rows = batch.audit.len() + batch.activity.len();
    let mut sifted = Sifted::default();
    let mut todo: Vec<(Range<usize>, String)> = vec![(0..rows, reason)];
    while let Some((range, reason)) = todo.pop() {
        if range.len() == 1 {
            sifted.poison.push(batch.part(range).poison(reason));
            continue;
        }
        let mid = range.start + range.len() / 2;
        // The second half is pushed first so rows are tried in order.
        for half in [mid..range.end, range.start..mid] {
            let part = batch.part(half.clone());
            match postgres.try_commit(&part).await {
                Ok(inserted) => {
                    sifted.inserted += inserted;
                    sifted.landed += part.rows();
                }
                Err(f) if f.class == ErrorClass::Data => todo.push((half, f.message)),
                Err(f) => return Err(f),
            }
        }
    }
    sifted.poison.sort_by_key(|p| p.id);
    Ok(sifted)
}
