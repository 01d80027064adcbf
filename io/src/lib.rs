//! callwatch's I/O side: everything that talks to the world, each part
//! talking to the engine only through its channels.
//!
//! Today it holds the JSON Lines path that `replay` uses and the PostgreSQL
//! migrations; the Redis state store, the PostgreSQL writer, the stream
//! ingest and the Telegram sender land here as their issues do.
//!
//! # Layout
//! - [`lines`]: a bounded line reader (long lines are measured, not held).
//! - [`replay`]: file or stdin events → sharded engine → JSON Lines alerts.
//! - [`migrate`]: the SQL files of `migrations/`, applied once each.

pub mod lines;
pub mod migrate;
pub mod replay;
