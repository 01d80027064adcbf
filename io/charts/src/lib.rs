//! Charts of multiplier alerts: each tracked token's price history, kept
//! bounded, and a PNG of it for the alert. Pure and synchronous (no I/O,
//! no clock, no async runtime): the service decides which tokens have a
//! history and runs [`render`] off its hot paths.
//!
//! # Layout
//! - [`history`]: one token's history, at most [`history::POINTS`]
//!   points, halving its resolution when full.
//! - [`render`]: a chart of an alert as PNG bytes, with an embedded font.

pub mod history;
pub mod render;

pub use history::{History, POINTS, Point};
pub use render::{Chart, HEIGHT, RenderError, WIDTH, render};
