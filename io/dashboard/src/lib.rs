//! callwatch's read-only web dashboard, rendered on the server: a chat's
//! tracked tokens with their multiples and sparklines, the channel
//! leaderboard of `/top` with filters, and the service's health.
//!
//! There are no accounts. The bot's `/dashboard` command answers with a
//! link signed for one chat and expiring ([`link`]); every page checks it
//! before anything else and answers 403 to a link that is forged, expired
//! or cut. The leaderboard is the same for every chat, but it is signed
//! too: each page is a question to the engine, so only someone the bot
//! gave a link may ask it.
//!
//! The numbers come from what the commands use ([`Source`], which the
//! service implements over the same engine questions and cache as `/top`
//! and `/tracked`) and are written by the same functions as the bot's
//! replies (`callwatch_telegram::format`), so a page and a reply agree.
//!
//! # Layout
//! - [`config`]: the `[dashboard]` settings.
//! - [`link`]: signing and checking links (HMAC-SHA256, compared in
//!   constant time).
//! - [`key`]: the signing key: the configured one, or one made at first
//!   start and kept in Redis.
//! - [`sparkline`]: a small inline SVG of a series of multiples.
//! - [`pages`]: the pages' views and templates (askama, every value
//!   HTML-escaped).
//! - [`routes`]: the axum routes over a [`Source`].

pub mod config;
pub mod key;
pub mod link;
pub mod pages;
pub mod routes;
pub mod sparkline;

pub use config::DashboardConfig;
pub use link::{Links, Signer};
pub use routes::{Health, Source, Unavailable, router};
