//! Events into the engine: from a file or stdin (`replay`, CONTRACT.md's
//! command), and from Redis Streams (the live service's input, read
//! through consumer groups and acknowledged only once their effects are
//! durable). It also holds the producer side of those streams, so that
//! every writer of events checks and routes them the same way.
//!
//! # Layout
//! - [`lines`]: a bounded line reader (long lines are measured, not held).
//! - [`replay`]: file or stdin events → sharded engine → JSON Lines alerts.
//! - [`stream`]: the input streams: their format for producers, the
//!   publisher, and [`stream::StreamIngest`], the reader with its window,
//!   acknowledgements and dead letters.

pub mod lines;
pub mod replay;
pub mod stream;
