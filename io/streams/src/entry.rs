//! Stream entries as Redis answers them: ids, and the replies of `XREAD`,
//! `XREADGROUP` and `XRANGE` in both protocols (RESP2's arrays, RESP3's
//! maps).

use std::fmt;

use redis::{RedisWrite, ToRedisArgs, Value};

use crate::Error;

/// A stream entry's id: Redis's clock in milliseconds when it arrived, and
/// a sequence number within that millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `ms-seq`.
    pub fn parse(text: &[u8]) -> Option<EntryId> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl ToRedisArgs for EntryId {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// One entry: its id and its fields as pairs; `fields` is `None` for an
/// entry deleted while it was pending (Redis answers its id alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: EntryId,
    pub fields: Option<Vec<(Value, Value)>>,
}

impl Entry {
    /// The entry's one field and its value: the format of every stream
    /// callwatch writes. The error says what the entry holds instead.
    pub fn only_field(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let Some(fields) = &self.fields else {
            return Err("no fields (deleted while pending?)".to_owned());
        };
        match fields.as_slice() {
            [(field, value)] => match (text(field.clone()), text(value.clone())) {
                (Some(f), Some(v)) => Ok((f, v)),
                _ => Err("field or value is not a string".to_owned()),
            },
            other => Err(format!("{} fields, not one", other.len())),
        }
    }

    /// The value of the entry's one field, which must be `name`.
    pub fn sole_field(&self, name: &str) -> Result<Vec<u8>, String> {
        match self.only_field()? {
            (f, v) if f == name.as_bytes() => Ok(v),
            (f, _) => Err(format!(
                "its field is `{}`, not `{name}`",
                String::from_utf8_lossy(&f)
            )),
        }
    }
}

/// A stream's key and entries in a read reply.
pub type StreamEntries = (Vec<u8>, Vec<Entry>);

/// A string reply's bytes.
pub fn text(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The streams of an `XREADGROUP` or `XREAD` reply (nil when nothing came).
pub fn streams_of(reply: Value) -> Result<Vec<StreamEntries>, Error> {
    let unexpected = Error::Reply("a read answered neither nil nor streams");
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(pair) => <[Value; 2]>::try_from(pair).ok().map(|[k, v]| (k, v)),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or(unexpected)?,
        _ => return Err(unexpected),
    };
    pairs
        .into_iter()
        .map(|(key, entries)| match (text(key), entries) {
            (Some(key), Value::Array(entries)) => Ok((key, entries_of(entries)?)),
            _ => Err(Error::Reply(
                "a stream in a read reply is not a key and entries",
            )),
        })
        .collect()
}

/// The entries of an `XRANGE` reply, or of one stream of a read reply.
pub fn entries_of(entries: Vec<Value>) -> Result<Vec<Entry>, Error> {
    entries.into_iter().map(entry_of).collect()
}

fn entry_of(entry: Value) -> Result<Entry, Error> {
    let Value::Array(parts) = entry else {
        return Err(Error::Reply("an entry is not an array"));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(text)
        .and_then(|t| EntryId::parse(&t))
        .ok_or(Error::Reply("an entry has no id"))?;
    let fields = match parts.next() {
        Some(Value::Map(pairs)) => Some(pairs),
        Some(Value::Array(flat)) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            // An odd one out pairs with nil, which names no field.
            while let Some(field) = flat.next() {
                pairs.push((field, flat.next().unwrap_or(Value::Nil)));
            }
            Some(pairs)
        }
        _ => None,
    };
    Ok(Entry { id, fields })
}

/// Pairs of a RESP3 map or of RESP2's flat array of keys and values.
pub(crate) fn pairs_of(v: Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Map(pairs) => Some(pairs),
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            Some(std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn entry_ids_read_write_and_order_as_redis_does() {
        assert_eq!(
            EntryId::parse(b"1795639877422-7"),
            Some(EntryId {
                ms: 1_795_639_877_422,
                seq: 7
            })
        );
        assert_eq!(EntryId::parse(b"12"), None);
        assert_eq!(EntryId::parse(b"a-1"), None);
        let (a, b) = (EntryId { ms: 5, seq: 9 }, EntryId { ms: 6, seq: 0 });
        assert!(a < b);
        assert_eq!(a.to_string(), "5-9");
    }

    #[test]
    fn replies_parse_in_both_protocols() {
        let entry = |id: &[u8], fields: Value| Value::Array(vec![bulk(id), fields]);
        let flat = Value::Array(vec![bulk(b"event"), bulk(b"{}")]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk(b"events:0"),
            Value::Array(vec![entry(b"1-0", flat.clone()), entry(b"1-1", Value::Nil)]),
        ])]);
        let resp3 = Value::Map(vec![(
            bulk(b"events:0"),
            Value::Array(vec![entry(b"1-0", flat), entry(b"1-1", Value::Nil)]),
        )]);
        for reply in [resp2, resp3] {
            let streams = streams_of(reply).unwrap();
            assert_eq!(streams.len(), 1);
            let (key, entries) = &streams[0];
            assert_eq!(key, b"events:0");
            assert_eq!(entries[0].id, EntryId { ms: 1, seq: 0 });
            assert_eq!(entries[0].sole_field("event").unwrap(), b"{}");
            assert!(
                entries[0]
                    .sole_field("alert")
                    .unwrap_err()
                    .contains("`event`")
            );
            assert_eq!(entries[1].fields, None);
            assert!(entries[1].sole_field("event").is_err());
        }
        assert!(streams_of(Value::Nil).unwrap().is_empty());
        assert!(streams_of(Value::Int(3)).is_err());
    }

    #[test]
    fn an_entry_with_two_fields_or_an_odd_list_is_no_sole_field() {
        let two = Entry {
            id: EntryId::ZERO,
            fields: Some(vec![(bulk(b"a"), bulk(b"1")), (bulk(b"b"), bulk(b"2"))]),
        };
        assert!(two.sole_field("a").unwrap_err().contains("2 fields"));
        assert!(two.only_field().is_err());
        let odd = entries_of(vec![Value::Array(vec![
            bulk(b"2-0"),
            Value::Array(vec![bulk(b"event")]),
        ])])
        .unwrap();
        assert_eq!(odd[0].fields, Some(vec![(bulk(b"event"), Value::Nil)]));
        assert!(odd[0].sole_field("event").is_err());
    }
}
