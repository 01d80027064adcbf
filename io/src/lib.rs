//! callwatch's I/O side: everything that talks to the world, each part
//! talking to the engine only through its channels.
//!
//! `callwatch serve` composes these parts; `replay`, `demo`, `migrate` and
//! `rebuild` use some of them on their own.
//!
//! # Layout
//! - [`clock`]: wall-clock times as the engine counts them, and back.
//! - [`lines`]: a bounded line reader (long lines are measured, not held).
//! - [`replay`]: file or stdin events → sharded engine → JSON Lines alerts.
//! - [`migrate`]: the SQL files of `migrations/`, applied once each.
//! - [`store`]: Redis keys and records in the predecessor's layout, and the
//!   upgrade-only write of processed records.
//! - [`rebuild`]: every tracked entry loaded back from Redis, keys and values.
//! - [`audit`]: audit and activity rows through a Redis stream into
//!   PostgreSQL, in batches, acknowledged after commit, landing once.
//! - [`writebehind`]: engine effects copied into Redis behind the engine:
//!   coalesced, pipelined, from a bounded buffer, through outages.
//! - [`subscriptions`]: credits of plans, committed in PostgreSQL first,
//!   then copied to Redis.
//! - [`payments`]: subscriptions paid in SOL: quotes, the watcher that
//!   verifies transfers through Solana JSON-RPC and credits each once,
//!   unmatched payments for an admin, expiry reminders, a fake RPC.
//! - [`persist`]: the write-behind and the audit queue and sink, started
//!   and closed together for a command that runs the engine.
//! - [`ops`]: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//! - [`health`]: the Redis connection's timeouts and backoff, health checks
//!   with latency, and the circuit breaker.
//! - [`stream_ingest`]: events in from Redis Streams (partitioned by token,
//!   chat events to every process), acknowledged after their effects are
//!   durably queued; bad entries to a dead-letter stream.
//! - [`telegram`]: alert messages (HTML, escaped, capped), channel names
//!   cached over Redis, the rate-limited sender, the bot's commands and the
//!   dispatcher that receives them, and a fake Bot API.

pub mod audit;
pub mod clock;
pub mod health;
pub mod lines;
pub mod migrate;
pub mod ops;
pub mod payments;
pub mod persist;
pub mod rebuild;
pub mod replay;
pub mod store;
pub mod stream_ingest;
pub mod subscriptions;
pub mod telegram;
pub mod writebehind;
