//! How a [`StreamIngest`](super::StreamIngest) reads: the `[ingest]` section
//! of the service's settings.

use std::time::Duration;

use callwatch_streams::connection::RedisTimeouts;
use serde::{Deserialize, Serialize};

use super::StreamError;

/// How a [`StreamIngest`](super::StreamIngest) reads. Checked by
/// [`StreamIngest::new`](super::StreamIngest::new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamIngestConfig {
    /// `P`, the deployment's number of partitions `events:{p}`, 1 to
    /// 4,096; fixed for a deployment (changing it moves tokens between
    /// partitions) [default: 8].
    pub partitions: u32,
    /// The partitions this process reads, each below `partitions`, no
    /// repeats; empty: all of them [default: empty].
    pub owned: Vec<u32>,
    /// The partitions' consumer group, shared by every process; this
    /// process's chat group is `{group}:{consumer}` [default: `callwatch`].
    pub group: String,
    /// This process's consumer name, the same across restarts [default:
    /// `callwatch-1`].
    pub consumer: String,
    /// Entries per stream per read (`COUNT`), 1 to 100,000 [default: 1,000].
    pub batch: usize,
    /// How long a read waits for new entries when there are none (`BLOCK`),
    /// 1 ms to 60 s and below the Redis response timeout [default: 100].
    pub block_ms: u64,
    /// At start, entries of the owned partitions pending for longer than
    /// this are claimed from whichever consumer holds them. It must be
    /// longer than a live consumer ever keeps an entry unacknowledged, or
    /// a starting process takes entries that another is still working on
    /// [default: 30,000].
    pub claim_idle_ms: u64,
    /// Entries read and not yet acknowledged, at most; at least one per
    /// stream read (reads shrink to fit) [default: 100,000].
    pub window: usize,
    /// The dead-letter stream is trimmed to about this many entries
    /// (`MAXLEN ~`), at least 1 [default: 1,000,000].
    pub dead_letter_max_len: u64,
    /// First wait after a Redis failure; about doubled for each failure in
    /// a row, with jitter [default: 100].
    pub backoff_min_ms: u64,
    /// Longest wait between retries [default: 5,000].
    pub backoff_max_ms: u64,
    /// An event dated more than this after its entry reached the stream
    /// (the entry id's time, Redis's clock) is set aside in the dead-letter
    /// stream with the reason, not applied: one event dated years ahead
    /// would otherwise move the engine's clock and expire every record
    /// [default: 300].
    pub max_future_skew_secs: u64,
    /// `serve` compacts the chats stream at start and then this often:
    /// entries a later one for the same chat supersedes are deleted, so
    /// its length follows the number of chats, not of commands (see
    /// `stream::compact`); 0 turns compaction off [default: 600].
    pub compact_every_secs: u64,
    /// Compaction never deletes chats-stream entries younger than this,
    /// so that readers in flight and pending entries are left alone
    /// [default: 3,600].
    pub compact_horizon_secs: u64,
    /// Put before every key: the `[redis]` section's `key_prefix`.
    #[serde(skip)]
    pub prefix: String,
    /// The dead-letter stream; `None`: `{prefix}events:dead`.
    #[serde(skip)]
    pub dead_letter: Option<String>,
    /// The Redis connections' timeouts: the `[redis]` section's.
    #[serde(skip)]
    pub timeouts: RedisTimeouts,
}

impl Default for StreamIngestConfig {
    fn default() -> Self {
        StreamIngestConfig {
            partitions: 8,
            owned: Vec::new(),
            group: "callwatch".to_owned(),
            consumer: "callwatch-1".to_owned(),
            batch: 1_000,
            block_ms: 100,
            claim_idle_ms: 30_000,
            window: 100_000,
            dead_letter_max_len: 1_000_000,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            max_future_skew_secs: 300,
            compact_every_secs: 600,
            compact_horizon_secs: 3_600,
            prefix: String::new(),
            dead_letter: None,
            timeouts: RedisTimeouts::default(),
        }
    }
}

/// Whether `partitions` is a partition count callwatch takes.
pub(super) fn check_partitions(partitions: u32) -> Result<(), StreamError> {
    if (1..=4096).contains(&partitions) {
        Ok(())
    } else {
        Err(StreamError::Config(
            "partitions must be between 1 and 4,096".to_owned(),
        ))
    }
}

impl StreamIngestConfig {
    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }

    pub fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.backoff_min_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    /// [`Self::max_future_skew_secs`] in the engine's nanoseconds.
    pub fn max_future_skew_nanos(&self) -> i64 {
        i64::try_from(self.max_future_skew_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000)
    }

    /// The owned partitions, ascending, once every setting is checked.
    pub fn owned_partitions(&self) -> Result<Vec<u32>, StreamError> {
        let fail = |m: &str| Err(StreamError::Config(m.to_owned()));
        check_partitions(self.partitions)?;
        if self.group.is_empty() || self.consumer.is_empty() {
            return fail("group and consumer must be named");
        }
        if !(1..=100_000).contains(&self.batch) {
            return fail("batch must be between 1 and 100,000");
        }
        if self.block_ms == 0 || self.block_ms > 60_000 || self.block() >= self.timeouts.response {
            return fail("block_ms must be between 1 ms and 60 s, and below the response timeout");
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return fail("backoff_min_ms must be positive and at most backoff_max_ms");
        }
        if self.dead_letter_max_len == 0 {
            return fail("dead_letter_max_len must be at least 1");
        }
        let mut owned = if self.owned.is_empty() {
            (0..self.partitions).collect()
        } else {
            self.owned.clone()
        };
        owned.sort_unstable();
        if owned.windows(2).any(|w| w[0] == w[1]) {
            return fail("owned names a partition twice");
        }
        if owned.last().is_some_and(|&p| p >= self.partitions) {
            return fail(&format!(
                "owned names partition {}, but there are only {} (0 to {})",
                owned.last().expect("checked"),
                self.partitions,
                self.partitions - 1
            ));
        }
        if self.window <= owned.len() {
            return fail("window must hold at least one entry per stream read");
        }
        Ok(owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let ok = StreamIngestConfig {
            partitions: 8,
            owned: vec![5, 1],
            ..StreamIngestConfig::default()
        };
        assert_eq!(ok.owned_partitions().unwrap(), [1, 5]);
        assert_eq!(
            StreamIngestConfig::default().owned_partitions().unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7]
        );
        for bad in [
            StreamIngestConfig {
                owned: vec![1, 1],
                ..ok.clone()
            },
            StreamIngestConfig {
                owned: vec![8],
                ..ok.clone()
            },
            StreamIngestConfig {
                partitions: 0,
                ..ok.clone()
            },
            StreamIngestConfig {
                batch: 0,
                ..ok.clone()
            },
            StreamIngestConfig {
                window: 2,
                ..ok.clone()
            },
            StreamIngestConfig {
                block_ms: 10_000,
                ..ok.clone()
            },
            StreamIngestConfig {
                consumer: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(bad.owned_partitions().is_err(), "{bad:?}");
        }
    }
}
