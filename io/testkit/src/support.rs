//! What the PostgreSQL and Redis tests share: where the servers are, names
//! no other test or run uses, and schemas dropped when a test ends (also
//! when it fails).
//!
//! The servers come from `CALLWATCH_TEST_DATABASE_URL` and
//! `CALLWATCH_TEST_REDIS_URL`, by default the local ones (`scripts/test`
//! starts them if needed).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use callwatch_io::migrate::migrate;
use tokio_postgres::{Client, NoTls};

pub fn database_url() -> String {
    std::env::var("CALLWATCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".to_owned())
}

/// The Redis URL for a test, on database `db` unless the environment names
/// a server.
pub fn redis_url(db: u8) -> String {
    std::env::var("CALLWATCH_TEST_REDIS_URL")
        .unwrap_or_else(|_| format!("redis://127.0.0.1:6379/{db}"))
}

/// A connection to the test Redis, database `db` unless the environment
/// names a server.
pub async fn connect_redis(db: u8) -> redis::aio::MultiplexedConnection {
    let url = redis_url(db);
    redis::Client::open(url.as_str())
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at `{url}`: {e} (scripts/test starts it)"))
}

/// A managed connection to a Redis that is not there (nothing listens on
/// port 1): every command fails fast, for outage tests.
pub fn unreachable_redis() -> redis::aio::ConnectionManager {
    callwatch_io::health::managed_connection(
        "redis://127.0.0.1:1/0",
        &callwatch_io::health::RedisTimeouts {
            connect: std::time::Duration::from_millis(50),
            retries: 0,
            ..Default::default()
        },
    )
    .expect("a valid URL")
}

/// `what` made unique to this process and call.
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `f` to completion on a runtime of its own, in a thread of its own:
/// for `Drop`, which runs inside a test's runtime and must not block it.
pub fn on_own_runtime<F: Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f);
    })
    .join();
}

pub async fn connect_pg(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A schema of the machine's PostgreSQL, dropped on drop.
pub struct Schema(pub String);

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0);
        on_own_runtime(async move {
            if let Ok(client) = connect_pg(&database_url()).await {
                let _ = client.batch_execute(&sql).await;
            }
        });
    }
}

/// A migrated schema of its own on the machine's PostgreSQL.
pub async fn own_schema(test: &str) -> (Schema, Client) {
    let schema = Schema(format!("cw_test_{}", unique(test)));
    let mut client = connect_pg(&database_url()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at `{}`: {e} (scripts/test starts it)",
            database_url()
        )
    });
    migrate(&mut client, &schema.0).await.unwrap();
    (schema, client)
}

/// A log of every tracing event, at every level, as text.
#[derive(Clone, Default)]
pub struct Logs(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures what this thread logs until the guard drops (use a
/// current-thread runtime, so that spawned tasks log here too).
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A command for a server binary a test runs of its own (`redis-server`,
/// `pg_ctlcluster`), on the machine's real clock. `scripts/test` runs the
/// suite a second time under libfaketime, whose `LD_PRELOAD` children
/// inherit; servers are not the code under test (the shared ones run on the
/// real clock too), and redis-server's allocator deadlocks under it.
pub fn server_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "LD_PRELOAD" || name.starts_with("FAKETIME") {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// A `redis-server` of the test's own, for a test that changes the server
/// itself (`SCRIPT FLUSH`, a kill): on a free port, persisting to an
/// append-only file (fsync always) in a temporary folder; killed and its
/// folder removed on drop.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port, with a folder named after `test`.
    pub fn start(test: &str) -> Self {
        let pid = std::process::id();
        // A free port near one derived from the process id.
        let mut port = 40_000 + u16::try_from(pid % 20_000).unwrap();
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            port += 1;
        }
        let dir = std::env::temp_dir().join(format!("callwatch-redis-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    /// Starts the server (again) on the same port and folder.
    pub fn spawn(&mut self) {
        let child = server_command("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test runs redis-server of its own and could not start it: {e}; install Redis (Debian/Ubuntu: apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye, only what the append-only file holds survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL to redis-server");
            child.wait().expect("redis-server reaped");
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
