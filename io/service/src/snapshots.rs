//! Engine snapshots in `serve` (ARCHITECTURE.md "Snapshots").
//!
//! - **At start** ([`load_at_start`]): the newest valid snapshot in
//!   `snapshot.dir` is loaded into the shards, and the ingest resumes each
//!   stream after the snapshot's position: entries acknowledged since are
//!   applied again with their effects dropped, then the pending ones are
//!   read again as always. A snapshot refused (damaged, other thresholds,
//!   other streams, or a partition trimmed past its position) is named in
//!   the log, and the start falls back to the rebuild from Redis.
//! - **While running** ([`Snapshots`], on the reading thread): every
//!   `snapshot.every_secs` in which events came (checked at least once a
//!   second, events or not), once the ingest reads in order, the shards
//!   encode themselves at the cut after the last batch submitted; a
//!   thread of its own gathers the parts and writes the file only once
//!   the keeper has declared everything through the cut kept, so a
//!   snapshot never holds the state of an event whose effects could still
//!   be lost.
//! - **At a graceful stop**: one more, at the last event read, written
//!   after the final acknowledgement.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use callwatch_ingest::stream::{EntryId, EventBatch, StreamIngest};
use callwatch_state::snapshots::SnapshotStore;
use callwatch_streams::connection::{RedisEndpoint, RedisTimeouts};
use engine::EngineConfig;
use engine::router::{EngineStopped, Router};
use engine::shard::ShardState;
use engine::snapshot::Taking;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::metrics::Live;

/// The `[snapshot]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Take and load snapshots [default: true].
    pub enabled: bool,
    /// The directory snapshots are written to, made if missing; a relative
    /// path is taken from the working directory [default: `snapshots`].
    pub dir: PathBuf,
    /// Seconds between snapshots while running [default: 300].
    pub every_secs: u64,
    /// Snapshots kept, the newest [default: 2].
    pub keep: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            enabled: true,
            dir: PathBuf::from("snapshots"),
            every_secs: 300,
            keep: 2,
        }
    }
}

impl SnapshotSettings {
    fn store(&self) -> SnapshotStore {
        SnapshotStore::new(&self.dir, self.keep)
    }
}

/// What a snapshot file's `meta` holds: where each stream's entries
/// stop being covered.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// Each stream the ingest reads, with the last entry covered (`None`:
    /// none of it).
    streams: Vec<(String, Option<String>)>,
    /// The cut, in the run that took it.
    upto_seq: u64,
}

/// The shards to start from, if a snapshot could be used; the ingest is
/// then set to resume after it.
pub fn load_at_start(
    settings: &SnapshotSettings,
    engine: &EngineConfig,
    ingest: &mut StreamIngest,
    rt: &tokio::runtime::Runtime,
    redis: &RedisEndpoint,
) -> Option<Vec<ShardState>> {
    if !settings.enabled {
        return None;
    }
    let started = Instant::now();
    let newest = match settings.store().load_newest(engine) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "snapshots cannot be read; rebuilding from Redis");
            return None;
        }
    };
    for (path, reason) in &newest.refused {
        tracing::warn!(path = %path.display(), %reason, "snapshot refused");
    }
    let loaded = newest.loaded?;
    let resumed = positions(&loaded.meta).and_then(|p| {
        rt.block_on(check_still_held(redis, &p))?;
        ingest.resume_from(&p).map_err(anyhow::Error::from)
    });
    if let Err(e) = resumed {
        tracing::warn!(path = %loaded.path.display(), reason = %format!("{e:#}"), "snapshot refused; rebuilding from Redis");
        return None;
    }
    tracing::info!(
        path = %loaded.path.display(),
        bytes = loaded.bytes,
        read_secs = loaded.read.as_secs_f64(),
        check_secs = loaded.check.as_secs_f64(),
        decode_secs = loaded.decode.as_secs_f64(),
        seconds = started.elapsed().as_secs_f64(),
        "engine loaded from a snapshot"
    );
    Some(loaded.states)
}

fn positions(meta: &[u8]) -> anyhow::Result<Vec<(String, Option<EntryId>)>> {
    let meta: Meta = serde_json::from_slice(meta).context("its stream positions do not parse")?;
    meta.streams
        .into_iter()
        .map(|(key, id)| {
            let id = match id {
                Some(text) => Some(
                    EntryId::parse(text.as_bytes())
                        .with_context(|| format!("bad entry id {text:?} for {key}"))?,
                ),
                None => None,
            };
            Ok((key, id))
        })
        .collect()
}

/// Refuses a snapshot whose streams no longer hold what follows its
/// positions: a stream gone or made anew (Redis lost its data: its last
/// id is before the position), or a partition that lost entries after it
/// (trimmed or deleted), which could not be applied again. The chats
/// stream is compacted on purpose (every entry deleted is superseded by a
/// later one), so its deletions are not held against it.
async fn check_still_held(
    redis: &RedisEndpoint,
    positions: &[(String, Option<EntryId>)],
) -> anyhow::Result<()> {
    let mut con = redis.managed(&RedisTimeouts::default())?;
    for (i, (key, position)) in positions.iter().enumerate() {
        let Some(position) = *position else {
            continue;
        };
        let info: redis::Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(&mut con)
            .await
            .with_context(|| {
                format!("{key} is gone, and the snapshot covers it up to {position}")
            })?;
        let last = field_id(&info, b"last-generated-id").unwrap_or(EntryId::ZERO);
        anyhow::ensure!(
            last >= position,
            "{key} ends at {last}, before the snapshot's position {position}: the stream was made anew"
        );
        if let Some(deleted) = field_id(&info, b"max-deleted-entry-id")
            && i > 0
            && deleted > position
        {
            anyhow::bail!(
                "{key} lost entries after the snapshot's position (deleted up to {deleted})"
            );
        }
    }
    Ok(())
}

/// An entry id field of an `XINFO STREAM` reply (`max-deleted-entry-id`
/// is Redis 7's), unless zero.
fn field_id(info: &redis::Value, name: &[u8]) -> Option<EntryId> {
    let redis::Value::Array(items) = info else {
        return None;
    };
    let mut it = items.iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (redis::Value::BulkString(k), redis::Value::BulkString(v)) = (k, v)
            && k == name
        {
            return EntryId::parse(v).filter(|&id| id != EntryId::ZERO);
        }
    }
    None
}

/// A snapshot asked of the shards, for the writer.
struct Job {
    taking: Taking,
    meta: Meta,
    asked: Instant,
}

/// The reading thread's side: when to take a snapshot and at which cut.
pub struct Snapshots {
    every: Duration,
    last: Instant,
    thresholds: Vec<f64>,
    keys: Vec<String>,
    positions: Vec<Option<EntryId>>,
    in_order: bool,
    /// Events were submitted since the last snapshot asked.
    changed: bool,
    busy: Arc<AtomicBool>,
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Starts the writer thread; `None` when snapshots are off.
pub fn start(
    settings: &SnapshotSettings,
    engine: &EngineConfig,
    ingest: &StreamIngest,
    settled: watch::Receiver<u64>,
    live: Arc<Live>,
    handle: Handle,
) -> anyhow::Result<Option<(Snapshots, JoinHandle<()>)>> {
    if !settings.enabled {
        return Ok(None);
    }
    let (jobs, rx) = sync_channel(1);
    let busy = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        store: settings.store(),
        busy: Arc::clone(&busy),
        settled,
        live,
        handle,
    };
    let thread = std::thread::Builder::new()
        .name("callwatch-snap".to_owned())
        .spawn(move || writer.run(&rx))
        .context("starting the snapshot thread")?;
    let keys = ingest.stream_keys().to_vec();
    Ok(Some((
        Snapshots {
            every: Duration::from_secs(settings.every_secs.max(1)),
            last: Instant::now(),
            thresholds: engine.thresholds.clone(),
            positions: vec![None; keys.len()],
            keys,
            in_order: false,
            changed: false,
            busy,
            jobs,
        },
        thread,
    )))
}

impl Snapshots {
    /// Notes what a batch submitted to the router covers.
    pub fn submitted(&mut self, batch: &EventBatch) {
        self.positions.clone_from(&batch.positions);
        self.in_order |= batch.in_order;
        self.changed = true;
    }

    /// Asks for a snapshot if the ingest reads in order, events came
    /// since the last one, one is due and the last one is written; or at
    /// once if `now` (the stop: it queues behind one being written, which
    /// waits for the final acknowledgement too).
    pub fn maybe_take(&mut self, router: &mut Router, now: bool) -> Result<(), EngineStopped> {
        let due = self.changed && self.last.elapsed() >= self.every;
        if !self.in_order || !(now || due) {
            return Ok(());
        }
        if self.busy.swap(true, Ordering::AcqRel) && !now {
            return Ok(());
        }
        self.last = Instant::now();
        self.changed = false;
        let asked = Instant::now();
        let taking = router.snapshot(self.thresholds.clone())?;
        let meta = Meta {
            streams: self
                .keys
                .iter()
                .zip(&self.positions)
                .map(|(k, p)| (k.clone(), p.map(|id| id.to_string())))
                .collect(),
            upto_seq: taking.upto_seq(),
        };
        let job = Job {
            taking,
            meta,
            asked,
        };
        let sent = if now {
            self.jobs.send(job).is_ok()
        } else {
            self.jobs.try_send(job).is_ok()
        };
        if !sent {
            self.busy.store(false, Ordering::Release);
            self.changed = true;
        }
        Ok(())
    }
}

struct Writer {
    store: SnapshotStore,
    busy: Arc<AtomicBool>,
    settled: watch::Receiver<u64>,
    live: Arc<Live>,
    handle: Handle,
}

impl Writer {
    fn run(mut self, jobs: &Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.write(job);
            self.busy.store(false, Ordering::Release);
        }
    }

    fn write(&mut self, job: Job) {
        let Ok(taken) = job.taking.wait() else {
            return;
        };
        let took = job.asked.elapsed();
        let pause = taken.longest_pause;
        let upto = taken.upto_seq;
        // Written only once everything through the cut is kept.
        let settled = self.handle.block_on(async {
            loop {
                if *self.settled.borrow_and_update() >= upto {
                    return true;
                }
                if self.settled.changed().await.is_err() {
                    return *self.settled.borrow() >= upto;
                }
            }
        });
        if !settled {
            tracing::warn!(
                upto_seq = upto,
                "snapshot not written: the events it covers were never all kept"
            );
            return;
        }
        let meta = serde_json::to_vec(&job.meta).expect("the meta serialises");
        match self.store.write(&taken.image, &meta) {
            Ok(w) => {
                self.live.snapshot_written(w.bytes, pause, w.took);
                tracing::info!(
                    path = %w.path.display(),
                    bytes = w.bytes,
                    tokens = taken.image.tokens,
                    tracked = taken.image.tracked,
                    take_secs = took.as_secs_f64(),
                    pause_secs = pause.as_secs_f64(),
                    write_secs = w.took.as_secs_f64(),
                    "snapshot written"
                );
            }
            Err(e) => {
                self.live.snapshot_failed();
                tracing::error!(error = %e, "snapshot not written");
            }
        }
    }
}
