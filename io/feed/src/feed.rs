//! The sources at work: posts read from `posts:raw` become call events
//! with their value, tracked tokens are priced on the scheduler's plan, and
//! everything is published to the input streams the engine reads.
//!
//! One task does it all, a turn at a time: read posts, read the calls
//! kept, refresh what the engine says is near a crossing, then one request
//! to the price sources (calls waiting for a value first, then the
//! scheduler's due tokens). Nothing here waits on the engine or the
//! sender; a slow or dead price source only delays prices and calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use callwatch_common::keys::{
    CHANNEL_INFO_TTL_SECS, channel_info_key, dead_letter_key, post_seen_key, posts_key,
    source_calls_key, source_near_key,
};
use callwatch_ingest::stream::Publisher;
use callwatch_sources::extract::{Extractor, Found};
use callwatch_sources::network::Network;
use callwatch_sources::schedule::{Scheduler, Tracked};
use callwatch_streams::Conn;
use callwatch_streams::clock::ServerClock;
use callwatch_streams::log::{DeadLetter, DeadLetters};
use callwatch_streams::{Consumer, Entry, EntryId, ReadFrom};
use engine::event::Event;
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::{Chain, Token};
use tokio::sync::watch;

use crate::config::FeedConfig;
use crate::metrics::FeedCounters;
use crate::posts::{POST_FIELD, Post};
use crate::pricer::Pricer;

/// A call waiting for its value.
#[derive(Debug, Clone)]
struct PendingCall {
    found: Found,
    channel_id: i64,
    at: Nanos,
    entry: EntryId,
    post: Arc<Post>,
    since: Nanos,
    next_try: Nanos,
}

/// A raw-posts entry whose calls are not all settled yet.
#[derive(Debug)]
struct Outstanding {
    left: usize,
}

/// Why the feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("Redis: {0}")]
    Streams(#[from] callwatch_streams::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("publishing: {0}")]
    Publish(#[from] callwatch_ingest::stream::StreamError),
}

/// How often a call without a value is asked about again.
const CALL_RETRY: Duration = Duration::from_secs(15);
/// How often the engine's near-crossing tokens are read again.
const NEAR_EVERY: Duration = Duration::from_secs(30);
/// Entries read from a stream at a time.
const READ_COUNT: usize = 500;
/// Entries the calls stream keeps, about.
const CALLS_KEPT: u64 = 1_000_000;

/// The feed's parts and state.
pub struct Feed {
    config: FeedConfig,
    prefix: String,
    con: Conn,
    publisher: Publisher,
    extractor: Extractor,
    scheduler: Scheduler,
    pricer: Pricer,
    consumer: Consumer,
    dead: DeadLetters,
    /// How long tracking lives: a token whose last call is older is
    /// dropped.
    ttl_nanos: Nanos,
    pending: VecDeque<PendingCall>,
    outstanding: HashMap<EntryId, Outstanding>,
    /// The value last published for each token.
    published: HashMap<Token, f64>,
    /// Where the tail of `sources:calls` is.
    calls_cursor: EntryId,
    /// The pending entries of `posts:raw` not yet read again (at start).
    posts_from: ReadFrom,
    next_near: Nanos,
    /// Events are stamped by Redis's clock, the one that stamps entries.
    clock: ServerClock,
    /// The posts group is made and the clock read (at the first turn).
    prepared: bool,
    counters: Arc<FeedCounters>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("prefix", &self.prefix)
            .field("tracked", &self.scheduler.len())
            .field("pending_calls", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed publishing to `partitions` input streams under `prefix` on
    /// `con`; tracking lives `ttl_nanos` after a token's last call.
    pub fn new(
        config: FeedConfig,
        prefix: &str,
        partitions: u32,
        ttl_nanos: Nanos,
        con: Conn,
    ) -> anyhow::Result<Feed> {
        let problems = config.problems();
        anyhow::ensure!(problems.is_empty(), "sources: {}", problems.join("; "));
        let extractor = Extractor::new(&config.extract).map_err(anyhow::Error::msg)?;
        let pricer = Pricer::new(&config)?;
        let counters = Arc::new(FeedCounters::new(&pricer));
        Ok(Feed {
            publisher: Publisher::new(prefix, partitions)?,
            scheduler: Scheduler::new(config.schedule.clone()),
            consumer: Consumer::new(config.group.clone(), config.consumer.clone()),
            dead: DeadLetters {
                stream: dead_letter_key(prefix),
                max_len: 1_000_000,
            },
            prefix: prefix.to_owned(),
            config,
            con,
            extractor,
            pricer,
            ttl_nanos,
            pending: VecDeque::new(),
            outstanding: HashMap::new(),
            published: HashMap::new(),
            calls_cursor: EntryId::ZERO,
            posts_from: ReadFrom::Pending(EntryId::ZERO),
            next_near: Nanos::MIN,
            clock: ServerClock::default(),
            prepared: false,
            counters,
        })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<FeedCounters> {
        Arc::clone(&self.counters)
    }

    /// Runs until `stop`; Redis failures are retried (after a pause), and
    /// only lasting ones end it.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), FeedError> {
        let mut backoff = callwatch_common::backoff::Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        while !*stop.borrow() {
            match self.turn().await {
                Ok(()) => backoff.reset(),
                Err(e) if is_transient(&e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, ?wait, "sources: Redis failed; retrying");
                    self.posts_from = ReadFrom::Pending(EntryId::ZERO);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One turn; see the module's docs.
    async fn turn(&mut self) -> Result<(), FeedError> {
        if !self.prepared {
            if self.config.calls {
                let posts = posts_key(&self.prefix);
                self.consumer.create_group(&mut self.con, &posts).await?;
            }
            self.clock.sync(&mut self.con).await?;
            self.prepared = true;
        }
        let now = self.clock.now();
        // With calls waiting or tokens tracked, the turn does not wait for
        // posts: pricing has work.
        let busy = !self.pending.is_empty() || !self.scheduler.is_empty();
        if self.config.calls {
            self.read_posts(!busy).await?;
        }
        if self.config.prices {
            self.read_calls().await?;
            if now >= self.next_near {
                self.clock.sync(&mut self.con).await?;
                self.read_near(now).await?;
                self.next_near = now + nanos(NEAR_EVERY);
                let stats = self.scheduler.stats(now);
                let c = &self.counters;
                c.tracked
                    .store(stats.tokens, std::sync::atomic::Ordering::Relaxed);
                c.urgent
                    .store(stats.urgent, std::sync::atomic::Ordering::Relaxed);
                c.due.store(stats.due, std::sync::atomic::Ordering::Relaxed);
            }
            self.forget_old(now);
        }
        if self.pricer.ready() {
            if !self.price_calls(now).await? && self.config.prices {
                self.price_tokens(now).await?;
            }
        } else if !busy {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.give_up_waiting(now).await
    }
}

fn nanos(d: Duration) -> Nanos {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn is_transient(e: &FeedError) -> bool {
    match e {
        FeedError::Streams(e) => e.is_transient(),
        FeedError::Redis(e) => callwatch_streams::is_transient(e),
        FeedError::Publish(callwatch_ingest::stream::StreamError::Redis(e)) => {
            callwatch_streams::is_transient(e)
        }
        FeedError::Publish(_) => false,
    }
}

/// Posts in, calls out.
impl Feed {
    /// Reads a batch of posts (this consumer's pending ones first, after a
    /// start or a failure), waiting up to a second for new ones when idle.
    async fn read_posts(&mut self, wait: bool) -> Result<(), FeedError> {
        let posts = posts_key(&self.prefix);
        let block = (wait && self.posts_from == ReadFrom::New).then_some(Duration::from_secs(1));
        let read = self
            .consumer
            .read(
                &mut self.con,
                &[(&posts, self.posts_from)],
                READ_COUNT,
                block,
            )
            .await?;
        let entries: Vec<Entry> = read.into_iter().flat_map(|(_, e)| e).collect();
        if let ReadFrom::Pending(_) = self.posts_from {
            self.posts_from = match entries.last() {
                Some(last) => ReadFrom::Pending(last.id),
                None => ReadFrom::New,
            };
        }
        for entry in entries {
            if self.outstanding.contains_key(&entry.id) {
                continue;
            }
            self.take_post(&posts, entry).await?;
        }
        Ok(())
    }

    /// One raw-posts entry: set aside if bad, its channel's name kept, its
    /// new addresses queued for their value.
    async fn take_post(&mut self, posts: &str, entry: Entry) -> Result<(), FeedError> {
        self.counters.posts.inc();
        let arrived = i64::try_from(entry.id.ms).unwrap_or(i64::MAX) * 1_000_000;
        let skew =
            i64::try_from(self.config.max_future_skew_secs).unwrap_or(i64::MAX) * NANOS_PER_SEC;
        let post = entry
            .sole_field(POST_FIELD)
            .and_then(|v| Post::decode(&v))
            .and_then(|p| match p.from_the_future(arrived, skew) {
                Some(why) => Err(why),
                None => Ok(p),
            });
        let post = match post {
            Ok(p) => p,
            Err(reason) => {
                let value = entry.sole_field(POST_FIELD).ok();
                self.set_aside(posts, entry.id, value.as_deref(), &reason)
                    .await?;
                self.consumer
                    .ack_and_delete(&mut self.con, posts, &[entry.id])
                    .await?;
                self.counters.posts_dead.inc();
                return Ok(());
            }
        };
        if let Some(title) = post.chat_title.as_deref().filter(|t| !t.trim().is_empty()) {
            let info = serde_json::json!({"title": title, "username": post.chat_username});
            let () = redis::cmd("SET")
                .arg(self.prefix.clone() + &channel_info_key(post.chat_id))
                .arg(info.to_string())
                .arg("EX")
                .arg(CHANNEL_INFO_TTL_SECS)
                .query_async(&mut self.con)
                .await?;
        }
        let found = self.extractor.extract(&post.text, &post_links(&post));
        let seen: Vec<String> = redis::cmd("SMEMBERS")
            .arg(post_seen_key(&self.prefix, post.chat_id, post.message_id))
            .query_async(&mut self.con)
            .await?;
        // Neither called already nor waiting for a value from an earlier
        // entry of the same post (the post and its edit read together).
        let waiting = |f: &Found| {
            self.pending.iter().any(|p| {
                p.found.token == f.token
                    && p.post.chat_id == post.chat_id
                    && p.post.message_id == post.message_id
            })
        };
        let new: Vec<Found> = found
            .into_iter()
            .filter(|f| !seen.contains(&f.token.to_string()) && !waiting(f))
            .collect();
        if new.is_empty() {
            self.consumer
                .ack_and_delete(&mut self.con, posts, &[entry.id])
                .await?;
            return Ok(());
        }
        let now = self.clock.now();
        let post = Arc::new(post);
        self.outstanding
            .insert(entry.id, Outstanding { left: new.len() });
        for found in new {
            self.pending.push_back(PendingCall {
                found,
                channel_id: post.chat_id,
                at: post.date,
                entry: entry.id,
                post: Arc::clone(&post),
                since: now,
                next_try: now,
            });
        }
        Ok(())
    }

    /// Asks for the value of up to one request's worth of waiting calls
    /// (one network); publishes those valued. False if none was due.
    async fn price_calls(&mut self, now: Nanos) -> Result<bool, FeedError> {
        let Some(network) = self
            .pending
            .iter()
            .find(|p| p.next_try <= now)
            .map(|p| p.found.network)
        else {
            return Ok(false);
        };
        let batch: Vec<usize> = (0..self.pending.len())
            .filter(|&i| {
                self.pending[i].next_try <= now && self.pending[i].found.network == network
            })
            .take(self.config.schedule.batch)
            .collect();
        let tokens: Vec<Token> = batch.iter().map(|&i| self.pending[i].found.token).collect();
        let values = self.pricer.values(network, &tokens).await;
        let now = self.clock.now();
        let mut settled = Vec::new();
        for (&i, (_, value)) in batch.iter().zip(values) {
            match value {
                Ok(v) => settled.push((i, v)),
                Err(why) => {
                    tracing::debug!(token = %self.pending[i].found.token, %why, "call waits for its value");
                    self.pending[i].next_try = now + nanos(CALL_RETRY);
                }
            }
        }
        for (i, v) in settled.iter().rev() {
            let call = self.pending.remove(*i).expect("an index of the batch");
            self.publish_call(&call, *v, now).await?;
        }
        Ok(true)
    }

    /// Publishes a call event with its value, registers the token for
    /// prices, and settles the call.
    async fn publish_call(
        &mut self,
        call: &PendingCall,
        fdv_usd: f64,
        now: Nanos,
    ) -> Result<(), FeedError> {
        let event = Event::Call {
            token: call.found.token,
            channel_id: call.channel_id,
            fdv_usd,
            at: call.at,
        };
        let mut line = Vec::new();
        event.write_json(&mut line);
        self.publisher
            .publish(&mut self.con, &[line.trim_ascii_end()])
            .await?;
        self.counters.calls.inc();
        self.published.insert(call.found.token, fdv_usd);
        record_call(&mut self.con, &self.prefix, call.found, call.at).await?;
        self.scheduler.called(tracked(call.found), call.at, now);
        self.settle(call).await
    }

    /// Sets aside calls that waited their bound for a value.
    async fn give_up_waiting(&mut self, now: Nanos) -> Result<(), FeedError> {
        let wait = nanos(self.config.call_value_wait());
        while let Some(i) = self.pending.iter().position(|p| now - p.since >= wait) {
            let call = self.pending.remove(i).expect("found");
            let reason = format!(
                "no value for {} on {} within {} s of the call; the call is not published",
                call.found.token, call.found.network, self.config.call_value_wait_secs
            );
            let value = call.post.encode();
            self.set_aside(
                &posts_key(&self.prefix),
                call.entry,
                Some(value.as_bytes()),
                &reason,
            )
            .await?;
            tracing::warn!(%reason, "call set aside");
            self.counters.calls_dead.inc();
            self.settle(&call).await?;
        }
        Ok(())
    }

    /// The call is published or set aside: the post remembers its token,
    /// and its entry is acknowledged once all its calls are settled.
    async fn settle(&mut self, call: &PendingCall) -> Result<(), FeedError> {
        let seen = post_seen_key(&self.prefix, call.post.chat_id, call.post.message_id);
        let ttl = (self.ttl_nanos / NANOS_PER_SEC).max(1);
        let () = redis::pipe()
            .cmd("SADD")
            .arg(&seen)
            .arg(call.found.token.to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(&seen)
            .arg(ttl)
            .ignore()
            .query_async(&mut self.con)
            .await?;
        let done = match self.outstanding.get_mut(&call.entry) {
            Some(o) => {
                o.left -= 1;
                o.left == 0
            }
            None => false,
        };
        if done {
            self.outstanding.remove(&call.entry);
            let posts = posts_key(&self.prefix);
            self.consumer
                .ack_and_delete(&mut self.con, &posts, &[call.entry])
                .await?;
        }
        Ok(())
    }

    /// Adds an entry to the dead-letter stream with its reason.
    async fn set_aside(
        &mut self,
        stream: &str,
        id: EntryId,
        value: Option<&[u8]>,
        reason: &str,
    ) -> Result<(), FeedError> {
        let mut pipe = redis::pipe();
        self.dead.add_to(
            &mut pipe,
            &DeadLetter {
                stream,
                id,
                value: value.map(|v| (POST_FIELD, v)),
                reason,
            },
        );
        let () = pipe.query_async(&mut self.con).await?;
        Ok(())
    }
}

/// Tokens in, prices out.
impl Feed {
    /// Registers calls kept (by this process or any other) that came after
    /// the last read.
    async fn read_calls(&mut self) -> Result<(), FeedError> {
        let key = source_calls_key(&self.prefix);
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT * 10)
            .arg("STREAMS")
            .arg(&key)
            .arg(self.calls_cursor)
            .query_async(&mut self.con)
            .await?;
        let now = self.clock.now();
        for (_, entries) in callwatch_streams::entry::streams_of(reply)? {
            for entry in entries {
                self.calls_cursor = entry.id;
                if let Some((found, at)) =
                    entry.sole_field("call").ok().and_then(|v| parse_call(&v))
                    && now - at < self.ttl_nanos
                {
                    self.scheduler.called(tracked(found), at, now);
                }
            }
        }
        Ok(())
    }

    /// Reads the engine's tokens near their next crossing.
    async fn read_near(&mut self, now: Nanos) -> Result<(), FeedError> {
        let near: HashMap<String, f64> = redis::cmd("HGETALL")
            .arg(source_near_key(&self.prefix))
            .query_async(&mut self.con)
            .await?;
        for (token, next_change) in near {
            let Ok(token) = Token::parse(&token) else {
                continue;
            };
            for network in networks_of(&token) {
                self.scheduler
                    .next_change(Tracked { token, network }, next_change, now);
            }
        }
        Ok(())
    }

    /// Drops tokens whose last call is older than the TTL: the engine
    /// holds no live record of them.
    fn forget_old(&mut self, now: Nanos) {
        for t in self
            .scheduler
            .called_before(now.saturating_sub(self.ttl_nanos))
        {
            self.scheduler.forget(t);
            self.published.remove(&t.token);
        }
    }

    /// One request for the scheduler's due tokens; publishes the values
    /// that changed.
    async fn price_tokens(&mut self, now: Nanos) -> Result<(), FeedError> {
        let batch = self.scheduler.next_batch(now, false);
        let Some(network) = batch.first().map(|t| t.network) else {
            return Ok(());
        };
        let tokens: Vec<Token> = batch.iter().map(|t| t.token).collect();
        let values = self.pricer.values(network, &tokens).await;
        let now = self.clock.now();
        let mut lines = Vec::new();
        for (t, (_, value)) in batch.iter().zip(values) {
            if let Some(waited) = self.scheduler.polled(*t, value.as_ref().ok().copied(), now) {
                self.counters.record_wait(waited);
            }
            let Ok(v) = value else {
                continue;
            };
            if self.published.get(&t.token) == Some(&v) {
                self.counters.prices_unchanged.inc();
                continue;
            }
            self.published.insert(t.token, v);
            let mut line = Vec::new();
            Event::Price {
                token: t.token,
                fdv_usd: v,
                at: now,
            }
            .write_json(&mut line);
            lines.push(line.trim_ascii_end().to_vec());
        }
        if !lines.is_empty() {
            self.publisher.publish(&mut self.con, &lines).await?;
            self.counters.prices.add(lines.len() as u64);
        }
        Ok(())
    }
}

fn tracked(found: Found) -> Tracked {
    Tracked {
        token: found.token,
        network: found.network,
    }
}

/// The networks a token known only by its address may be on: Solana's
/// own, or any EVM network (the scheduler updates only the pairs it
/// tracks).
fn networks_of(token: &Token) -> Vec<Network> {
    match token.chain() {
        Chain::Solana => vec![Network::Solana],
        Chain::Evm => Network::ALL
            .iter()
            .copied()
            .filter(|n| n.is_evm())
            .collect(),
    }
}

/// The links of a post: those it carries apart from its text.
fn post_links(post: &Post) -> Vec<&str> {
    post.links.iter().map(String::as_str).collect()
}

/// Appends a kept call to `sources:calls`, for every process's scheduler.
pub async fn record_call(
    con: &mut Conn,
    prefix: &str,
    found: Found,
    at: Nanos,
) -> Result<(), redis::RedisError> {
    let value = serde_json::json!({
        "token": found.token.to_string(),
        "network": found.network,
        "at": at,
    });
    redis::cmd("XADD")
        .arg(source_calls_key(prefix))
        .arg("MAXLEN")
        .arg("~")
        .arg(CALLS_KEPT)
        .arg("*")
        .arg("call")
        .arg(value.to_string())
        .query_async::<String>(con)
        .await
        .map(|_| ())
}

/// A `sources:calls` entry's call.
fn parse_call(value: &[u8]) -> Option<(Found, Nanos)> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let token = Token::parse(v.get("token")?.as_str()?).ok()?;
    let network: Network = serde_json::from_value(v.get("network")?.clone()).ok()?;
    let at = v.get("at")?.as_i64()?;
    Some((Found { token, network }, at))
}
