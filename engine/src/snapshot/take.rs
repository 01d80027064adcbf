//! Taking a snapshot from running shards: each encodes its part in turn
//! with the input, and the asker gathers the parts into an [`Image`].

use crossbeam_channel::Receiver;

use super::Image;
use crate::router::EngineStopped;
use crate::shard::{ImageCounts, ShardState};

/// One shard's part of a snapshot.
#[derive(Debug)]
pub struct ShardPart {
    shard: usize,
    section: Vec<u8>,
    counts: ImageCounts,
}

impl ShardPart {
    /// Shard `shard`'s part, once every call it had begun is decided.
    pub(crate) fn encode(state: &mut ShardState, shard: usize) -> ShardPart {
        let mut effects = Vec::new();
        state.finish_fanouts(&mut effects);
        debug_assert!(effects.is_empty(), "the router finishes calls first");
        let (section, counts) = state.encode_section();
        ShardPart {
            shard,
            section,
            counts,
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

/// A snapshot taken: its image and the cut it is at. The engine reads no
/// clock: the time from [`Router::snapshot`](crate::router::Router::snapshot)
/// to [`Taking::wait`]'s return bounds each shard's pause of the input
/// (the shard applies nothing while it encodes), and the caller measures
/// it.
#[derive(Debug)]
pub struct Taken {
    pub image: Image,
    /// Every event with a `seq` up to this one is in it, and none after.
    pub upto_seq: u64,
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
        for _ in 0..self.shards {
            let part = self.parts.recv().map_err(|_| EngineStopped)?;
            sections[part.shard] = part.section;
            total.tokens += part.counts.tokens;
            total.records += part.counts.records;
            total.tracked += part.counts.tracked;
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
        })
    }
}
