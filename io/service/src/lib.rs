//! `callwatch serve` as a library: the live service, put together from
//! the other crates and run as named stages joined by bounded channels.
//!
//! ```text
//!  events:{p}, events:chats ─▶ ingest ─EventBatch─▶ feed ─Feed─▶ reader (thread) ─▶ Router
//!                               (task)  commands ─EngineQuery─┘       │ Submitted      │
//!                                                                     ▼                ▼
//!  Acker ◀── ack ── keeper (task) ◀──────────── Merged ──── pump (thread) ◀── Effects
//!                    │ 1. outbox, then the sender (Alerts)
//!                    │ 2. audit stream (Persistence)
//!                    │ 3. write-behind (Persistence)
//!                    └ 4. acknowledge, once settled
//! ```
//!
//! [`Service::start`] builds it from [`Settings`]; [`Service::stop`] (or a
//! [`Stopper`]) stops reading; [`Service::join`] drains it. The durability
//! order is [`keeper::Keeper`]'s, stated on that type.
//!
//! # Layout
//! - [`settings`]: the TOML file and environment, each section a crate's
//!   own configuration.
//! - [`service`]: start and join.
//! - [`reader`]: the thread that feeds the engine, with questions in turn.
//! - [`keeper`]: the durability order, over a [`keeper::Keep`].
//! - [`keeping`]: the service's `Keep`.
//! - [`alerts`]: alerts rendered, outboxed and queued for Telegram.
//! - [`charts`]: the price histories of tracked tokens, and the charts of
//!   multiplier alerts drawn from them off the hot paths.
//! - [`persist`]: the write-behind and the audit queue and sink together.
//! - [`commands`]: the bot commands' backend, receiving them, payments.
//! - [`sources`]: the feed (posts to calls, DEX prices) beside the engine.
//! - [`dashboard`]: the web dashboard's key, links and data.
//! - [`health`], [`metrics`], [`ops`]: health checks, figures, and the
//!   HTTP endpoints that show them.

pub mod alerts;
pub mod charts;
pub mod commands;
pub mod dashboard;
pub mod health;
pub mod keeper;
pub mod keeping;
pub mod metrics;
pub mod ops;
pub mod persist;
pub mod reader;
pub mod service;
pub mod settings;
pub mod snapshots;
pub mod sources;

pub use service::{Service, Stopper};
pub use settings::Settings;
