//! `callwatch demo`: the embedded default. Runs the engine on a seeded
//! simulated market, with no outside service, and prints the alerts as a
//! subscriber would read them, then what the run cost.
//!
//! With `--persist` (or `--redis-url`) it also keeps the engine's state in
//! Redis (the write-behind), and with a database an audit row per alert in
//! PostgreSQL (through the Redis audit stream), as the service does, on the
//! service's settings (`--config`, the environment).

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use callwatch_common::keys::audit_key;
use callwatch_common::secret::SecretUrl;
use callwatch_ledger::pg::connect_and_migrate;
use callwatch_service::persist::{PersistConfig, Persistence};
use engine::effect::Effect;
use engine::ingest::{Ingest, Outcome};
use engine::router::{self, Effects};
use engine::shard::ShardState;
use engine::sim::Market;
use engine::time::{NANOS_PER_SEC, Nanos, format_rfc3339, parse_rfc3339};

use super::generate::MarketArgs;
use super::{ConfigArgs, EngineArgs};

/// Run the engine on a simulated market and print readable alerts.
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    /// Events to simulate.
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// The seed; the same seed gives the same alerts.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Alerts to print; the rest are counted.
    #[arg(long, default_value_t = 25)]
    show: u64,
    #[command(flatten)]
    market: MarketArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Also keep what the service keeps: the engine's state in Redis (in
    /// the predecessor's keys) and, with a database, an audit row per alert
    /// in PostgreSQL, on the service's settings. Off by default.
    #[arg(long)]
    persist: bool,
    /// Keep the state in this Redis (e.g. redis://127.0.0.1:6379/0); implies
    /// --persist [default: redis.url, or REDIS_URL].
    #[arg(long)]
    redis_url: Option<SecretUrl>,
    /// Land audit rows in this PostgreSQL (through the Redis audit stream);
    /// the schema is migrated first; implies --persist [default:
    /// postgres.url, or DATABASE_URL; none: no audit rows].
    #[arg(long)]
    database_url: Option<SecretUrl>,
    /// The PostgreSQL schema [default: postgres.schema, or CALLWATCH_SCHEMA].
    #[arg(long)]
    schema: Option<String>,
    /// Time of the first simulated event (RFC 3339, e.g.
    /// 2026-11-25T10:00:00Z). By default the market is dated to end now:
    /// the state kept with --persist expires a week after the events' own
    /// times, so a market in the past would expire as it is written.
    #[arg(long, value_parser = parse_start)]
    start: Option<Nanos>,
}

fn parse_start(s: &str) -> Result<Nanos, String> {
    parse_rfc3339(s).map_err(|e| format!("not an RFC 3339 time ({e})"))
}

/// The stream time of the first event: `--start`, or the one that makes
/// the last of `events` events, `step_nanos` apart, fall on now.
fn first_event_time(start: Option<Nanos>, events: u64, step_nanos: Nanos) -> anyhow::Result<Nanos> {
    if let Some(start) = start {
        return Ok(start);
    }
    let span = step_nanos.saturating_mul(i64::try_from(events)?);
    Ok(callwatch_common::clock::now().saturating_sub(span))
}

/// Starts the persistence the flags ask for, if any.
fn persistence(
    args: &Args,
    ttl_nanos: i64,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<Persistence>> {
    if !args.persist && args.redis_url.is_none() && args.database_url.is_none() {
        return Ok(None);
    }
    let settings = args.config.settings()?;
    let mut redis = settings.redis.endpoint();
    if let Some(url) = &args.redis_url {
        redis.url = url.clone();
    }
    let database_url = args
        .database_url
        .clone()
        .or_else(|| settings.postgres.url().map(SecretUrl::from));
    let schema = args
        .schema
        .clone()
        .unwrap_or(settings.postgres.schema.clone());
    if let Some(url) = &database_url {
        rt.block_on(connect_and_migrate(
            url.expose(),
            &schema,
            "--database-url / DATABASE_URL",
        ))?;
    }
    let mut write_behind = settings.write_behind.clone();
    write_behind.ttl_nanos = ttl_nanos;
    write_behind.key_prefix = settings.redis.key_prefix.clone();
    let config = PersistConfig {
        redis,
        database_url,
        schema,
        audit_stream: audit_key(&settings.redis.key_prefix),
        dead_letters: settings.dead_letters(),
        write_behind,
        timeouts: settings.redis.timeouts(),
        ..PersistConfig::default()
    };
    let p = Persistence::start(&config, rt.handle()).context("--redis-url")?;
    Ok(Some(p))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut cfg = args.engine.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let persist = persistence(args, cfg.ttl_nanos, &rt)?;
    // A state store must see thresholds used up silently too.
    cfg.report_silent = persist.is_some();
    let mut market_config = args.market.config(args.seed)?;
    market_config.start = first_event_time(args.start, args.events, market_config.step_nanos)?;
    let market = Market::new(market_config);
    println!(
        "callwatch demo: {} simulated events ({} tokens, {} channels, {} chats, seed {}) on {} shard(s)\n",
        args.events,
        args.market.tokens,
        args.market.channels,
        args.market.chats,
        args.seed,
        cfg.shards
    );
    let started = Instant::now();
    let (mut router, effects, workers) = router::start(&cfg)?;
    let (calls, multipliers) = std::thread::scope(|scope| {
        let printer = scope.spawn(|| print_alerts(effects, args.show, persist.as_ref()));
        let mut ingest = Ingest::new();
        for event in market.take(usize::try_from(args.events)?) {
            if let Outcome::Event(env) = ingest.event(event) {
                router.submit(env)?;
            }
        }
        router.finish()?;
        printer.join().expect("printer thread does not panic")
    })?;
    let states = workers.join().context("a shard stopped")?;
    summary(args, &states, started, calls, multipliers);
    if let Some(p) = persist {
        close(p)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a sample of the alerts and counts them all (and hands each
/// effect to the persistence, if any): (call alerts, multiplier alerts).
fn print_alerts(
    mut effects: Effects,
    show: u64,
    persist: Option<&Persistence>,
) -> anyhow::Result<(u64, u64)> {
    let mut out = io::stdout().lock();
    let (mut calls, mut multipliers) = (0u64, 0u64);
    // Half the sample for each kind, so multiplier alerts (which come
    // later) are seen too.
    let (mut shown_calls, mut shown_multipliers) = (0u64, 0u64);
    // A popular call alerts dozens of chats at once; show at most two
    // alerts of any one event so the sample reads as a story.
    let (mut last_seq, mut of_seq) = (0u64, 0u32);
    while let Some(mut batch) = effects.next_batch()? {
        for effect in batch.drain(..) {
            if let Some(p) = persist {
                p.record(&effect)?;
            }
            let seq = effect.order_key().0;
            (last_seq, of_seq) = if seq == last_seq {
                (seq, of_seq + 1)
            } else {
                (seq, 1)
            };
            let quota = match effect {
                Effect::CallAlert(_) => (&mut shown_calls, show / 2),
                Effect::MultiplierAlert(_) => (&mut shown_multipliers, show - show / 2),
                // State only (when persisting): nothing to show.
                Effect::Progress(_) => continue,
            };
            if *quota.0 < quota.1 && of_seq <= 2 {
                writeln!(out, "{}", describe(&effect))?;
                *quota.0 += 1;
            }
            match effect {
                Effect::CallAlert(_) => calls += 1,
                Effect::MultiplierAlert(_) => multipliers += 1,
                Effect::Progress(_) => {}
            }
        }
        effects.recycle(batch);
    }
    Ok((calls, multipliers))
}

/// What the run did and cost.
fn summary(args: &Args, states: &[ShardState], started: Instant, calls: u64, multipliers: u64) {
    let seconds = started.elapsed().as_secs_f64();
    let tracked: u64 = states.iter().map(|s| s.stats().tracked).sum();
    let tokens: u64 = states.iter().map(|s| s.stats().tokens).sum();
    let total = calls + multipliers;
    if total > args.show {
        println!("… {total} alerts in all; --show N prints more");
    }
    println!(
        "\n{} events in {:.2} s: {:.0} events/s; {} call alerts, {} multiplier alerts; \
         {} tokens and {} tracked entries held at the end",
        args.events,
        seconds,
        args.events as f64 / seconds,
        calls,
        multipliers,
        tokens,
        tracked
    );
}

/// Finishes the Redis and PostgreSQL writes and says what they were.
fn close(p: Persistence) -> anyhow::Result<()> {
    let closing = Instant::now();
    let stats = p
        .close(std::time::Duration::from_secs(60))
        .context("finishing the Redis and PostgreSQL writes")?;
    let wb = stats.write_behind;
    println!(
        "Redis: {} keys written in {} pipelines ({} changes folded, {} dropped at the bound, {} failed pipelines retried); \
         the last writes took {:.2} s after the engine finished",
        wb.flushed,
        wb.pipelines,
        wb.coalesced,
        wb.overflowed,
        wb.failed_pipelines,
        closing.elapsed().as_secs_f64()
    );
    if let Some(audit) = stats.audit {
        println!(
            "PostgreSQL: {} audit rows pushed, {} committed ({} new) in {} batches",
            stats.audit_pushed, audit.rows_committed, audit.rows_inserted, audit.batches
        );
    }
    Ok(())
}

/// One alert as a line a person reads.
fn describe(effect: &Effect) -> String {
    match effect {
        Effect::CallAlert(a) => format!(
            "[{}] chat {}: CALL {} at {}, called by {} channel{} ({})",
            clock(a.at),
            a.chat_id,
            short(&a.token.to_string()),
            money(a.fdv_usd),
            a.callers.len(),
            if a.callers.len() == 1 { "" } else { "s" },
            a.callers
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Effect::MultiplierAlert(a) => format!(
            "[{}] chat {}: {}x {} now {} ({:.1}x from {} at the call)",
            clock(a.at),
            a.chat_id,
            a.threshold,
            short(&a.token.to_string()),
            money(a.fdv_usd),
            a.multiplier,
            money(a.fdv_at_call)
        ),
        Effect::Progress(p) => format!(
            "chat {}: {} passed {}x while the chat was inactive",
            p.chat_id,
            short(&p.token.to_string()),
            p.threshold
        ),
    }
}

fn clock(at: i64) -> String {
    let text = format_rfc3339(at - at.rem_euclid(NANOS_PER_SEC));
    text.replace('T', " ").trim_end_matches('Z').to_owned()
}

fn short(token: &str) -> String {
    if token.len() <= 12 {
        return token.to_owned();
    }
    format!("{}…{}", &token[..6], &token[token.len() - 4..])
}

fn money(usd: f64) -> String {
    match usd {
        v if v >= 1e9 => format!("${:.2}B", v / 1e9),
        v if v >= 1e6 => format!("${:.2}M", v / 1e6),
        v if v >= 1e3 => format!("${:.1}K", v / 1e3),
        v => format!("${v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_market_ends_now_unless_told_when_it_starts() {
        let step = NANOS_PER_SEC / 20;
        let before = callwatch_common::clock::now();
        let start = first_event_time(None, 1_000, step).unwrap();
        let after = callwatch_common::clock::now();
        assert!((before - 1_000 * step..=after - 1_000 * step).contains(&start));
        assert_eq!(first_event_time(Some(5), 1_000, step).unwrap(), 5);
        assert!(parse_start("yesterday").is_err());
    }

    #[test]
    fn money_reads_well() {
        assert_eq!(money(125_000.0), "$125.0K");
        assert_eq!(money(1_562_500.0), "$1.56M");
        assert_eq!(money(12.0), "$12");
    }
}
