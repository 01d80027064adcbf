//! Test doubles and test plumbing, for tests and the load test only: no
//! production crate depends on this one except as a dev-dependency.
//!
//! # Layout
//! - [`fake_bot`]: a fake Telegram Bot API server with a script of
//!   misbehaviour (429s, 5xx, slow answers, blocked chats) and its limits
//!   watched on its own clock; it also plays the receiving side (updates,
//!   webhooks).
//! - [`fake_dex`]: fakes of DexScreener and GeckoTerminal, with their
//!   per-minute limits on a sliding minute.
//! - [`fake_rpc`]: a fake Solana JSON-RPC server with a ledger of transfers
//!   built in the test, outages and rate limits on demand.
//! - [`servers`]: where the test PostgreSQL and Redis are, names no other
//!   test uses, schemas dropped at the end.
//! - [`own_redis`]: a `redis-server` of a test's own (plain or TLS), and
//!   server commands run on the real clock.
//! - [`own_postgres`]: a PostgreSQL cluster of a test's own (plain or TLS).
//! - [`pki`]: a CA and a server certificate made at test time, for TLS.
//! - [`logs`]: what a component logs, captured.
//! - [`browser`]: headless Chromium, for the pages' browser tests.

pub mod browser;
pub mod fake_bot;
pub mod fake_dex;
pub mod fake_rpc;
pub mod logs;
pub mod own_cluster;
pub mod own_postgres;
pub mod own_redis;
pub mod pki;
pub mod servers;

pub use logs::{Logs, capture_logs};
pub use own_cluster::OwnCluster;
pub use own_postgres::OwnPostgres;
pub use own_redis::{OwnRedis, server_command};
pub use pki::TestPki;
pub use servers::*;
