//! The `rebuild` scenario: fill a Redis database with tracked keys in the
//! predecessor's format, then time loading them back two ways on the same
//! data: the predecessor's (SCAN, COUNT 1000, keys only, grouped into
//! token → users lists) and callwatch's (keys and values, into the sharded
//! engine).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use callwatch_common::secret::SecretUrl;
use callwatch_state::rebuild::{bulk_connection_config, into_fresh_engine};
use callwatch_streams::connection::RedisEndpoint;
use engine::EngineConfig;
use engine::time::NANOS_PER_SEC;
use indicatif::ProgressBar;
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

use crate::market::{Market, Spec};

/// What the scenario is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub redis_url: SecretUrl,
    pub market: Spec,
    pub shards: usize,
    pub scan_count: usize,
    /// Write into a database that already holds keys (they are flushed).
    pub overwrite: bool,
    /// Leave the keys in Redis afterwards.
    pub keep: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub keys: u64,
    pub tokens: u64,
    pub fill_secs: f64,
    pub seed_secs: f64,
    pub seed_keys: u64,
    pub secs: f64,
    pub loaded: u64,
    pub skipped: u64,
    /// The server alone visiting every key once (one SCAN over the whole
    /// table, matching nothing): a floor under any method that reads them.
    pub floor_secs: f64,
    /// CPU seconds the server's main thread spent during the floor, and
    /// during callwatch's rebuild (`INFO cpu`, user and system): the
    /// server's own share of each, whatever the client does meanwhile.
    pub floor_server_cpu_secs: f64,
    pub server_cpu_secs: f64,
}

/// The database number a URL names; the scenario flushes that database, so
/// it refuses to guess one.
pub(crate) fn db_of(url: &str) -> anyhow::Result<i64> {
    let last = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    match last.parse::<i64>() {
        Ok(db) if url.matches('/').count() >= 3 => Ok(db),
        _ => bail!(
            "--redis-url must name a database number (e.g. redis://127.0.0.1:6379/13): \
             this scenario flushes that database"
        ),
    }
}

async fn dbsize(con: &mut MultiplexedConnection) -> redis::RedisResult<u64> {
    redis::cmd("DBSIZE").query_async(con).await
}

/// The CPU seconds the server's main thread has used (user and system),
/// from `INFO cpu`; the one thread that runs commands.
fn server_cpu_secs(rt: &Runtime, con: &MultiplexedConnection) -> anyhow::Result<f64> {
    let mut con = con.clone();
    let info: String = rt.block_on(redis::cmd("INFO").arg("cpu").query_async(&mut con))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .with_context(|| format!("INFO cpu has no {name}"))
    };
    Ok(field("used_cpu_user_main_thread")? + field("used_cpu_sys_main_thread")?)
}

/// The predecessor's `rebuild_token_cache`, in Rust: SCAN with MATCH and
/// COUNT 1000, keys only, split on `:` into a token → users map.
async fn seed_rebuild(con: &mut MultiplexedConnection) -> redis::RedisResult<(u64, usize)> {
    let mut by_token: HashMap<String, Vec<i64>> = HashMap::new();
    let mut cursor = 0u64;
    let mut count = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("multiplier:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        for key in &keys {
            let parts: Vec<&str> = key.split(':').collect();
            if parts.len() == 3
                && let Ok(user) = parts[2].parse::<i64>()
            {
                by_token.entry(parts[1].to_owned()).or_default().push(user);
            }
        }
        count += keys.len() as u64;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok((count, by_token.len()))
}

/// Runs the scenario: fill the database, then load it back the
/// predecessor's way, measure the server's floor, and load it callwatch's
/// way; each timed on its own.
pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let db = db_of(plan.redis_url.expose())?;
    let client = RedisEndpoint::new(plan.redis_url.clone()).client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let market = Market::new(plan.market.clone());
    let mut res = Results {
        keys: plan.market.keys,
        ..Results::default()
    };
    let mut con = rt
        .block_on(client.get_multiplexed_async_connection_with_config(&bulk_connection_config()))
        .context("cannot connect to Redis")?;

    // Fill, in the seed's format and TTL, pipelined.
    rt.block_on(async {
        let size = dbsize(&mut con).await?;
        if size > 0 && !plan.overwrite {
            bail!("database {db} holds {size} keys; pass --overwrite to flush it, or name an empty one");
        }
        let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await?;
        res.fill_secs = fill(&mut con, plan, &market).await?;
        Ok::<_, anyhow::Error>(())
    })?;

    // The predecessor's method.
    let started = Instant::now();
    let (seed_keys, _) = rt.block_on(seed_rebuild(&mut con))?;
    res.seed_secs = started.elapsed().as_secs_f64();
    res.seed_keys = seed_keys;

    let before = server_cpu_secs(&rt, &con)?;
    res.floor_secs = server_floor(&rt, &mut con)?;
    let after_floor = server_cpu_secs(&rt, &con)?;
    callwatch_rebuild(&rt, &con, plan, &mut res)?;
    res.floor_server_cpu_secs = after_floor - before;
    res.server_cpu_secs = server_cpu_secs(&rt, &con)? - after_floor;

    if !plan.keep {
        rt.block_on(async {
            let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await?;
            Ok::<_, redis::RedisError>(())
        })?;
    }
    Ok(res)
}

/// Writes every tracked key as the predecessor did: its key and JSON value,
/// tracking started now, a week's TTL; pipelined, 10,000 to a pipeline.
/// Returns the seconds the writes took.
async fn fill(
    con: &mut MultiplexedConnection,
    plan: &Plan,
    market: &Market,
) -> anyhow::Result<f64> {
    let pb = ProgressBar::new(plan.market.keys);
    let names: Vec<String> = market.tokens.iter().map(ToString::to_string).collect();
    // Tracking that started now, written the way the predecessor
    // (Python's isoformat) wrote it.
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let timestamp = engine::time::format_rfc3339(i64::try_from(now_secs)? * NANOS_PER_SEC)
        .replace('Z', ".000000+00:00");
    let started = Instant::now();
    let mut pipe = redis::pipe();
    let mut n = 0u64;
    for (t, chat, fdv) in market.keys() {
        let value = format!(
            "{{\"channel_id\": {}, \"fdv_at_call\": {fdv}, \"timestamp\": \"{timestamp}\"}}",
            Market::channel_id(u64::from(t) % plan.market.channels)
        );
        pipe.cmd("SET")
            .arg(format!("multiplier:{}:{chat}", names[t as usize]))
            .arg(value)
            .arg("EX")
            .arg(7 * 24 * 3600)
            .ignore();
        n += 1;
        if n.is_multiple_of(10_000) {
            let _: () = pipe.query_async(con).await?;
            pipe = redis::pipe();
            pb.set_position(n);
        }
    }
    if !n.is_multiple_of(10_000) {
        let _: () = pipe.query_async(con).await?;
    }
    pb.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

/// The floor: one SCAN whose COUNT exceeds the table visits every key on
/// the server, and a pattern nothing matches returns none of them. Returns
/// its seconds.
fn server_floor(rt: &Runtime, con: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (cursor, none): (u64, Vec<String>) = rt.block_on(
        redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg("\u{1}nothing-matches")
            .arg("COUNT")
            .arg(u64::MAX / 4)
            .query_async(con),
    )?;
    let floor_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        cursor == 0 && none.is_empty(),
        "the floor's SCAN did not visit the whole table in one call"
    );
    Ok(floor_secs)
}

/// callwatch's method: keys and values, into a fresh sharded engine, as
/// the service rebuilds at start. Timed until every shard holds its keys.
fn callwatch_rebuild(
    rt: &Runtime,
    con: &MultiplexedConnection,
    plan: &Plan,
    res: &mut Results,
) -> anyhow::Result<()> {
    let config = EngineConfig {
        shards: plan.shards,
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let (loaded, states) = rt.block_on(into_fresh_engine(
        con,
        "",
        &config,
        plan.scan_count,
        |_| {},
        |_| {},
    ))?;
    res.secs = started.elapsed().as_secs_f64();
    res.loaded = loaded.keys;
    res.skipped = loaded.skipped;
    res.tokens = states.iter().map(|s| s.stats().tokens).sum();
    Ok(())
}

/// The summary table.
pub fn table(r: &Results) -> String {
    format!(
        "  keys                     {}\n  fill (pipelined SET EX)  {:.2} s\n  \
         seed method (SCAN 1000, keys only)  {:.2} s, {:.0} keys/s ({} keys)\n  \
         callwatch (keys + values into the engine)  {:.2} s, {:.0} keys/s ({} loaded, {} skipped, {} tokens)\n  \
         speed-up                 {:.2}x\n  \
         server floor (every key visited once, nothing returned)  {:.2} s: no Redis reader beats {:.2}x\n  \
         callwatch ÷ floor        {:.2}x\n  \
         server CPU: floor {:.2} s, callwatch's SCAN and MGET {:.2} s ({:.2}x)\n",
        r.keys,
        r.fill_secs,
        r.seed_secs,
        r.seed_keys as f64 / r.seed_secs.max(1e-9),
        r.seed_keys,
        r.secs,
        r.loaded as f64 / r.secs.max(1e-9),
        r.loaded,
        r.skipped,
        r.tokens,
        r.seed_secs / r.secs.max(1e-9),
        r.floor_secs,
        r.seed_secs / r.floor_secs.max(1e-9),
        r.secs / r.floor_secs.max(1e-9),
        r.floor_server_cpu_secs,
        r.server_cpu_secs,
        r.server_cpu_secs / r.floor_server_cpu_secs.max(1e-9)
    )
}

/// The JSON line.
pub fn json(r: &Results) -> String {
    serde_json::json!({
        "scenario": "rebuild",
        "keys": r.loaded,
        "skipped": r.skipped,
        "tokens": r.tokens,
        "seconds": (r.secs * 1000.0).round() / 1000.0,
        "keys_per_sec": (r.loaded as f64 / r.secs.max(1e-9)).round(),
        "baseline_seconds": (r.seed_secs * 1000.0).round() / 1000.0,
        "baseline_keys": r.seed_keys,
        "speedup_vs_baseline": (r.seed_secs / r.secs.max(1e-9) * 100.0).round() / 100.0,
        "fill_secs": (r.fill_secs * 1000.0).round() / 1000.0,
        "server_floor_seconds": (r.floor_secs * 1000.0).round() / 1000.0,
        "max_speedup_from_redis": (r.seed_secs / r.floor_secs.max(1e-9) * 100.0).round() / 100.0,
        "vs_floor": (r.secs / r.floor_secs.max(1e-9) * 100.0).round() / 100.0,
        "floor_server_cpu_seconds": (r.floor_server_cpu_secs * 1000.0).round() / 1000.0,
        "server_cpu_seconds": (r.server_cpu_secs * 1000.0).round() / 1000.0,
    })
    .to_string()
}
