//! Engine snapshots: every shard's state at one batch boundary, in one
//! compact, versioned and checksummed image, so that a restart loads its
//! state instead of rebuilding it from storage.
//!
//! The router takes a snapshot in turn with the input
//! ([`Router::snapshot`](crate::router::Router::snapshot)): each shard,
//! once every event submitted before has been applied (every call
//! decided), writes its chats at once and its tokens a step at a time
//! while later events go on, each token as it was at the cut. The caller adds what the cut covers (`meta`: for
//! `serve`, its stream positions) and writes the file with
//! [`Image::write_to`]. [`Snapshot::parse`] checks the whole file before
//! anything is decoded, and [`load`] decodes every shard or none, so a
//! corrupt, truncated or foreign file is refused with a reason, never
//! half-loaded.
//!
//! # Format (version 1)
//!
//! ```text
//! magic "CWSNAP1\n" | version u32 | header length u64 | header CRC-32 | header
//! section i (one per shard): its chats, clock, counters, tokens | "CWSNEND\n"
//! ```
//!
//! The header holds the shard count, the thresholds (a tracked entry
//! indexes them, so a snapshot is refused under other thresholds), the
//! caller's `meta` bytes, and each section's length and CRC-32. Numbers
//! are little-endian; counts and chat-index gaps are LEB128. A snapshot
//! taken with N shards loads into any number: each shard keeps the tokens
//! that route to it.

mod codec;
mod take;

use std::io::Write;

pub(crate) use codec::{Decoder, Encoder};
pub use take::{ShardPart, Taken, Taking};

use crate::config::{EngineConfig, Rules};
use crate::shard::ShardState;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"CWSNAP1\n";
/// The last bytes: a file cut short anywhere lacks them.
const END: &[u8; 8] = b"CWSNEND\n";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a snapshot cannot be used. Nothing is loaded from one that fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a callwatch snapshot (the file does not start with its magic bytes)")]
    Foreign,
    #[error("snapshot format version {found}; this build reads version {VERSION}")]
    Version { found: u32 },
    #[error("snapshot truncated: {why}")]
    Truncated { why: String },
    #[error("snapshot checksum mismatch in {section}: the file is corrupt")]
    Checksum { section: String },
    #[error("snapshot corrupt in {section} at byte {offset}: {why}")]
    Corrupt {
        section: &'static str,
        offset: usize,
        why: String,
    },
    #[error(
        "snapshot taken with thresholds {found:?}, the engine runs with {expected:?}: tracked entries would mean other multiples"
    )]
    Thresholds { found: Vec<f64>, expected: Vec<f64> },
}

/// A snapshot as the shards encoded it, before it is written.
#[derive(Debug)]
pub struct Image {
    pub(crate) thresholds: Vec<f64>,
    /// One section per shard.
    pub(crate) sections: Vec<Vec<u8>>,
    /// Tokens, processed records and tracked entries in it.
    pub tokens: u64,
    pub records: u64,
    pub tracked: u64,
}

impl Image {
    /// Bytes the file will take.
    pub fn file_len(&self, meta: &[u8]) -> u64 {
        let body: usize = self.sections.iter().map(Vec::len).sum();
        (self.header(meta).len() + body + MAGIC.len() + 16 + END.len()) as u64
    }

    fn header(&self, meta: &[u8]) -> Vec<u8> {
        let mut h = Encoder::default();
        h.len(self.sections.len());
        h.len(self.thresholds.len());
        for &t in &self.thresholds {
            h.f64(t);
        }
        h.len(meta.len());
        h.raw(meta);
        for s in &self.sections {
            h.u64(s.len() as u64);
            h.u32(crc32fast::hash(s));
        }
        h.bytes
    }

    /// Writes the snapshot, with `meta` (what the cut covers, for the
    /// caller to read back) in its header. The caller makes the write
    /// atomic (a temporary file renamed into place).
    pub fn write_to(&self, out: &mut impl Write, meta: &[u8]) -> std::io::Result<()> {
        let header = self.header(meta);
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&crc32fast::hash(&header).to_le_bytes())?;
        out.write_all(&header)?;
        for s in &self.sections {
            out.write_all(s)?;
        }
        out.write_all(END)
    }
}

/// A snapshot file, checked whole: magic, version, lengths and every
/// checksum. Borrowed from the file's bytes.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub thresholds: Vec<f64>,
    /// The `meta` given to [`Image::write_to`].
    pub meta: &'a [u8],
    pub(crate) shards: Vec<&'a [u8]>,
}

impl<'a> Snapshot<'a> {
    pub fn parse(file: &'a [u8]) -> Result<Snapshot<'a>, SnapshotError> {
        if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::Foreign);
        }
        let truncated = |why: &str| SnapshotError::Truncated { why: why.into() };
        let fixed = file
            .get(MAGIC.len()..MAGIC.len() + 16)
            .ok_or_else(|| truncated("the file ends inside its header"))?;
        let version = u32::from_le_bytes(fixed[..4].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::Version { found: version });
        }
        let header_len = u64::from_le_bytes(fixed[4..12].try_into().expect("8 bytes"));
        let header_crc = u32::from_le_bytes(fixed[12..].try_into().expect("4 bytes"));
        let start = MAGIC.len() + 16;
        let header = usize::try_from(header_len)
            .ok()
            .and_then(|n| file.get(start..start.checked_add(n)?))
            .ok_or_else(|| truncated("the file ends inside its header"))?;
        if crc32fast::hash(header) != header_crc {
            return Err(SnapshotError::Checksum {
                section: "the header".into(),
            });
        }
        let mut h = Decoder::new(header, "the header");
        let shards = h.len(12)?;
        if shards == 0 {
            return Err(h.bad("no shard sections"));
        }
        let n = h.len(8)?;
        let thresholds = (0..n).map(|_| h.f64()).collect::<Result<Vec<_>, _>>()?;
        let meta_len = h.len(1)?;
        let meta = h.take(meta_len)?;
        let mut at = start + header.len();
        let mut sections = Vec::with_capacity(shards);
        for i in 0..shards {
            let len = h.u64()?;
            let crc = h.u32()?;
            let name = || format!("shard {i}'s section");
            let body = usize::try_from(len)
                .ok()
                .and_then(|n| file.get(at..at.checked_add(n)?))
                .ok_or_else(|| truncated(&format!("the file ends inside {}", name())))?;
            if crc32fast::hash(body) != crc {
                return Err(SnapshotError::Checksum { section: name() });
            }
            sections.push(body);
            at += body.len();
        }
        if !h.is_empty() {
            return Err(h.bad("bytes after the section table"));
        }
        match &file[at..] {
            rest if rest == END => {}
            rest if rest.len() < END.len() => return Err(truncated("the end marker is missing")),
            _ => {
                return Err(SnapshotError::Corrupt {
                    section: "the end",
                    offset: at,
                    why: "bytes after the last section".into(),
                });
            }
        }
        Ok(Snapshot {
            thresholds,
            meta,
            shards: sections,
        })
    }

    /// Shards the snapshot was taken with.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

/// Every shard of `config` loaded from `snapshot`, decoded in parallel
/// (one thread per shard), or the first reason one could not be: all or
/// nothing.
pub fn load(
    config: &EngineConfig,
    snapshot: &Snapshot<'_>,
) -> Result<Vec<ShardState>, SnapshotError> {
    let rules: Rules = config.rules();
    if snapshot.thresholds != rules.thresholds {
        return Err(SnapshotError::Thresholds {
            found: snapshot.thresholds.clone(),
            expected: rules.thresholds,
        });
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..config.shards)
            .map(|i| {
                let rules = rules.clone();
                s.spawn(move || ShardState::from_snapshot(rules, snapshot, i, config.shards))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a snapshot decoder panicked"))
            .collect()
    })
}
