//! A call decided in slices gives the alerts it gives whole: the events
//! that wait for it are judged as they would have been in their place,
//! however far the events after them have moved the stream clock.

use engine::config::Rules;
use engine::effect::Effect;
use engine::event::{Event, SettingsPatch};
use engine::ingest::{Ingest, Outcome};
use engine::shard::ShardState;
use engine::sim::{Rng, token};
use engine::time::{NANOS_PER_SEC, Nanos};

const MINUTE: Nanos = 60 * NANOS_PER_SEC;
/// 2026-11-25T10:00:00Z
const BASE: Nanos = 1_795_600_800 * NANOS_PER_SEC;
const CHATS: i64 = 5;

fn events() -> Vec<Event> {
    let mut rng = Rng::new(7);
    let (a, b) = (token(&mut rng), token(&mut rng));
    let mut events = Vec::new();
    for chat_id in 1..=CHATS {
        events.push(Event::Subscribe {
            chat_id,
            at: BASE,
            expires_at: BASE + 24 * 60 * MINUTE,
            plan: None,
        });
        events.push(Event::Settings {
            chat_id,
            at: BASE,
            patch: Box::new(SettingsPatch {
                min_callers: Some(1),
                ..SettingsPatch::default()
            }),
        });
    }
    events.push(Event::Call {
        token: a,
        channel_id: -1001,
        fdv_usd: 100_000.0,
        at: BASE,
    });
    // Waits for the call: 3x, within the hour the entries live.
    events.push(Event::Price {
        token: a,
        fdv_usd: 300_000.0,
        at: BASE + 10 * MINUTE,
    });
    // Applied while the call decides, past the hour.
    for k in 0..CHATS {
        events.push(Event::Price {
            token: b,
            fdv_usd: 1.0,
            at: BASE + (90 + k) * MINUTE,
        });
    }
    events
}

fn run(slice: usize) -> Vec<Effect> {
    let rules = Rules {
        ttl_nanos: 60 * MINUTE,
        ..Rules::default()
    };
    let mut shard = ShardState::new(rules);
    shard.set_fanout_slice(slice);
    let mut ingest = Ingest::new();
    let envs: Vec<_> = events()
        .into_iter()
        .map(|e| match ingest.event(e) {
            Outcome::Event(env) => env,
            other => panic!("a valid event: {other:?}"),
        })
        .collect();
    let mut out = Vec::new();
    for env in &envs {
        shard.apply(env, &mut out);
    }
    assert!(!shard.has_unfinished() || slice < CHATS as usize);
    shard.finish_fanouts(&mut out);
    out.sort_by_key(Effect::order_key);
    out
}

#[test]
fn an_event_that_waits_for_a_call_keeps_its_own_clock() {
    let whole = run(usize::MAX);
    let multipliers = |out: &[Effect]| {
        out.iter()
            .filter(|e| matches!(e, Effect::MultiplierAlert(_)))
            .count()
    };
    assert_eq!(multipliers(&whole), CHATS as usize, "{whole:?}");
    for slice in [1, 2, 3] {
        assert_eq!(run(slice), whole, "slice {slice}");
    }
}
