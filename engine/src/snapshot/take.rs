//! Taking a snapshot from running shards: each cuts its part in turn with
//! the input and writes it while it goes on (`crate::shard`'s `cut`), and
//! the asker gathers the parts into an [`Image`].

use std::time::Duration;

use crossbeam_channel::Receiver;

use super::Image;
use crate::router::EngineStopped;
use crate::shard::ImageCounts;

/// One shard's part of a snapshot.
#[derive(Debug)]
pub struct ShardPart {
    shard: usize,
    section: Vec<u8>,
    counts: ImageCounts,
    longest: Duration,
}

impl ShardPart {
    pub(crate) fn new(
        shard: usize,
        section: Vec<u8>,
        counts: ImageCounts,
        longest: Duration,
    ) -> ShardPart {
        ShardPart {
            shard,
            section,
            counts,
            longest,
        }
    }
}

/// A snapshot the shards are encoding.
#[derive(Debug)]
pub struct Taking {
    parts: Receiver<ShardPart>,
    shards: usize,
    thresholds: Vec<f64>,
    upto_seq: u64,
}

/// A snapshot taken: its image and the cut it is at.
#[derive(Debug)]
pub struct Taken {
    pub image: Image,
    /// Every event with a `seq` up to this one is in it, and none after.
    pub upto_seq: u64,
    /// The longest any shard spent on the snapshot at one go, applying
    /// nothing meanwhile: the longest pause of the input it caused. The
    /// shards measure it (the only clock the engine reads, and only for
    /// this); the time from [`Router::snapshot`](crate::router::Router::snapshot)
    /// to [`Taking::wait`]'s return is how long the whole took.
    pub longest_pause: Duration,
}

impl Taking {
    pub(crate) fn new(
        parts: Receiver<ShardPart>,
        shards: usize,
        thresholds: Vec<f64>,
        upto_seq: u64,
    ) -> Taking {
        Taking {
            parts,
            shards,
            thresholds,
            upto_seq,
        }
    }

    /// The events the snapshot covers: every `seq` up to this one.
    pub fn upto_seq(&self) -> u64 {
        self.upto_seq
    }

    /// Waits for every shard's part.
    pub fn wait(self) -> Result<Taken, EngineStopped> {
        let mut sections = vec![Vec::new(); self.shards];
        let mut total = ImageCounts::default();
        let mut longest_pause = Duration::ZERO;
        for _ in 0..self.shards {
            let part = self.parts.recv().map_err(|_| EngineStopped)?;
            sections[part.shard] = part.section;
            total.tokens += part.counts.tokens;
            total.records += part.counts.records;
            total.tracked += part.counts.tracked;
            longest_pause = longest_pause.max(part.longest);
        }
        Ok(Taken {
            image: Image {
                thresholds: self.thresholds,
                sections,
                tokens: total.tokens,
                records: total.records,
                tracked: total.tracked,
            },
            upto_seq: self.upto_seq,
            longest_pause,
        })
    }
}
