//! What every callwatch I/O crate shares, and nothing that talks to a
//! server: the names of Redis keys and streams, the JSON formats of the
//! records kept there, which stream an event is routed to, the wall clock
//! as the engine counts time, the one retry pause (a backoff with
//! jitter, and the circuit breaker built on it), and secrets that never
//! print. It depends on the engine
//! alone, so any crate may use it.
//!
//! # Layout
//! - [`keys`]: every Redis key and stream name the service reads or writes.
//! - [`records`]: the predecessor's record JSON, and the kind of an alert.
//! - [`route`]: an event's stream: token events by partition, chat events
//!   to all.
//! - [`clock`]: wall-clock times as the engine counts them, and back.
//! - [`backoff`]: exponential backoff with jitter, for every retry loop.
//! - [`breaker`]: a circuit breaker whose pauses are such a backoff.
//! - [`secret`]: tokens, passwords and keyed URLs whose `Debug` and
//!   `Display` mask them.
//! - [`conninfo`]: PostgreSQL's `keyword = value` connection strings, read
//!   as libpq reads them.
//! - [`buckets`]: the bucket bounds of the service's histograms.

pub mod backoff;
pub mod breaker;
pub mod buckets;
pub mod clock;
pub mod conninfo;
pub mod keys;
pub mod records;
pub mod route;
pub mod secret;
