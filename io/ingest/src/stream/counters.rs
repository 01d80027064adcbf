//! What the ingest has done, counted while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::histogram::Histogram;

/// Live counters, readable from other tasks while the ingest runs.
#[derive(Debug)]
pub struct IngestCounters {
    pub(super) read: AtomicU64,
    pub(super) events: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) claimed: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) replayed: AtomicU64,
    /// Seconds from a stream entry's id (when Redis took it) to its event
    /// handed to the engine: one observation per batch, its oldest entry.
    pub lag: Histogram,
}

impl Default for IngestCounters {
    fn default() -> Self {
        IngestCounters {
            read: AtomicU64::default(),
            events: AtomicU64::default(),
            dead_lettered: AtomicU64::default(),
            acked: AtomicU64::default(),
            claimed: AtomicU64::default(),
            reconnects: AtomicU64::default(),
            skipped: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            replayed: AtomicU64::default(),
            lag: Histogram::new(callwatch_common::buckets::latency()),
        }
    }
}

/// A reading of [`IngestCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Entries taken from the streams, bad ones included.
    pub read: u64,
    /// Events handed out.
    pub events: u64,
    /// Entries sent to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries acknowledged, dead-lettered ones included.
    pub acked: u64,
    /// Entries claimed at start (this consumer's own stale ones included).
    pub claimed: u64,
    /// Redis failures retried after a backoff.
    pub reconnects: u64,
    /// Entries read again after a reconnect that had already been handed
    /// out, and so were not handed out twice.
    pub skipped: u64,
    /// Events handed out and not yet acknowledged.
    pub in_flight: u64,
    /// Chat events acknowledged in an earlier run and handed out again at
    /// start, ahead of everything else: the chats stream is where chat
    /// state is kept (see "Groups and consumers").
    pub replayed: u64,
    /// At the end of a run: events handed out and never acknowledged; they
    /// stay pending for the next start.
    pub left_pending: u64,
}

impl IngestCounters {
    pub fn stats(&self) -> IngestStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestStats {
            read: get(&self.read),
            events: get(&self.events),
            dead_lettered: get(&self.dead_lettered),
            acked: get(&self.acked),
            claimed: get(&self.claimed),
            reconnects: get(&self.reconnects),
            skipped: get(&self.skipped),
            in_flight: get(&self.in_flight),
            replayed: get(&self.replayed),
            left_pending: 0,
        }
    }

    pub(super) fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}
