//! Engine snapshots on disk: a directory of files written atomically,
//! the newest valid one loaded at start.
//!
//! A snapshot is written to a temporary file in the directory, flushed to
//! disk (`fsync`), renamed into place and the directory flushed, so a
//! crash leaves either the old set or the new one, never a torn file
//! under a snapshot's name. Names carry the time of writing
//! (`snapshot-{unix ms, 16 digits}.cws`), so the newest sorts last; the
//! `keep` newest are kept and older ones deleted. A file that fails its
//! checks is skipped with its reason, and the next older one tried.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::EngineConfig;
use engine::shard::ShardState;
use engine::snapshot::{self, Image, Snapshot, SnapshotError};

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".cws";

/// A directory of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

/// A snapshot written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    /// Writing and flushing the file, the rename included.
    pub took: Duration,
}

/// The newest valid snapshot, loaded into shards.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub states: Vec<ShardState>,
    /// The `meta` the snapshot was written with.
    pub meta: Vec<u8>,
    pub bytes: u64,
    /// Reading the file; checking it (checksums); decoding the shards.
    pub read: Duration,
    pub check: Duration,
    pub decode: Duration,
}

/// What a start found in the directory.
#[derive(Debug, Default)]
pub struct Newest {
    /// The newest valid snapshot, if there is one.
    pub loaded: Option<Loaded>,
    /// Newer files refused, newest first, with the reason: say so.
    pub refused: Vec<(PathBuf, String)>,
}

/// Why no snapshot could be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SnapshotStore {
    /// Snapshots in `dir` (made if missing), keeping the `keep` newest
    /// (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> SnapshotStore {
        SnapshotStore {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes `image` with `meta` as the newest snapshot, then deletes
    /// all but the `keep` newest.
    pub fn write(&self, image: &Image, meta: &[u8]) -> Result<Written, StoreError> {
        let started = Instant::now();
        fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
        let name = self.next_name()?;
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = (|| {
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            image.write_to(&mut out, meta)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        for old in self.list()?.iter().rev().skip(self.keep) {
            let _ = fs::remove_file(old);
        }
        Ok(Written {
            bytes: image.file_len(meta),
            path,
            took: started.elapsed(),
        })
    }

    /// A name after every one in the directory, from the wall clock.
    fn next_name(&self) -> Result<String, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.list()?.last().and_then(|p| stamp_of(p)).unwrap_or(0);
        Ok(format!("{PREFIX}{:016}{SUFFIX}", now.max(last + 1)))
    }

    /// Snapshot files, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| stamp_of(p).is_some())
            .collect();
        files.sort();
        Ok(files)
    }

    /// The newest snapshot that passes every check, loaded into the
    /// shards of `config`; files that fail are skipped, with the reason,
    /// for the next older one.
    pub fn load_newest(&self, config: &EngineConfig) -> Result<Newest, StoreError> {
        let mut newest = Newest::default();
        for path in self.list()?.into_iter().rev() {
            let started = Instant::now();
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    newest.refused.push((path, e.to_string()));
                    continue;
                }
            };
            let read = started.elapsed();
            match load_one(config, &bytes) {
                Ok((states, meta, check, decode)) => {
                    newest.loaded = Some(Loaded {
                        path,
                        states,
                        meta,
                        bytes: bytes.len() as u64,
                        read,
                        check,
                        decode,
                    });
                    break;
                }
                Err(e) => newest.refused.push((path, e.to_string())),
            }
        }
        Ok(newest)
    }
}

type LoadedParts = (Vec<ShardState>, Vec<u8>, Duration, Duration);

fn load_one(config: &EngineConfig, bytes: &[u8]) -> Result<LoadedParts, SnapshotError> {
    let started = Instant::now();
    let parsed = Snapshot::parse(bytes)?;
    let check = started.elapsed();
    let started = Instant::now();
    let states = snapshot::load(config, &parsed)?;
    Ok((states, parsed.meta.to_vec(), check, started.elapsed()))
}

/// The time stamp in a snapshot's file name, if it is one.
fn stamp_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 16).then(|| digits.parse().ok()).flatten()
}
