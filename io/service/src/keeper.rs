//! The durability order: what the engine decided, made durable in the one
//! order that loses nothing on a crash, and only then acknowledged.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_streams::EntryId;
use callwatch_telegram::sender::Message;
use engine::effect::Effect;
use engine::router::Merged;
use engine::time::Nanos;
use engine::token::Token;
use tokio::sync::mpsc;

/// A call event, which is state (the calls table `min_callers` counts)
/// whether or not it alerted anyone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub seq: u64,
    pub token: Token,
    pub channel_id: i64,
    pub at: Nanos,
    pub fdv_usd: f64,
}

/// A price event, for the charts' histories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub token: Token,
    pub at: Nanos,
    pub fdv_usd: f64,
}

/// What the reader handed the engine for one batch of input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submitted {
    /// The `seq` of its last event; the previous batch's when it had none.
    pub last_event: u64,
    /// The last `seq` its entries took, bad ones included: acknowledging
    /// through it covers the batch.
    pub last_seq: u64,
    /// Its call events, in input order.
    pub calls: Vec<Call>,
    /// Each event's `seq` and its stream entry's time (Redis's clock, ms),
    /// for the alert latency.
    pub entered: Vec<(u64, u64)>,
    /// Its price events, when charts are on (empty otherwise).
    pub prices: Vec<Price>,
    /// Events applied again after a start from a snapshot: acknowledged
    /// in an earlier run, their effects kept then. Their effects are
    /// dropped here. The record must reach the keeper before the events
    /// reach the engine.
    pub replayed: bool,
}

/// The sender closed: no alert can be queued any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Telegram sender closed while alerts were flowing")]
pub struct SenderClosed;

/// Where a [`Keeper`] puts things: the service's outbox, audit queue,
/// write-behind and acknowledger, or a test's recorder.
pub trait Keep: Send + Sync {
    /// The alert messages of `effects`, rendered (none without Telegram).
    fn render(&self, effects: &[Effect]) -> impl Future<Output = Vec<Message>> + Send;
    /// Appends `messages` to the outbox, returning each one's entry; an
    /// error (Redis away) is retried by the keeper.
    fn outbox(
        &self,
        messages: &[Message],
    ) -> impl Future<Output = Result<Vec<EntryId>, String>> + Send;
    /// Queues outboxed messages for Telegram.
    fn send(
        &self,
        messages: Vec<(Message, EntryId)>,
    ) -> impl Future<Output = Result<(), SenderClosed>> + Send;
    /// Puts the audit rows of `effects` on the audit stream, retrying
    /// until they are there.
    fn audit(&self, effects: &[Effect]) -> impl Future<Output = ()> + Send;
    /// Hands the state changes of `effects` to the write-behind, waiting
    /// for room there rather than dropping any.
    fn state(&self, effects: &[Effect]) -> impl Future<Output = ()> + Send;
    /// Hands a call to the write-behind, waiting for room there.
    fn call(&self, call: &Call) -> impl Future<Output = ()> + Send;
    /// A batch's prices, for the charts' histories; taken when the batch
    /// is submitted, so before its alerts are rendered.
    fn prices(&self, _prices: &[Price]) {}
    /// Whether everything handed over so far is durable (every Redis
    /// change written, every audit row on its stream).
    fn settled(&self) -> bool;
    /// Lets the input entries through `seq` be acknowledged.
    fn ack_through(&self, seq: u64);
    /// Figures: every event through `seq` is applied and kept; `alert_ages_ms`
    /// are the ages of the batch's alerts, from their stream entries.
    fn kept(&self, _seq: u64, _effects: &[Effect], _alert_ages_ms: &[u64]) {}
}

/// How long the keeper waits, with nothing new, before it looks whether
/// the persistence has settled so that it can acknowledge.
const SETTLE_CHECK: Duration = Duration::from_millis(2);

/// Keeps the engine's output, batch by batch, and acknowledges its input.
///
/// # Invariant
///
/// For each merged batch of effects, in this order:
/// 1. its alert messages are in the outbox (retried with backoff while
///    Redis is away) and then queued for Telegram;
/// 2. its audit rows are on the audit stream;
/// 3. its state changes, and the calls of every event up to it, reach the
///    write-behind (waiting for room there: a change is never dropped, so
///    a full write-behind holds the keeper back, and the engine and the
///    reader behind it);
/// 4. the input through the last batch fully applied is acknowledged, and
///    only once the persistence has settled (everything handed over so far
///    is durable).
///
/// So state that says an alert was made is never durable before the alert
/// and its audit row: after a crash, the unacknowledged events are applied
/// again against the state that was kept, and remake whatever was lost.
/// The other way round, a kept record would stop the alert from ever being
/// made again. Calls join the stored state only with the effects of every
/// event up to them: a restart that rebuilt a later call would otherwise
/// count it as a caller when an earlier, unacknowledged call is applied
/// again.
#[derive(Debug)]
pub struct Keeper<K> {
    keep: K,
    /// Submitted batches not yet fully applied, in input order.
    submitted: VecDeque<Submitted>,
    /// Calls submitted and not yet kept, in input order.
    calls: VecDeque<Call>,
    /// (seq, entry time) of events submitted, for the latency.
    entered: VecDeque<(u64, u64)>,
    /// Every event through this `seq` is applied and its effects kept.
    applied: u64,
    /// The input through this `seq` may be acknowledged once settled.
    recorded: u64,
    acked: u64,
    /// Effects of events through this `seq` were kept in an earlier run
    /// ([`Submitted::replayed`]).
    replayed_through: u64,
}

impl<K: Keep> Keeper<K> {
    pub fn new(keep: K) -> Keeper<K> {
        Keeper {
            keep,
            submitted: VecDeque::new(),
            calls: VecDeque::new(),
            entered: VecDeque::new(),
            applied: 0,
            replayed_through: 0,
            recorded: 0,
            acked: 0,
        }
    }

    /// Runs until both inputs close: `merged` (the engine's output, ended
    /// when the engine finishes) and `submitted` (the reader's, ended when
    /// it stops). Returns the `seq` through which the input is recorded, for
    /// the final acknowledgement once the persistence has closed.
    pub async fn run(
        mut self,
        mut merged: mpsc::Receiver<Merged>,
        mut submitted: mpsc::Receiver<Submitted>,
    ) -> Result<u64, SenderClosed> {
        let (mut merged_open, mut submitted_open) = (true, true);
        while merged_open || submitted_open {
            tokio::select! {
                // Records first: a replayed batch's record must be taken
                // before its effects.
                biased;
                s = submitted.recv(), if submitted_open => match s {
                    Some(s) => self.submitted(s).await,
                    None => submitted_open = false,
                },
                m = merged.recv(), if merged_open => match m {
                    Some(m) => self.keep_batch(m).await?,
                    None => merged_open = false,
                },
                () = tokio::time::sleep(SETTLE_CHECK) => {}
            }
            self.advance();
            self.ack_when_settled();
        }
        Ok(self.recorded)
    }

    /// Takes a submitted batch's record. Its calls that are applied
    /// already (their batch was kept before the record came) are kept now.
    pub async fn submitted(&mut self, s: Submitted) {
        if s.replayed {
            self.replayed_through = self.replayed_through.max(s.last_seq);
        }
        for call in &s.calls {
            if call.seq <= self.applied {
                self.keep.call(call).await;
            } else {
                self.calls.push_back(*call);
            }
        }
        self.entered.extend(s.entered.iter().copied());
        self.keep.prices(&s.prices);
        self.submitted.push_back(Submitted {
            calls: Vec::new(),
            entered: Vec::new(),
            prices: Vec::new(),
            ..s
        });
    }

    /// Keeps one merged batch, in the order the type's docs state.
    pub async fn keep_batch(&mut self, mut merged: Merged) -> Result<(), SenderClosed> {
        let replayed = self.replayed_through;
        if replayed > 0 {
            merged.effects.retain(|e| e.order_key().0 > replayed);
        }
        let messages = self.keep.render(&merged.effects).await;
        if !messages.is_empty() {
            let ids = self.outbox(&messages).await;
            self.keep
                .send(messages.into_iter().zip(ids).collect())
                .await?;
        }
        self.keep.audit(&merged.effects).await;
        self.keep.state(&merged.effects).await;
        while let Some(call) = self.calls.front()
            && call.seq <= merged.upto_seq
        {
            self.keep.call(call).await;
            self.calls.pop_front();
        }
        let ages = self.alert_ages(&merged.effects, merged.upto_seq);
        self.applied = self.applied.max(merged.upto_seq);
        self.keep.kept(merged.upto_seq, &merged.effects, &ages);
        Ok(())
    }

    /// The outbox append, retried until it succeeds: an alert must not be
    /// lost, and nothing after it may be kept before it.
    async fn outbox(&self, messages: &[Message]) -> Vec<EntryId> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match self.keep.outbox(messages).await {
                Ok(ids) => return ids,
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, ?wait, "outbox write failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Moves `recorded` past every submitted batch whose last event is
    /// applied.
    fn advance(&mut self) {
        while let Some(s) = self.submitted.front()
            && s.last_event <= self.applied
        {
            self.recorded = self.recorded.max(s.last_seq);
            self.submitted.pop_front();
        }
    }

    /// Acknowledges through `recorded` if everything handed over is durable.
    fn ack_when_settled(&mut self) {
        if self.recorded > self.acked && self.keep.settled() {
            self.keep.ack_through(self.recorded);
            self.acked = self.recorded;
        }
    }

    /// The age of each alert of `effects` from its event's stream entry,
    /// forgetting the entry times of every event through `upto_seq`.
    fn alert_ages(&mut self, effects: &[Effect], upto_seq: u64) -> Vec<u64> {
        let now_ms = u64::try_from(callwatch_common::clock::now() / 1_000_000).unwrap_or(0);
        let mut ages = Vec::new();
        for e in effects.iter().filter(|e| e.is_alert()) {
            let seq = e.order_key().0;
            while self.entered.front().is_some_and(|&(s, _)| s < seq) {
                self.entered.pop_front();
            }
            if let Some(&(s, ms)) = self.entered.front()
                && s == seq
            {
                ages.push(now_ms.saturating_sub(ms).max(1));
            }
        }
        while self.entered.front().is_some_and(|&(s, _)| s <= upto_seq) {
            self.entered.pop_front();
        }
        ages
    }
}
