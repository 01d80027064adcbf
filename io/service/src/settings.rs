//! The service's configuration: a TOML file, then environment overrides,
//! checked once at start. `callwatch config` prints the result with every
//! secret masked, and so does `Debug`: the token, the webhook secret and
//! every URL that may carry a password or key are
//! `callwatch_common::secret` types.
//!
//! Each section is the configuration of the crate that owns that concern,
//! with its defaults written there once: `[redis]`
//! (`callwatch_streams`), `[write_behind]` (`callwatch_state`),
//! `[postgres]` (`callwatch_ledger`), `[ingest]` (`callwatch_ingest`),
//! `[telegram]` (`callwatch_telegram`), `[payments]`
//! (`callwatch_payments`), `[dashboard]` (`callwatch_dashboard`);
//! `[engine]`, `[http]`, `[log]`, `[snapshot]` and `[charts]` are the
//! service's own.
//!
//! Every field has a default, so an empty file (or none) is a valid start
//! for a local run. Environment variables override the file:
//!
//! | variable | field |
//! | --- | --- |
//! | `REDIS_URL` | `redis.url` |
//! | `DATABASE_URL` | `postgres.url` |
//! | `TELOXIDE_TOKEN` | `telegram.token` |
//! | `CALLWATCH_WEBHOOK_SECRET` | `telegram.webhook_secret` |
//! | `CALLWATCH_SCHEMA` | `postgres.schema` |
//! | `CALLWATCH_PARTITIONS` | `ingest.partitions` |
//! | `CALLWATCH_OWNED_PARTITIONS` | `ingest.owned` (e.g. `0,1,2` or `0-7`) |
//! | `CALLWATCH_CONSUMER` | `ingest.consumer` |
//! | `CALLWATCH_HTTP_LISTEN` | `http.listen` |
//! | `CALLWATCH_DASHBOARD_URL` | `dashboard.base_url` |
//! | `CALLWATCH_DASHBOARD_SECRET` | `dashboard.secret` |
//! | `CALLWATCH_LOG_FORMAT` | `log.format` (`text` or `json`) |
//! | `CALLWATCH_LOG_LEVEL` | `log.level` |

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use callwatch_common::keys::dead_letter_key;
use callwatch_common::secret::{MASK, Secret, SecretUrl};
use callwatch_dashboard::DashboardConfig;
use callwatch_feed::FeedConfig;
use callwatch_ingest::stream::StreamIngestConfig;
use callwatch_ledger::pg::PostgresConfig;
use callwatch_payments::config::PaymentsConfig;
use callwatch_state::writebehind::WriteBehindConfig;
use callwatch_streams::connection::RedisConfig;
use callwatch_streams::log::DeadLetters;
use callwatch_telegram::config::TelegramConfig;
use engine::EngineConfig;
use engine::time::NANOS_PER_SEC;
use serde::{Deserialize, Serialize};

/// The environment variables that override settings, with the field each
/// sets: for `serve --help` and the README.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("CALLWATCH_CONFIG", "the TOML configuration file"),
    ("REDIS_URL", "redis.url"),
    ("DATABASE_URL", "postgres.url"),
    ("TELOXIDE_TOKEN", "telegram.token"),
    ("CALLWATCH_WEBHOOK_SECRET", "telegram.webhook_secret"),
    ("CALLWATCH_SCHEMA", "postgres.schema"),
    ("CALLWATCH_PARTITIONS", "ingest.partitions"),
    (
        "CALLWATCH_OWNED_PARTITIONS",
        "ingest.owned (e.g. 0,1,2 or 0-7)",
    ),
    ("CALLWATCH_CONSUMER", "ingest.consumer"),
    ("CALLWATCH_HTTP_LISTEN", "http.listen"),
    ("CALLWATCH_DASHBOARD_URL", "dashboard.base_url"),
    ("CALLWATCH_DASHBOARD_SECRET", "dashboard.secret"),
    ("CALLWATCH_LOG_FORMAT", "log.format (text or json)"),
    (
        "CALLWATCH_LOG_LEVEL",
        "log.level (RUST_LOG is honoured too)",
    ),
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub engine: EngineSection,
    pub redis: RedisConfig,
    pub write_behind: WriteBehindConfig,
    pub postgres: PostgresConfig,
    pub telegram: TelegramConfig,
    pub ingest: StreamIngestConfig,
    pub http: HttpSection,
    pub log: LogSection,
    /// Subscriptions paid in SOL; off while `receiving_address` is empty.
    pub payments: PaymentsConfig,
    /// Calls read from channel posts, prices from DEX data.
    pub sources: FeedConfig,
    /// Engine snapshots: where, how often, how many kept.
    pub snapshot: crate::snapshots::SnapshotSettings,
    /// Charts in multiplier alerts: on or off, and their bounds.
    pub charts: crate::charts::ChartSettings,
    /// The web dashboard; off while `base_url` is empty.
    pub dashboard: DashboardConfig,
}

/// The engine's settings (the engine itself takes a checked
/// [`EngineConfig`] and knows nothing of files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Shard threads; 0 means the number of cores [default: 0].
    pub shards: usize,
    /// Multiples that alert, ascending [default: 2, 5, 10, 20, 50, 100].
    pub thresholds: Vec<f64>,
    /// How long processed records and tracked entries live [default: 168].
    pub ttl_hours: f64,
    /// Pin shard threads to cores [default: true].
    pub pin_threads: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Where `/metrics`, `/healthz` and `/readyz` listen, and the
    /// dashboard's pages when it is on [default: `127.0.0.1:9464`].
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json` [default: `text`].
    pub format: String,
    /// A tracing filter, e.g. `info` or `callwatch_ingest=debug,info`;
    /// `RUST_LOG`, when set, wins [default: `info`].
    pub level: String,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            shards: 0,
            thresholds: engine::config::DEFAULT_THRESHOLDS.to_vec(),
            ttl_hours: engine::config::DEFAULT_TTL_HOURS as f64,
            pin_threads: true,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".to_owned(),
            level: "info".to_owned(),
        }
    }
}

/// Reads `name` from the environment through `env`, for tests.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn parse_partitions(list: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (
                    a.trim().parse().with_context(|| format!("`{part}`"))?,
                    b.trim().parse().with_context(|| format!("`{part}`"))?,
                );
                if a > b {
                    bail!("`{part}`: the range is backwards");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("`{part}`"))?),
        }
    }
    Ok(out)
}

/// Moves keys that an earlier layout of the file had elsewhere to where
/// they are now, so files written for it still load: `redis.
/// write_behind_capacity` is `write_behind.capacity`.
fn upgrade_layout(file: &mut toml::Table) {
    let capacity = file
        .get_mut("redis")
        .and_then(toml::Value::as_table_mut)
        .and_then(|redis| redis.remove("write_behind_capacity"));
    if let Some(capacity) = capacity {
        let section = file
            .entry("write_behind")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(section) = section.as_table_mut() {
            section.entry("capacity").or_insert(capacity);
        }
    }
}

impl Settings {
    /// The file (if any), then the environment, then the checks.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        Self::load_with(file, &|name| std::env::var(name).ok())
    }

    fn load_with(file: Option<&Path>, env: Env<'_>) -> anyhow::Result<Settings> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the configuration file {}", path.display())
                })?;
                let mut table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("in the configuration file {}", path.display()))?;
                upgrade_layout(&mut table);
                Settings::deserialize(table)
                    .with_context(|| format!("in the configuration file {}", path.display()))?
            }
            None => Settings::default(),
        };
        s.apply_env(env)?;
        s.check()?;
        Ok(s)
    }

    fn apply_env(&mut self, env: Env<'_>) -> anyhow::Result<()> {
        let set = |name: &str, field: &mut String| {
            if let Some(v) = env(name) {
                *field = v;
            }
        };
        if let Some(v) = env("REDIS_URL") {
            self.redis.url = SecretUrl::new(v);
        }
        if let Some(v) = env("DATABASE_URL") {
            self.postgres.url = SecretUrl::new(v);
        }
        if let Some(v) = env("TELOXIDE_TOKEN") {
            self.telegram.token = Secret::new(v);
        }
        if let Some(v) = env("CALLWATCH_WEBHOOK_SECRET") {
            self.telegram.webhook_secret = Secret::new(v);
        }
        if let Some(v) = env("CALLWATCH_DASHBOARD_SECRET") {
            self.dashboard.secret = Secret::new(v);
        }
        set("CALLWATCH_DASHBOARD_URL", &mut self.dashboard.base_url);
        set("CALLWATCH_SCHEMA", &mut self.postgres.schema);
        set("CALLWATCH_CONSUMER", &mut self.ingest.consumer);
        set("CALLWATCH_HTTP_LISTEN", &mut self.http.listen);
        set("CALLWATCH_LOG_FORMAT", &mut self.log.format);
        set("CALLWATCH_LOG_LEVEL", &mut self.log.level);
        if let Some(v) = env("CALLWATCH_PARTITIONS") {
            self.ingest.partitions = v
                .trim()
                .parse()
                .with_context(|| format!("CALLWATCH_PARTITIONS=`{v}` is not a number"))?;
        }
        if let Some(v) = env("CALLWATCH_OWNED_PARTITIONS") {
            self.ingest.owned = parse_partitions(&v).context("CALLWATCH_OWNED_PARTITIONS")?;
        }
        Ok(())
    }

    /// Every value that cannot work, named.
    fn check(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = self.engine_config() {
            problems.push(format!("engine: {e:#}"));
        }
        problems.extend(self.redis.problems());
        problems.extend(self.write_behind.problems());
        problems.extend(self.postgres.problems());
        problems.extend(self.telegram.problems());
        problems.extend(self.sources.problems());
        problems.extend(self.charts.problems());
        problems.extend(self.dashboard.problems());
        if self.payments_enabled() {
            if let Err(e) = self.payments.check() {
                problems.push(e.to_string());
            }
            if self.postgres.url.is_empty() {
                problems.push(
                    "payments need PostgreSQL (postgres.url or DATABASE_URL), their system of record"
                        .to_owned(),
                );
            }
        }
        if let Err(e) = self.ingest_config().owned_partitions() {
            problems.push(format!("ingest: {e}"));
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen `{}` is not an address:port",
                self.http.listen
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push(format!(
                "log.format `{}`: use `text` or `json`",
                self.log.format
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    /// The ingest's configuration: its section, with the Redis prefix and
    /// timeouts.
    pub fn ingest_config(&self) -> StreamIngestConfig {
        StreamIngestConfig {
            prefix: self.redis.key_prefix.clone(),
            timeouts: self.redis.timeouts(),
            ..self.ingest.clone()
        }
    }

    /// Where every stage sets aside what it cannot take: the ingest's
    /// dead-letter stream (`ingest.dead_letter`, by default
    /// `{prefix}events:dead`) and its bound.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            stream: self
                .ingest
                .dead_letter
                .clone()
                .unwrap_or_else(|| dead_letter_key(&self.redis.key_prefix)),
            max_len: self.ingest.dead_letter_max_len,
        }
    }

    /// The write-behind's configuration: its section, with the Redis prefix,
    /// the engine's TTL and the dead-letter stream.
    pub fn write_behind_config(&self, engine: &EngineConfig) -> WriteBehindConfig {
        WriteBehindConfig {
            key_prefix: self.redis.key_prefix.clone(),
            ttl_nanos: engine.ttl_nanos,
            dead_letters: Some(self.dead_letters()),
            ..self.write_behind.clone()
        }
    }

    /// The engine's configuration.
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let mut cfg = EngineConfig::default();
        if self.engine.shards > 0 {
            cfg.shards = self.engine.shards;
        }
        cfg.thresholds = self.engine.thresholds.clone();
        let ttl = self.engine.ttl_hours * 3600.0 * NANOS_PER_SEC as f64;
        if !(ttl >= 1.0 && ttl < i64::MAX as f64) {
            bail!("ttl_hours must be a positive number of hours");
        }
        cfg.ttl_nanos = ttl as i64;
        cfg.pin_threads = self.engine.pin_threads;
        cfg.report_silent = true;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Payments are on once a receiving address is set.
    pub fn payments_enabled(&self) -> bool {
        !self.payments.receiving_address.is_empty()
    }

    /// The partitions this process reads.
    pub fn owned_partitions(&self) -> Vec<u32> {
        if self.ingest.owned.is_empty() {
            (0..self.ingest.partitions).collect()
        } else {
            self.ingest.owned.clone()
        }
    }

    /// These settings with every secret replaced, for printing as TOML
    /// (`Debug` masks them by itself).
    pub fn masked(&self) -> Settings {
        let mut s = self.clone();
        for url in [
            &mut s.redis.url,
            &mut s.postgres.url,
            &mut s.payments.rpc_url,
        ] {
            *url = SecretUrl::new(url.masked());
        }
        for secret in [
            &mut s.telegram.token,
            &mut s.telegram.webhook_secret,
            &mut s.dashboard.secret,
        ] {
            if !secret.is_empty() {
                *secret = Secret::new(format!("<set, {MASK}>"));
            }
        }
        s
    }

    /// The masked settings as TOML.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(&self.masked()).expect("settings serialise")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        // Tests run in parallel: a file of each call's own, removed after.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "callwatch-settings-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, toml_text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let r = Settings::load_with(Some(&path), &|name| env.get(name).cloned());
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let s = load("", &[]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.owned_partitions(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/callwatch.toml");
        let s = Settings::load_with(Some(&path), &|_| None).unwrap();
        assert_eq!(s, Settings::default(), "examples/callwatch.toml drifted");
    }

    #[test]
    fn a_file_in_the_earlier_layout_still_loads() {
        let s = load("[redis]\nwrite_behind_capacity = 5000\n", &[]).unwrap();
        assert_eq!(s.write_behind.capacity, 5000);
        let both = load(
            "[redis]\nwrite_behind_capacity = 5000\n[write_behind]\ncapacity = 7\n",
            &[],
        )
        .unwrap();
        assert_eq!(both.write_behind.capacity, 7, "the new key wins");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let s = load(
            "[redis]\nurl = \"redis://file:6379/1\"\n[ingest]\npartitions = 16\n",
            &[
                ("REDIS_URL", "redis://env:6379/2"),
                ("CALLWATCH_OWNED_PARTITIONS", "0-3, 9"),
                ("TELOXIDE_TOKEN", "123:secret"),
            ],
        )
        .unwrap();
        assert_eq!(s.redis.url.expose(), "redis://env:6379/2");
        assert_eq!(s.ingest.partitions, 16);
        assert_eq!(s.owned_partitions(), [0, 1, 2, 3, 9]);
        assert_eq!(s.telegram.token.expose(), "123:secret");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let err = load(
            "[engine]\nthresholds = [5, 2]\n[ingest]\npartitions = 4\nowned = [7]\n[http]\nlisten = \"nowhere\"\n[log]\nformat = \"xml\"\n",
            &[],
        )
        .unwrap_err();
        let text = format!("{err:#}");
        for needle in ["engine:", "partition 7", "http.listen", "log.format"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let hook = load(
            "[telegram]\nupdates = \"webhook\"\nwebhook_url = \"http://x\"\nwebhook_secret = \"a b\"\n",
            &[],
        )
        .unwrap_err();
        let text = format!("{hook:#}");
        for needle in ["webhook_url must be an https URL", "webhook_secret"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let pay = load("[payments]\nreceiving_address = \"nope\"\n", &[]).unwrap_err();
        let text = format!("{pay:#}");
        assert!(
            text.contains("receiving_address") && text.contains("payments need PostgreSQL"),
            "{text}"
        );
        let mode = load("[telegram]\nupdates = \"push\"\n", &[]).unwrap_err();
        assert!(format!("{mode:#}").contains("use `polling`, `webhook` or `off`"));
        let unknown = load("[redis]\nurll = \"x\"\n", &[]).unwrap_err();
        assert!(format!("{unknown:#}").contains("urll"), "{unknown:#}");
    }

    /// Settings with a secret in every place one can be, from the file and
    /// from the environment.
    fn with_secrets() -> Settings {
        load(
            "[postgres]\nurl = \"host=db user=cw password='hunter 2' dbname=cw sslmode=require\"\n\
             [payments]\nrpc_url = \"https://user:pw@rpc.example.com/v2/KEY123?api-key=KEY456\"\n",
            &[
                ("REDIS_URL", "rediss://default:s3cret@cache:6380/0"),
                ("TELOXIDE_TOKEN", "123456:AAE-very-secret"),
                ("CALLWATCH_WEBHOOK_SECRET", "hook-secret_1"),
                (
                    "CALLWATCH_DASHBOARD_SECRET",
                    "dash-secret-0123456789abcdefghijklmnop",
                ),
            ],
        )
        .unwrap()
    }

    const SECRETS: &[&str] = &[
        "hunter",
        "s3cret",
        "AAE-very-secret",
        "123456:",
        "hook-secret_1",
        "dash-secret",
        "KEY123",
        "KEY456",
        "pw@",
    ];

    #[test]
    fn secrets_never_print() {
        let s = with_secrets();
        assert_eq!(s.telegram.token.expose(), "123456:AAE-very-secret");
        let printed = s.to_masked_toml();
        for secret in SECRETS {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        for shown in [
            "rediss://default:***@cache:6380/0",
            "password=*** dbname=cw sslmode=require",
            "https://user:***@rpc.example.com/***?api-key=***",
            "token = \"<set, ***>\"",
        ] {
            assert!(printed.contains(shown), "{shown} not in:\n{printed}");
        }
    }

    fn assert_shows_no_secret(shown: &[String]) {
        for text in shown {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} shown:\n{text}");
            }
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = with_secrets();
        let shown = [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{:?}", s.redis),
            format!("{:?}", s.postgres),
            format!("{:?}", s.telegram),
            format!("{:?}", s.payments),
            format!("{:?}", s.dashboard),
        ];
        assert_shows_no_secret(&shown);
        assert!(shown[0].contains("rediss://default:***@cache:6380/0"));
    }

    #[test]
    fn what_carries_a_url_onward_shows_no_secret_either() {
        let s = with_secrets();
        assert_shows_no_secret(&[
            format!("{:?}", s.redis.endpoint()),
            format!("{:?}", s.postgres.server().unwrap()),
            format!("{}", s.redis.url),
            format!("{}", s.payments.rpc_url),
        ]);
    }
}
