//! The system of record in PostgreSQL: the schema and its migrations, the
//! audit trail (alert and activity rows through a Redis stream, landing
//! once), and subscriptions (credits committed here first, then copied to
//! Redis for the engine and the predecessor's readers). Nothing here is on
//! the engine's path: rows wait in their stream while PostgreSQL is away.
//!
//! # Layout
//! - [`classify`]: transient, the rows' fault, or lasting, for every
//!   PostgreSQL error: the one classifier.
//! - [`migrate`]: the SQL files of `migrations/`, applied once each.
//! - [`pg`]: the `[postgres]` settings, connecting and migrating, and a
//!   connection kept and made again.
//! - [`server`]: a server as its connection string describes it, with the
//!   TLS its `sslmode` asks for; the one way to connect.
//! - [`tls`]: the rustls configuration of each `sslmode` that encrypts.
//! - [`audit`]: audit and activity rows through a Redis stream into
//!   PostgreSQL, in batches, acknowledged after commit, landing once.
//! - [`subscriptions`]: credits of plans, committed in PostgreSQL first,
//!   then copied to Redis and announced on the chats stream.

pub mod audit;
pub mod classify;
pub mod migrate;
pub mod pg;
pub mod server;
pub mod subscriptions;
pub mod tls;
