//! The health checks behind `/readyz` and `/metrics`: every two seconds,
//! a `PING` to Redis and (when configured) a `SELECT 1` to PostgreSQL,
//! each with its round trip; on a Redis Cluster, now and then its nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use callwatch_ledger::pg::connected;
use callwatch_ledger::server::PgServer;
use callwatch_streams::Conn;
use callwatch_streams::connection;
use tokio::sync::watch;

use crate::metrics::Live;

/// How often the servers are checked.
const EVERY: Duration = Duration::from_secs(2);
/// How many checks apart a cluster is asked for its nodes (a minute).
const LEARN_EVERY_ROUNDS: u64 = 30;
/// How long a check may take before it counts as down.
const LIMIT: Duration = Duration::from_secs(1);

/// The checks, until `stop` turns true.
#[derive(Debug)]
pub struct HealthChecks {
    pub live: Arc<Live>,
    pub redis: Conn,
    pub postgres: Option<PgServer>,
}

impl HealthChecks {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut pg: Option<tokio_postgres::Client> = None;
        let mut round = 0u64;
        loop {
            if let Some(server) = &self.postgres {
                let t = Instant::now();
                let ok = pg_ping(server, &mut pg).await;
                self.live
                    .postgres_ok
                    .store(u64::from(ok), Ordering::Relaxed);
                self.live
                    .postgres_latency_us
                    .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            let ping = connection::ping(&mut self.redis, LIMIT).await;
            self.live
                .redis_ok
                .store(u64::from(ping.ok), Ordering::Relaxed);
            self.live
                .redis_latency_us
                .store(ping.latency.as_micros() as u64, Ordering::Relaxed);
            // On a cluster, the nodes a connection may start from should the
            // one in `redis.url` fail: learnt at start, and again now and
            // then as nodes join.
            if ping.ok
                && round.is_multiple_of(LEARN_EVERY_ROUNDS)
                && let Err(e) = self.redis.learn_nodes().await
            {
                tracing::debug!(error = %e, "could not ask the cluster for its nodes");
            }
            round += 1;
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// `SELECT 1` within [`LIMIT`], connecting first if needed.
async fn pg_ping(server: &PgServer, client: &mut Option<tokio_postgres::Client>) -> bool {
    let attempt = async {
        connected(server, client)
            .await?
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
    };
    matches!(tokio::time::timeout(LIMIT, attempt).await, Ok(Ok(())))
}
