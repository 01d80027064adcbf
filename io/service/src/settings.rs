//! The service's configuration: a TOML file, then environment overrides,
//! checked once at start. `callwatch config` prints the result with every
//! secret masked.
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
//! | `CALLWATCH_LOG_FORMAT` | `log.format` (`text` or `json`) |
//! | `CALLWATCH_LOG_LEVEL` | `log.level` |

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use callwatch_io::payments::config::PaymentsConfig;
use engine::EngineConfig;
use engine::time::NANOS_PER_SEC;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub engine: EngineSection,
    pub redis: RedisSection,
    pub postgres: PostgresSection,
    pub telegram: TelegramSection,
    pub ingest: IngestSection,
    pub http: HttpSection,
    pub log: LogSection,
    /// Subscriptions paid in SOL; off while `receiving_address` is empty.
    pub payments: PaymentsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Shard threads; 0 means the number of cores.
    pub shards: usize,
    pub thresholds: Vec<f64>,
    pub ttl_hours: f64,
    pub pin_threads: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    pub url: String,
    /// Put before every key the service writes; empty in production (the
    /// predecessor's layout).
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// The write-behind buffer's bound, in keys.
    pub write_behind_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// Empty: no audit rows, no subscriptions of record.
    pub url: String,
    pub schema: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramSection {
    /// The bot token; empty runs the service without sending (alerts are
    /// still decided, kept and audited).
    pub token: String,
    pub api_url: String,
    pub per_chat_per_sec: f64,
    pub global_per_sec: f64,
    /// Telegram user ids allowed the admin commands (`/grant`, `/stats`).
    pub admins: Vec<i64>,
    /// How commands reach the bot: `polling`, `webhook` or `off` (a
    /// process that only sends; run exactly one process that receives).
    pub updates: String,
    /// The bot's @username without the `@`, so `/status@name` is taken
    /// and a command for another bot in a group is not. Empty: any.
    pub bot_username: String,
    /// Webhook mode: the public HTTPS URL Telegram posts updates to.
    pub webhook_url: String,
    /// Webhook mode: where the webhook server listens.
    pub webhook_listen: String,
    /// Webhook mode: the secret Telegram sends in
    /// `X-Telegram-Bot-Api-Secret-Token` (1 to 256 of A-Z a-z 0-9 _ -).
    pub webhook_secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Token events are spread over this many streams `events:{p}`.
    pub partitions: u32,
    /// The partitions this process reads; empty means all.
    pub owned: Vec<u32>,
    pub group: String,
    pub consumer: String,
    /// Entries per read.
    pub batch: usize,
    pub block_ms: u64,
    /// Entries left pending this long by a dead consumer are claimed.
    pub claim_idle_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `callwatch_io=debug,info`.
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

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: String::new(),
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
            write_behind_capacity: 1_000_000,
        }
    }
}

impl Default for PostgresSection {
    fn default() -> Self {
        PostgresSection {
            url: String::new(),
            schema: "callwatch".to_owned(),
        }
    }
}

impl Default for TelegramSection {
    fn default() -> Self {
        TelegramSection {
            token: String::new(),
            api_url: "https://api.telegram.org".to_owned(),
            per_chat_per_sec: 1.0,
            global_per_sec: 30.0,
            admins: Vec::new(),
            updates: "polling".to_owned(),
            bot_username: String::new(),
            webhook_url: String::new(),
            webhook_listen: "0.0.0.0:8443".to_owned(),
            webhook_secret: String::new(),
        }
    }
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            partitions: 8,
            owned: Vec::new(),
            group: "callwatch".to_owned(),
            consumer: "callwatch-1".to_owned(),
            batch: 1_000,
            block_ms: 100,
            claim_idle_ms: 30_000,
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
                toml::from_str(&text)
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
        set("REDIS_URL", &mut self.redis.url);
        set("DATABASE_URL", &mut self.postgres.url);
        set("TELOXIDE_TOKEN", &mut self.telegram.token);
        set(
            "CALLWATCH_WEBHOOK_SECRET",
            &mut self.telegram.webhook_secret,
        );
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
        if redis::Client::open(self.redis.url.as_str()).is_err() {
            problems.push("redis.url is not a Redis URL".to_owned());
        }
        if self.redis.connect_timeout_ms == 0 || self.redis.response_timeout_ms == 0 {
            problems.push("redis timeouts must be positive".to_owned());
        }
        if self.redis.write_behind_capacity == 0 {
            problems.push("redis.write_behind_capacity must be positive".to_owned());
        }
        if !self.postgres.url.is_empty()
            && self.postgres.url.parse::<tokio_postgres::Config>().is_err()
        {
            problems.push("postgres.url is not a PostgreSQL connection string".to_owned());
        }
        let schema_ok = callwatch_io::migrate::valid_schema_name(&self.postgres.schema);
        if !schema_ok {
            problems.push(format!(
                "postgres.schema `{}`: use 1 to 63 lowercase letters, digits or underscores",
                self.postgres.schema
            ));
        }
        let t = &self.telegram;
        if !(t.per_chat_per_sec > 0.0 && t.global_per_sec >= t.per_chat_per_sec) {
            problems.push(
                "telegram rates must be positive, the global one at least the per-chat one"
                    .to_owned(),
            );
        }
        if !t.api_url.starts_with("http://") && !t.api_url.starts_with("https://") {
            problems.push("telegram.api_url must be an http(s) URL".to_owned());
        }
        if !t.token.is_empty() && !t.token.contains(':') {
            problems.push("telegram.token does not look like a bot token (id:secret)".to_owned());
        }
        match t.updates.as_str() {
            "polling" | "off" => {}
            "webhook" => {
                if !t.webhook_url.starts_with("https://") {
                    problems.push(
                        "telegram.webhook_url must be an https URL in webhook mode".to_owned(),
                    );
                }
                if t.webhook_listen.parse::<SocketAddr>().is_err() {
                    problems.push(format!(
                        "telegram.webhook_listen `{}` is not an address:port",
                        t.webhook_listen
                    ));
                }
                let secret_ok = (1..=256).contains(&t.webhook_secret.len())
                    && t.webhook_secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !secret_ok {
                    problems.push(
                        "telegram.webhook_secret (or CALLWATCH_WEBHOOK_SECRET) must be 1 to 256 \
                         of A-Z a-z 0-9 _ - in webhook mode"
                            .to_owned(),
                    );
                }
            }
            other => problems.push(format!(
                "telegram.updates `{other}`: use `polling`, `webhook` or `off`"
            )),
        }
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
        let i = &self.ingest;
        if i.partitions == 0 || i.partitions > 4096 {
            problems.push("ingest.partitions must be between 1 and 4096".to_owned());
        }
        if let Some(p) = i.owned.iter().find(|&&p| p >= i.partitions) {
            problems.push(format!(
                "ingest.owned names partition {p}, but there are only {} (0 to {})",
                i.partitions,
                i.partitions.saturating_sub(1)
            ));
        }
        if i.group.is_empty() || i.consumer.is_empty() {
            problems.push("ingest.group and ingest.consumer must be named".to_owned());
        }
        if i.batch == 0 || i.block_ms == 0 {
            problems.push("ingest.batch and ingest.block_ms must be positive".to_owned());
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

    /// These settings with every secret replaced, for printing and logs.
    pub fn masked(&self) -> Settings {
        let mut s = self.clone();
        s.redis.url = mask_url(&s.redis.url);
        s.postgres.url = mask_url(&s.postgres.url);
        if !s.telegram.token.is_empty() {
            s.telegram.token = "<set, masked>".to_owned();
        }
        // An RPC provider's key may sit anywhere in the URL: keep the host.
        if s.payments.rpc_url != PaymentsConfig::default().rpc_url {
            s.payments.rpc_url = match s.payments.rpc_url.split_once("://") {
                Some((scheme, rest)) => {
                    let host = rest.split(['/', '?']).next().unwrap_or_default();
                    let host = host.rsplit('@').next().unwrap_or_default();
                    format!("{scheme}://{host}/<masked>")
                }
                None => "<set, masked>".to_owned(),
            };
        }
        if !s.telegram.webhook_secret.is_empty() {
            s.telegram.webhook_secret = "<set, masked>".to_owned();
        }
        s
    }

    /// The masked settings as TOML.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(&self.masked()).expect("settings serialise")
    }
}

/// A connection string with its password replaced: the URL form
/// (`scheme://user:password@host`) and PostgreSQL's key=value form.
pub fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@')
            && let Some((user, _)) = auth.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}");
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/callwatch.toml");
        let s = Settings::load_with(Some(&path), &|_| None).unwrap();
        assert_eq!(s, Settings::default(), "examples/callwatch.toml drifted");
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
        assert_eq!(s.redis.url, "redis://env:6379/2");
        assert_eq!(s.ingest.partitions, 16);
        assert_eq!(s.owned_partitions(), [0, 1, 2, 3, 9]);
        assert_eq!(s.telegram.token, "123:secret");
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

    #[test]
    fn secrets_never_print() {
        let s = load(
            "[postgres]\nurl = \"host=db user=cw password=hunter2 dbname=cw\"\n",
            &[
                ("REDIS_URL", "redis://default:s3cret@cache:6379/0"),
                ("TELOXIDE_TOKEN", "123456:AAE-very-secret"),
                ("CALLWATCH_WEBHOOK_SECRET", "hook-secret_1"),
            ],
        )
        .unwrap();
        let s = Settings {
            payments: PaymentsConfig {
                rpc_url: "https://user:pw@rpc.example.com/v2/KEY123?api-key=KEY456".to_owned(),
                ..PaymentsConfig::default()
            },
            ..s
        };
        let printed = s.to_masked_toml();
        assert!(
            printed.contains("https://rpc.example.com/<masked>"),
            "{printed}"
        );
        for secret in [
            "hunter2",
            "s3cret",
            "AAE-very-secret",
            "123456:",
            "hook-secret_1",
            "KEY123",
            "KEY456",
            "pw@",
        ] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        assert!(printed.contains("redis://default:***@cache:6379/0"));
        assert!(printed.contains("password=***"));
        assert_eq!(
            mask_url("postgres://cw:pw@db:5432/cw"),
            "postgres://cw:***@db:5432/cw"
        );
    }
}
