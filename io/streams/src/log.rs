//! A stream used as a durable log without a group: append entries of one
//! field, read them all back in pages, delete the handled ones (the
//! Telegram outbox), and the dead-letter stream where bad input (a stream
//! entry, or a change Redis refuses for its key) is set aside with its
//! reason.

use redis::aio::ConnectionLike;

use crate::entry::{Entry, EntryId, entries_of};
use crate::{Error, Result};

/// Appends one entry `field = value` per value, in one pipeline, with
/// automatic ids; returns the ids in order.
pub async fn append<V: AsRef<[u8]>>(
    con: &mut impl ConnectionLike,
    stream: &str,
    field: &str,
    values: &[V],
) -> Result<Vec<EntryId>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for v in values {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(field)
            .arg(v.as_ref());
    }
    let ids: Vec<String> = pipe.query_async(con).await?;
    ids.iter()
        .map(|id| EntryId::parse(id.as_bytes()).ok_or(Error::Reply("XADD answered no id")))
        .collect()
}

/// Every entry of `stream`, oldest first, `page` per `XRANGE`.
pub async fn read_all(
    con: &mut impl ConnectionLike,
    stream: &str,
    page: usize,
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(page)
            .query_async(con)
            .await?;
        let n = reply.len();
        let entries = entries_of(reply)?;
        if let Some(last) = entries.last() {
            start = format!("({}", last.id);
        }
        out.extend(entries);
        if n < page {
            return Ok(out);
        }
    }
}

/// Deletes `ids` from `stream`.
pub async fn delete(con: &mut impl ConnectionLike, stream: &str, ids: &[EntryId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: u64 = redis::cmd("XDEL")
        .arg(stream)
        .arg(ids)
        .query_async(con)
        .await?;
    Ok(())
}

/// Where bad entries are set aside: a stream trimmed to about `max_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    pub stream: String,
    pub max_len: u64,
}

/// One entry set aside: where it came from, what it held and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub stream: &'a str,
    pub id: EntryId,
    /// The entry's value, if it had one.
    pub value: Option<(&'a str, &'a [u8])>,
    pub reason: &'a str,
}

/// One change to a Redis key set aside: the key, what it would have
/// written (under a field that names the write), and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLetter<'a> {
    pub key: &'a [u8],
    pub value: (&'a str, &'a [u8]),
    pub reason: &'a str,
}

impl DeadLetters {
    /// Adds the `XADD` of `dead` to `pipe`: fields `stream`, `id`, the
    /// value under its own field name (when there is one) and `reason`.
    pub fn add_to(&self, pipe: &mut redis::Pipeline, dead: &DeadLetter<'_>) {
        let cmd = self
            .xadd(pipe)
            .arg("stream")
            .arg(dead.stream)
            .arg("id")
            .arg(dead.id);
        if let Some((field, value)) = dead.value {
            cmd.arg(field).arg(value);
        }
        cmd.arg("reason").arg(dead.reason).ignore();
    }

    /// Adds the `XADD` of `dead` to `pipe`: fields `key`, the value under
    /// its own field name, and `reason`.
    pub fn add_key_to(&self, pipe: &mut redis::Pipeline, dead: &KeyLetter<'_>) {
        let (field, value) = dead.value;
        self.xadd(pipe)
            .arg("key")
            .arg(dead.key)
            .arg(field)
            .arg(value)
            .arg("reason")
            .arg(dead.reason)
            .ignore();
    }

    /// An `XADD` to this stream, trimmed, up to its fields.
    fn xadd<'p>(&self, pipe: &'p mut redis::Pipeline) -> &'p mut redis::Pipeline {
        pipe.cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
    }
}
