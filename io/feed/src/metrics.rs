//! What the sources did, counted while they run, for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::time::Nanos;
use prometheus_client::metrics::histogram::Histogram;

use crate::pricer::{Pricer, SourceCounters};

/// A counter that only grows.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The sources' figures.
#[derive(Debug)]
pub struct FeedCounters {
    /// Raw-posts entries read.
    pub posts: Counter,
    /// Of those, set aside (bad, or dated in the future).
    pub posts_dead: Counter,
    /// Call events published.
    pub calls: Counter,
    /// Calls set aside without a value after their wait.
    pub calls_dead: Counter,
    /// Price events published.
    pub prices: Counter,
    /// Prices not published because the value had not changed.
    pub prices_unchanged: Counter,
    /// Tokens tracked, urgent, and due: sampled.
    pub tracked: AtomicU64,
    pub urgent: AtomicU64,
    pub due: AtomicU64,
    /// Seconds between two polls of a token.
    pub poll_wait: Histogram,
    /// Each price source's requests and budget.
    pub sources: Vec<(&'static str, Arc<SourceCounters>)>,
}

impl FeedCounters {
    pub fn new(pricer: &Pricer) -> FeedCounters {
        FeedCounters {
            posts: Counter::default(),
            posts_dead: Counter::default(),
            calls: Counter::default(),
            calls_dead: Counter::default(),
            prices: Counter::default(),
            prices_unchanged: Counter::default(),
            tracked: AtomicU64::new(0),
            urgent: AtomicU64::new(0),
            due: AtomicU64::new(0),
            poll_wait: Histogram::new(callwatch_common::buckets::poll_wait()),
            sources: pricer.counters(),
        }
    }

    /// A token waited `waited` between polls.
    pub fn record_wait(&self, waited: Nanos) {
        self.poll_wait.observe(waited.max(0) as f64 / 1e9);
    }
}
