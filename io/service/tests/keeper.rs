//! The durability order, in process: a recording `Keep` stands in for the
//! outbox, the audit stream, the write-behind and the acknowledger, and
//! can fail or hold back, on tokio's paused clock. The process-level kill
//! tests (`bot/tests/serve.rs`) prove the same order end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use callwatch_service::keeper::{Call, Keep, Keeper, SenderClosed, Submitted};
use callwatch_streams::EntryId;
use callwatch_telegram::sender::Message;
use engine::effect::{CallAlert, Effect, MultiplierAlert};
use engine::router::Merged;
use engine::token::Token;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// What the keeper did, in order.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Outbox(usize),
    Send(usize),
    Audit(Vec<u64>),
    State(Vec<u64>),
    Call(u64),
    Ack(u64),
}

#[derive(Default)]
struct Recorder {
    ops: Mutex<Vec<Op>>,
    /// The outbox fails this many more times.
    outbox_failures: AtomicU32,
    settled: AtomicBool,
    /// Render nothing, as without a bot.
    no_telegram: bool,
}

impl Recorder {
    fn ops(&self) -> Vec<Op> {
        self.ops.lock().clone()
    }

    fn push(&self, op: Op) {
        self.ops.lock().push(op);
    }
}

fn seqs(effects: &[Effect]) -> Vec<u64> {
    effects.iter().map(|e| e.order_key().0).collect()
}

/// The keeper's handle on a recorder the test keeps too.
struct Handle(Arc<Recorder>);

impl std::ops::Deref for Handle {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.0
    }
}

impl Keep for Handle {
    async fn render(&self, effects: &[Effect]) -> Vec<Message> {
        if self.no_telegram {
            return Vec::new();
        }
        effects
            .iter()
            .filter(|e| e.is_alert())
            .map(|e| Message::reply(e.chat_id(), e.order_key().0, "alert".to_owned()))
            .collect()
    }

    async fn outbox(&self, messages: &[Message]) -> Result<Vec<EntryId>, String> {
        if self
            .outbox_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("Redis is away".to_owned());
        }
        self.push(Op::Outbox(messages.len()));
        Ok((0..messages.len() as u64)
            .map(|seq| EntryId { ms: 1, seq })
            .collect())
    }

    async fn send(&self, messages: Vec<(Message, EntryId)>) -> Result<(), SenderClosed> {
        self.push(Op::Send(messages.len()));
        Ok(())
    }

    async fn audit(&self, effects: &[Effect]) {
        self.push(Op::Audit(seqs(effects)));
    }

    async fn state(&self, effects: &[Effect]) {
        self.push(Op::State(seqs(effects)));
    }

    async fn call(&self, call: &Call) {
        self.push(Op::Call(call.seq));
    }

    fn settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }

    fn ack_through(&self, seq: u64) {
        self.push(Op::Ack(seq));
    }
}

fn token() -> Token {
    Token::parse("So11111111111111111111111111111111111111112").unwrap()
}

fn call_alert(seq: u64, chat_id: i64) -> Effect {
    Effect::CallAlert(CallAlert {
        seq,
        chat_id,
        token: token(),
        at: 1_000,
        fdv_usd: 100.0,
        callers: vec![-2, -1].into(),
        channel_id: -1,
    })
}

fn multiplier_alert(seq: u64, chat_id: i64) -> Effect {
    Effect::MultiplierAlert(MultiplierAlert {
        seq,
        chat_id,
        token: token(),
        at: 2_000,
        threshold: 2.0,
        multiplier: 2.5,
        fdv_at_call: 100.0,
        fdv_usd: 250.0,
        tracking_started: 1_000,
    })
}

fn call(seq: u64) -> Call {
    Call {
        seq,
        token: token(),
        channel_id: -1,
        at: 1_000,
        fdv_usd: 100.0,
    }
}

fn submitted(last_event: u64, last_seq: u64, calls: &[u64]) -> Submitted {
    Submitted {
        last_event,
        last_seq,
        calls: calls.iter().map(|&s| call(s)).collect(),
        entered: Vec::new(),
        prices: Vec::new(),
        replayed: false,
    }
}

fn merged(upto_seq: u64, effects: Vec<Effect>) -> Merged {
    Merged { effects, upto_seq }
}

/// A keeper running on `recorder`, with its two inputs.
struct Running {
    merged: mpsc::Sender<Merged>,
    submitted: mpsc::Sender<Submitted>,
    task: tokio::task::JoinHandle<Result<u64, SenderClosed>>,
}

fn start(recorder: &Arc<Recorder>) -> Running {
    let (merged, merged_rx) = mpsc::channel(4);
    let (submitted, submitted_rx) = mpsc::channel(16);
    let task = tokio::spawn(Keeper::new(Handle(Arc::clone(recorder))).run(merged_rx, submitted_rx));
    Running {
        merged,
        submitted,
        task,
    }
}

/// Lets the keeper run until it waits again (time is paused: sleeps end
/// at once when nothing else can run).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_goes_outbox_then_sender_then_audit_then_state_then_calls_then_ack() {
    let recorder = Arc::new(Recorder::default());
    recorder.settled.store(true, Ordering::SeqCst);
    let k = start(&recorder);
    k.submitted.send(submitted(3, 4, &[2])).await.unwrap();
    k.merged
        .send(merged(3, vec![call_alert(2, 42), multiplier_alert(3, 7)]))
        .await
        .unwrap();
    drop((k.merged, k.submitted));
    assert_eq!(
        k.task.await.unwrap(),
        Ok(4),
        "recorded through the batch's last seq"
    );
    assert_eq!(
        recorder.ops(),
        [
            Op::Outbox(2),
            Op::Send(2),
            Op::Audit(vec![2, 3]),
            Op::State(vec![2, 3]),
            Op::Call(2),
            Op::Ack(4),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_acknowledged_before_the_persistence_has_settled() {
    let recorder = Arc::new(Recorder::default());
    let k = start(&recorder);
    k.submitted.send(submitted(1, 1, &[])).await.unwrap();
    k.merged
        .send(merged(1, vec![call_alert(1, 42)]))
        .await
        .unwrap();
    settle().await;
    assert!(
        !recorder.ops().iter().any(|op| matches!(op, Op::Ack(_))),
        "{:?}",
        recorder.ops()
    );
    recorder.settled.store(true, Ordering::SeqCst);
    settle().await;
    assert_eq!(recorder.ops().last(), Some(&Op::Ack(1)));
    drop((k.merged, k.submitted));
    k.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_outbox_outage_holds_back_the_audit_the_state_and_the_ack_until_it_ends() {
    let recorder = Arc::new(Recorder::default());
    recorder.settled.store(true, Ordering::SeqCst);
    recorder.outbox_failures.store(5, Ordering::SeqCst);
    let k = start(&recorder);
    k.submitted.send(submitted(1, 1, &[1])).await.unwrap();
    k.merged
        .send(merged(1, vec![call_alert(1, 42)]))
        .await
        .unwrap();
    let began = tokio::time::Instant::now();
    // While the outbox fails, nothing after it happens.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(recorder.ops(), [], "nothing kept while the outbox is away");
    drop((k.merged, k.submitted));
    assert_eq!(k.task.await.unwrap(), Ok(1));
    assert!(
        began.elapsed() >= Duration::from_millis(5 * 25),
        "five retries, each at least half a growing step: {:?}",
        began.elapsed()
    );
    assert_eq!(
        recorder.ops(),
        [
            Op::Outbox(1),
            Op::Send(1),
            Op::Audit(vec![1]),
            Op::State(vec![1]),
            Op::Call(1),
            Op::Ack(1),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_joins_the_state_only_with_the_effects_of_every_event_before_it() {
    let recorder = Arc::new(Recorder::default());
    recorder.settled.store(true, Ordering::SeqCst);
    let k = start(&recorder);
    k.submitted.send(submitted(9, 9, &[4, 9])).await.unwrap();
    // The engine has applied through 5: the call at 4 may be kept, the
    // one at 9 not yet, and the batch (through 9) not acknowledged.
    k.merged.send(merged(5, vec![])).await.unwrap();
    settle().await;
    assert_eq!(
        recorder.ops(),
        [Op::Audit(vec![]), Op::State(vec![]), Op::Call(4)]
    );
    k.merged.send(merged(9, vec![])).await.unwrap();
    settle().await;
    assert_eq!(
        &recorder.ops()[3..],
        [
            Op::Audit(vec![]),
            Op::State(vec![]),
            Op::Call(9),
            Op::Ack(9)
        ]
    );
    drop((k.merged, k.submitted));
    k.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_record_that_comes_after_its_batch_was_kept_is_kept_at_once() {
    let recorder = Arc::new(Recorder::default());
    recorder.settled.store(true, Ordering::SeqCst);
    let k = start(&recorder);
    k.merged.send(merged(3, vec![])).await.unwrap();
    settle().await;
    k.submitted.send(submitted(3, 5, &[2])).await.unwrap();
    drop((k.merged, k.submitted));
    assert_eq!(k.task.await.unwrap(), Ok(5));
    assert_eq!(
        recorder.ops(),
        [
            Op::Audit(vec![]),
            Op::State(vec![]),
            Op::Call(2),
            Op::Ack(5)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn only_batches_whose_last_event_is_applied_are_acknowledged() {
    let recorder = Arc::new(Recorder::default());
    recorder.settled.store(true, Ordering::SeqCst);
    let k = start(&recorder);
    k.submitted.send(submitted(10, 12, &[])).await.unwrap();
    k.submitted.send(submitted(20, 25, &[])).await.unwrap();
    k.merged.send(merged(15, vec![])).await.unwrap();
    settle().await;
    assert_eq!(recorder.ops().last(), Some(&Op::Ack(12)));
    k.merged.send(merged(20, vec![])).await.unwrap();
    settle().await;
    assert_eq!(recorder.ops().last(), Some(&Op::Ack(25)));
    drop((k.merged, k.submitted));
    assert_eq!(k.task.await.unwrap(), Ok(25));
}

#[tokio::test(start_paused = true)]
async fn without_a_bot_alerts_are_audited_and_kept_and_no_outbox_is_written() {
    let recorder = Arc::new(Recorder {
        no_telegram: true,
        ..Recorder::default()
    });
    recorder.settled.store(true, Ordering::SeqCst);
    let k = start(&recorder);
    k.submitted.send(submitted(1, 1, &[])).await.unwrap();
    k.merged
        .send(merged(1, vec![call_alert(1, 42)]))
        .await
        .unwrap();
    drop((k.merged, k.submitted));
    k.task.await.unwrap().unwrap();
    assert_eq!(
        recorder.ops(),
        [Op::Audit(vec![1]), Op::State(vec![1]), Op::Ack(1)]
    );
}
