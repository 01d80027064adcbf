//! The processed record of a (token, chat) pair, and the contract's
//! re-check that decides whether a call brings it anything new.

use smallvec::SmallVec;

use super::records::Records;
use crate::event::ChannelId;
use crate::time::Nanos;
use crate::tracked::Entry;

/// Where a processed record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No check has decided yet (a fresh or expired record).
    None,
    Rejected,
    Accepted,
}

/// The processed record of one (token, chat) pair: one cache line, since a
/// call reads one of these for each of hundreds of followers, each a miss.
#[derive(Debug, Clone, PartialEq)]
#[repr(align(64))]
pub struct Record {
    pub status: Status,
    /// `at` of the latest check that found new channels.
    pub last_check: Nanos,
    /// See [`Record::tracking_started`]; `Nanos::MIN` for none (an `Option`
    /// would take the record past one cache line).
    pub(super) tracking_started: Nanos,
    /// Channels checked so far, with the call time seen for each; sorted by
    /// channel, so a re-check is one merge with the (sorted) callers.
    pub checked: Checked,
}

/// A record's checked channels. Most records name one or two, and a call
/// reads the list of each of hundreds of followers: kept inline, it comes
/// with the record's own cache line instead of a miss of its own.
pub type Checked = SmallVec<[(ChannelId, Nanos); 2]>;

impl Default for Record {
    fn default() -> Self {
        Record::new()
    }
}

impl Record {
    pub(crate) fn new() -> Self {
        Record {
            status: Status::None,
            last_check: Nanos::MIN,
            tracking_started: Nanos::MIN,
            checked: Checked::new(),
        }
    }

    /// When the tracking that this record started began, if it did. Kept
    /// across an expiry of the record itself, so that a restart can find
    /// the entry it replaces.
    pub fn tracking_started(&self) -> Option<Nanos> {
        (self.tracking_started != Nanos::MIN).then_some(self.tracking_started)
    }

    /// The record counts as absent once `ttl` has passed since its last
    /// check.
    pub(super) fn expired(&self, clock: Nanos, ttl: Nanos) -> bool {
        clock >= self.last_check.saturating_add(ttl)
    }

    /// Nothing in it can matter any more: the record has expired and so has
    /// the tracking it started.
    pub(super) fn dead(&self, clock: Nanos, ttl: Nanos) -> bool {
        clock >= self.dead_at(ttl)
    }

    /// The stream time from which the record is dead.
    pub(super) fn dead_at(&self, ttl: Nanos) -> Nanos {
        let newest = self.last_check.max(self.tracking_started);
        newest.saturating_add(ttl)
    }
}

/// Whether `e` is the chat's current tracking of this token, not one a
/// restart has replaced. The processed record names the entry it started;
/// a record that started none (or no record) means the entry was restored
/// from storage, and is current.
pub(super) fn current(records: &Records, e: &Entry) -> bool {
    records
        .get(&e.chat)
        .and_then(Record::tracking_started)
        .is_none_or(|s| s == e.started)
}

/// The contract's re-check, on two lists sorted by channel: are any of
/// `callers` new to `checked` (absent, or called later than seen)? If so,
/// records every caller's call time in `checked` and says yes; if not,
/// leaves `checked` alone. One merge, O(|callers| + |checked|); `scratch`
/// keeps its allocation between calls.
pub(super) fn merge_checked(
    checked: &mut Checked,
    callers: &[(ChannelId, Nanos)],
    scratch: &mut Vec<(ChannelId, Nanos)>,
) -> bool {
    scratch.clear();
    scratch.reserve(checked.len() + callers.len());
    let (a, b) = (&checked[..], callers);
    let (mut i, mut j) = (0, 0);
    let mut new = false;
    // Which list a step takes from is a coin toss to the branch
    // predictor; written as selects, the loop has no branch but its own.
    while i < a.len() && j < b.len() {
        let (ka, seen) = a[i];
        let (kb, at) = b[j];
        let take_checked = ka < kb;
        scratch.push(if take_checked { a[i] } else { b[j] });
        new |= !take_checked & ((ka != kb) | (at > seen));
        i += usize::from(ka <= kb);
        j += usize::from(!take_checked);
    }
    scratch.extend_from_slice(&a[i..]);
    new |= j < b.len();
    scratch.extend_from_slice(&b[j..]);
    if new {
        // Copied, not swapped: the record keeps an allocation sized to its
        // own list rather than inheriting the scratch's high-water mark.
        checked.clear();
        checked.extend_from_slice(scratch);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::{Checked, Record, merge_checked};

    #[test]
    fn a_record_is_one_cache_line() {
        assert_eq!((size_of::<Record>(), align_of::<Record>()), (64, 64));
    }

    #[test]
    fn merge_checked_is_the_contracts_recheck() {
        let mut scratch = Vec::new();
        let mut checked = Checked::from_slice(&[(1, 10), (3, 10)]);
        // Nothing new: same channels, same or older call times.
        assert!(!merge_checked(
            &mut checked,
            &[(1, 10), (3, 9)],
            &mut scratch
        ));
        assert_eq!(checked[..], [(1, 10), (3, 10)]);
        // A later call of a checked channel is new.
        assert!(merge_checked(&mut checked, &[(3, 11)], &mut scratch));
        assert_eq!(checked[..], [(1, 10), (3, 11)]);
        // A channel not yet checked is new, and lands in order.
        assert!(merge_checked(
            &mut checked,
            &[(0, 5), (2, 5), (4, 5)],
            &mut scratch
        ));
        assert_eq!(checked[..], [(0, 5), (1, 10), (2, 5), (3, 11), (4, 5)]);
        let mut empty = Checked::new();
        assert!(!merge_checked(&mut empty, &[], &mut scratch));
    }
}
