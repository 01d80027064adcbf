//! What the `serve` tests share: scratch prefixes and schemas, configs,
//! processes, markets and the alerts the engine decides for them.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "123456:test-token";
/// The Telegram user allowed the admin commands.
pub const ADMIN: i64 = 7;

/// XPENDING's summary: count, lowest id, highest id, per-consumer counts.
pub type XPendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);

/// The Redis these tests share: database 8 unless the environment names a
/// server.
pub fn redis_url() -> String {
    callwatch_testkit::redis_url(8)
}

/// A connection to [`redis_url`].
pub async fn connect() -> redis::aio::MultiplexedConnection {
    callwatch_testkit::connect_redis(8).await
}

pub fn database_url() -> String {
    std::env::var("CALLWATCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".to_owned())
}

/// A test's Redis prefix and PostgreSQL schema (and its config files),
/// removed when the test ends, also when it fails.
pub struct Scratch {
    pub prefix: String,
    pub schema: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let configs = format!("callwatch-{}", self.prefix);
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&configs) {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(path)
                    } else {
                        std::fs::remove_file(path)
                    };
                }
            }
        }
        let (prefix, schema) = (self.prefix.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut con) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query_async(&mut con)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<i64, _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut con).await;
                    }
                }
            });
        })
        .join();
    }
}

impl Scratch {
    /// A fresh prefix and schema for a test of `kind`.
    pub fn new(kind: &str) -> Scratch {
        let id = format!("{}_{}", std::process::id(), free_port());
        Scratch {
            prefix: format!("cw-test-{kind}-{id}:"),
            schema: format!("cw_test_{kind}_{id}"),
        }
    }
}

/// The service's settings for a test: its Redis prefix and PostgreSQL
/// schema, partitions, the ones it owns, its consumer name, and the fake
/// Bot API if it sends.
pub fn config(
    prefix: &str,
    schema: &str,
    partitions: u32,
    owned: &[u32],
    consumer: &str,
    telegram: Option<&str>,
) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("callwatch-{prefix}{consumer}.toml"));
    let telegram = telegram.map_or(String::new(), |url| {
        format!("[telegram]\ntoken = \"{TOKEN}\"\napi_url = \"{url}\"\nadmins = [{ADMIN}]\n")
    });
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n\
             [postgres]\nurl = \"{}\"\nschema = \"{schema}\"\n{telegram}\
             [ingest]\npartitions = {partitions}\nowned = {owned:?}\nconsumer = \"{consumer}\"\nblock_ms = 50\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\
             [engine]\nshards = 2\npin_threads = false\n\
             [sources]\ncalls = false\nprices = false\n\
             [snapshot]\ndir = \"{}\"\n",
            redis_url(),
            database_url(),
            free_port(),
            snapshot_dir(prefix, consumer).display()
        ),
    )
    .unwrap();
    path
}

/// Where a test's process keeps its snapshots: removed with its scratch.
pub fn snapshot_dir(prefix: &str, consumer: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("callwatch-{prefix}{consumer}-snapshots"))
}

/// A running `callwatch serve`, killed if the test ends without stopping it.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill9(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap(); // SIGKILL: no drain, no goodbye
        child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn spawn_serve(config: &std::path::Path) -> Proc {
    Proc(Some(
        Command::new(env!("CARGO_BIN_EXE_callwatch"))
            .args(["serve", "--config"])
            .arg(config)
            .env(
                "CALLWATCH_LOG_LEVEL",
                std::env::var("CALLWATCH_TEST_LOG").unwrap_or("warn".into()),
            )
            .spawn()
            .unwrap(),
    ))
}

/// Sends `text` as `user` in chat `chat` and waits for the bot's next
/// message to that chat.
pub async fn command(
    fake: &callwatch_testkit::fake_bot::FakeBotApi,
    chat: i64,
    user: i64,
    text: &str,
) -> String {
    let before = fake.received().iter().filter(|r| r.chat_id == chat).count();
    fake.push_text(chat, user, text);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let to_chat: Vec<_> = fake
            .received()
            .into_iter()
            .filter(|r| r.chat_id == chat)
            .collect();
        if to_chat.len() > before {
            return to_chat[before].text.clone();
        }
        assert!(Instant::now() < deadline, "no reply to {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then the exit status within 30 s.
pub async fn stop(mut proc: Proc) -> std::process::ExitStatus {
    let mut child = proc.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `host:port` that `http.listen` names in a test's settings file.
pub fn listen_of(config: &std::path::Path) -> String {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("http.listen in the settings")
        .to_owned()
}

pub fn redis_clock_now() -> i64 {
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut con).unwrap();
    secs * 1_000_000_000 + micros * 1_000
}

/// `line` with every time in it (`at`, `expires_at`) moved by one offset,
/// the one that puts `last` an hour before now. A line that is not a JSON
/// object (the quickstart's bad lines may be anything) is kept as it is.
pub fn dated_to_end_an_hour_ago(line: &str, last: &str) -> String {
    use engine::time::{NANOS_PER_SEC, format_rfc3339, parse_rfc3339};
    let shift = redis_clock_now() - 3600 * NANOS_PER_SEC - parse_rfc3339(last).unwrap();
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line) else {
        return line.to_owned();
    };
    for field in ["at", "expires_at"] {
        if let Some(serde_json::Value::String(t)) = event.get_mut(field) {
            *t = format_rfc3339(parse_rfc3339(t).unwrap() + shift);
        }
    }
    serde_json::Value::Object(event).to_string()
}

/// A simulated market's first `events` events as JSON lines, the last of
/// them dated now: the service keeps state in Redis for a week from the
/// events' own times, so a market in the past would expire as it lands.
pub fn market_lines(events: usize, tokens: u64, chats: u64) -> Vec<Vec<u8>> {
    let defaults = engine::sim::MarketConfig::default();
    let span = defaults.step_nanos * i64::try_from(events).unwrap();
    let market = engine::sim::Market::new(engine::sim::MarketConfig {
        tokens,
        chats,
        call_share: 0.05,
        start: redis_clock_now() - span,
        ..defaults
    });
    market
        .take(events)
        .map(|e| {
            let mut out = Vec::new();
            e.write_json(&mut out);
            while out.last() == Some(&b'\n') {
                out.pop();
            }
            out
        })
        .collect()
}

/// (chat, token, kind, threshold, alert time in µs) of every audit row.
pub async fn audit_rows(schema: &str) -> Vec<(i64, String, String, f64, i64)> {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut rows: Vec<_> = client
        .query(
            &format!(
                "SELECT chat_id, token, kind, threshold, \
                 (extract(epoch FROM alert_at) * 1000000)::bigint FROM \"{schema}\".alert_audit"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    rows.sort_by(|a: &(i64, String, String, f64, i64), b| {
        (a.0, &a.1, &a.2, a.4).cmp(&(b.0, &b.1, &b.2, b.4))
    });
    rows
}

/// The alerts the engine decides for `lines`, rendered as serve renders
/// them (no channel names in Redis, so numeric ids), one per alert.
pub fn expected_messages(lines: &[Vec<u8>]) -> Vec<(i64, String)> {
    use callwatch_telegram::format::{Links, alert};
    let config = engine::EngineConfig {
        shards: 2,
        pin_threads: false,
        ..engine::EngineConfig::default()
    };
    let (mut router, mut effects, workers) = engine::router::start(&config).unwrap();
    let collect = std::thread::spawn(move || {
        let mut out = Vec::new();
        while let Some(batch) = effects.next_batch().unwrap() {
            for e in batch {
                let callers = match &e {
                    engine::effect::Effect::CallAlert(a) => a.callers.len(),
                    _ => 0,
                };
                if let Some(r) = alert(&e, &vec![None::<&str>; callers], &Links::default()) {
                    out.push((e.chat_id(), r.text));
                }
            }
        }
        out
    });
    let mut ingest = engine::ingest::Ingest::new();
    for line in lines {
        if let engine::ingest::Outcome::Event(env) = ingest.line(line) {
            router.submit(env).unwrap();
        }
    }
    router.finish().unwrap();
    workers.join().unwrap();
    collect.join().unwrap()
}

/// Entries of the token partitions read and not yet acknowledged.
pub async fn partitions_pending(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    partitions: u32,
) -> u64 {
    let mut total = 0;
    for p in 0..partitions {
        let pending: Result<XPendingSummary, _> = redis::cmd("XPENDING")
            .arg(format!("{prefix}events:{p}"))
            .arg("callwatch")
            .query_async(con)
            .await;
        total += pending.map_or(0, |p| p.0);
    }
    total
}

/// Waits until `want` messages arrived and the outbox is empty (every
/// alert answered), and with `drained: Some(partitions)` the input is all
/// read and acknowledged too, all at once. A Redis error counts as not yet
/// (a cluster's failover answers some).
pub async fn wait_sent(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    fake: &callwatch_testkit::fake_bot::FakeBotApi,
    want: usize,
    drained: Option<u32>,
) {
    let outbox = format!("{prefix}callwatch:outbox");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg(&outbox)
            .query_async(con)
            .await
            .unwrap_or(u64::MAX);
        let input = match drained {
            Some(partitions) => {
                callwatch_ingest::stream::input_drained(con, prefix, partitions).await
            }
            None => true,
        };
        if input && len == 0 && fake.count() >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not done: {} of {want} messages sent, outbox {len}, input drained {input}",
            fake.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
