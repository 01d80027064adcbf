//! The processed record of a (token, chat) pair, and the contract's
//! re-check that decides whether a call brings it anything new.

use std::sync::Arc;

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

/// A record's checked channels, sorted by channel. Most records name one
/// or two, kept inline: they come with the record's own cache line. A
/// longer list is shared: a call gives every follower with the same list
/// before and the same callers the same list after (`CheckedMemo`), so
/// the chats of a popular token, which mostly follow every channel, point
/// at a few lists between them instead of each rewriting one of its own.
/// A list is never changed in place; a re-check that finds something new
/// replaces it.
#[derive(Clone)]
pub struct Checked(Repr);

#[derive(Clone)]
enum Repr {
    /// No channel, one or two, each its own variant: with a length byte
    /// beside the tag instead, a token's first call (a list written into
    /// each new record) ran 1.6x slower (BENCHMARKS.md "[2.4]").
    Empty,
    One((ChannelId, Nanos)),
    Two([(ChannelId, Nanos); 2]),
    Shared(Arc<[(ChannelId, Nanos)]>),
}

impl Checked {
    pub const fn new() -> Self {
        Checked(Repr::Empty)
    }

    /// The list `items`, which must be sorted by channel.
    pub fn from_slice(items: &[(ChannelId, Nanos)]) -> Self {
        debug_assert!(items.is_sorted_by(|a, b| a.0 < b.0));
        Checked(match *items {
            [] => Repr::Empty,
            [one] => Repr::One(one),
            [a, b] => Repr::Two([a, b]),
            _ => Repr::Shared(Arc::from(items)),
        })
    }

    /// Whether the two are known to be the same list without reading
    /// either: the same shared list, or equal inline ones. A memo key.
    fn same(&self, other: &Checked) -> bool {
        match (&self.0, &other.0) {
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b),
            (Repr::Shared(_), _) | (_, Repr::Shared(_)) => false,
            _ => self[..] == other[..],
        }
    }

    /// Whether the list lives apart from its record (a shared one).
    fn spilled(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }
}

impl Default for Checked {
    fn default() -> Self {
        Checked::new()
    }
}

impl std::ops::Deref for Checked {
    type Target = [(ChannelId, Nanos)];

    #[inline]
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Repr::Empty => &[],
            Repr::One(one) => std::slice::from_ref(one),
            Repr::Two(two) => two,
            Repr::Shared(list) => list,
        }
    }
}

impl<'a> IntoIterator for &'a Checked {
    type Item = &'a (ChannelId, Nanos);
    type IntoIter = std::slice::Iter<'a, (ChannelId, Nanos)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Checked {
    fn eq(&self, other: &Checked) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

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
/// records every caller's call time in `checked` (a new list) and says
/// yes; if not, leaves `checked` alone. One merge, O(|callers| +
/// |checked|); `scratch` keeps its allocation between calls.
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
        *checked = Checked::from_slice(scratch);
    }
    new
}

/// The re-checks of one slice of a call, by the callers' group and the
/// list checked before: the followers that share both get the same answer
/// and the same list after, found without reading either list. Within a
/// slice a group's callers do not change (the call's token is held, and
/// so are chat events), and each remembered list is held, so its address
/// cannot come back as another list's.
#[derive(Debug, Default)]
pub(super) struct CheckedMemo {
    /// By group: the list before, and the list after if the re-check
    /// found something new. Groups past the last are empty.
    groups: Vec<Vec<(Checked, Option<Checked>)>>,
}

/// Re-checks a slice remembers for one group, at most; past that they are
/// worked out one by one (followers that hold that many different lists
/// share little anyway).
const MEMO_MAX: usize = 16;

impl CheckedMemo {
    /// Forgets every answer: the callers' groups are about to change.
    pub(super) fn clear(&mut self) {
        for g in &mut self.groups {
            g.clear();
        }
    }

    /// [`merge_checked`] for callers that are `group`'s, answered from an
    /// earlier follower's re-check when one had the same list before.
    #[inline]
    pub(super) fn merge(
        &mut self,
        checked: &mut Checked,
        group: usize,
        callers: &[(ChannelId, Nanos)],
        scratch: &mut Vec<(ChannelId, Nanos)>,
    ) -> bool {
        if group >= self.groups.len() {
            self.groups.resize_with(group + 1, Vec::new);
        }
        let seen = &mut self.groups[group];
        let found = seen
            .iter()
            .position(|(before, _)| before.same(checked))
            // An equal list of its own (restored from storage, or made
            // once the memo was full): read, once, and shared from now on.
            .or_else(|| {
                checked.spilled().then(|| {
                    seen.iter()
                        .position(|(before, _)| before[..] == checked[..])
                })?
            });
        if let Some(i) = found {
            let (before, after) = &seen[i];
            return match after {
                Some(after) => {
                    *checked = after.clone();
                    true
                }
                None => {
                    if !before.same(checked) {
                        *checked = before.clone();
                    }
                    false
                }
            };
        }
        let before = checked.clone();
        let new = merge_checked(checked, callers, scratch);
        if seen.len() < MEMO_MAX {
            seen.push((before, new.then(|| checked.clone())));
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::{Checked, CheckedMemo, Record, merge_checked};
    use crate::event::ChannelId;
    use crate::time::Nanos;
    use proptest::prelude::*;

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

    /// A sorted list of up to `n` channels out of 6, with call times.
    fn list(n: usize) -> impl Strategy<Value = Vec<(ChannelId, Nanos)>> {
        proptest::collection::btree_map(0i64..6, 0i64..4, 0..=n)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// Followers re-checked through the memo end as they would one by
        /// one, whatever lists they share.
        #[test]
        fn the_memo_is_the_recheck(
            befores in proptest::collection::vec(list(5), 1..5),
            groups in proptest::collection::vec((list(6), 0usize..3), 1..24),
        ) {
            let mut memo = CheckedMemo::default();
            let mut scratch = Vec::new();
            // Callers by group, fixed for the slice.
            let callers: Vec<Vec<(ChannelId, Nanos)>> =
                (0..3).map(|g| groups.iter().find(|x| x.1 == g).map_or(vec![], |x| x.0.clone())).collect();
            // Twelve followers holding the lists before, some the same one.
            let lists: Vec<Checked> = befores.iter().map(|b| Checked::from_slice(b)).collect();
            let mut held: Vec<Checked> = (0..12).map(|i| lists[i % lists.len()].clone()).collect();
            for (k, (_, g)) in groups.iter().enumerate() {
                let i = k % held.len();
                let mut want = held[i].clone();
                let want_new = merge_checked(&mut want, &callers[*g], &mut scratch);
                let new = memo.merge(&mut held[i], *g, &callers[*g], &mut scratch);
                prop_assert_eq!(new, want_new);
                prop_assert_eq!(&held[i], &want);
            }
        }
    }

    #[test]
    fn followers_alike_share_one_list() {
        let mut memo = CheckedMemo::default();
        let mut scratch = Vec::new();
        let callers = [(1, 10), (2, 10), (3, 10)];
        let before = Checked::from_slice(&[(1, 5), (2, 5), (4, 5)]);
        // Two of the followers hold the same list, a third an equal one of
        // its own (as restored from storage).
        let mut a = before.clone();
        let mut b = before.clone();
        let mut c = Checked::from_slice(&before);
        assert!(!a.same(&c));
        for r in [&mut a, &mut b, &mut c] {
            assert!(memo.merge(r, 0, &callers, &mut scratch));
        }
        assert_eq!(a[..], [(1, 10), (2, 10), (3, 10), (4, 5)]);
        assert!(a.same(&b) && a.same(&c), "one list after");
        // Nothing new the second time round, and the list stays shared.
        memo.clear();
        for r in [&mut a, &mut b, &mut c] {
            assert!(!memo.merge(r, 0, &callers, &mut scratch));
        }
        assert!(a.same(&b) && a.same(&c));
    }
}
