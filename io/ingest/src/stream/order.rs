//! What the reader holds: entries read and not yet handed out, the order
//! they go out in, and where the reader is in each stream.

use callwatch_common::keys::EVENT_FIELD;
use callwatch_streams::EntryId;
use callwatch_streams::entry::text;
use redis::Value;

/// What one entry carried.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Body {
    /// The value of its one `event` field.
    Event(Vec<u8>),
    Bad {
        event: Option<Vec<u8>>,
        reason: String,
    },
}

impl Body {
    /// The body of an entry with these fields (`None`: deleted while pending).
    pub(super) fn of(fields: Option<Vec<(Value, Value)>>) -> Body {
        let Some(fields) = fields else {
            return Body::Bad {
                event: None,
                reason: "the entry was deleted while pending".to_owned(),
            };
        };
        let mut event = None;
        let mut extra = None;
        for (field, value) in fields {
            let field = text(field).unwrap_or_default();
            if field == EVENT_FIELD.as_bytes() && event.is_none() {
                event = Some(text(value).unwrap_or_default());
            } else if extra.is_none() {
                extra = Some(field);
            }
        }
        let lossy = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
        match (event, extra) {
            (Some(event), None) => Body::Event(event),
            (Some(event), Some(field)) => Body::Bad {
                event: Some(event),
                reason: format!(
                    "unexpected field `{}`: an entry has one field, `event`",
                    lossy(&field)
                ),
            },
            (None, Some(field)) => Body::Bad {
                event: None,
                reason: format!("no `event` field (it has `{}`)", lossy(&field)),
            },
            (None, None) => Body::Bad {
                event: None,
                reason: "no `event` field".to_owned(),
            },
        }
    }
}

/// An entry read and not yet handed out.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) stream: u32,
    pub(super) id: EntryId,
    pub(super) body: Body,
}

/// The hand-out order: by millisecond, then stream, then sequence.
pub(super) type OrderKey = (u64, u32, u64);

impl Entry {
    pub(super) fn order(&self) -> OrderKey {
        (self.id.ms, self.stream, self.id.seq)
    }
}

/// Sorts `held` into hand-out order and takes the entries at or before
/// `limit` (all without one): later ones may yet be preceded by entries
/// not read.
pub(super) fn take_ordered(held: &mut Vec<Entry>, limit: Option<OrderKey>) -> Vec<Entry> {
    held.sort_by_key(Entry::order);
    let cut = limit.map_or(held.len(), |l| held.partition_point(|e| e.order() <= l));
    held.drain(..cut).collect()
}

/// Where the reader is in one stream.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Position {
    pub(super) cursor: Cursor,
    /// The last entry handed out (or dead-lettered); entries up to it read
    /// again after a reconnect are skipped.
    pub(super) handed: Option<EntryId>,
    /// The last entry seen, where a wait for new entries starts.
    pub(super) seen: Option<EntryId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Cursor {
    /// This consumer's pending entries after this id.
    Pending(EntryId),
    /// Pending entries all read; new ones wait until every stream's are.
    #[default]
    Drained,
    /// New entries (`>`).
    New,
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn id(ms: u64, seq: u64) -> EntryId {
        EntryId { ms, seq }
    }

    #[test]
    fn an_entry_must_hold_one_event_field() {
        let pairs =
            |p: &[(&[u8], &[u8])]| Some(p.iter().map(|(f, v)| (bulk(f), bulk(v))).collect());
        assert_eq!(
            Body::of(pairs(&[(b"event", b"{}")])),
            Body::Event(b"{}".to_vec())
        );
        let reason = |b: Body| match b {
            Body::Bad { reason, .. } => reason,
            Body::Event(_) => panic!("taken as an event"),
        };
        assert_eq!(
            reason(Body::of(pairs(&[(b"evnt", b"{}")]))),
            "no `event` field (it has `evnt`)"
        );
        assert!(
            reason(Body::of(pairs(&[(b"event", b"{}"), (b"event", b"{}")]))).contains("`event`")
        );
        assert_eq!(reason(Body::of(Some(Vec::new()))), "no `event` field");
        assert!(reason(Body::of(None)).contains("deleted"));
        let Body::Bad { event, .. } = Body::of(pairs(&[(b"x", b"1"), (b"event", b"{}")])) else {
            panic!()
        };
        assert_eq!(
            event.as_deref(),
            Some(&b"{}"[..]),
            "the event is kept for the dead letter"
        );
    }

    #[test]
    fn entries_go_out_by_time_then_stream_and_wait_for_a_cut_stream() {
        let e = |stream, ms, seq| Entry {
            stream,
            id: id(ms, seq),
            body: Body::Event(Vec::new()),
        };
        let mut held = vec![
            e(2, 10, 0),
            e(0, 10, 1),
            e(1, 5, 0),
            e(2, 10, 1),
            e(1, 12, 0),
            e(0, 11, 0),
        ];
        // Stream 2 was cut at 10-1: its next entry may be 10-2, which goes
        // before anything of millisecond 11 or later.
        let fed = take_ordered(&mut held, Some((10, 2, 1)));
        let order: Vec<_> = fed.iter().map(|e| (e.stream, e.id.ms, e.id.seq)).collect();
        assert_eq!(order, [(1, 5, 0), (0, 10, 1), (2, 10, 0), (2, 10, 1)]);
        assert_eq!(held, [e(0, 11, 0), e(1, 12, 0)]);
        assert_eq!(take_ordered(&mut held, None).len(), 2);
    }
}
