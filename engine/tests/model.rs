//! Model-based property test: random event sequences go through the real
//! sharded engine and through a deliberately naive model of CONTRACT.md
//! written here (plain maps, loops over everything), and both must emit the
//! same alerts in the same order.
//!
//! The model is written from the contract and the engine's documented reading
//! of expiry (judged against the stream clock, `Envelope::clock`), not from
//! the engine's shard code, so it is an independent check.
//!
//! On failure proptest prints the minimal case as the engine configuration
//! followed by the input as JSON Lines (`seq: line`), which `callwatch replay`
//! reads back, and the two outputs as JSON Lines.

use std::collections::BTreeMap;

use engine::effect::{CallAlert, MultiplierAlert};
use engine::event::{ChannelId, ChatId, SettingsPatch};
use engine::ingest::{Ingest, Outcome};
use engine::time::{NANOS_PER_SEC, Nanos, parse_rfc3339};
use engine::token::Token;
use engine::{Effect, EngineConfig, Envelope, Event, router};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

const MINUTE: Nanos = 60 * NANOS_PER_SEC;
const HOUR: Nanos = 60 * MINUTE;
const DAY: Nanos = 24 * HOUR;

const TOKENS: [&str; 3] = [
    "So11111111111111111111111111111111111111112",
    "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN",
    "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984",
];
/// Ascending, so a follow list built from it in order is sorted.
const CHANNELS: [ChannelId; 4] = [-1004, -1003, -1002, -1001];
const CHATS: [ChatId; 3] = [1, 2, 3];
const DEFAULT_THRESHOLDS: [f64; 6] = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
const PRICE_FACTORS: [f64; 7] = [0.3, 0.9, 1.1, 2.5, 6.0, 12.0, 120.0];
const CALL_NOISE: [f64; 3] = [1.0, 0.8, 1.25];
const START_FDV: f64 = 100_000.0;

fn token(i: usize) -> Token {
    Token::parse(TOKENS[i]).expect("test token parses")
}

fn base_time() -> Nanos {
    parse_rfc3339("2026-11-25T10:00:00Z").expect("base time parses")
}

// ---------------------------------------------------------------------------
// The naive model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ChatM {
    expires_at: Option<Nanos>,
    min_callers: u32,
    lookback_minutes: u32,
    min_fdv: f64,
    max_fdv: f64,
    /// Empty means every channel.
    follow: Vec<ChannelId>,
}

impl ChatM {
    fn new() -> Self {
        ChatM {
            expires_at: None,
            min_callers: 2,
            lookback_minutes: 60,
            min_fdv: 0.0,
            max_fdv: f64::INFINITY,
            follow: Vec::new(),
        }
    }

    fn active(&self, t: Nanos) -> bool {
        matches!(self.expires_at, Some(e) if e > t)
    }

    fn follows(&self, c: ChannelId) -> bool {
        self.follow.is_empty() || self.follow.contains(&c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    None,
    Rejected,
    Accepted,
}

#[derive(Debug, Clone)]
struct RecordM {
    status: Status,
    last_check: Nanos,
    /// channel → the `calls` time it had when last checked.
    checked: BTreeMap<ChannelId, Nanos>,
}

#[derive(Debug, Clone)]
struct TrackedM {
    fdv_at_call: f64,
    started: Nanos,
    last: Option<usize>,
}

/// Counts of interesting situations the model went through, to show that
/// the generator reaches them.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    call_alerts: usize,
    multiplier_alerts: usize,
    rejected_then_accepted: usize,
    accepted_again_after_expiry: usize,
    nothing_new: usize,
    silent_thresholds: usize,
    tracked_past_ttl: usize,
    fdv_out_of_range: usize,
}

/// Where an event stands in the input: its `seq` and the stream clock.
#[derive(Debug, Clone, Copy)]
struct Line {
    seq: u64,
    clock: Nanos,
}

#[derive(Debug)]
struct Model {
    thresholds: Vec<f64>,
    ttl: Nanos,
    chats: BTreeMap<ChatId, ChatM>,
    calls: BTreeMap<Token, BTreeMap<ChannelId, Nanos>>,
    records: BTreeMap<(Token, ChatId), RecordM>,
    tracked: BTreeMap<(Token, ChatId), TrackedM>,
    /// Every (token, chat) that was ever accepted.
    ever_accepted: Vec<(Token, ChatId)>,
    cov: Coverage,
}

impl Model {
    fn new(thresholds: &[f64], ttl: Nanos) -> Self {
        Model {
            thresholds: thresholds.to_vec(),
            ttl,
            chats: BTreeMap::new(),
            calls: BTreeMap::new(),
            records: BTreeMap::new(),
            tracked: BTreeMap::new(),
            ever_accepted: Vec::new(),
            cov: Coverage::default(),
        }
    }

    fn apply(&mut self, env: &Envelope, out: &mut Vec<Effect>) {
        let line = Line {
            seq: env.seq,
            clock: env.clock,
        };
        match &env.event {
            Event::Subscribe {
                chat_id,
                expires_at,
                ..
            } => {
                let chat = self.chats.entry(*chat_id).or_insert_with(ChatM::new);
                chat.expires_at = Some(*expires_at);
            }
            Event::Settings { chat_id, patch, .. } => {
                let chat = self.chats.entry(*chat_id).or_insert_with(ChatM::new);
                if let Some(v) = patch.min_callers {
                    chat.min_callers = v;
                }
                if let Some(v) = patch.lookback_minutes {
                    chat.lookback_minutes = v;
                }
                if let Some(v) = patch.min_fdv_usd {
                    chat.min_fdv = v;
                }
                if let Some(v) = patch.max_fdv_usd {
                    chat.max_fdv = v;
                }
                if let Some(list) = &patch.follow {
                    chat.follow = list.clone();
                }
            }
            Event::Call {
                token,
                channel_id,
                fdv_usd,
                at,
            } => self.call(line, *token, *channel_id, *fdv_usd, *at, out),
            Event::Price { token, fdv_usd, at } => {
                self.price(line, *token, *fdv_usd, *at, out);
            }
        }
    }

    fn call(
        &mut self,
        Line { seq, clock }: Line,
        token: Token,
        channel: ChannelId,
        f: f64,
        t: Nanos,
        out: &mut Vec<Effect>,
    ) {
        let table = self.calls.entry(token).or_default();
        let old = table.get(&channel).copied();
        table.insert(channel, old.map_or(t, |o| o.max(t)));
        let table = table.clone();

        for (&chat_id, chat) in &self.chats {
            if !chat.active(t) || !chat.follows(channel) {
                continue;
            }
            let lookback = i64::from(chat.lookback_minutes) * MINUTE;
            let mut callers = Vec::new();
            for (&c, &called_at) in &table {
                if chat.follows(c) && called_at >= t - lookback {
                    callers.push(c);
                }
            }
            callers.sort_unstable();

            let key = (token, chat_id);
            let stored = self.records.get(&key);
            let mut expired = false;
            let mut rec = match stored {
                Some(r) if clock < r.last_check + self.ttl => r.clone(),
                Some(_) => {
                    expired = true;
                    RecordM {
                        status: Status::None,
                        last_check: 0,
                        checked: BTreeMap::new(),
                    }
                }
                None => RecordM {
                    status: Status::None,
                    last_check: 0,
                    checked: BTreeMap::new(),
                },
            };

            let mut any_new = false;
            for c in &callers {
                match rec.checked.get(c) {
                    None => any_new = true,
                    Some(&seen) if table[c] > seen => any_new = true,
                    Some(_) => {}
                }
            }
            if !any_new {
                self.cov.nothing_new += 1;
                continue;
            }
            for c in &callers {
                rec.checked.insert(*c, table[c]);
            }
            rec.last_check = t;

            if rec.status == Status::Accepted {
                self.records.insert(key, rec);
                continue;
            }
            let enough = callers.len() >= chat.min_callers as usize;
            let in_range = chat.min_fdv <= f && f <= chat.max_fdv;
            if enough && in_range {
                if rec.status == Status::Rejected {
                    self.cov.rejected_then_accepted += 1;
                }
                if expired || self.ever_accepted.contains(&key) {
                    self.cov.accepted_again_after_expiry += 1;
                }
                self.ever_accepted.push(key);
                rec.status = Status::Accepted;
                self.cov.call_alerts += 1;
                out.push(Effect::CallAlert(CallAlert {
                    seq,
                    chat_id,
                    token,
                    at: t,
                    fdv_usd: f,
                    callers: callers.clone().into(),
                    channel_id: channel,
                }));
                self.tracked.insert(
                    key,
                    TrackedM {
                        fdv_at_call: f,
                        started: t,
                        last: None,
                    },
                );
            } else {
                if enough {
                    self.cov.fdv_out_of_range += 1;
                }
                rec.status = Status::Rejected;
            }
            self.records.insert(key, rec);
        }
    }

    fn price(
        &mut self,
        Line { seq, clock }: Line,
        token: Token,
        f: f64,
        t: Nanos,
        out: &mut Vec<Effect>,
    ) {
        for (&(tok, chat_id), tr) in self.tracked.iter_mut() {
            if tok != token {
                continue;
            }
            if clock >= tr.started + self.ttl {
                self.cov.tracked_past_ttl += 1;
                continue;
            }
            let m = f / tr.fdv_at_call;
            let mut h = None;
            for (i, &th) in self.thresholds.iter().enumerate() {
                if m >= th {
                    h = Some(i);
                }
            }
            let Some(h) = h else { continue };
            let higher = match tr.last {
                None => true,
                Some(last) => h > last,
            };
            if !higher {
                continue;
            }
            tr.last = Some(h);
            let active = self.chats.get(&chat_id).is_some_and(|c| c.active(t));
            if !active {
                self.cov.silent_thresholds += 1;
                continue;
            }
            self.cov.multiplier_alerts += 1;
            out.push(Effect::MultiplierAlert(MultiplierAlert {
                seq,
                chat_id,
                token,
                at: t,
                threshold: self.thresholds[h],
                multiplier: m,
                fdv_at_call: tr.fdv_at_call,
                fdv_usd: f,
                tracking_started: tr.started,
            }));
        }
    }
}

// ---------------------------------------------------------------------------
// Running both
// ---------------------------------------------------------------------------

/// One generated test case: an engine configuration and the input events.
#[derive(Clone)]
struct Case {
    config: EngineConfig,
    events: Vec<Event>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "shards={} batch_events={} inbox_batches={} fanout_slice={} ttl={}min thresholds={:?}",
            c.shards,
            c.batch_events,
            c.inbox_batches,
            c.fanout_slice,
            c.ttl_nanos / MINUTE,
            c.thresholds
        )?;
        for (i, e) in self.events.iter().enumerate() {
            let mut line = Vec::new();
            e.write_json(&mut line);
            write!(f, "{:>4}: {}", i + 1, String::from_utf8_lossy(&line))?;
        }
        Ok(())
    }
}

/// The envelopes Ingest accepts; rejected events are skipped by both sides.
fn ingest(events: &[Event]) -> Vec<Envelope> {
    let mut ing = Ingest::new();
    events
        .iter()
        .filter_map(|e| match ing.event(e.clone()) {
            Outcome::Event(env) => Some(env),
            Outcome::Blank | Outcome::Bad { .. } => None,
        })
        .collect()
}

fn run_engine(config: &EngineConfig, envs: &[Envelope]) -> Vec<Effect> {
    let (mut router, mut effects, workers) = router::start(config).expect("config is valid");
    let out = std::thread::scope(|s| {
        let collector = s.spawn(move || {
            let mut all = Vec::new();
            // Handing every batch back, as the replay writer does, runs
            // the comparison on recycled effect vectors.
            while let Some(mut batch) = effects.next_batch().expect("engine stopped early") {
                all.append(&mut batch);
                effects.recycle(batch);
            }
            all
        });
        for env in envs {
            router.submit(env.clone()).expect("submit");
        }
        router.finish().expect("finish");
        collector.join().expect("effects collector panicked")
    });
    workers.join().expect("a shard thread panicked");
    out
}

fn run_model(config: &EngineConfig, envs: &[Envelope]) -> (Vec<Effect>, Coverage) {
    let mut model = Model::new(&config.thresholds, config.ttl_nanos);
    let mut out = Vec::new();
    for env in envs {
        model.apply(env, &mut out);
    }
    (out, model.cov)
}

fn json(effects: &[Effect]) -> String {
    let mut buf = Vec::new();
    for e in effects {
        e.write_json(&mut buf);
    }
    String::from_utf8(buf).expect("JSON output is UTF-8")
}

/// A readable account of where two outputs part.
fn difference(engine: &[Effect], model: &[Effect]) -> String {
    let at = engine
        .iter()
        .zip(model)
        .position(|(a, b)| a != b)
        .unwrap_or(engine.len().min(model.len()));
    let show = |v: &[Effect]| {
        v.get(at).map_or_else(
            || "(nothing)\n".to_owned(),
            |e| json(std::slice::from_ref(e)),
        )
    };
    format!(
        "engine emitted {} alerts, model {}; first difference at alert #{at}\n\
         engine: {}model:  {}\n--- engine output ---\n{}--- model output ---\n{}",
        engine.len(),
        model.len(),
        show(engine),
        show(model),
        json(engine),
        json(model),
    )
}

/// Runs both sides; `Err` describes a disagreement.
fn check(case: &Case) -> Result<Coverage, String> {
    let envs = ingest(&case.events);
    let engine_out = run_engine(&case.config, &envs);
    let (model_out, cov) = run_model(&case.config, &envs);
    if engine_out == model_out {
        Ok(cov)
    } else {
        Err(difference(&engine_out, &model_out))
    }
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Kind {
    Subscribe {
        chat: usize,
        expires_in_minutes: i64,
        plan: bool,
    },
    Settings {
        chat: usize,
        min_callers: Option<u32>,
        lookback_minutes: Option<u32>,
        min_fdv: Option<f64>,
        max_fdv: Option<f64>,
        /// Bit i set: follows CHANNELS[i]; 0 is the empty list (all).
        follow: Option<u8>,
    },
    Call {
        token: usize,
        channel: usize,
        noise: usize,
    },
    Price {
        token: usize,
        factor: usize,
    },
}

/// One step: how far the generator's time moves forward, how far back
/// this event's `at` lies behind it (out-of-order arrival), and the event.
#[derive(Debug, Clone)]
struct Op {
    forward: Nanos,
    behind: Nanos,
    kind: Kind,
}

fn forward_strategy() -> impl Strategy<Value = Nanos> {
    prop_oneof![
        40 => Just(0),
        120 => (0i64..=4).prop_map(|k| k * 30 * NANOS_PER_SEC),
        100 => (0i64..=20).prop_map(|m| m * MINUTE),
        2 => Just(8 * DAY),
    ]
}

fn behind_strategy() -> impl Strategy<Value = Nanos> {
    prop_oneof![
        16 => Just(0),
        3 => (1i64..=30).prop_map(|m| m * MINUTE),
        1 => (1i64..=1800).prop_map(|s| s * NANOS_PER_SEC),
    ]
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    let subscribe = (0..CHATS.len(), -60i64..=180, proptest::bool::weighted(0.2)).prop_map(
        |(chat, expires_in_minutes, plan)| Kind::Subscribe {
            chat,
            expires_in_minutes,
            plan,
        },
    );
    let settings = (
        0..CHATS.len(),
        proptest::option::weighted(0.4, 1u32..=3),
        proptest::option::weighted(0.4, 5u32..=120),
        proptest::option::weighted(
            0.25,
            prop_oneof![Just(0.0), Just(50_000.0), Just(500_000.0), Just(5e6)],
        ),
        proptest::option::weighted(0.25, prop_oneof![Just(80_000.0), Just(1e6), Just(1e9)]),
        proptest::option::weighted(0.4, 0u8..16),
    )
        .prop_map(
            |(chat, min_callers, lookback_minutes, min_fdv, max_fdv, follow)| Kind::Settings {
                chat,
                min_callers,
                lookback_minutes,
                min_fdv,
                max_fdv,
                follow,
            },
        );
    let call = (0..TOKENS.len(), 0..CHANNELS.len(), 0..CALL_NOISE.len()).prop_map(
        |(token, channel, noise)| Kind::Call {
            token,
            channel,
            noise,
        },
    );
    let price = (
        0..TOKENS.len(),
        prop_oneof![
            3 => Just(0usize),
            4 => Just(1usize),
            4 => Just(2usize),
            3 => Just(3usize),
            2 => Just(4usize),
            1 => Just(5usize),
            1 => Just(6usize),
        ],
    )
        .prop_map(|(token, factor)| Kind::Price { token, factor });
    prop_oneof![
        8 => call,
        5 => price,
        2 => subscribe,
        1 => settings,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    (forward_strategy(), behind_strategy(), kind_strategy()).prop_map(|(forward, behind, kind)| {
        Op {
            forward,
            behind,
            kind,
        }
    })
}

fn config_strategy() -> impl Strategy<Value = EngineConfig> {
    (
        1usize..=8,
        1usize..=16,
        1usize..=2,
        (2i64..=6).prop_map(|k| k * 30),
        prop_oneof![
            3 => Just(DEFAULT_THRESHOLDS.to_vec()),
            1 => Just(vec![1.5, 3.0]),
        ],
        // Calls decided a follower at a time, a few at a time, or whole.
        prop_oneof![1usize..=4, Just(4096)],
    )
        .prop_map(
            |(shards, batch_events, inbox_batches, ttl_minutes, thresholds, fanout_slice)| {
                EngineConfig {
                    shards,
                    thresholds,
                    ttl_nanos: ttl_minutes * MINUTE,
                    batch_events,
                    inbox_batches,
                    pin_threads: false,
                    fanout_slice,
                    ..EngineConfig::default()
                }
            },
        )
}

/// Turns abstract steps into events. With `preamble`, every chat starts
/// subscribed for three hours, so that short sequences can alert too.
fn build(config: EngineConfig, preamble: bool, ops: &[Op]) -> Case {
    let base = base_time();
    let mut now = base;
    let mut value = [START_FDV; TOKENS.len()];
    let mut events = Vec::new();
    if preamble {
        for chat_id in CHATS {
            events.push(Event::Subscribe {
                chat_id,
                at: base,
                expires_at: base + 3 * HOUR,
                plan: None,
            });
        }
    }
    for op in ops {
        now += op.forward;
        let at = now - op.behind;
        let event = match op.kind {
            Kind::Subscribe {
                chat,
                expires_in_minutes,
                plan,
            } => Event::Subscribe {
                chat_id: CHATS[chat],
                at,
                expires_at: at + expires_in_minutes * MINUTE,
                plan: plan.then(|| "pro".into()),
            },
            Kind::Settings {
                chat,
                min_callers,
                lookback_minutes,
                min_fdv,
                max_fdv,
                follow,
            } => Event::Settings {
                chat_id: CHATS[chat],
                at,
                patch: Box::new(SettingsPatch {
                    min_callers,
                    lookback_minutes,
                    min_fdv_usd: min_fdv,
                    max_fdv_usd: max_fdv,
                    follow: follow.map(|mask| {
                        (0..CHANNELS.len())
                            .filter(|i| mask & (1 << i) != 0)
                            .map(|i| CHANNELS[i])
                            .collect()
                    }),
                }),
            },
            Kind::Call {
                token: i,
                channel,
                noise,
            } => {
                value[i] = keep_in_range(value[i] * CALL_NOISE[noise]);
                Event::Call {
                    token: token(i),
                    channel_id: CHANNELS[channel],
                    fdv_usd: value[i],
                    at,
                }
            }
            Kind::Price { token: i, factor } => {
                value[i] = keep_in_range(value[i] * PRICE_FACTORS[factor]);
                Event::Price {
                    token: token(i),
                    fdv_usd: value[i],
                    at,
                }
            }
        };
        events.push(event);
    }
    Case { config, events }
}

/// Keeps a token's value finite and in a plausible band.
fn keep_in_range(v: f64) -> f64 {
    if (1e3..=1e12).contains(&v) {
        v
    } else {
        START_FDV
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        config_strategy(),
        proptest::bool::weighted(0.8),
        proptest::collection::vec(op_strategy(), 1..200),
    )
        .prop_map(|(config, preamble, ops)| build(config, preamble, &ops))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `cases` runs; the minimal failing case is printed in full and no
/// regression file is written.
fn runs(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(runs(256))]

    #[test]
    fn engine_matches_naive_model(case in case_strategy()) {
        if let Err(diff) = check(&case) {
            prop_assert!(false, "{}", diff);
        }
    }
}

proptest! {
    #![proptest_config(runs(64))]

    #[test]
    fn json_output_is_the_same_for_one_and_four_shards(case in case_strategy()) {
        let envs = ingest(&case.events);
        let one = EngineConfig { shards: 1, ..case.config.clone() };
        let four = EngineConfig { shards: 4, ..case.config.clone() };
        let a = json(&run_engine(&one, &envs));
        let b = json(&run_engine(&four, &envs));
        prop_assert!(a == b, "1 shard:\n{}4 shards:\n{}", a, b);
    }
}

/// The generator reaches every rule of interest, so the property above
/// compares something: a fixed-seed batch of cases must produce alerts of
/// both kinds and the corner cases the model counts.
#[test]
fn generated_cases_cover_the_rules() {
    let mut runner = TestRunner::deterministic();
    let strategy = case_strategy();
    let cases = 128;
    let mut total = Coverage::default();
    let mut with_call_alert = 0;
    let mut with_multiplier_alert = 0;
    for _ in 0..cases {
        let case = strategy
            .new_tree(&mut runner)
            .expect("strategy generates")
            .current();
        let cov = match check(&case) {
            Ok(cov) => cov,
            Err(diff) => panic!("engine and model disagree on\n{case:?}\n{diff}"),
        };
        with_call_alert += usize::from(cov.call_alerts > 0);
        with_multiplier_alert += usize::from(cov.multiplier_alerts > 0);
        total.call_alerts += cov.call_alerts;
        total.multiplier_alerts += cov.multiplier_alerts;
        total.rejected_then_accepted += cov.rejected_then_accepted;
        total.accepted_again_after_expiry += cov.accepted_again_after_expiry;
        total.nothing_new += cov.nothing_new;
        total.silent_thresholds += cov.silent_thresholds;
        total.tracked_past_ttl += cov.tracked_past_ttl;
        total.fdv_out_of_range += cov.fdv_out_of_range;
    }
    println!(
        "{cases} cases: {with_call_alert} with a call_alert, \
         {with_multiplier_alert} with a multiplier_alert; {total:?}"
    );
    assert!(with_call_alert >= cases / 3, "{with_call_alert} of {cases}");
    assert!(
        with_multiplier_alert >= cases / 4,
        "{with_multiplier_alert} of {cases}"
    );
    assert!(total.rejected_then_accepted > 0, "{total:?}");
    assert!(total.accepted_again_after_expiry > 0, "{total:?}");
    assert!(total.nothing_new > 0, "{total:?}");
    assert!(total.silent_thresholds > 0, "{total:?}");
    assert!(total.tracked_past_ttl > 0, "{total:?}");
    assert!(total.fdv_out_of_range > 0, "{total:?}");
}

/// A hand-written sequence with the alerts worked out by hand from
/// CONTRACT.md, checked against both the model and the engine.
#[test]
fn hand_written_sequence_gives_the_expected_alerts() {
    let t0 = base_time();
    let m = |minutes: i64| t0 + minutes * MINUTE;
    let sol = token(0);
    let jup = token(1);
    let subscribe = |chat_id, at, expires_at| Event::Subscribe {
        chat_id,
        at,
        expires_at,
        plan: None,
    };
    let call = |token, channel_id, at, fdv_usd| Event::Call {
        token,
        channel_id,
        fdv_usd,
        at,
    };
    let price = |token, at, fdv_usd| Event::Price { token, fdv_usd, at };
    let settings = |chat_id, patch| Event::Settings {
        chat_id,
        at: m(0),
        patch: Box::new(patch),
    };
    let events = vec![
        /* 1 */ subscribe(1, m(0), m(600)),
        /* 2 */ subscribe(2, m(0), m(600)),
        /* 3 */
        settings(
            2,
            SettingsPatch {
                min_callers: Some(3),
                ..SettingsPatch::default()
            },
        ),
        /* 4: one caller, both chats reject */ call(sol, -1001, m(1), 100_000.0),
        /* 5: chat 1 has two callers */ call(sol, -1002, m(2), 120_000.0),
        /* 6: 2.5x */ price(sol, m(3), 300_000.0),
        /* 7: 12.5x skips 5, alerts 10 */ price(sol, m(4), 1_500_000.0),
        /* 8: 10.8x, 10 already used */ price(sol, m(5), 1_300_000.0),
        /* 9: chat 2 has three callers */ call(sol, -1003, m(6), 1_300_000.0),
        /* 10: chat 1 21.7x, chat 2 2x */ price(sol, m(7), 2_600_000.0),
        /* 11: min > max, rejected */
        settings(
            3,
            SettingsPatch {
                min_fdv_usd: Some(10.0),
                max_fdv_usd: Some(5.0),
                ..SettingsPatch::default()
            },
        ),
        /* 12 */ subscribe(3, m(8), m(9)),
        /* 13: chat 3 lapsed; one caller elsewhere */ call(jup, -1001, m(10), 50_000.0),
        /* 14: chat 1 tracking ended at m(122); chat 2 76.9x */
        price(sol, m(122), 100_000_000.0),
        /* 15: records expired; one caller in the hour */ call(sol, -1004, m(126), 5e7),
        /* 16: chat 1 accepts again */ call(sol, -1001, m(127), 6e7),
        /* 17: chat 1 2x; chat 2 tracking ended at m(126) */ price(sol, m(128), 1.2e8),
    ];
    let config = EngineConfig {
        shards: 3,
        thresholds: DEFAULT_THRESHOLDS.to_vec(),
        ttl_nanos: 2 * HOUR,
        batch_events: 4,
        inbox_batches: 1,
        pin_threads: false,
        ..EngineConfig::default()
    };
    let ca = |seq, chat_id, at, fdv_usd, callers: &[ChannelId], channel_id| {
        Effect::CallAlert(CallAlert {
            seq,
            chat_id,
            token: sol,
            at,
            fdv_usd,
            callers: callers.into(),
            channel_id,
        })
    };
    let ma = |seq, chat_id, at, threshold, fdv_at_call: f64, fdv_usd: f64, started| {
        Effect::MultiplierAlert(MultiplierAlert {
            seq,
            chat_id,
            token: sol,
            at,
            threshold,
            multiplier: fdv_usd / fdv_at_call,
            fdv_at_call,
            fdv_usd,
            tracking_started: started,
        })
    };
    let expected = vec![
        ca(5, 1, m(2), 120_000.0, &[-1002, -1001], -1002),
        ma(6, 1, m(3), 2.0, 120_000.0, 300_000.0, m(2)),
        ma(7, 1, m(4), 10.0, 120_000.0, 1_500_000.0, m(2)),
        ca(9, 2, m(6), 1_300_000.0, &[-1003, -1002, -1001], -1003),
        ma(10, 1, m(7), 20.0, 120_000.0, 2_600_000.0, m(2)),
        ma(10, 2, m(7), 2.0, 1_300_000.0, 2_600_000.0, m(6)),
        ma(14, 2, m(122), 50.0, 1_300_000.0, 1e8, m(6)),
        ca(16, 1, m(127), 6e7, &[-1004, -1001], -1001),
        ma(17, 1, m(128), 2.0, 6e7, 1.2e8, m(127)),
    ];

    let envs = ingest(&events);
    assert_eq!(envs.len(), events.len() - 1, "only line 11 is rejected");
    let (model_out, cov) = run_model(&config, &envs);
    assert!(
        model_out == expected,
        "model disagrees with the hand-worked alerts\n{}",
        difference(&model_out, &expected)
    );
    assert_eq!(cov.tracked_past_ttl, 2, "{cov:?}");
    for shards in [1, 3, 8] {
        let config = EngineConfig {
            shards,
            ..config.clone()
        };
        let engine_out = run_engine(&config, &envs);
        assert!(
            engine_out == expected,
            "engine ({shards} shards) disagrees with the hand-worked alerts\n{}",
            difference(&engine_out, &expected)
        );
    }
    assert_eq!(
        json(&expected[2..3]),
        "{\"type\":\"multiplier_alert\",\"seq\":7,\"chat_id\":1,\
         \"token\":\"So11111111111111111111111111111111111111112\",\
         \"at\":\"2026-11-25T10:04:00Z\",\"threshold\":10,\"multiplier\":12.5,\
         \"fdv_at_call\":120000.0,\"fdv_usd\":1500000.0}\n"
    );
}
