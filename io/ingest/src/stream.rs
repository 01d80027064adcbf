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
//! callwatch never trims or deletes entries of the input streams: trim the
//! partitions with `XTRIM … MINID` below the oldest entry still pending.
//! Never trim the chats stream: it is the chat state, read in full at
//! every start (a few hundred bytes per subscription or settings change). On Redis
//! Cluster, one `MULTI` needs all of a process's streams in one slot; there
//! the read splits into one per node, and the order across nodes is exact
//! only up to one read.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::event::{Envelope, Event, limits};
use engine::ingest::{Ingest, Outcome};
use engine::parse::{LineError, LineParser};
use engine::token::Token;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{RedisWrite, RetryMethod, ToRedisArgs, Value};
use tokio::sync::{Notify, mpsc, watch};

use crate::health::{self, Breaker, BreakerConfig, RedisTimeouts};

/// The one field of an entry.
pub const EVENT_FIELD: &str = "event";

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

/// A stream entry's id: Redis's clock in milliseconds when it arrived, and
/// a sequence number within that millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `ms-seq`.
    pub fn parse(text: &[u8]) -> Option<EntryId> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl ToRedisArgs for EntryId {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// Which stream an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `{prefix}events:chats`: subscribe and settings, read by every process.
    Chats,
    /// `{prefix}events:{p}`: calls and prices of the tokens of partition `p`.
    Partition(u32),
}

/// The partition of `token` among `partitions` (at least 1): fixed forever,
/// like the shard a token goes to.
pub fn partition_of(token: &Token, partitions: u32) -> u32 {
    assert!(partitions > 0, "there is at least one partition");
    (token.route_hash() % u64::from(partitions)) as u32
}

/// The stream of `event`.
pub fn route(event: &Event, partitions: u32) -> Route {
    match event.token() {
        Some(token) => Route::Partition(partition_of(token, partitions)),
        None => Route::Chats,
    }
}

/// The key of a stream.
pub fn stream_key(prefix: &str, route: Route) -> String {
    match route {
        Route::Chats => format!("{prefix}events:chats"),
        Route::Partition(p) => format!("{prefix}events:{p}"),
    }
}

/// The default dead-letter stream's key.
pub fn dead_letter_key(prefix: &str) -> String {
    format!("{prefix}events:dead")
}

/// Whether every consumer group on a deployment's input streams (the
/// `partitions` and the chats stream) has read and acknowledged everything:
/// nothing pending, no lag. `false` while a stream or its groups do not
/// exist yet. For load tests and operators waiting for a backlog to clear.
pub async fn input_drained(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    partitions: u32,
) -> bool {
    let mut streams: Vec<String> = (0..partitions)
        .map(|p| stream_key(prefix, Route::Partition(p)))
        .collect();
    streams.push(stream_key(prefix, Route::Chats));
    for stream in streams {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(con)
            .await
        {
            Ok(g) => g,
            Err(_) => return false,
        };
        if groups.is_empty() {
            return false;
        }
        for g in groups {
            let zero = |k: &str| matches!(g.get(k), Some(redis::Value::Int(0)));
            if !(zero("pending") && zero("lag")) {
                return false;
            }
        }
    }
    true
}

/// Lines per XADD pipeline.
const PUBLISH_PIPELINE: usize = 4096;

/// The producer side: checks lines with the engine's parser, routes them
/// and appends them. Keeps its parser and keys from call to call.
#[derive(Debug)]
pub struct Publisher {
    partitions: u32,
    parser: LineParser,
    chats: String,
    keys: Vec<String>,
}

impl Publisher {
    /// A publisher for streams under `prefix`, with `partitions` (1 to
    /// 4,096) partitions.
    pub fn new(prefix: &str, partitions: u32) -> Result<Publisher, StreamError> {
        check_partitions(partitions)?;
        Ok(Publisher {
            partitions,
            parser: LineParser::new(),
            chats: stream_key(prefix, Route::Chats),
            keys: (0..partitions)
                .map(|p| stream_key(prefix, Route::Partition(p)))
                .collect(),
        })
    }

    /// The stream of one line, or why the engine would reject it. The
    /// check that needs history (a `settings` whose result has
    /// `min_fdv_usd > max_fdv_usd`) is left to the consumer.
    pub fn route(&mut self, line: &[u8]) -> Result<Route, LineError> {
        Ok(route(&self.parser.parse(line)?, self.partitions))
    }

    /// Appends `lines` (without line endings; blank ones are skipped), one
    /// entry each, in pipelines of 4,096, and returns each one's stream and
    /// id in order. Every line is checked before anything is sent, so a bad
    /// line publishes nothing; a connection failure part-way may leave the
    /// first pipelines published.
    pub async fn publish<L: AsRef<[u8]>>(
        &mut self,
        con: &mut impl ConnectionLike,
        lines: &[L],
    ) -> Result<Vec<(Route, EntryId)>, StreamError> {
        let mut routed = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let route = self
                .route(line)
                .map_err(|error| StreamError::BadLine { index, error })?;
            routed.push((route, line));
        }
        let mut published = Vec::with_capacity(routed.len());
        for chunk in routed.chunks(PUBLISH_PIPELINE) {
            let mut pipe = redis::pipe();
            for &(route, line) in chunk {
                let key = match route {
                    Route::Chats => &self.chats,
                    Route::Partition(p) => &self.keys[p as usize],
                };
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(line);
            }
            let ids: Vec<Value> = pipe.query_async(con).await?;
            if ids.len() != chunk.len() {
                return Err(StreamError::Reply("XADD answered with fewer ids"));
            }
            for (&(route, _), id) in chunk.iter().zip(ids) {
                let id = text(id)
                    .and_then(|t| EntryId::parse(&t))
                    .ok_or(StreamError::Reply("XADD answered with no id"))?;
                published.push((route, id));
            }
        }
        Ok(published)
    }
}

/// Checks, routes and appends `lines` to the streams under `prefix`: see
/// [`Publisher::publish`].
pub async fn publish<L: AsRef<[u8]>>(
    con: &mut impl ConnectionLike,
    prefix: &str,
    partitions: u32,
    lines: &[L],
) -> Result<Vec<(Route, EntryId)>, StreamError> {
    Publisher::new(prefix, partitions)?
        .publish(con, lines)
        .await
}

fn check_partitions(partitions: u32) -> Result<(), StreamError> {
    if (1..=4096).contains(&partitions) {
        Ok(())
    } else {
        Err(StreamError::Config(
            "partitions must be between 1 and 4,096".to_owned(),
        ))
    }
}

/// How a [`StreamIngest`] reads. Checked by [`StreamIngest::new`].
#[derive(Debug, Clone)]
pub struct StreamIngestConfig {
    /// Put before every key. Default: empty.
    pub prefix: String,
    /// `P`, the deployment's number of partitions, 1 to 4,096. Default 1.
    pub partitions: u32,
    /// The partitions this process reads, each below `partitions`, no
    /// repeats; empty: all of them. Default empty.
    pub owned: Vec<u32>,
    /// The partitions' consumer group, shared by every process; this
    /// process's chat group is `{group}:{consumer}`. Default `callwatch`.
    pub group: String,
    /// This process's consumer name, the same across restarts. Default
    /// `callwatch-1`.
    pub consumer: String,
    /// Entries per stream per read (`COUNT`), 1 to 100,000. Default 1,000.
    pub batch: usize,
    /// How long a read waits for new entries when there are none (`BLOCK`),
    /// 1 ms to 60 s and below `timeouts.response`. Default 100 ms.
    pub block: Duration,
    /// At start, entries of the owned partitions pending for longer than
    /// this are claimed from whichever consumer holds them. It must be
    /// longer than a live consumer ever keeps an entry unacknowledged, or
    /// a starting process takes entries that another is still working on.
    /// Default 60 s.
    pub min_idle: Duration,
    /// Entries read and not yet acknowledged, at most; at least one per
    /// stream read (reads shrink to fit). Default 100,000.
    pub window: usize,
    /// The dead-letter stream; `None`: `{prefix}events:dead`. Default `None`.
    pub dead_letter: Option<String>,
    /// The dead-letter stream is trimmed to about this many entries
    /// (`MAXLEN ~`), at least 1. Default 1,000,000.
    pub dead_letter_max_len: u64,
    /// The Redis connections' timeouts and reconnect backoff.
    pub timeouts: RedisTimeouts,
    /// First wait after a Redis failure; doubled for each failure in a row.
    /// Default 100 ms.
    pub backoff_min: Duration,
    /// Longest wait between retries. Default 5 s.
    pub backoff_max: Duration,
}

impl Default for StreamIngestConfig {
    fn default() -> Self {
        StreamIngestConfig {
            prefix: String::new(),
            partitions: 1,
            owned: Vec::new(),
            group: "callwatch".to_owned(),
            consumer: "callwatch-1".to_owned(),
            batch: 1_000,
            block: Duration::from_millis(100),
            min_idle: Duration::from_secs(60),
            window: 100_000,
            dead_letter: None,
            dead_letter_max_len: 1_000_000,
            timeouts: RedisTimeouts::default(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl StreamIngestConfig {
    /// The owned partitions, ascending.
    fn owned_partitions(&self) -> Result<Vec<u32>, StreamError> {
        let fail = |m: &str| Err(StreamError::Config(m.to_owned()));
        check_partitions(self.partitions)?;
        if self.group.is_empty() || self.consumer.is_empty() {
            return fail("group and consumer must be named");
        }
        if !(1..=100_000).contains(&self.batch) {
            return fail("batch must be between 1 and 100,000");
        }
        if self.block.is_zero()
            || self.block > Duration::from_secs(60)
            || self.block >= self.timeouts.response
        {
            return fail("block must be between 1 ms and 60 s, and below the response timeout");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return fail("backoff_min must be positive and at most backoff_max");
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
            return fail("owned names a partition at or above partitions");
        }
        if self.window <= owned.len() {
            return fail("window must hold at least one entry per stream read");
        }
        Ok(owned)
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
}

/// The caller's side of acknowledgement: cheap to clone, never waits,
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct Acker {
    through: watch::Sender<u64>,
    handed: Arc<AtomicU64>,
}

impl Acker {
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

/// Live counters, readable from other tasks while the ingest runs.
#[derive(Debug, Default)]
pub struct IngestCounters {
    read: AtomicU64,
    events: AtomicU64,
    dead_lettered: AtomicU64,
    acked: AtomicU64,
    claimed: AtomicU64,
    reconnects: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicU64,
    replayed: AtomicU64,
}

/// A reading of [`IngestCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Entries taken from the streams, bad ones included.
    pub read: u64,
    /// Events handed out.
    pub events: u64,
    /// Entries sent to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries acknowledged, dead-lettered ones included.
    pub acked: u64,
    /// Entries claimed at start (this consumer's own stale ones included).
    pub claimed: u64,
    /// Redis failures retried after a backoff.
    pub reconnects: u64,
    /// Entries read again after a reconnect that had already been handed
    /// out, and so were not handed out twice.
    pub skipped: u64,
    /// Events handed out and not yet acknowledged.
    pub in_flight: u64,
    /// Chat events acknowledged in an earlier run and handed out again at
    /// start, ahead of everything else: the chats stream is where chat
    /// state is kept (see "Groups and consumers").
    pub replayed: u64,
    /// At the end of a run: events handed out and never acknowledged; they
    /// stay pending for the next start.
    pub left_pending: u64,
}

impl IngestCounters {
    pub fn stats(&self) -> IngestStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestStats {
            read: get(&self.read),
            events: get(&self.events),
            dead_lettered: get(&self.dead_lettered),
            acked: get(&self.acked),
            claimed: get(&self.claimed),
            reconnects: get(&self.reconnects),
            skipped: get(&self.skipped),
            in_flight: get(&self.in_flight),
            replayed: get(&self.replayed),
            left_pending: 0,
        }
    }

    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The consumer: reads the chats stream and the owned partitions, hands
/// events out in batches and acknowledges them when told to.
#[derive(Debug)]
pub struct StreamIngest {
    config: StreamIngestConfig,
    redis_url: String,
    layout: Layout,
    dead_letter: String,
    ingest: Ingest,
    acker: Acker,
    counters: Arc<IngestCounters>,
}

impl StreamIngest {
    /// An ingest reading from the Redis at `redis_url`. Connects lazily, in
    /// [`StreamIngest::run`].
    pub fn new(config: StreamIngestConfig, redis_url: &str) -> Result<StreamIngest, StreamError> {
        let owned = config.owned_partitions()?;
        redis::Client::open(redis_url)?;
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
                group: config.group.clone(),
                chat_group: format!("{}:{}", config.group, config.consumer),
            },
            redis_url: redis_url.to_owned(),
            dead_letter,
            ingest: Ingest::new(),
            acker: Acker {
                through: watch::Sender::new(0),
                handed: Arc::default(),
            },
            counters: Arc::default(),
            config,
        })
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
            redis_url,
            layout,
            dead_letter,
            mut ingest,
            acker,
            counters,
        } = self;
        let read_con = health::managed_connection(&redis_url, &config.timeouts)?;
        let ack_con = health::managed_connection(&redis_url, &config.timeouts)?;
        let through = acker.through.subscribe();
        let handed = acker.handed.clone();
        // Ours must not keep `through` open: its closing says no caller is left.
        drop(acker);
        let backoff = BreakerConfig {
            failures_to_open: 1,
            open_for: config.backoff_min,
            max_open_for: config.backoff_max,
        };
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
            dead_letter_key: &dead_letter,
            con: read_con,
            ingest: &mut ingest,
            shared: &shared,
            handed: &handed,
            streams: vec![Position::default(); layout.keys.len()],
            held: Vec::new(),
            history: None,
            backoff: Breaker::new(backoff.clone()),
        };
        let reading = async {
            let result = reader.run(out, stop).await;
            shared.reader_done.store(true, Ordering::Release);
            shared.done.notify_one();
            result
        };
        let acking = ack_loop(&shared, &layout, ack_con, through, backoff);
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

/// The streams read and their groups: index 0 is the chats stream, then
/// the owned partitions in ascending order.
#[derive(Debug)]
struct Layout {
    keys: Vec<String>,
    group: String,
    chat_group: String,
}

impl Layout {
    fn group(&self, stream: usize) -> &str {
        if stream == 0 {
            &self.chat_group
        } else {
            &self.group
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
                pipe.cmd("XACK")
                    .arg(&self.keys[stream])
                    .arg(self.group(stream))
                    .arg(ids)
                    .ignore();
            }
        }
        pipe
    }
}

/// An event handed out and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    stream: u32,
    id: EntryId,
}

#[derive(Debug, Default)]
struct Window {
    /// By `seq`.
    entries: VecDeque<InFlight>,
    /// Taken off `entries` for an XACK that has not succeeded yet.
    acking: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.entries.len() + self.acking
    }
}

/// What the reader and the acknowledger share. The window's lock is
/// parking_lot's, not tokio's: it is never held across an await.
struct Shared {
    window: Mutex<Window>,
    /// The acknowledger made room in the window.
    room: Notify,
    reader_done: AtomicBool,
    /// The reader is done.
    done: Notify,
    counters: Arc<IngestCounters>,
}

/// What one entry carried.
#[derive(Debug, Clone, PartialEq)]
enum Body {
    /// The value of its one `event` field.
    Event(Vec<u8>),
    Bad {
        event: Option<Vec<u8>>,
        reason: String,
    },
}

impl Body {
    /// The body of an entry with these fields (`None`: deleted while pending).
    fn of(fields: Option<Vec<(Value, Value)>>) -> Body {
        let Some(fields) = fields else {
            return Body::Bad {
                event: None,
                reason: "the entry was deleted while pending".to_owned(),
            };
        };
        let mut event = None;
        let mut extra = None;
        for (field, value) in fields {
            let field = text(field).unwrap_or_default();
            if field == EVENT_FIELD.as_bytes() && event.is_none() {
                event = Some(text(value).unwrap_or_default());
            } else if extra.is_none() {
                extra = Some(field);
            }
        }
        let lossy = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
        match (event, extra) {
            (Some(event), None) => Body::Event(event),
            (Some(event), Some(field)) => Body::Bad {
                event: Some(event),
                reason: format!(
                    "unexpected field `{}`: an entry has one field, `event`",
                    lossy(&field)
                ),
            },
            (None, Some(field)) => Body::Bad {
                event: None,
                reason: format!("no `event` field (it has `{}`)", lossy(&field)),
            },
            (None, None) => Body::Bad {
                event: None,
                reason: "no `event` field".to_owned(),
            },
        }
    }
}

/// An entry read and not yet handed out.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    stream: u32,
    id: EntryId,
    body: Body,
}

/// The hand-out order: by millisecond, then stream, then sequence.
type OrderKey = (u64, u32, u64);

impl Entry {
    fn order(&self) -> OrderKey {
        (self.id.ms, self.stream, self.id.seq)
    }
}

/// Sorts `held` into hand-out order and takes the entries at or before
/// `limit` (all without one): later ones may yet be preceded by entries
/// not read.
fn take_ordered(held: &mut Vec<Entry>, limit: Option<OrderKey>) -> Vec<Entry> {
    held.sort_by_key(Entry::order);
    let cut = limit.map_or(held.len(), |l| held.partition_point(|e| e.order() <= l));
    held.drain(..cut).collect()
}

/// Where the reader is in one stream.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    cursor: Cursor,
    /// The last entry handed out (or dead-lettered); entries up to it read
    /// again after a reconnect are skipped.
    handed: Option<EntryId>,
    /// The last entry seen, where a wait for new entries starts.
    seen: Option<EntryId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Cursor {
    /// This consumer's pending entries after this id.
    Pending(EntryId),
    /// Pending entries all read; new ones wait until every stream's are.
    #[default]
    Drained,
    /// New entries (`>`).
    New,
}

enum Step {
    Go,
    Stop,
}

struct Reader<'a> {
    config: &'a StreamIngestConfig,
    layout: &'a Layout,
    dead_letter_key: &'a str,
    con: ConnectionManager,
    ingest: &'a mut Ingest,
    shared: &'a Shared,
    /// The last `seq` handed out, for [`Acker::ack_through`]'s check.
    handed: &'a AtomicU64,
    streams: Vec<Position>,
    /// Read, in no order, waiting to be handed out.
    held: Vec<Entry>,
    /// The chats stream's history still to hand out again, at start.
    history: Option<History>,
    backoff: Breaker,
}

/// The chats stream's entries that this consumer's group delivered and
/// that were acknowledged: the chat state a restarted process must learn
/// again before anything else. Its pending chat entries are left out; they
/// are read again with the partitions' pending ones, in their order.
#[derive(Debug)]
struct History {
    /// The last entry taken from the history.
    after: Option<EntryId>,
    /// The group's last delivered entry: later ones are new.
    through: EntryId,
    /// This consumer's pending chat entries.
    pending: HashSet<EntryId>,
}

/// Whether entries go out for the first time or again from the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handing {
    Read,
    Replay,
}

impl Reader<'_> {
    async fn run(
        &mut self,
        out: mpsc::Sender<EventBatch>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let mut prepared = false;
        let mut claim = true;
        loop {
            if stop_requested(&stop) {
                return Ok(());
            }
            let step = if prepared {
                self.step(&out, &mut stop).await
            } else {
                self.prepare(claim).await.map(|()| Step::Go)
            };
            let e = match step {
                Ok(Step::Go) => {
                    // Claims are for the start only: later, an entry older
                    // than one handed out would be skipped as read again.
                    (prepared, claim) = (true, false);
                    self.backoff.success();
                    continue;
                }
                Ok(Step::Stop) => return Ok(()),
                Err(StreamError::Redis(e)) if transient(&e) => e,
                Err(e) => return Err(e),
            };
            if has_code(&e, "NOGROUP") {
                prepared = false;
            }
            // Whatever was read on the failed connection is pending: read
            // it again from the start, handed-out entries skipped.
            self.held.clear();
            for s in &mut self.streams {
                s.cursor = Cursor::Pending(EntryId::ZERO);
            }
            self.shared
                .counters
                .reconnects
                .fetch_add(1, Ordering::Relaxed);
            self.backoff.failure(Instant::now());
            let wait = self.backoff.wait(Instant::now());
            tracing::warn!(error = %e, ?wait, "stream ingest: Redis failed, retrying");
            if stop_during(wait, &mut stop).await {
                return Ok(());
            }
        }
    }

    /// Groups made, stale entries claimed if `claim`, and every stream set
    /// to read its pending entries from the start.
    async fn prepare(&mut self, claim: bool) -> Result<(), StreamError> {
        for (stream, key) in self.layout.keys.iter().enumerate() {
            let created: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(self.layout.group(stream))
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.con)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
                _ => {}
            }
        }
        let min_idle_ms = u64::try_from(self.config.min_idle.as_millis()).unwrap_or(u64::MAX);
        // The chat group is this consumer's alone: nothing to claim there.
        let claimed = if claim { &self.layout.keys[1..] } else { &[] };
        for key in claimed {
            let mut start = EntryId::ZERO;
            loop {
                let reply: Value = redis::cmd("XAUTOCLAIM")
                    .arg(key)
                    .arg(&self.layout.group)
                    .arg(&self.config.consumer)
                    .arg(min_idle_ms)
                    .arg(start)
                    .arg("COUNT")
                    .arg(self.config.batch)
                    .arg("JUSTID")
                    .query_async(&mut self.con)
                    .await?;
                let Value::Array(parts) = reply else {
                    return Err(StreamError::Reply("XAUTOCLAIM answered no array"));
                };
                let mut parts = parts.into_iter();
                let next = parts.next().and_then(text).and_then(|t| EntryId::parse(&t));
                let Some(Value::Array(ids)) = parts.next() else {
                    return Err(StreamError::Reply("XAUTOCLAIM answered no ids"));
                };
                IngestCounters::add(&self.shared.counters.claimed, ids.len());
                match next {
                    Some(EntryId::ZERO) => break,
                    Some(next) => start = next,
                    None => return Err(StreamError::Reply("XAUTOCLAIM answered no cursor")),
                }
            }
        }
        if claim {
            self.history = self.chat_history().await?;
        }
        for s in &mut self.streams {
            s.cursor = Cursor::Pending(EntryId::ZERO);
        }
        Ok(())
    }

    /// The chat group's last delivered entry and pending entries, which
    /// bound the history to hand out again; `None` if it delivered nothing.
    async fn chat_history(&mut self) -> Result<Option<History>, StreamError> {
        let key = &self.layout.keys[0];
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query_async(&mut self.con)
            .await?;
        let through = last_delivered(groups, &self.layout.chat_group)?;
        if through == EntryId::ZERO {
            return Ok(None);
        }
        let mut pending = HashSet::new();
        let mut start = "-".to_owned();
        loop {
            let reply: Value = redis::cmd("XPENDING")
                .arg(key)
                .arg(&self.layout.chat_group)
                .arg(&start)
                .arg("+")
                .arg(self.config.batch)
                .query_async(&mut self.con)
                .await?;
            let Value::Array(rows) = reply else {
                return Err(StreamError::Reply("XPENDING answered no array"));
            };
            let n = rows.len();
            for row in rows {
                let id = match row {
                    Value::Array(parts) => parts.into_iter().next().and_then(text),
                    _ => None,
                }
                .and_then(|t| EntryId::parse(&t))
                .ok_or(StreamError::Reply(
                    "XPENDING answered an entry without an id",
                ))?;
                start = format!("({id}");
                pending.insert(id);
            }
            if n < self.config.batch {
                break;
            }
        }
        Ok(Some(History {
            after: None,
            through,
            pending,
        }))
    }

    /// Hands out the next part of the chats stream's history.
    async fn replay(
        &mut self,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let Some(History { after, through, .. }) = self.history else {
            return Ok(Step::Go);
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.layout.keys[0])
            .arg(after.map_or("-".to_owned(), |a| format!("({a}")))
            .arg(through)
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(&mut self.con)
            .await?;
        let Value::Array(entries) = reply else {
            return Err(StreamError::Reply("XRANGE answered no array"));
        };
        let done = entries.len() < self.config.batch;
        let mut fed = Vec::with_capacity(entries.len());
        let history = self.history.as_mut().expect("checked above");
        for entry in entries {
            let (id, fields) = entry_of(entry)?;
            history.after = Some(id);
            if !history.pending.contains(&id) {
                fed.push(Entry {
                    stream: 0,
                    id,
                    body: Body::of(fields),
                });
            }
        }
        if done {
            self.history = None;
        }
        self.hand_out(fed, Handing::Replay, out, stop).await
    }

    /// One read, and what it lets go out.
    async fn step(
        &mut self,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        if self.history.is_some() {
            return self.replay(out, stop).await;
        }
        let pending = self
            .streams
            .iter()
            .any(|s| matches!(s.cursor, Cursor::Pending(_)));
        if !pending {
            for s in &mut self.streams {
                s.cursor = Cursor::New;
            }
        }
        // Until every stream's pending entries are read, only those.
        let included: Vec<usize> = (0..self.streams.len())
            .filter(|&i| !pending || matches!(self.streams[i].cursor, Cursor::Pending(_)))
            .collect();
        let count = loop {
            let in_window = self.shared.window.lock().len();
            let room = self
                .config
                .window
                .saturating_sub(in_window + self.held.len());
            let count = (room / included.len()).min(self.config.batch);
            if count > 0 {
                break count;
            }
            if in_window == 0 {
                // Held entries fill the window and no acknowledgement will
                // make room: let them go out of strict order.
                let fed = take_ordered(&mut self.held, None);
                return self.hand_out(fed, Handing::Read, out, stop).await;
            }
            tokio::select! {
                () = self.shared.room.notified() => {}
                () = stop_signal(stop) => return Ok(Step::Stop),
            }
        };
        let (read, limit) = self.read(&included, count).await?;
        if read == 0 && self.held.is_empty() {
            if pending {
                return Ok(Step::Go);
            }
            return self.wait_for_entries(stop).await;
        }
        let fed = take_ordered(&mut self.held, limit);
        self.hand_out(fed, Handing::Read, out, stop).await
    }

    /// One MULTI of XREADGROUPs over the `included` streams, `count` entries
    /// each at most, into `held`. Returns the entries added and the order
    /// key up to which the order is known: the earliest end of a read that
    /// `count` cut short.
    async fn read(
        &mut self,
        included: &[usize],
        count: usize,
    ) -> Result<(usize, Option<OrderKey>), StreamError> {
        let id_of = |p: &Position| match p.cursor {
            Cursor::Pending(after) => after.to_string(),
            Cursor::New | Cursor::Drained => ">".to_owned(),
        };
        let (chats, parts) = match included.split_first() {
            Some((0, parts)) => (true, parts),
            _ => (false, included),
        };
        let consumer = &self.config.consumer;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if chats {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.layout.chat_group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.layout.keys[0])
                .arg(id_of(&self.streams[0]));
        }
        if !parts.is_empty() {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.layout.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS");
            for &i in parts {
                pipe.arg(&self.layout.keys[i]);
            }
            for &i in parts {
                pipe.arg(id_of(&self.streams[i]));
            }
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con).await?;
        let mut answered = vec![false; self.streams.len()];
        let (mut read, mut limit) = (0, None::<OrderKey>);
        for reply in replies {
            for (key, entries) in streams_of(reply)? {
                let stream = included
                    .iter()
                    .copied()
                    .find(|&i| self.layout.keys[i].as_bytes() == key)
                    .ok_or(StreamError::Reply("XREADGROUP answered another stream"))?;
                answered[stream] = true;
                let got = entries.len();
                let pos = &mut self.streams[stream];
                let mut last = None;
                for entry in entries {
                    let (id, fields) = entry_of(entry)?;
                    last = Some(id);
                    if pos.handed.is_some_and(|h| id <= h) {
                        self.shared.counters.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.held.push(Entry {
                        stream: stream as u32,
                        id,
                        body: Body::of(fields),
                    });
                    read += 1;
                }
                if let Some(last) = last {
                    pos.seen = pos.seen.max(Some(last));
                    if got >= count {
                        let end = (last.ms, stream as u32, last.seq);
                        limit = Some(limit.map_or(end, |l| l.min(end)));
                    }
                }
                if let Cursor::Pending(_) = pos.cursor {
                    pos.cursor = match last {
                        Some(last) if got >= count => Cursor::Pending(last),
                        _ => Cursor::Drained,
                    };
                }
            }
        }
        for &i in included {
            if !answered[i] && matches!(self.streams[i].cursor, Cursor::Pending(_)) {
                self.streams[i].cursor = Cursor::Drained;
            }
        }
        Ok((read, limit))
    }

    /// Waits (XREAD BLOCK, which takes nothing) until a stream has an entry
    /// after the last one seen, or `block` passes, or stop.
    async fn wait_for_entries(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(u64::try_from(self.config.block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.layout.keys);
        for s in &self.streams {
            match s.seen {
                Some(id) => cmd.arg(id),
                None => cmd.arg("$"),
            };
        }
        // Unlike XREADGROUP, an XREAD dropped half-way loses nothing.
        let reply: Value = tokio::select! {
            reply = cmd.query_async(&mut self.con) => reply?,
            () = stop_signal(stop) => return Ok(Step::Stop),
        };
        for (key, entries) in streams_of(reply)? {
            let stream = self.layout.keys.iter().position(|k| k.as_bytes() == key);
            if let (Some(stream), Some(entry)) = (stream, entries.into_iter().last()) {
                let (id, _) = entry_of(entry)?;
                let seen = &mut self.streams[stream].seen;
                *seen = (*seen).max(Some(id));
            }
        }
        Ok(Step::Go)
    }

    /// Numbers and checks `fed` (in hand-out order), dead-letters the bad
    /// entries and acknowledges them, then sends the good ones out. Entries
    /// replayed from the chats stream's history were acknowledged (or
    /// dead-lettered) in an earlier run: they go out again and that is all.
    async fn hand_out(
        &mut self,
        fed: Vec<Entry>,
        handing: Handing,
        out: &mpsc::Sender<EventBatch>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, StreamError> {
        let first_seq = self.ingest.seq() + 1;
        let mut envelopes = Vec::with_capacity(fed.len());
        let mut entered_ms = Vec::with_capacity(fed.len());
        let mut flights = Vec::with_capacity(fed.len());
        let mut dead = Vec::new();
        let mut last_ids = vec![None; self.streams.len()];
        let replay = handing == Handing::Replay;
        if !replay {
            IngestCounters::add(&self.shared.counters.read, fed.len());
        }
        for Entry { stream, id, body } in fed {
            last_ids[stream as usize] = Some(id);
            let (event, reason) = match body {
                Body::Event(value) => match self.ingest.line(&value) {
                    Outcome::Event(env) => {
                        flights.push(InFlight {
                            seq: env.seq,
                            stream,
                            id,
                        });
                        envelopes.push(env);
                        entered_ms.push(id.ms);
                        continue;
                    }
                    Outcome::Bad { error, .. } => (Some(value), error.to_string()),
                    Outcome::Blank => (Some(value), "the event is blank".to_owned()),
                },
                Body::Bad { event, reason } => (event, reason),
            };
            if !replay {
                dead.push((stream, id, event, reason));
            }
        }
        if !dead.is_empty() {
            self.dead_letter(&dead).await?;
        }
        if !envelopes.is_empty() {
            // Reserved first, so that a stop while the caller is slow
            // leaves nothing half handed out.
            let permit = tokio::select! {
                permit = out.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(Step::Stop),
                },
                () = stop_signal(stop) => return Ok(Step::Stop),
            };
            let last_seq = self.ingest.seq();
            let n = envelopes.len();
            let counters = &self.shared.counters;
            if !replay {
                self.shared.window.lock().entries.extend(flights);
                IngestCounters::add(&counters.in_flight, n);
            }
            self.handed.store(last_seq, Ordering::Release);
            permit.send(EventBatch {
                envelopes,
                entered_ms,
                seqs: first_seq..=last_seq,
            });
            IngestCounters::add(
                if replay {
                    &counters.replayed
                } else {
                    &counters.events
                },
                n,
            );
        }
        // The history's entries are not the read position: pending ones
        // after them are still to be read.
        if !replay {
            for (pos, last) in self.streams.iter_mut().zip(last_ids) {
                pos.handed = pos.handed.max(last);
            }
        }
        Ok(Step::Go)
    }

    /// Adds the bad entries to the dead-letter stream, then acknowledges
    /// them: never the other way round.
    async fn dead_letter(
        &mut self,
        dead: &[(u32, EntryId, Option<Vec<u8>>, String)],
    ) -> Result<(), StreamError> {
        let mut pipe = redis::pipe();
        for (stream, id, event, reason) in dead {
            let cmd = pipe
                .cmd("XADD")
                .arg(self.dead_letter_key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.dead_letter_max_len)
                .arg("*")
                .arg("stream")
                .arg(&self.layout.keys[*stream as usize])
                .arg("id")
                .arg(id);
            if let Some(event) = event {
                let kept = &event[..event.len().min(limits::MAX_LINE_BYTES)];
                cmd.arg(EVENT_FIELD).arg(kept);
            }
            cmd.arg("reason").arg(reason).ignore();
        }
        let () = pipe.query_async(&mut self.con).await?;
        let () = self
            .layout
            .ack_pipeline(dead.iter().map(|d| (d.0, d.1)))
            .query_async(&mut self.con)
            .await?;
        let counters = &self.shared.counters;
        IngestCounters::add(&counters.dead_lettered, dead.len());
        IngestCounters::add(&counters.acked, dead.len());
        Ok(())
    }
}

/// Acknowledges what the callers allow, on a connection of its own (the
/// reader's may be blocked in a read). Returns the events left
/// unacknowledged: it runs until the reader is done and then either every
/// event handed out is acknowledged or no [`Acker`] is left; once the
/// reader is done, a failed XACK ends it too.
async fn ack_loop(
    shared: &Shared,
    layout: &Layout,
    mut con: ConnectionManager,
    mut through: watch::Receiver<u64>,
    backoff: BreakerConfig,
) -> Result<u64, StreamError> {
    let mut backoff = Breaker::new(backoff);
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
                let e = match pipe.query_async::<()>(&mut con).await {
                    Ok(()) => break true,
                    Err(e) => e,
                };
                if shared.reader_done.load(Ordering::Acquire) || !transient(&e) {
                    tracing::warn!(error = %e, "stream ingest: acknowledging failed; the entries stay pending");
                    if !transient(&e) {
                        return Err(e.into());
                    }
                    break false;
                }
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                backoff.failure(Instant::now());
                tokio::time::sleep(backoff.wait(Instant::now())).await;
            };
            let mut window = shared.window.lock();
            window.acking -= due.len();
            if !acked {
                return Ok((window.len() + due.len()) as u64);
            }
            backoff.success();
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

/// Errors that a new connection or a moment may cure: the connection's
/// own, the server's "try again later", a group gone because Redis lost its
/// data (it is made again), a blocked read whose stream was deleted.
fn transient(e: &redis::RedisError) -> bool {
    !matches!(e.retry_method(), RetryMethod::NoRetry)
        || has_code(e, "NOGROUP")
        || has_code(e, "UNBLOCKED")
}

/// Whether `e`, or any command's error in a failed pipeline, has `code`.
fn has_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, s)| s.code() == code))
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Completes when stop turns true or its sender is dropped.
async fn stop_signal(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// Sleeps `wait`; true if stop came first.
async fn stop_during(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        () = stop_signal(stop) => true,
        () = tokio::time::sleep(wait) => false,
    }
}

fn text(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The `last-delivered-id` of `group` in an XINFO GROUPS reply (RESP2's
/// flat arrays or RESP3's maps).
fn last_delivered(reply: Value, group: &str) -> Result<EntryId, StreamError> {
    let Value::Array(groups) = reply else {
        return Err(StreamError::Reply("XINFO GROUPS answered no array"));
    };
    for g in groups {
        let pairs: Vec<(Value, Value)> = match g {
            Value::Map(pairs) => pairs,
            Value::Array(flat) => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
            }
            _ => continue,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k.clone()).as_deref() == Some(name.as_bytes()))
                .and_then(|(_, v)| text(v.clone()))
        };
        if field("name").as_deref() == Some(group.as_bytes()) {
            return field("last-delivered-id")
                .and_then(|t| EntryId::parse(&t))
                .ok_or(StreamError::Reply(
                    "XINFO GROUPS answered no last-delivered-id",
                ));
        }
    }
    Err(StreamError::Reply(
        "XINFO GROUPS does not list the chat group",
    ))
}

/// A stream's key and entries in a read reply.
type StreamReply = (Vec<u8>, Vec<Value>);

/// The streams of an XREADGROUP or XREAD reply, in RESP2's array form or
/// RESP3's map.
fn streams_of(reply: Value) -> Result<Vec<StreamReply>, StreamError> {
    let unexpected = StreamError::Reply("a read answered neither nil nor streams");
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(pair) => <[Value; 2]>::try_from(pair).ok().map(|[k, v]| (k, v)),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or(unexpected)?,
        _ => return Err(unexpected),
    };
    pairs
        .into_iter()
        .map(|(key, entries)| match (text(key), entries) {
            (Some(key), Value::Array(entries)) => Ok((key, entries)),
            _ => Err(StreamError::Reply(
                "a stream in a read reply is not a key and entries",
            )),
        })
        .collect()
}

/// An entry's id and its fields as pairs; `None` for an entry deleted while
/// pending.
type Fields = Option<Vec<(Value, Value)>>;

fn entry_of(entry: Value) -> Result<(EntryId, Fields), StreamError> {
    let Value::Array(parts) = entry else {
        return Err(StreamError::Reply("an entry is not an array"));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(text)
        .and_then(|t| EntryId::parse(&t))
        .ok_or(StreamError::Reply("an entry has no id"))?;
    let fields = match parts.next() {
        Some(Value::Map(pairs)) => Some(pairs),
        Some(Value::Array(flat)) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            // An odd one out pairs with nil, which is no `event`.
            while let Some(field) = flat.next() {
                pairs.push((field, flat.next().unwrap_or(Value::Nil)));
            }
            Some(pairs)
        }
        _ => None,
    };
    Ok((id, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn id(ms: u64, seq: u64) -> EntryId {
        EntryId { ms, seq }
    }

    #[test]
    fn entry_ids_read_write_and_order_as_redis_does() {
        assert_eq!(
            EntryId::parse(b"1795639877422-7"),
            Some(id(1_795_639_877_422, 7))
        );
        assert_eq!(id(5, 0).to_string(), "5-0");
        for bad in [&b"5"[..], b"-1", b"a-1", b"1-", b"1-2-3", b"\xff-1"] {
            assert_eq!(EntryId::parse(bad), None, "{bad:?}");
        }
        assert!(id(1, 9) < id(2, 0) && id(2, 0) < id(2, 1));
    }

    #[test]
    fn partitions_are_the_engines_shards() {
        let token: Token = "So11111111111111111111111111111111111111112"
            .parse()
            .unwrap();
        for p in [1, 2, 7, 64] {
            assert_eq!(
                partition_of(&token, p) as usize,
                engine::router::shard_of(&token, p as usize)
            );
        }
        assert_eq!(stream_key("t:", Route::Partition(3)), "t:events:3");
        assert_eq!(stream_key("t:", Route::Chats), "t:events:chats");
    }

    #[test]
    fn an_entry_must_hold_one_event_field() {
        let pairs =
            |p: &[(&[u8], &[u8])]| Some(p.iter().map(|(f, v)| (bulk(f), bulk(v))).collect());
        assert_eq!(
            Body::of(pairs(&[(b"event", b"{}")])),
            Body::Event(b"{}".to_vec())
        );
        let reason = |b: Body| match b {
            Body::Bad { reason, .. } => reason,
            Body::Event(_) => panic!("taken as an event"),
        };
        assert_eq!(
            reason(Body::of(pairs(&[(b"evnt", b"{}")]))),
            "no `event` field (it has `evnt`)"
        );
        assert!(
            reason(Body::of(pairs(&[(b"event", b"{}"), (b"event", b"{}")]))).contains("`event`")
        );
        assert_eq!(reason(Body::of(Some(Vec::new()))), "no `event` field");
        assert!(reason(Body::of(None)).contains("deleted"));
        let Body::Bad { event, .. } = Body::of(pairs(&[(b"x", b"1"), (b"event", b"{}")])) else {
            panic!()
        };
        assert_eq!(
            event.as_deref(),
            Some(&b"{}"[..]),
            "the event is kept for the dead letter"
        );
    }

    #[test]
    fn replies_parse_in_both_protocols() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk(b"1-0"),
                Value::Array(vec![bulk(b"event"), bulk(b"{}")]),
            ]),
            Value::Array(vec![bulk(b"1-1"), Value::Nil]),
            Value::Array(vec![bulk(b"2-0"), Value::Array(vec![bulk(b"event")])]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(b"s"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk(b"s"), entries)]);
        for reply in [resp2, resp3] {
            let streams = streams_of(reply).unwrap();
            assert_eq!(streams.len(), 1);
            let (key, entries) = streams.into_iter().next().unwrap();
            assert_eq!(key, b"s");
            let bodies: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    let (id, fields) = entry_of(e).unwrap();
                    (id, Body::of(fields))
                })
                .collect();
            assert_eq!(bodies[0], (id(1, 0), Body::Event(b"{}".to_vec())));
            assert!(matches!(&bodies[1], (i, Body::Bad { event: None, .. }) if *i == id(1, 1)));
            assert!(matches!(&bodies[2], (_, Body::Event(e)) if e.is_empty()));
        }
        assert!(streams_of(Value::Nil).unwrap().is_empty());
        assert!(streams_of(Value::Int(3)).is_err());
    }

    #[test]
    fn entries_go_out_by_time_then_stream_and_wait_for_a_cut_stream() {
        let e = |stream, ms, seq| Entry {
            stream,
            id: id(ms, seq),
            body: Body::Event(Vec::new()),
        };
        let mut held = vec![
            e(2, 10, 0),
            e(0, 10, 1),
            e(1, 5, 0),
            e(2, 10, 1),
            e(1, 12, 0),
            e(0, 11, 0),
        ];
        // Stream 2 was cut at 10-1: its next entry may be 10-2, which goes
        // before anything of millisecond 11 or later.
        let fed = take_ordered(&mut held, Some((10, 2, 1)));
        let order: Vec<_> = fed.iter().map(|e| (e.stream, e.id.ms, e.id.seq)).collect();
        assert_eq!(order, [(1, 5, 0), (0, 10, 1), (2, 10, 0), (2, 10, 1)]);
        assert_eq!(held, [e(0, 11, 0), e(1, 12, 0)]);
        assert_eq!(take_ordered(&mut held, None).len(), 2);
    }

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
            [0]
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
                block: Duration::from_secs(10),
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

    #[test]
    fn redis_errors_sort_into_transient_and_lasting() {
        let server = |code: &str| redis::make_extension_error(code.to_owned(), None);
        assert!(transient(&server("NOGROUP")));
        assert!(!transient(&server("WRONGTYPE")));
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(transient(&io));
    }
}
