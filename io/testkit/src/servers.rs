//! What the PostgreSQL and Redis tests share: where the servers are, names
//! no other test or run uses, and schemas dropped when a test ends (also
//! when it fails).
//!
//! The servers come from `CALLWATCH_TEST_DATABASE_URL` and
//! `CALLWATCH_TEST_REDIS_URL`, by default the local ones (`scripts/test`
//! starts them if needed).

use std::sync::atomic::{AtomicU32, Ordering};

use callwatch_ledger::migrate::migrate;
use callwatch_ledger::server::PgServer;
use tokio_postgres::Client;

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
pub fn unreachable_redis() -> callwatch_streams::Conn {
    callwatch_streams::connection::managed_connection(
        "redis://127.0.0.1:1/0",
        &callwatch_streams::connection::RedisTimeouts {
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
    let server = PgServer::parse(url).expect("a valid test connection string");
    let (client, conn) = server.connect().await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A schema of the machine's PostgreSQL, dropped on drop.
#[derive(Debug)]
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

/// Now by the Redis server's clock (nanoseconds since the epoch): the clock
/// that stamps stream entries. Tests that put dated events or posts on a
/// stream date them by it, so that they line up with their entries even
/// when the suite runs under libfaketime (the server does not).
pub async fn redis_now(con: &mut impl redis::aio::ConnectionLike) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(con)
        .await
        .expect("Redis answers TIME");
    secs * 1_000_000_000 + micros * 1_000
}

/// A Redis key prefix of a test's own (`what` made unique, then `:`) on
/// database `db`, whose keys are deleted on drop (also when the test
/// fails).
#[derive(Debug)]
pub struct OwnPrefix {
    pub prefix: String,
    db: u8,
}

impl OwnPrefix {
    pub fn new(what: &str, db: u8) -> OwnPrefix {
        OwnPrefix {
            prefix: format!("{}:", unique(what)),
            db,
        }
    }
}

impl Drop for OwnPrefix {
    fn drop(&mut self) {
        let (pattern, db) = (format!("{}*", self.prefix), self.db);
        on_own_runtime(async move {
            let mut con = connect_redis(db).await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut con)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> =
                    redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
            }
        });
    }
}
