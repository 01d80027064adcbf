//! Events in from Redis Streams, the live service's input. Producers (call
//! scrapers, price feeds, the bot) append CONTRACT.md events to streams; a
//! [`StreamIngest`] reads them through consumer groups, numbers and checks
//! them with the engine's [`Ingest`], hands them out in batches, and
//! acknowledges an entry only after its caller says that the entry's
//! effects are durably queued.
//!
//! # The stream format, for producers
//!
//! An entry has exactly one field, `event`, whose value is one CONTRACT.md
//! event as a JSON object: what one line of a replay file holds, without its
//! newline, at most 64 KiB. Add entries with an automatic id (`XADD key *
//! event …`): ids order entries across streams (see "Order"), so an
//! explicit id is a mistake.
//!
//! | events | stream |
//! | --- | --- |
//! | `call`, `price` | `{prefix}events:{p}`, where `p = route_hash(token) % P` |
//! | `subscribe`, `settings` | `{prefix}events:chats` |
//! | bad entries, written by callwatch | `{prefix}events:dead` |
//!
//! `P`, the number of partitions, is fixed for a deployment (changing it
//! moves tokens between partitions). The hash is [`Token::route_hash`], the
//! one that picks a token's shard, taken over the decoded address, so an
//! EVM address routes the same in any letter case; [`partition_of`]
//! computes `p`, and [`publish`] (or a [`Publisher`]) checks, routes and
//! appends lines in pipelines. For example, with `P` = 8:
//!
//! ```text
//! XADD events:chats * event {"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":42,"expires_at":"2026-12-25T10:00:00Z"}
//! XADD events:5 * event {"type":"call","at":"2026-11-25T10:01:00Z","token":"So11111111111111111111111111111111111111112","channel_id":-1001,"fdv_usd":125000}
//! ```
//!
//! # Groups and consumers
//!
//! - Partition streams have one consumer group, [`StreamIngestConfig::group`]
//!   (`callwatch`), shared by every process. A process owns a configured set
//!   of partitions and reads them under its consumer name, which must stay
//!   the same across restarts: an entry stays pending for the name that
//!   read it.
//! - Every process must see every chat event, so each has a group of its own
//!   on the chats stream, named `{group}:{consumer}`. A process with a new
//!   name reads the chats stream from its start; a retired name's chat group
//!   is removed with `XGROUP DESTROY`.
//! - The chats stream is where chat state (subscriptions, settings) is
//!   kept: no other store holds it. So at every start, before anything
//!   else, the chat events this group delivered and saw acknowledged are
//!   handed out again, in id order ([`IngestStats::replayed`]); its pending
//!   chat entries are not among them, they come with the other pending
//!   entries. A restarted process thus holds the chat state its
//!   acknowledged position implies, as a process with a new name does.
//!   After [`StreamIngest::resume_from`] (a start from an engine
//!   snapshot), every stream's acknowledged entries after the snapshot's
//!   position are handed out again instead, merged in hand-out order and
//!   marked [`EventBatch::replayed`].
//! - Groups are made at the start of their stream (`XGROUP CREATE … 0
//!   MKSTREAM`): entries added before callwatch first ran are read too.
//! - On start, entries of the owned partitions pending for longer than
//!   [`StreamIngestConfig::min_idle`] under any name (a consumer that died,
//!   or this one before a restart) are claimed with `XAUTOCLAIM`; then this
//!   consumer's pending entries are read again from the beginning (id 0)
//!   before any new one.
//!
//! # Order
//!
//! The engine takes one input order, and [`Ingest`] gives each event its
//! `seq` in it: from 1 in each run, one for every entry whose `event` value
//! reaches the engine's checks (an entry without one takes none). Each read is one `MULTI`/`EXEC` holding the `XREADGROUP` of
//! the chats stream (its group is not the partitions') and of every owned
//! partition: one round trip, and one instant for all streams. Entries are
//! handed out in the order of their ids, which are Redis's clock when they
//! arrived; within one millisecond, chat entries first, then partitions in
//! ascending order, each by id. When `COUNT` cuts a stream's read short,
//! entries of the other streams later than the cut are held back until that
//! stream has been read past them, so the order does not depend on how the
//! reads fall.
//!
//! On a Redis Cluster (`redis.cluster`), streams lie on different nodes
//! and no transaction spans them: each stream is read on its own, all at
//! once, each in a transaction with its node's `TIME`. A stream read whole
//! is known up to that instant, so entries are handed out only up to the
//! earliest of those instants (and of the ends of reads `COUNT` cut
//! short); the rule is the same, with the nodes' clocks in place of one.
//!
//! So the order is the order of arrival in Redis, except within one
//! millisecond: entries of one millisecond in different streams go by
//! stream, and one that arrives in the millisecond of a read may follow
//! entries of that millisecond already handed out. That is what makes
//! partitioning invisible: two processes that each own half of the
//! partitions place every token event against the chat events as one
//! process would (token events of different partitions concern different
//! tokens, whose relative order changes no alert). Entries read
//! again after a start, a claim or a reconnect come first, in id order
//! among themselves, and may be late against new ones; the engine's stream
//! clock tolerates lateness (see `engine::ingest`).
//!
//! # Acknowledgement
//!
//! [`StreamIngest::run`] sends [`EventBatch`]es into a channel. An entry is
//! acknowledged (`XACK`) only after the caller's [`Acker::ack_through`] has
//! covered its `seq`, which the caller calls once the effects of those
//! events are durably queued. Entries read and not yet acknowledged are the
//! in-flight window, at most [`StreamIngestConfig::window`]: when fewer
//! than one entry per stream read fits, reading waits for acknowledgements
//! (back-pressure), so the map from `seq` to entry ids is bounded too.
//!
//! # Bad entries
//!
//! An entry without exactly one field `event`, or whose event the engine
//! rejects (invalid UTF-8 or JSON, a line over 64 KiB, a failed contract
//! check, a blank value) is added to the dead-letter stream with the fields
//! `stream`, `id`, `event` (its first 64 KiB; absent if the entry had none)
//! and `reason`, and only then acknowledged, and counted. An outage between
//! the two can dead-letter an entry twice. The dead-letter stream is trimmed
//! to about [`StreamIngestConfig::dead_letter_max_len`] entries; the entry
//! itself stays in its stream.
//!
//! # Failures and stopping
//!
//! A Redis failure that a new connection may cure (the connection's own,
//! `LOADING`, `NOGROUP` after Redis lost its data, …) is retried with a
//! backoff, counted in [`IngestStats::reconnects`]; the reader then reads
//! its pending entries again from id 0, skipping those it has already
//! handed out, so nothing read but unacknowledged is lost or handed out
//! twice. Other errors end [`StreamIngest::run`].
//!
//! When `stop` turns true, reading stops at once and the batch channel is
//! closed; acknowledgements go on until everything handed out is
//! acknowledged or every [`Acker`] is dropped. Entries not acknowledged stay
//! pending for the next start.
//!
//! # Not done here
//!
//! callwatch never trims or deletes entries of the partitions: trim them
//! with `XTRIM … MINID` below the oldest entry still pending. Never trim
//! the chats stream: it is the chat state, read in full at every start.
//! `serve` compacts it instead ([`ChatCompactor`], module `compact`):
//! entries that a later entry for the same chat supersedes are deleted,
//! a chat's settings merged into one entry, so that its length follows
//! the number of chats rather than of commands. On Redis
//! Cluster, one `MULTI` needs all of a process's streams in one slot; there
//! the read splits into one per node, and the order across nodes is exact
//! only up to one read.

mod ack;
mod compact;
mod config;
mod counters;
mod history;
mod order;
mod publish;
mod reader;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use callwatch_common::backoff::Backoff;
use callwatch_common::keys::{dead_letter_key, stream_key};
use callwatch_streams::Consumer;
use callwatch_streams::connection::RedisEndpoint;
use callwatch_streams::log::DeadLetters;
use engine::event::Envelope;
use engine::ingest::Ingest;
use engine::parse::LineError;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

pub use ack::Acker;
pub use callwatch_common::keys::EVENT_FIELD;
pub use callwatch_common::route::{Route, partition_of, route};
pub use callwatch_streams::EntryId;
pub use compact::{ChatCompactor, CompactCounters, Compacted};
pub use config::StreamIngestConfig;
pub use counters::{IngestCounters, IngestStats};
pub use publish::{Publisher, input_drained, publish};

use ack::{Shared, ack_loop};
use order::Position;
use reader::Reader;

/// Why publishing or ingesting failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(&'static str),
    #[error("invalid stream ingest configuration: {0}")]
    Config(String),
    #[error("line {index} cannot be published: {error}; nothing was published")]
    BadLine { index: usize, error: LineError },
}

impl From<callwatch_streams::Error> for StreamError {
    fn from(e: callwatch_streams::Error) -> Self {
        match e {
            callwatch_streams::Error::Redis(e) => StreamError::Redis(e),
            callwatch_streams::Error::Reply(what) => StreamError::Reply(what),
        }
    }
}

impl StreamError {
    /// Whether a new connection or a moment may cure it.
    fn is_transient(&self) -> bool {
        matches!(self, StreamError::Redis(e) if callwatch_streams::is_transient(e))
    }
}

/// Events read together, for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// The good events, by `seq`.
    pub envelopes: Vec<Envelope>,
    /// When each of `envelopes` entered its stream: the entry id's
    /// milliseconds (Redis's clock), for latency figures.
    pub entered_ms: Vec<u64>,
    /// The `seq`s these entries took, those of bad ones among them
    /// included: `ack_through(*seqs.end())` covers the batch.
    pub seqs: RangeInclusive<u64>,
    /// For each stream ([`StreamIngest::stream_keys`]), the last entry the
    /// engine's state covers once this batch is applied: where a snapshot
    /// taken right after it resumes ([`StreamIngest::resume_from`]).
    pub positions: Vec<Option<EntryId>>,
    /// Handed out again from the history: acknowledged in an earlier run,
    /// so their effects were kept then and must not be kept twice.
    pub replayed: bool,
    /// Read for the first time, after every entry read again at start:
    /// from here on each stream goes out in id order, so `positions` is a
    /// prefix of every stream that a snapshot may name.
    pub in_order: bool,
}

/// The consumer: reads the chats stream and the owned partitions, hands
/// events out in batches and acknowledges them when told to.
#[derive(Debug)]
pub struct StreamIngest {
    config: StreamIngestConfig,
    redis: RedisEndpoint,
    layout: Layout,
    dead_letter: String,
    ingest: Ingest,
    acker: Acker,
    counters: Arc<IngestCounters>,
    /// See [`StreamIngest::resume_from`].
    resume: Option<Vec<Option<EntryId>>>,
}

impl StreamIngest {
    /// An ingest reading from the Redis at `redis` (a URL, or an endpoint
    /// with its CA). Connects lazily, in [`StreamIngest::run`].
    pub fn new(
        config: StreamIngestConfig,
        redis: impl Into<RedisEndpoint>,
    ) -> Result<StreamIngest, StreamError> {
        let owned = config.owned_partitions()?;
        let redis = redis.into();
        redis.client()?;
        let keys = std::iter::once(Route::Chats)
            .chain(owned.iter().map(|&p| Route::Partition(p)))
            .map(|r| stream_key(&config.prefix, r))
            .collect();
        let dead_letter = config
            .dead_letter
            .clone()
            .unwrap_or_else(|| dead_letter_key(&config.prefix));
        Ok(StreamIngest {
            layout: Layout {
                keys,
                partitions: Consumer::new(&config.group, &config.consumer),
                chats: Consumer::new(
                    format!("{}:{}", config.group, config.consumer),
                    &config.consumer,
                ),
            },
            redis,
            dead_letter,
            ingest: Ingest::new(),
            acker: Acker {
                through: watch::Sender::new(0),
                handed: Arc::default(),
            },
            counters: Arc::default(),
            resume: None,
            config,
        })
    }

    /// The streams this consumer reads, in the order of
    /// [`EventBatch::positions`]: the chats stream, then the owned
    /// partitions.
    pub fn stream_keys(&self) -> &[String] {
        &self.layout.keys
    }

    /// Starts from a snapshot that covers each stream through `positions`
    /// (named as [`StreamIngest::stream_keys`] names them): entries after
    /// those that the group saw acknowledged are handed out again first
    /// ([`EventBatch::replayed`]), then the pending ones, then new ones.
    /// Refused if the snapshot names other streams.
    pub fn resume_from(
        &mut self,
        positions: &[(String, Option<EntryId>)],
    ) -> Result<(), StreamError> {
        let names: Vec<&str> = positions.iter().map(|(k, _)| k.as_str()).collect();
        if names != self.layout.keys {
            return Err(StreamError::Config(format!(
                "the snapshot covers the streams {names:?}, and this process reads {:?}",
                self.layout.keys
            )));
        }
        self.resume = Some(positions.iter().map(|&(_, p)| p).collect());
        Ok(())
    }

    /// The handle that acknowledges; clone it freely, and drop every clone
    /// when done: after a stop, [`StreamIngest::run`] returns once
    /// everything handed out is acknowledged or no `Acker` is left.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<IngestCounters> {
        self.counters.clone()
    }

    /// Reads until `stop` turns true (or its sender is dropped), sending
    /// batches into `out`; a closed `out` stops reading too. Then waits for
    /// the last acknowledgements (see [`StreamIngest::acker`]) and returns
    /// the counters, or the error that ended it.
    pub async fn run(
        self,
        out: mpsc::Sender<EventBatch>,
        stop: watch::Receiver<bool>,
    ) -> Result<IngestStats, StreamError> {
        let StreamIngest {
            config,
            redis,
            layout,
            dead_letter,
            mut ingest,
            acker,
            counters,
            resume,
        } = self;
        let read_con = redis.managed(&config.timeouts)?;
        let ack_con = redis.managed(&config.timeouts)?;
        let through = acker.through.subscribe();
        let handed = acker.handed.clone();
        // Ours must not keep `through` open: its closing says no caller is left.
        drop(acker);
        let backoff = || Backoff::new(config.backoff_min(), config.backoff_max());
        let shared = Shared {
            window: Mutex::default(),
            room: Notify::new(),
            reader_done: AtomicBool::new(false),
            done: Notify::new(),
            counters: counters.clone(),
        };
        let mut reader = Reader {
            config: &config,
            layout: &layout,
            dead_letters: DeadLetters {
                stream: dead_letter,
                max_len: config.dead_letter_max_len,
            },
            con: read_con,
            redis: &redis,
            ingest: &mut ingest,
            shared: &shared,
            handed: &handed,
            streams: vec![Position::default(); layout.keys.len()],
            held: Vec::new(),
            history: None,
            applied: vec![None; layout.keys.len()],
            resume,
            backoff: backoff(),
        };
        let reading = async {
            let result = reader.run(out, stop).await;
            shared.reader_done.store(true, Ordering::Release);
            shared.done.notify_one();
            result
        };
        let acking = ack_loop(&shared, &layout, ack_con, through, backoff());
        tokio::pin!(reading, acking);
        let (read, left) = tokio::select! {
            biased;
            read = &mut reading => (read, acking.await),
            // The acknowledger ends first only on a lasting error; a read
            // dropped mid-way leaves its entries pending, as a crash would.
            left = &mut acking => (Ok(()), left),
        };
        read?;
        let mut stats = counters.stats();
        stats.left_pending = left?;
        Ok(stats)
    }
}

/// The streams read and their consumers: index 0 is the chats stream (a
/// group of this process's own), then the owned partitions in ascending
/// order (the deployment's shared group).
#[derive(Debug)]
struct Layout {
    keys: Vec<String>,
    partitions: Consumer,
    chats: Consumer,
}

impl Layout {
    fn consumer(&self, stream: usize) -> &Consumer {
        if stream == 0 {
            &self.chats
        } else {
            &self.partitions
        }
    }

    /// XACKs of `entries`, one a stream.
    fn ack_pipeline(&self, entries: impl Iterator<Item = (u32, EntryId)>) -> redis::Pipeline {
        let mut by_stream = vec![Vec::new(); self.keys.len()];
        for (stream, id) in entries {
            by_stream[stream as usize].push(id);
        }
        let mut pipe = redis::pipe();
        for (stream, ids) in by_stream.iter().enumerate() {
            if !ids.is_empty() {
                pipe.add_command(self.consumer(stream).ack_cmd(&self.keys[stream], ids))
                    .ignore();
            }
        }
        pipe
    }
}
