//! Redis Cluster: which slot a key hashes to, which master serves a slot,
//! and a pipeline of many keys sent to each node at once.
//!
//! A cluster takes a pipeline or transaction only when it keeps to one
//! slot. Work that writes many unrelated keys (the write-behind) groups
//! its commands by the master that serves each key, and sends each group
//! as one pipeline to that node, all nodes at once ([`send_spread`]). The
//! map of slots to masters is asked of the cluster (`CLUSTER SLOTS`) when
//! first needed and asked again after any failure, so a failover (a
//! replica promoted) costs one failed round and a retry.

use std::sync::Arc;

use parking_lot::Mutex;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisResult, Value};

use crate::classify::{KEY_CODES, key_errors};
use crate::connection::Conn;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// part between the first `{` and the next `}`, when not empty), modulo
/// 16,384, as Redis computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        },
        None => key,
    };
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Which master serves each slot, as the cluster last said.
#[derive(Debug, Clone, Default)]
pub struct SlotMap {
    /// (first slot, last slot, node index), sorted.
    ranges: Vec<(u16, u16, usize)>,
    /// Masters, as (host, port).
    pub nodes: Vec<(String, u16)>,
    /// Every node named, masters and replicas, as (host, port).
    pub all: Vec<(String, u16)>,
}

impl SlotMap {
    /// Asks the cluster (`CLUSTER SLOTS`).
    pub async fn fetch(con: &mut ClusterConnection) -> RedisResult<SlotMap> {
        let reply = con
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        SlotMap::parse(&reply).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "CLUSTER SLOTS answered something else",
            ))
        })
    }

    /// `[[first, last, [host, port, id…], replicas…], …]`.
    fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = SlotMap::default();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let int = |v: &Value| match v {
                Value::Int(i) => u16::try_from(*i).ok(),
                _ => None,
            };
            let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let address = |node: &Value| {
                let Value::Array(node) = node else {
                    return None;
                };
                let host = match node.first()? {
                    Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                    Value::SimpleString(s) => s.clone(),
                    _ => return None,
                };
                Some((host, int(node.get(1)?)?))
            };
            for node in &fields[2..] {
                let node = address(node)?;
                if !map.all.contains(&node) {
                    map.all.push(node);
                }
            }
            let (host, port) = address(fields.get(2)?)?;
            let node = match map.nodes.iter().position(|n| n.0 == host && n.1 == port) {
                Some(i) => i,
                None => {
                    map.nodes.push((host, port));
                    map.nodes.len() - 1
                }
            };
            map.ranges.push((first, last, node));
        }
        map.ranges.sort_unstable();
        Some(map)
    }

    /// The index in [`SlotMap::nodes`] of the master serving `slot`.
    pub fn node_of(&self, slot: u16) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.1 < slot);
        self.ranges
            .get(i)
            .filter(|r| r.0 <= slot)
            .map(|&(_, _, node)| node)
    }
}

/// The slot map a cluster connection and its clones share, fetched when
/// first needed and dropped after a failure; and the nodes every map named,
/// where connections made later may start ([`SharedSlots::seeds`]).
#[derive(Debug, Clone, Default)]
pub struct SharedSlots {
    map: Arc<Mutex<Option<Arc<SlotMap>>>>,
    seen: Seen,
}

/// Every node of a cluster that a slot map has named, in the order first
/// seen; shared by the connections made to one endpoint.
pub(crate) type Seen = Arc<Mutex<Vec<(String, u16)>>>;

impl SharedSlots {
    /// A map shared by one connection and its clones, adding the nodes it
    /// finds to `seen`.
    pub(crate) fn new(seen: Seen) -> SharedSlots {
        SharedSlots {
            map: Arc::default(),
            seen,
        }
    }

    async fn get(&self, con: &mut ClusterConnection) -> RedisResult<Arc<SlotMap>> {
        if let Some(map) = self.map.lock().clone() {
            return Ok(map);
        }
        let map = Arc::new(SlotMap::fetch(con).await?);
        *self.map.lock() = Some(Arc::clone(&map));
        self.remember(&map);
        Ok(map)
    }

    fn remember(&self, map: &SlotMap) {
        let mut seen = self.seen.lock();
        for node in &map.all {
            if !seen.contains(node) {
                seen.push(node.clone());
            }
        }
    }

    /// Asks the cluster for its nodes now (`CLUSTER SLOTS`), so that a
    /// connection made later can start from any of them (the map in use
    /// is left as it is).
    pub(crate) async fn learn(&self, con: &mut ClusterConnection) -> RedisResult<()> {
        let map = SlotMap::fetch(con).await?;
        self.remember(&map);
        Ok(())
    }

    fn forget(&self) {
        *self.map.lock() = None;
    }
}

/// The key of `cmd`: every command callwatch sends to a cluster in a
/// pipeline names its key first (SET, XADD, XACK, …), after the number of
/// keys (EVALSHA, EVAL), or after `STREAMS` (XREADGROUP, XREAD: the first
/// stream). A command without one (TIME) has none.
pub fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        args.nth(2)
    } else if name.eq_ignore_ascii_case(b"XREADGROUP") || name.eq_ignore_ascii_case(b"XREAD") {
        args.skip_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
            .nth(1)
    } else {
        args.next()
    }
}

fn slot_of(cmd: &Cmd) -> Option<u16> {
    key_of(cmd).map(key_slot)
}

/// After a pipeline or transaction answered MOVED (its slot has a new
/// master: a failover), which the cluster client does not follow inside
/// one: a plain command on the same key, which it does follow, so that it
/// learns the new map before the caller tries again.
pub(crate) async fn follow_moved(
    con: &mut ClusterConnection,
    slots: &SharedSlots,
    pipe: &Pipeline,
) {
    slots.forget();
    if let Some(key) = pipe.cmd_iter().find_map(key_of) {
        let _ = redis::cmd("EXISTS").arg(key).query_async::<i64>(con).await;
    }
}

/// Sends the commands of `pipe` (no `MULTI`, replies not wanted): on one
/// server as that pipeline; on a cluster grouped by the master serving
/// each command's key, one pipeline per master, all at once. Returns the
/// commands Redis refused for their own key (a key of another type), by
/// index in `pipe`; any other failure is an error, and the whole pipeline
/// may be sent again (some groups may have landed: callers send only
/// writes that land the same twice).
pub async fn send_spread(con: &mut Conn, pipe: &Pipeline) -> RedisResult<Vec<(usize, String)>> {
    let (cluster, slots) = match con {
        Conn::Single(_) => {
            return match pipe.query_async::<()>(con).await {
                Ok(()) => Ok(Vec::new()),
                Err(e) => key_errors(&e).ok_or(e),
            };
        }
        Conn::Cluster(c, slots) => (c, slots),
    };
    let result = spread(cluster, slots, pipe).await;
    if result.is_err() {
        slots.forget();
    }
    result
}

/// Sends the commands of `pipe` as [`send_spread`] does, for commands
/// none of which may be refused: any refusal is the error.
pub async fn send_all(con: &mut Conn, pipe: &Pipeline) -> RedisResult<()> {
    if let Conn::Single(_) = con {
        return pipe.query_async(con).await;
    }
    match send_spread(con, pipe).await?.into_iter().next() {
        None => Ok(()),
        Some((_, why)) => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "a command refused for its key",
            why,
        ))),
    }
}

async fn spread(
    con: &mut ClusterConnection,
    slots: &SharedSlots,
    pipe: &Pipeline,
) -> RedisResult<Vec<(usize, String)>> {
    let map = slots.get(con).await?;
    // Per master: its pipeline and the index in `pipe` of each command.
    let mut groups: Vec<(Pipeline, Vec<usize>)> =
        vec![(redis::pipe(), Vec::new()); map.nodes.len()];
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let node = slot_of(cmd).and_then(|s| map.node_of(s)).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "a command without a key, or a slot no master serves",
            ))
        })?;
        groups[node].0.add_command(cmd.clone()).ignore();
        groups[node].1.push(i);
    }
    let mut sent = Vec::new();
    for (node, (group, indices)) in groups.into_iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let (host, port) = map.nodes[node].clone();
        let mut con = con.clone();
        let count = indices.len();
        let reply = tokio::spawn(async move {
            con.route_pipeline(
                group,
                0,
                count,
                SingleNodeRoutingInfo::ByAddress { host, port },
            )
            .await
        });
        sent.push((reply, indices));
    }
    let mut refused = Vec::new();
    let mut failed = None;
    for (reply, indices) in sent {
        let result = reply
            .await
            .unwrap_or_else(|e| Err(redis::RedisError::from(std::io::Error::other(e))));
        match result {
            // A pipeline's replies hold each command's own error.
            Ok(values) => {
                for (j, v) in values.into_iter().enumerate() {
                    let Value::ServerError(e) = v else {
                        continue;
                    };
                    if KEY_CODES.contains(&e.code()) {
                        refused.push((indices[j], e.to_string()));
                    } else {
                        failed = failed.or(Some(e.into()));
                    }
                }
            }
            Err(e) => match key_errors(&e) {
                Some(errors) => {
                    refused.extend(errors.into_iter().map(|(i, why)| (indices[i], why)));
                }
                None => failed = failed.or(Some(e)),
            },
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_slots() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"bar"), 5_061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_slot_map_finds_each_slots_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7002),
            ]),
        ]);
        let map = SlotMap::parse(&reply).unwrap();
        let port = |slot| map.node_of(slot).map(|n| map.nodes[n].1);
        assert_eq!(port(0), Some(7000));
        assert_eq!(port(5460), Some(7000));
        assert_eq!(port(5461), Some(7001));
        assert_eq!(port(10923), Some(7002));
        assert_eq!(port(16383), Some(7002));
        assert_eq!(map.nodes.len(), 3);
    }

    #[test]
    fn a_commands_slot_is_its_keys() {
        let set = redis::cmd("SET").arg("foo").arg("1").clone();
        assert_eq!(slot_of(&set), Some(12_182));
        let eval = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(1)
            .arg("bar")
            .arg("2")
            .clone();
        assert_eq!(slot_of(&eval), Some(5_061));
    }
}
