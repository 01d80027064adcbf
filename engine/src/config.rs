//! The engine's settings: one plain struct, checked once at start.

use crate::time::{NANOS_PER_SEC, Nanos};

/// How the engine runs. Built by the binary from its flags or config file;
/// the engine never reads the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Worker threads, each owning the tokens that hash to it. Default: the
    /// number of cores. Output does not depend on it.
    pub shards: usize,
    /// Multiples that raise an alert, strictly ascending, each above 1.
    /// Default: 2, 5, 10, 20, 50, 100.
    pub thresholds: Vec<f64>,
    /// How long processed records and tracked entries live. Default: 168 h.
    pub ttl_nanos: Nanos,
    /// Events per inbox batch: the router hands a shard this many at most
    /// in one channel operation. Default: 1024.
    pub batch_events: usize,
    /// Batches one shard inbox (and one outbox) holds before the sender
    /// blocks; this is the back-pressure bound. Default: 64.
    pub inbox_batches: usize,
    /// Pin shard threads to cores. Default: true.
    pub pin_threads: bool,
    /// Cores left unpinned for the threads that feed and drain the shards
    /// (ingest, writers): shards are pinned round-robin to the other cores,
    /// and not at all when there are no others. Default: 1.
    pub reserved_cores: usize,
    /// Also emit [`Effect::Progress`](crate::effect::Effect::Progress) for
    /// thresholds passed while a chat was inactive, so that a state store
    /// can follow every change of a tracked entry. Alerts are unchanged.
    /// Default: false.
    pub report_silent: bool,
    /// Followers a call decides before its shard applies the next event: a
    /// call with more followers is decided in slices interleaved with the
    /// events after it, so that it holds no other token back for long.
    /// The output is the same for any value. Default: 4096.
    pub fanout_slice: usize,
    /// Records a shard writes of a snapshot at one go (at least one
    /// token), between batches or while its inbox is empty: the bound on
    /// a snapshot's pause of the input. The snapshot is the same for any
    /// value. Default: 16,384 (a few milliseconds).
    pub snapshot_step_records: u64,
}

/// The rules part of the configuration, shared read-only by every shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub thresholds: Vec<f64>,
    pub ttl_nanos: Nanos,
    /// See [`EngineConfig::report_silent`].
    pub report_silent: bool,
}

/// Thresholds are indexed by a `u8` in every tracked entry.
pub const MAX_THRESHOLDS: usize = 255;

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("shards must be between 1 and 256, got {0}")]
    Shards(usize),
    #[error(
        "thresholds must be 1 to {MAX_THRESHOLDS} finite multiples above 1, strictly ascending"
    )]
    Thresholds,
    #[error("ttl must be positive")]
    Ttl,
    #[error("batch_events, inbox_batches and fanout_slice must be positive")]
    Capacity,
    #[error("snapshot_step_records must be positive")]
    SnapshotStep,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            thresholds: DEFAULT_THRESHOLDS.to_vec(),
            ttl_nanos: DEFAULT_TTL_HOURS * 3600 * NANOS_PER_SEC,
            batch_events: 1024,
            inbox_batches: 64,
            pin_threads: true,
            reserved_cores: 1,
            report_silent: false,
            fanout_slice: 4096,
            snapshot_step_records: crate::shard::STEP_RECORDS,
        }
    }
}

/// CONTRACT.md's default thresholds.
pub const DEFAULT_THRESHOLDS: [f64; 6] = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
/// CONTRACT.md's default time to live, in hours.
pub const DEFAULT_TTL_HOURS: i64 = 168;

impl EngineConfig {
    /// Checks every field; the engine only starts from a checked config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.shards) {
            return Err(ConfigError::Shards(self.shards));
        }
        self.rules().validate()?;
        if self.batch_events == 0 || self.inbox_batches == 0 || self.fanout_slice == 0 {
            return Err(ConfigError::Capacity);
        }
        if self.snapshot_step_records == 0 {
            return Err(ConfigError::SnapshotStep);
        }
        Ok(())
    }

    pub fn rules(&self) -> Rules {
        Rules {
            thresholds: self.thresholds.clone(),
            ttl_nanos: self.ttl_nanos,
            report_silent: self.report_silent,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        EngineConfig::default().rules()
    }
}

impl Rules {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.thresholds;
        let ascending = t.windows(2).all(|w| w[0] < w[1]);
        if t.is_empty()
            || t.len() > MAX_THRESHOLDS
            || !ascending
            || t.iter().any(|v| !v.is_finite() || *v <= 1.0)
        {
            return Err(ConfigError::Thresholds);
        }
        if self.ttl_nanos <= 0 {
            return Err(ConfigError::Ttl);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = EngineConfig::default();
        assert_eq!(c.thresholds, [2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(c.ttl_nanos, 168 * 3600 * NANOS_PER_SEC);
        c.validate().unwrap();
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for t in [
            vec![],
            vec![2.0, 2.0],
            vec![5.0, 2.0],
            vec![1.0],
            vec![f64::NAN],
        ] {
            let r = Rules {
                thresholds: t,
                ttl_nanos: 1,
                report_silent: false,
            };
            assert_eq!(r.validate(), Err(ConfigError::Thresholds));
        }
    }

    #[test]
    fn empty_capacities_are_refused() {
        let zero = |f: fn(&mut EngineConfig)| {
            let mut c = EngineConfig::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(zero(|c| c.fanout_slice = 0), Err(ConfigError::Capacity));
        assert_eq!(zero(|c| c.batch_events = 0), Err(ConfigError::Capacity));
        assert_eq!(
            zero(|c| c.snapshot_step_records = 0),
            Err(ConfigError::SnapshotStep)
        );
    }
}
