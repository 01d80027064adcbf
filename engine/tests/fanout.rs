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

/// Each `apply` appends its alerts in output order, whatever order the
/// chats' ids are in against the order they came in (the walk's order),
/// and for any slice size: a call's alerts, sorted by chat when the walk
/// does not meet them so, with the alerts of a price that waited for the
/// call after them, or those of a price applied meanwhile before them.
#[test]
fn each_apply_appends_its_alerts_in_output_order() {
    const FOLLOWERS: u64 = 40;
    let mut rng = Rng::new(11);
    let [a, b, c, d] = [(); 4].map(|()| token(&mut rng));
    // Ids ascending, descending, then scattered (an odd multiplier
    // permutes the integers modulo 2^20).
    let orders: [fn(u64) -> i64; 3] = [
        |i| i as i64,
        |i| -(i as i64),
        |i| ((i * 0x9E37_79B9) % (1 << 20)) as i64 - (1 << 19),
    ];
    // With no other chats, a call's alerts are put in order by the
    // chats' ranks; with many, which follow another channel, sorted.
    for (id, others) in orders.into_iter().flat_map(|id| [(id, 0), (id, 2_000)]) {
        let mut events = Vec::new();
        for i in 1..=FOLLOWERS + others {
            events.push(Event::Subscribe {
                chat_id: id(i),
                at: BASE,
                expires_at: BASE + 24 * 60 * MINUTE,
                plan: None,
            });
            if i > FOLLOWERS {
                events.push(Event::Settings {
                    chat_id: id(i),
                    at: BASE,
                    patch: Box::new(SettingsPatch {
                        follow: Some(vec![-99]),
                        ..SettingsPatch::default()
                    }),
                });
            }
        }
        for (k, (token, channel_id)) in [(a, -1), (b, -1), (a, -2), (b, -2)].into_iter().enumerate()
        {
            events.push(Event::Call {
                token,
                channel_id,
                fdv_usd: 100_000.0,
                at: BASE + k as i64 * MINUTE,
            });
        }
        // Each crosses a threshold for every chat, which the tracked
        // heap hands over in no chat order. In slices, each waits for its
        // token's second call and comes out after its last slice.
        for (k, (token, fdv_usd)) in [(a, 500_000.0), (b, 1_000_000.0)].into_iter().enumerate() {
            events.push(Event::Price {
                token,
                fdv_usd,
                at: BASE + (5 + k as i64) * MINUTE,
            });
        }
        // Events of a token no one called, which work the calls' slices
        // through to their ends, where the events held for them go.
        let filler = |events: &mut Vec<Event>, minute: i64| {
            for k in 0..200 {
                events.push(Event::Price {
                    token: c,
                    fdv_usd: 1.0,
                    at: BASE + minute * MINUTE + k,
                });
            }
        };
        filler(&mut events, 7);
        // A chat joins, one more follower of `d`'s calls, whose alerts are
        // then put in order by ranks merged up to date.
        events.push(Event::Subscribe {
            chat_id: id(FOLLOWERS + others + 1),
            at: BASE + 9 * MINUTE,
            expires_at: BASE + 24 * 60 * MINUTE,
            plan: None,
        });
        // A price of `b` that crosses for every chat while `d`'s second
        // call is deciding: its alerts come before the slice's.
        for (k, channel_id) in [-1, -2].into_iter().enumerate() {
            events.push(Event::Call {
                token: d,
                channel_id,
                fdv_usd: 100_000.0,
                at: BASE + (10 + k as i64) * MINUTE,
            });
        }
        events.push(Event::Price {
            token: b,
            fdv_usd: 2_000_000.0,
            at: BASE + 12 * MINUTE,
        });
        filler(&mut events, 13);
        for slice in [1, 3, 16, usize::MAX] {
            let mut shard = ShardState::new(Rules::default());
            shard.set_fanout_slice(slice);
            let mut ingest = Ingest::new();
            let mut out = Vec::new();
            for e in events.iter().cloned() {
                let Outcome::Event(env) = ingest.event(e) else {
                    panic!("a valid event");
                };
                let start = out.len();
                shard.apply(&env, &mut out);
                assert!(
                    out[start..].is_sorted_by_key(Effect::order_key),
                    "slice {slice}, {others} others, chat ids like {}: {:?}",
                    id(2),
                    &out[start..]
                );
            }
            assert!(!shard.has_unfinished(), "slice {slice}");
            let count = |multiplier: bool| {
                let alerts = out.iter().filter(|e| match e {
                    Effect::CallAlert(_) => !multiplier,
                    Effect::MultiplierAlert(_) => multiplier,
                    Effect::Progress(_) => false,
                });
                alerts.count() as u64
            };
            assert_eq!(count(false), 3 * FOLLOWERS + 1, "slice {slice}");
            assert_eq!(count(true), 3 * FOLLOWERS, "slice {slice}");
        }
    }
}
