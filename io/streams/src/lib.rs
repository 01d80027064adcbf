//! Redis, for the rest of the I/O side: a connection that rides out
//! outages, one classifier of Redis errors, and the stream kit every
//! stream user shares: consumer groups (create, read, acknowledge, claim,
//! find what was delivered), a stream as a log (append, read back,
//! delete), and the dead-letter stream. The input streams, the audit
//! queue and the Telegram outbox are built on it; retry loops pause with
//! `callwatch_common::backoff`.
//!
//! # Layout
//! - [`connection`]: a managed connection with explicit timeouts, and a
//!   health check that measures latency.
//! - [`classify`]: transient or lasting, for every Redis error.
//! - [`cluster`]: slots, masters, and pipelines sent to each master.
//! - [`clock`]: the server's clock, which stamps stream entries.
//! - [`entry`]: entry ids, and entries out of read replies.
//! - [`group`]: one consumer of a consumer group.
//! - [`log`]: append, read all, delete; dead letters.

pub mod classify;
pub mod clock;
pub mod cluster;
pub mod connection;
pub mod entry;
pub mod group;
pub mod log;

pub use classify::{ErrorClass, classify, is_transient, key_errors};
pub use connection::Conn;
pub use entry::{Entry, EntryId};
pub use group::{Consumer, ReadFrom};

/// A stream operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(&'static str),
}

impl Error {
    /// Whether a retry may cure it (see [`classify`]); an answer Redis
    /// should never give is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis(e) => is_transient(e),
            Error::Reply(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
