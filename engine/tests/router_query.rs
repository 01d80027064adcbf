//! Asking the running sharded engine about one chat: every shard answers,
//! in order with the events submitted before the question.

use engine::EngineConfig;
use engine::ingest::{Ingest, Outcome};
use engine::router;
use engine::sim::{Market, MarketConfig};

#[test]
fn tracked_by_collects_every_shards_part_in_input_order() {
    let config = EngineConfig {
        shards: 3,
        pin_threads: false,
        ..EngineConfig::default()
    };
    let (mut engine, mut effects, workers) = router::start(&config).unwrap();
    let drain = std::thread::spawn(move || {
        let mut calls = std::collections::HashMap::<i64, usize>::new();
        while let Some(batch) = effects.next_batch().unwrap() {
            for e in batch {
                if let engine::effect::Effect::CallAlert(a) = e {
                    *calls.entry(a.chat_id).or_default() += 1;
                }
            }
        }
        calls
    });
    let mut ingest = Ingest::new();
    let market = Market::new(MarketConfig {
        tokens: 200,
        chats: 10,
        call_share: 0.2,
        ..MarketConfig::default()
    });
    for event in market.take(20_000) {
        if let Outcome::Event(env) = ingest.event(event) {
            engine.submit(env).unwrap();
        }
    }
    let answers = engine.tracked_by(1000).unwrap();
    engine.finish().unwrap();
    let parts: Vec<_> = answers.iter().collect();
    assert_eq!(parts.len(), 3, "one answer per shard");
    let held: Vec<_> = parts.into_iter().flatten().collect();
    let calls = drain.join().unwrap();
    let states = workers.join().unwrap();
    let mut expected: Vec<_> = states.iter().flat_map(|s| s.tracked_by(1000)).collect();
    let key = |h: &engine::shard::Holding| (h.tracked.token.to_string(), h.tracked.started);
    let mut held = held;
    held.sort_by_key(key);
    expected.sort_by_key(key);
    assert!(
        !held.is_empty() && held.len() <= calls[&1000],
        "{} held",
        held.len()
    );
    // Nothing came after the question, so the answer is the final state.
    assert_eq!(held, expected);
    assert!(
        held.iter()
            .all(|h| h.tracked.chat_id == 1000 && h.multiple() > 0.0)
    );
}

/// The price sources' question: the tokens valued close to their next
/// crossing, from every shard.
#[test]
fn near_names_the_tokens_close_to_their_next_crossing() {
    let config = EngineConfig {
        shards: 2,
        pin_threads: false,
        ..EngineConfig::default()
    };
    let (mut engine, mut effects, workers) = router::start(&config).unwrap();
    let drain = std::thread::spawn(move || while let Ok(Some(_)) = effects.next_batch() {});
    let mut ingest = Ingest::new();
    let lines = [
        r#"{"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":1,"expires_at":"2026-12-25T10:00:00Z"}"#,
        r#"{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":1,"min_callers":1}"#,
        // Called at 100: next crossing at 200 (2x).
        r#"{"type":"call","at":"2026-11-25T10:01:00Z","token":"JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN","channel_id":-1,"fdv_usd":100}"#,
        r#"{"type":"call","at":"2026-11-25T10:01:00Z","token":"DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263","channel_id":-1,"fdv_usd":100}"#,
        // One climbs to 190 (95 % of 200), the other stays.
        r#"{"type":"price","at":"2026-11-25T10:02:00Z","token":"JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN","fdv_usd":190}"#,
    ];
    for line in lines {
        if let Outcome::Event(env) = ingest.line(line.as_bytes()) {
            engine.submit(env).unwrap();
        }
    }
    let answers = engine.near(0.9).unwrap();
    engine.finish().unwrap();
    let near: Vec<_> = answers.iter().flatten().collect();
    drain.join().unwrap();
    workers.join().unwrap();
    assert_eq!(near.len(), 1, "{near:?}");
    assert_eq!(
        near[0].token.to_string(),
        "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"
    );
    assert_eq!(near[0].fdv_usd, 190.0);
    assert!((near[0].next_cross - 200.0).abs() < 1e-6, "{near:?}");
}
