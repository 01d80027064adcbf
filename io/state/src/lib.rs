//! The engine's state outside the engine: written behind it to Redis in
//! the predecessor's keys, and loaded back into a fresh engine at start.
//! Nothing here is on the engine's path: the write-behind takes effects
//! without waiting, and the rebuild runs before any event is read.
//!
//! # Layout
//! - [`writebehind`]: effects copied into Redis behind the engine:
//!   coalesced, pipelined, from a bounded buffer, through outages.
//! - [`rebuild`]: every multiplier, processed and call record loaded back
//!   into the engine, keys and values.
//! - [`processed`]: the upgrade-only write of a processed record (a Lua
//!   script: accepted is never replaced by rejected).
//! - [`snapshots`]: engine snapshots in a directory, written atomically,
//!   the newest valid one loaded at start.
//! - [`refused`]: changes Redis refuses for their own key (a key of another
//!   type), set aside in the dead-letter stream so the rest go on.

pub mod processed;
pub mod rebuild;
pub mod rebuild_cluster;
pub mod refused;
pub mod snapshots;
pub mod writebehind;
