//! The `writebehind` scenario: engine effects through the Redis
//! write-behind, as fast as it takes them, timed from the first effect to
//! the last key landing in Redis.
//!
//! Each synthetic call alert makes two keys (the multiplier record and the
//! accepted processed record); a share of them then reach a threshold,
//! which either folds into a record still held (coalesced) or raises
//! `last_threshold` in Redis with the script. The generator keeps the
//! buffer under its bound (it waits while half of it is held), so nothing
//! overflows and every key is counted; the figure is keys written to Redis
//! per second over the whole run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callwatch_common::secret::SecretUrl;
use callwatch_state::writebehind::{self, WriteBehind, WriteBehindConfig, WriteBehindStats};
use callwatch_streams::connection::{self, RedisTimeouts};
use engine::effect::{CallAlert, Effect, MultiplierAlert};
use engine::sim::{self, Rng};
use engine::token::Token;
use indicatif::ProgressBar;

use crate::rebuild_run::db_of;

#[derive(Debug, Clone)]
pub struct Plan {
    pub redis_url: SecretUrl,
    /// Call alerts to write (two keys each).
    pub alerts: u64,
    /// Share of alerts that later reach a threshold.
    pub threshold_share: f64,
    pub batch_keys: usize,
    pub capacity: usize,
    pub seed: u64,
    pub overwrite: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub alerts: u64,
    pub effects: u64,
    pub secs: f64,
    pub stats: WriteBehindStats,
    pub keys_in_redis: u64,
}

impl Results {
    pub fn keys_per_sec(&self) -> f64 {
        self.stats.flushed as f64 / self.secs.max(1e-9)
    }
}

fn now_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Runs the scenario: an empty database, the alerts recorded as fast as
/// the write-behind takes them and timed until the last key lands, then
/// the keys counted in Redis and flushed.
pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    let db = check(plan)?;
    // Two workers: the flusher encodes the next pipeline while the current
    // one is sent and answered.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let timeouts = RedisTimeouts {
        response: Duration::from_secs(60),
        ..RedisTimeouts::default()
    };
    let mut admin = connection::managed_connection(plan.redis_url.expose(), &timeouts)
        .context("--redis-url")?;
    rt.block_on(async {
        let size: u64 = redis::cmd("DBSIZE")
            .query_async(&mut admin)
            .await
            .context("cannot reach Redis")?;
        if size > 0 && !plan.overwrite {
            bail!(
                "database {db} holds {size} keys; pass --overwrite to flush it, or name an empty one"
            );
        }
        let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await?;
        Ok(())
    })?;

    let (wb, flusher) = writebehind::start(
        WriteBehindConfig {
            batch_keys: plan.batch_keys,
            capacity: plan.capacity,
            ..WriteBehindConfig::default()
        },
        admin.clone(),
    );
    let mut alerts = Alerts::new(plan.seed);
    let pb = ProgressBar::new(plan.alerts);
    let high_water = (plan.capacity / 2) as u64;
    let started = Instant::now();
    let effects = alerts.record(plan, &wb, high_water, &pb);
    let stats = rt
        .block_on(flusher.close(Duration::from_secs(600)))
        .context("the write-behind did not finish")?;
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let keys_in_redis = rt.block_on(async {
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut admin).await?;
        let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await?;
        Ok::<_, redis::RedisError>(n)
    })?;
    anyhow::ensure!(
        stats.overflowed == 0,
        "the buffer overflowed ({} changes dropped)",
        stats.overflowed
    );
    anyhow::ensure!(
        keys_in_redis == 2 * plan.alerts,
        "Redis holds {keys_in_redis} keys, expected {}",
        2 * plan.alerts
    );
    Ok(Results {
        alerts: plan.alerts,
        effects,
        secs,
        stats,
        keys_in_redis,
    })
}

/// Checks the plan before anything touches Redis; returns the database
/// number its URL names.
fn check(plan: &Plan) -> anyhow::Result<i64> {
    let db = db_of(plan.redis_url.expose())?;
    anyhow::ensure!(plan.alerts > 0, "--alerts must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&plan.threshold_share),
        "--threshold-share must be between 0 and 1"
    );
    anyhow::ensure!(
        plan.capacity >= 2 * plan.batch_keys && plan.batch_keys > 0,
        "--capacity must be at least twice --batch-keys, which must be positive"
    );
    Ok(db)
}

/// The synthetic alerts' source: the draws, 10,000 tokens, and the one
/// time every alert is dated (now, so the keys' TTLs run from now).
struct Alerts {
    rng: Rng,
    tokens: Vec<Token>,
    at: i64,
}

impl Alerts {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let tokens: Vec<_> = (0..10_000).map(|_| sim::token(&mut rng)).collect();
        let at = now_nanos();
        Alerts { rng, tokens, at }
    }

    /// Records `plan.alerts` call alerts and, for a `threshold_share` of
    /// them, a threshold for an alert made a while before. Every 4096
    /// alerts it waits while `high_water` keys are held, so that the
    /// buffer never overflows and every key is counted. Returns the effects
    /// recorded.
    fn record(&mut self, plan: &Plan, wb: &WriteBehind, high_water: u64, pb: &ProgressBar) -> u64 {
        let (rng, tokens, at) = (&mut self.rng, &self.tokens, self.at);
        let mut effects = 0u64;
        // Alert i's (token, chat): every pair distinct.
        let n = tokens.len() as u64;
        let pair = |i: u64| {
            (
                tokens[(i % n) as usize],
                i64::try_from(i / n).unwrap_or(i64::MAX) + 1,
            )
        };
        for i in 0..plan.alerts {
            let (token, chat_id) = pair(i);
            wb.record(&Effect::CallAlert(CallAlert {
                seq: i,
                chat_id,
                token,
                at,
                fdv_usd: 100_000.0 + i as f64,
                callers: vec![-1001, -1002].into(),
                channel_id: -1002,
            }));
            effects += 1;
            // A threshold for an alert made a while ago: some still held, most
            // already written.
            if rng.unit() < plan.threshold_share && i >= 5_000 {
                let (token, chat_id) = pair(i - rng.below(5_000));
                wb.record(&Effect::MultiplierAlert(MultiplierAlert {
                    seq: i,
                    chat_id,
                    token,
                    at,
                    threshold: 2.0,
                    multiplier: 2.0,
                    fdv_at_call: 1.0,
                    fdv_usd: 2.0,
                    tracking_started: at,
                }));
                effects += 1;
            }
            if i.is_multiple_of(4096) {
                pb.set_position(i);
                while wb.stats().pending >= high_water {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        effects
    }
}

pub fn table(r: &Results) -> String {
    format!(
        "  effects recorded         {} ({} call alerts)\n  \
         keys written             {} in {} pipelines ({} changes coalesced)\n  \
         keys in Redis            {}\n  \
         time                     {:.2} s\n  \
         write-behind             {:.0} keys/s\n",
        r.effects,
        r.alerts,
        r.stats.flushed,
        r.stats.pipelines,
        r.stats.coalesced,
        r.keys_in_redis,
        r.secs,
        r.keys_per_sec()
    )
}

pub fn json(r: &Results) -> String {
    format!(
        "{{\"scenario\":\"writebehind\",\"alerts\":{},\"effects\":{},\"keys_written\":{},\
         \"pipelines\":{},\"coalesced\":{},\"failed_pipelines\":{},\"keys_in_redis\":{},\
         \"seconds\":{:.3},\"keys_per_sec\":{:.0}}}",
        r.alerts,
        r.effects,
        r.stats.flushed,
        r.stats.pipelines,
        r.stats.coalesced,
        r.stats.failed_pipelines,
        r.keys_in_redis,
        r.secs,
        r.keys_per_sec()
    )
}
