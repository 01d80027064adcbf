//! Acknowledgement: the caller says through which `seq` the effects are
//! durable ([`Acker`]), and a task of its own acknowledges those entries,
//! on a connection of its own (the reader's may be blocked in a read).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use callwatch_common::backoff::Backoff;
use callwatch_streams::Conn;
use callwatch_streams::cluster::send_all;
use callwatch_streams::{EntryId, is_transient};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::{IngestCounters, Layout, StreamError};

/// The caller's side of acknowledgement: cheap to clone, never waits,
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct Acker {
    pub(super) through: watch::Sender<u64>,
    pub(super) handed: Arc<AtomicU64>,
}

impl Acker {
    /// The `seq` through which the caller has declared effects durably
    /// queued ([`Acker::ack_through`]); the `XACK`s follow it. Closed once
    /// every `Acker` and the ingest are gone.
    pub fn settled(&self) -> watch::Receiver<u64> {
        self.through.subscribe()
    }

    /// Says that the effects of every event up to `seq` are durably queued,
    /// so their entries may be acknowledged.
    ///
    /// # Panics
    /// If `seq` is past the last event handed out: acknowledging what was
    /// never read would lose it.
    pub fn ack_through(&self, seq: u64) {
        let handed = self.handed.load(Ordering::Acquire);
        assert!(
            seq <= handed,
            "ack_through({seq}) is past the last event handed out ({handed})"
        );
        self.through.send_if_modified(|through| {
            let raised = seq > *through;
            *through = (*through).max(seq);
            raised
        });
    }
}

/// An event handed out and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) stream: u32,
    pub(super) id: EntryId,
}

#[derive(Debug, Default)]
pub(super) struct Window {
    /// By `seq`.
    pub(super) entries: VecDeque<InFlight>,
    /// Taken off `entries` for an XACK that has not succeeded yet.
    acking: usize,
}

impl Window {
    pub(super) fn len(&self) -> usize {
        self.entries.len() + self.acking
    }
}

/// What the reader and the acknowledger share. The window's lock is
/// parking_lot's, not tokio's: it is never held across an await.
pub(super) struct Shared {
    pub(super) window: Mutex<Window>,
    /// The acknowledger made room in the window.
    pub(super) room: Notify,
    pub(super) reader_done: AtomicBool,
    /// The reader is done.
    pub(super) done: Notify,
    pub(super) counters: Arc<IngestCounters>,
}

/// Acknowledges what the callers allow, on a connection of its own (the
/// reader's may be blocked in a read). Returns the events left
/// unacknowledged: it runs until the reader is done and then either every
/// event handed out is acknowledged or no [`Acker`] is left; once the
/// reader is done, a failed XACK ends it too.
pub(super) async fn ack_loop(
    shared: &Shared,
    layout: &Layout,
    mut con: Conn,
    mut through: watch::Receiver<u64>,
    mut backoff: Backoff,
) -> Result<u64, StreamError> {
    let mut callers_gone = false;
    loop {
        let upto = *through.borrow_and_update();
        let due: Vec<InFlight> = {
            let mut window = shared.window.lock();
            let n = window.entries.partition_point(|f| f.seq <= upto);
            window.acking += n;
            window.entries.drain(..n).collect()
        };
        if !due.is_empty() {
            let acked = loop {
                let pipe = layout.ack_pipeline(due.iter().map(|f| (f.stream, f.id)));
                let e = match send_all(&mut con, &pipe).await {
                    Ok(()) => break true,
                    Err(e) => e,
                };
                let transient = is_transient(&e);
                if shared.reader_done.load(Ordering::Acquire) || !transient {
                    tracing::warn!(error = %e, "stream ingest: acknowledging failed; the entries stay pending");
                    if !transient {
                        return Err(e.into());
                    }
                    break false;
                }
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff.next_delay()).await;
            };
            let mut window = shared.window.lock();
            window.acking -= due.len();
            if !acked {
                return Ok((window.len() + due.len()) as u64);
            }
            backoff.reset();
            let counters = &shared.counters;
            IngestCounters::add(&counters.acked, due.len());
            counters
                .in_flight
                .fetch_sub(due.len() as u64, Ordering::Relaxed);
            shared.room.notify_one();
            continue;
        }
        if shared.reader_done.load(Ordering::Acquire)
            && (callers_gone || shared.window.lock().entries.is_empty())
        {
            return Ok(shared.window.lock().len() as u64);
        }
        tokio::select! {
            changed = through.changed(), if !callers_gone => callers_gone = changed.is_err(),
            () = shared.done.notified() => {}
        }
    }
}
