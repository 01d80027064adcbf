//! The sources at work: calls read from channel posts (the bot's channels
//! and groups, and readers that append to the raw-posts stream), their
//! value fetched from DEX data, and prices polled for every tracked token
//! within each API's request budget, all published as the events the
//! engine reads. `serve` runs it beside the engine, and `callwatch feed`
//! runs it alone, to be scaled apart.
//!
//! The rules (which addresses a post calls, which tokens to price next)
//! are `callwatch-sources`, pure; this crate is their I/O.
//!
//! # Layout
//! - [`config`]: the `[sources]` settings.
//! - [`posts`]: a channel post, and the raw-posts stream's format.
//! - [`dex`]: the DexScreener and GeckoTerminal clients.
//! - [`budget`]: a request budget over a sliding minute.
//! - [`pricer`]: the sources together, each within its budget.
//! - [`feed`]: the task: posts in, calls and prices out.
//! - [`metrics`]: what it did, counted.

pub mod budget;
pub mod config;
pub mod dex;
pub mod feed;
pub mod metrics;
pub mod posts;
pub mod pricer;

pub use config::FeedConfig;
pub use feed::{Feed, FeedError};
