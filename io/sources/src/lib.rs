//! Where callwatch's inputs come from, decided without I/O: the token
//! addresses a channel post calls, and which tracked tokens to ask a DEX
//! API about next within its request budget. The I/O around them (reading
//! posts, asking the APIs, publishing events) is in `callwatch-feed`; this
//! crate stays pure so that its rules are tested and benchmarked alone.
//!
//! # Layout
//! - [`network`]: the networks a token is priced on.
//! - [`extract`]: the addresses a post calls.
//! - [`schedule`]: which tracked tokens to price next, within a budget.

pub mod extract;
pub mod network;
pub mod schedule;
