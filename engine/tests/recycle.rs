//! Effect vectors handed back to the engine come round again: steady
//! output allocates nothing per batch.

use engine::EngineConfig;
use engine::ingest::{Ingest, Outcome};
use engine::router::{self, Router};

const SOL: &str = "So11111111111111111111111111111111111111112";
const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";

fn submit(router: &mut Router, ingest: &mut Ingest, line: &str) {
    match ingest.line(line.as_bytes()) {
        Outcome::Event(env) => router.submit(env).unwrap(),
        other => panic!("{line}: {other:?}"),
    }
}

fn call(token: &str) -> String {
    format!(
        r#"{{"type":"call","at":"2026-11-25T10:00:00Z","token":"{token}","channel_id":-1,"fdv_usd":1000.0}}"#
    )
}

#[test]
fn a_recycled_effect_vector_carries_the_next_batch() {
    let config = EngineConfig {
        shards: 1,
        pin_threads: false,
        ..EngineConfig::default()
    };
    let (mut router, mut effects, workers) = router::start(&config).unwrap();
    let mut ingest = Ingest::new();
    for line in [
        r#"{"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":1,"expires_at":"2026-12-25T10:00:00Z"}"#,
        r#"{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":1,"min_callers":1}"#,
        &call(SOL),
    ] {
        submit(&mut router, &mut ingest, line);
    }
    router.flush().unwrap();
    let first = effects.next_batch().unwrap().expect("the engine runs");
    assert_eq!(first.len(), 1, "{first:?}");
    let (ptr, capacity) = (first.as_ptr(), first.capacity());
    effects.recycle(first);

    // The only vector in the pool, so the shard's next batch fills it.
    submit(&mut router, &mut ingest, &call(JUP));
    router.flush().unwrap();
    let second = effects.next_batch().unwrap().expect("the engine runs");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!((second.as_ptr(), second.capacity()), (ptr, capacity));

    router.finish().unwrap();
    assert!(effects.next_batch().unwrap().is_none());
    workers.join().unwrap();
}
