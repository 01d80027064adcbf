//! Which stream, and so which process, an event goes to: token events by a
//! fixed hash of the token over the partitions, chat events to every
//! process.

use engine::event::Event;
use engine::token::Token;

/// Which stream an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `{prefix}events:chats`: subscribe and settings, read by every process.
    Chats,
    /// `{prefix}events:{p}`: calls and prices of the tokens of partition `p`.
    Partition(u32),
}

/// The partition of `token` among `partitions` (at least 1): fixed forever,
/// like the shard a token goes to.
pub fn partition_of(token: &Token, partitions: u32) -> u32 {
    assert!(partitions > 0, "there is at least one partition");
    (token.route_hash() % u64::from(partitions)) as u32
}

/// The stream of `event`.
pub fn route(event: &Event, partitions: u32) -> Route {
    match event.token() {
        Some(token) => Route::Partition(partition_of(token, partitions)),
        None => Route::Chats,
    }
}
