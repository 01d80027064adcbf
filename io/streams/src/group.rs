//! A consumer in a consumer group: the one implementation of what the
//! service does with a group (create it, read, acknowledge, claim what a
//! dead consumer left, find what it delivered), for the input streams, the
//! audit queue and anything else read at least once.

use std::collections::HashSet;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;

use crate::entry::{EntryId, StreamEntries, pairs_of, streams_of, text};
use crate::{Error, Result};

/// Where a read starts in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// This consumer's own pending entries after this id (`ZERO` for all
    /// of them): what it read before and did not acknowledge.
    Pending(EntryId),
    /// Entries no consumer of the group has read yet (`>`).
    New,
}

/// One consumer of one group. The name must stay the same across
/// restarts: a pending entry belongs to the name that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub group: String,
    pub name: String,
}

impl Consumer {
    pub fn new(group: impl Into<String>, name: impl Into<String>) -> Consumer {
        Consumer {
            group: group.into(),
            name: name.into(),
        }
    }

    /// Makes the group on `stream` (and the stream) if it is not there,
    /// reading from the stream's start: entries added before the group
    /// existed count too.
    pub async fn create_group(&self, con: &mut impl ConnectionLike, stream: &str) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(con)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The `XREADGROUP` of up to `count` entries of each stream, waiting up
    /// to `block` for new ones (only when every stream reads new entries:
    /// Redis never blocks on pending ones). For a caller that puts several
    /// reads in one transaction; [`Consumer::read`] sends it alone.
    pub fn read_cmd(
        &self,
        streams: &[(&str, ReadFrom)],
        count: usize,
        block: Option<Duration>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS");
        for (key, _) in streams {
            cmd.arg(*key);
        }
        for (_, from) in streams {
            match from {
                ReadFrom::Pending(after) => cmd.arg(after),
                ReadFrom::New => cmd.arg(">"),
            };
        }
        cmd
    }

    /// Reads, as [`Consumer::read_cmd`] describes; streams with nothing
    /// to give may be left out of the answer.
    pub async fn read(
        &self,
        con: &mut impl ConnectionLike,
        streams: &[(&str, ReadFrom)],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<StreamEntries>> {
        let reply: Value = self
            .read_cmd(streams, count, block)
            .query_async(con)
            .await?;
        streams_of(reply)
    }

    /// The `XACK` of `ids` in `stream`.
    pub fn ack_cmd(&self, stream: &str, ids: &[EntryId]) -> redis::Cmd {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(stream).arg(&self.group).arg(ids);
        cmd
    }

    /// Acknowledges and deletes `ids`, both or neither (`MULTI`): for a
    /// stream this group alone reads, which then holds only what has not
    /// been handled.
    pub async fn ack_and_delete(
        &self,
        con: &mut impl ConnectionLike,
        stream: &str,
        ids: &[EntryId],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("XDEL");
        del.arg(stream).arg(ids);
        let () = redis::pipe()
            .atomic()
            .add_command(self.ack_cmd(stream, ids))
            .ignore()
            .add_command(del)
            .ignore()
            .query_async(con)
            .await?;
        Ok(())
    }

    /// Takes over every entry of `stream` pending under any name of the
    /// group for at least `min_idle` (a consumer that died, or this one
    /// before a restart), `page` at a time; returns how many it took.
    pub async fn claim_idle(
        &self,
        con: &mut impl ConnectionLike,
        stream: &str,
        min_idle: Duration,
        page: usize,
    ) -> Result<u64> {
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let (mut start, mut claimed) = (EntryId::ZERO, 0u64);
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(min_idle_ms)
                .arg(start)
                .arg("COUNT")
                .arg(page)
                .arg("JUSTID")
                .query_async(con)
                .await?;
            let Value::Array(parts) = reply else {
                return Err(Error::Reply("XAUTOCLAIM answered no array"));
            };
            let mut parts = parts.into_iter();
            let next = parts.next().and_then(text).and_then(|t| EntryId::parse(&t));
            let Some(Value::Array(ids)) = parts.next() else {
                return Err(Error::Reply("XAUTOCLAIM answered no ids"));
            };
            claimed += ids.len() as u64;
            match next {
                Some(EntryId::ZERO) => return Ok(claimed),
                Some(next) => start = next,
                None => return Err(Error::Reply("XAUTOCLAIM answered no cursor")),
            }
        }
    }

    /// The last entry of `stream` the group delivered (`ZERO`: none yet).
    pub async fn last_delivered(
        &self,
        con: &mut impl ConnectionLike,
        stream: &str,
    ) -> Result<EntryId> {
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(con)
            .await?;
        last_delivered(reply, &self.group)
    }

    /// The ids of every entry of `stream` pending in the group, under any
    /// name, `page` at a time.
    pub async fn pending_ids(
        &self,
        con: &mut impl ConnectionLike,
        stream: &str,
        page: usize,
    ) -> Result<HashSet<EntryId>> {
        let mut pending = HashSet::new();
        let mut start = "-".to_owned();
        loop {
            let reply: Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&self.group)
                .arg(&start)
                .arg("+")
                .arg(page)
                .query_async(con)
                .await?;
            let Value::Array(rows) = reply else {
                return Err(Error::Reply("XPENDING answered no array"));
            };
            let n = rows.len();
            for row in rows {
                let id = match row {
                    Value::Array(parts) => parts.into_iter().next().and_then(text),
                    _ => None,
                }
                .and_then(|t| EntryId::parse(&t))
                .ok_or(Error::Reply("XPENDING answered an entry without an id"))?;
                start = format!("({id}");
                pending.insert(id);
            }
            if n < page {
                return Ok(pending);
            }
        }
    }
}

/// The `last-delivered-id` of `group` in an `XINFO GROUPS` reply.
fn last_delivered(reply: Value, group: &str) -> Result<EntryId> {
    let Value::Array(groups) = reply else {
        return Err(Error::Reply("XINFO GROUPS answered no array"));
    };
    for pairs in groups.into_iter().filter_map(pairs_of) {
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k.clone()).as_deref() == Some(name.as_bytes()))
                .and_then(|(_, v)| text(v.clone()))
        };
        if field("name").as_deref() == Some(group.as_bytes()) {
            return field("last-delivered-id")
                .and_then(|t| EntryId::parse(&t))
                .ok_or(Error::Reply("XINFO GROUPS answered no last-delivered-id"));
        }
    }
    Err(Error::Reply("XINFO GROUPS does not list the group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_name_every_stream_then_every_start() {
        let c = Consumer::new("g", "c1");
        let cmd = c.read_cmd(
            &[
                ("a", ReadFrom::Pending(EntryId { ms: 5, seq: 1 })),
                ("b", ReadFrom::New),
            ],
            10,
            Some(Duration::from_millis(100)),
        );
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            args,
            [
                "XREADGROUP",
                "GROUP",
                "g",
                "c1",
                "COUNT",
                "10",
                "BLOCK",
                "100",
                "STREAMS",
                "a",
                "b",
                "5-1",
                ">"
            ]
        );
    }

    #[test]
    fn last_delivered_is_found_in_both_protocols() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("other"),
                bulk("last-delivered-id"),
                bulk("9-9"),
            ]),
            Value::Array(vec![
                bulk("name"),
                bulk("g"),
                bulk("last-delivered-id"),
                bulk("3-4"),
            ]),
        ]);
        assert_eq!(
            last_delivered(resp2, "g").unwrap(),
            EntryId { ms: 3, seq: 4 }
        );
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("g")),
            (bulk("last-delivered-id"), bulk("0-0")),
        ])]);
        assert_eq!(last_delivered(resp3, "g").unwrap(), EntryId::ZERO);
        assert!(last_delivered(Value::Array(vec![]), "g").is_err());
    }
}
