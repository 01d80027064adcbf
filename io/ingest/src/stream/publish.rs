//! The producer side of the input streams: lines checked with the engine's
//! parser, routed, and appended; and a check that a deployment's input has
//! all been read and acknowledged.

use callwatch_common::keys::{EVENT_FIELD, stream_key};
use callwatch_common::route::{Route, route};
use callwatch_streams::EntryId;
use callwatch_streams::entry::text;
use engine::parse::{LineError, LineParser};
use redis::Value;
use redis::aio::ConnectionLike;

use super::StreamError;
use super::config::check_partitions;

/// Whether every consumer group on a deployment's input streams (the
/// `partitions` and the chats stream) has read and acknowledged everything:
/// nothing pending, and nothing after its last delivered entry. `false`
/// while a stream or its groups do not exist yet. For load tests and
/// operators waiting for a backlog to clear.
///
/// A group's `lag` says the same when Redis knows it, and is taken when it
/// is 0; otherwise the group's last delivered id is compared with the
/// stream's last id, because after a failover the promoted replica can
/// report a lag of entries the group has in fact been given (its count of
/// entries read is not the master's).
pub async fn input_drained(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    partitions: u32,
) -> bool {
    let mut streams: Vec<String> = (0..partitions)
        .map(|p| stream_key(prefix, Route::Partition(p)))
        .collect();
    streams.push(stream_key(prefix, Route::Chats));
    for stream in streams {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(con)
            .await
        {
            Ok(g) => g,
            Err(_) => return false,
        };
        if groups.is_empty() {
            return false;
        }
        for g in groups {
            let zero = |k: &str| matches!(g.get(k), Some(redis::Value::Int(0)));
            if !zero("pending") {
                return false;
            }
            if !zero("lag") && !delivered_all(con, &stream, g.get("last-delivered-id")).await {
                return false;
            }
        }
    }
    true
}

/// Whether a group whose last delivered entry is `delivered` has been
/// given the last entry of `stream`.
async fn delivered_all(
    con: &mut impl redis::aio::ConnectionLike,
    stream: &str,
    delivered: Option<&redis::Value>,
) -> bool {
    let Some(delivered) = delivered
        .and_then(|v| text(v.clone()))
        .and_then(|t| EntryId::parse(&t))
    else {
        return false;
    };
    let info: std::collections::HashMap<String, redis::Value> = match redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(con)
        .await
    {
        Ok(info) => info,
        Err(_) => return false,
    };
    info.get("last-generated-id")
        .and_then(|v| text(v.clone()))
        .and_then(|t| EntryId::parse(&t))
        .is_some_and(|last| delivered >= last)
}

/// Lines per XADD pipeline.
const PUBLISH_PIPELINE: usize = 4096;

/// The producer side: checks lines with the engine's parser, routes them
/// and appends them. Keeps its parser and keys from call to call.
#[derive(Debug)]
pub struct Publisher {
    partitions: u32,
    parser: LineParser,
    chats: String,
    keys: Vec<String>,
    /// Each pipeline keeps to one stream (a Redis Cluster's rule).
    by_stream: bool,
}

impl Publisher {
    /// A publisher for streams under `prefix`, with `partitions` (1 to
    /// 4,096) partitions.
    pub fn new(prefix: &str, partitions: u32) -> Result<Publisher, StreamError> {
        check_partitions(partitions)?;
        Ok(Publisher {
            partitions,
            parser: LineParser::new(),
            chats: stream_key(prefix, Route::Chats),
            keys: (0..partitions)
                .map(|p| stream_key(prefix, Route::Partition(p)))
                .collect(),
            by_stream: false,
        })
    }

    /// The same for a Redis Cluster, where a pipeline must keep to one
    /// slot: each pipeline holds a run of consecutive lines of one stream,
    /// sent one after another, so entries still arrive in line order.
    pub fn for_cluster(prefix: &str, partitions: u32) -> Result<Publisher, StreamError> {
        Ok(Publisher {
            by_stream: true,
            ..Publisher::new(prefix, partitions)?
        })
    }

    /// The stream of one line, or why the engine would reject it. The
    /// check that needs history (a `settings` whose result has
    /// `min_fdv_usd > max_fdv_usd`) is left to the consumer.
    pub fn route(&mut self, line: &[u8]) -> Result<Route, LineError> {
        Ok(route(&self.parser.parse(line)?, self.partitions))
    }

    /// Appends `lines` (without line endings; blank ones are skipped), one
    /// entry each, in pipelines of 4,096, and returns each one's stream and
    /// id in order. Every line is checked before anything is sent, so a bad
    /// line publishes nothing; a connection failure part-way may leave the
    /// first pipelines published.
    pub async fn publish<L: AsRef<[u8]>>(
        &mut self,
        con: &mut impl ConnectionLike,
        lines: &[L],
    ) -> Result<Vec<(Route, EntryId)>, StreamError> {
        let mut routed = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let route = self
                .route(line)
                .map_err(|error| StreamError::BadLine { index, error })?;
            routed.push((route, line));
        }
        let mut published = Vec::with_capacity(routed.len());
        let by_stream = self.by_stream;
        let chunks = routed.chunk_by(|a, b| !by_stream || a.0 == b.0);
        for chunk in chunks.flat_map(|run| run.chunks(PUBLISH_PIPELINE)) {
            let mut pipe = redis::pipe();
            for &(route, line) in chunk {
                let key = match route {
                    Route::Chats => &self.chats,
                    Route::Partition(p) => &self.keys[p as usize],
                };
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(line);
            }
            let ids: Vec<Value> = pipe.query_async(con).await?;
            if ids.len() != chunk.len() {
                return Err(StreamError::Reply("XADD answered with fewer ids"));
            }
            for (&(route, _), id) in chunk.iter().zip(ids) {
                let id = text(id)
                    .and_then(|t| EntryId::parse(&t))
                    .ok_or(StreamError::Reply("XADD answered with no id"))?;
                published.push((route, id));
            }
        }
        Ok(published)
    }
}

/// Checks, routes and appends `lines` to the streams under `prefix`: see
/// [`Publisher::publish`].
pub async fn publish<L: AsRef<[u8]>>(
    con: &mut impl ConnectionLike,
    prefix: &str,
    partitions: u32,
    lines: &[L],
) -> Result<Vec<(Route, EntryId)>, StreamError> {
    Publisher::new(prefix, partitions)?
        .publish(con, lines)
        .await
}

#[cfg(test)]
mod tests {
    use callwatch_common::route::partition_of;
    use engine::token::Token;

    use super::*;

    #[test]
    fn partitions_are_the_engines_shards() {
        let token: Token = "So11111111111111111111111111111111111111112"
            .parse()
            .unwrap();
        for p in [1, 2, 7, 64] {
            assert_eq!(
                partition_of(&token, p) as usize,
                engine::router::shard_of(&token, p as usize)
            );
        }
        assert_eq!(stream_key("t:", Route::Partition(3)), "t:events:3");
        assert_eq!(stream_key("t:", Route::Chats), "t:events:chats");
    }
}
