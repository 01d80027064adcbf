//! The callwatch engine: typed events in, alerts out.
//!
//! Pure and synchronous: no tokio, no I/O, no clock, no logging on the hot
//! path. Time arrives with each event and randomness (in [`sim`]) from a
//! seed, so a replay is exact and a test deterministic. CONTRACT.md is the
//! specification this crate implements.
//!
//! # Layout
//! - [`token`], [`time`]: token addresses and RFC 3339 times, parsed and printed.
//! - [`event`]: the typed input events; [`parse`]: JSON line → event;
//!   [`ingest`]: numbering, stateful checks and the stream clock.
//! - [`calls`]: one token's calls table, with each call's value and peak.
//! - [`chat`]: subscriptions, settings and followers, copied on every shard;
//!   `followers`: the index of the subscribed ones, which a call walks.
//! - [`tracked`]: one token's tracked entries, ordered by next crossing.
//! - [`prefetch`]: the cache hint the big tables and the call loop use.
//! - [`table`]: the shard's token index, a flat table that can prefetch.
//! - [`shard`]: one shard's state and the rules, as a pure `apply`.
//! - [`router`]: the sharded runtime: pinned threads, bounded inboxes,
//!   ordered effects out.
//! - [`board`]: the channel leaderboard, from the calls' peaks.
//! - [`effect`]: alerts and their JSON form; [`config`]: the settings.
//! - [`sim`]: a seeded synthetic market for the demo, benches and load test.

pub mod board;
pub mod calls;
pub mod chat;
pub mod config;
pub mod effect;
pub mod event;
mod followers;
pub mod ingest;
pub mod parse;
pub mod prefetch;
pub mod router;
pub mod shard;
pub mod sim;
pub mod snapshot;
pub mod table;
pub mod time;
pub mod token;
pub mod tracked;

/// The flat hash map every shard uses: hashbrown with ahash. The hasher is
/// zero-sized (ahash draws its keys once per process), which keeps the
/// per-token maps small; nothing in the output depends on map order.
pub type FlatMap<K, V> = hashbrown::HashMap<K, V, FlatHasher>;

/// The hasher of [`FlatMap`] and of [`table::Table`].
pub type FlatHasher = std::hash::BuildHasherDefault<ahash::AHasher>;

/// `items.push(item)`, written straight into the vector's spare room. A
/// plain `push` builds the value on the stack and then copies it; a value
/// just built there from parts (an enum's tag, a token's last byte) is
/// read back in 16-byte loads that the CPU cannot forward from those
/// smaller stores, and each such load waits. The router writes every
/// event this way, and a call every alert.
#[inline(always)]
pub(crate) fn push_in_place<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() {
        items.reserve(1);
    }
    let len = items.len();
    // SAFETY: there is room for one more (above), and the slot written is
    // the first past the length, which then covers it.
    unsafe {
        items.as_mut_ptr().add(len).write(item);
        items.set_len(len + 1);
    }
}

pub use config::{EngineConfig, Rules};
pub use effect::Effect;
pub use event::{Envelope, Event};
