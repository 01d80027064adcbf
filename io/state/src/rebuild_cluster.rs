//! The rebuild of [`crate::rebuild`] on a Redis Cluster. A SCAN walks one
//! node's keys, and an MGET must keep to one slot, so each master is
//! scanned on its own, all at once, and the values of a batch are read by
//! a pipeline of GETs to the master that holds them (a pipeline, unlike a
//! transaction, may span that master's slots). The keys loaded and those
//! skipped are the same as on one server.

use callwatch_streams::Conn;
use callwatch_streams::classify::{KEY_CODES, key_errors};
use callwatch_streams::cluster::SlotMap;
use engine::router;
use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::rebuild::{Loaded, RebuildError, Restored, Skipped, restored_from, wanted};

/// One master's keys under `prefix` of the loaded kinds, with their
/// values (`Err` with the reason for a key that holds another type or is
/// not UTF-8), `scan_count` at a time.
async fn scan_node(
    mut con: ClusterConnection,
    host: String,
    port: u16,
    prefix: String,
    scan_count: usize,
) -> redis::RedisResult<Vec<(String, Result<Vec<u8>, String>)>> {
    let node = || {
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port,
        })
    };
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let reply = con
            .route_command(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(scan_count)
                    .clone(),
                node(),
            )
            .await?;
        let (next, found): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
        let mut keys = Vec::new();
        for key in found {
            if !key.strip_prefix(prefix.as_bytes()).is_some_and(wanted) {
                continue;
            }
            match String::from_utf8(key) {
                Ok(key) => keys.push(key),
                Err(e) => out.push((
                    e.as_bytes().escape_ascii().to_string(),
                    Err("the key is not UTF-8".to_owned()),
                )),
            }
        }
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GET").arg(key);
            }
            let values = match con
                .route_pipeline(
                    pipe,
                    0,
                    keys.len(),
                    SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    },
                )
                .await
            {
                Ok(values) => values.into_iter().map(Ok).collect::<Vec<_>>(),
                // A key of another type fails its GET alone.
                Err(e) => match key_errors(&e) {
                    Some(errors) => {
                        let mut values = vec![Ok(Value::Nil); keys.len()];
                        for (i, why) in errors {
                            values[i] = Err(why);
                        }
                        values
                    }
                    None => return Err(e),
                },
            };
            for (key, value) in keys.into_iter().zip(values) {
                match value {
                    // Expired between SCAN and GET.
                    Ok(Value::Nil) => {}
                    Ok(Value::BulkString(v)) => out.push((key, Ok(v))),
                    Ok(Value::ServerError(e)) if KEY_CODES.contains(&e.code()) => {
                        out.push((key, Err(format!("the key holds another type: {e}"))));
                    }
                    // Any other failure (a slot moved mid-rebuild) fails it.
                    Ok(Value::ServerError(e)) => return Err(e.into()),
                    Ok(_) => out.push((key, Err("the key does not hold a string".to_owned()))),
                    Err(why) => out.push((key, Err(format!("the key holds another type: {why}")))),
                }
            }
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Loads every multiplier and processed record of every master of the
/// cluster into a running engine, as [`crate::rebuild::load_into`] does
/// from one server.
pub async fn load_cluster_into(
    con: &Conn,
    key_prefix: &str,
    router: &mut router::Router,
    scan_count: usize,
    mut skipped: impl FnMut(Skipped),
) -> Result<Loaded, RebuildError> {
    let Conn::Cluster(cluster, _) = con else {
        return Err(RebuildError::Redis(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a cluster rebuild needs a cluster connection",
        ))));
    };
    let mut cluster = cluster.clone();
    let map = SlotMap::fetch(&mut cluster).await?;
    let scans: Vec<_> = map
        .nodes
        .iter()
        .map(|(host, port)| {
            tokio::spawn(scan_node(
                cluster.clone(),
                host.clone(),
                *port,
                key_prefix.to_owned(),
                scan_count,
            ))
        })
        .collect();
    let mut loaded = Loaded::default();
    for scan in scans {
        let found = scan
            .await
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))??;
        for (key, value) in found {
            let used =
                value.and_then(|v| restored_from(key.strip_prefix(key_prefix).unwrap_or(&key), &v));
            let r = match used {
                Ok(r) => r,
                Err(reason) => {
                    loaded.skipped += 1;
                    skipped(Skipped { key, reason });
                    continue;
                }
            };
            loaded.keys += 1;
            loaded.processed += u64::from(matches!(r, Restored::Record(_)));
            loaded.calls += u64::from(matches!(r, Restored::Call(_)));
            match r {
                Restored::Entry(r) => router.restore(r)?,
                Restored::Record(r) => router.restore_record(r)?,
                Restored::Call(r) => router.restore_call(r)?,
            }
        }
    }
    router.compact()?;
    Ok(loaded)
}
