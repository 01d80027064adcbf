//! A call walks the chats that can be alerted, not every chat ever seen:
//! anyone can create a chat with one `settings` event, and a chat whose
//! subscription lapsed stays in the chat table for good, so a walk over
//! every chat would grow with them. `ShardStats::followers_visited`
//! counts the chats calls looked at.

use engine::config::Rules;
use engine::effect::Effect;
use engine::event::{ChatId, Event, SettingsPatch};
use engine::ingest::{Ingest, Outcome};
use engine::shard::ShardState;
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;

const MINUTE: Nanos = 60 * NANOS_PER_SEC;
/// 2026-11-25T10:00:00Z
const BASE: Nanos = 1_795_600_800 * NANOS_PER_SEC;
/// Chats that never count: never subscribed, or lapsed.
const IDLE: i64 = 100_000;
/// Subscribed chats, ids after the idle ones.
const ACTIVE: i64 = 3;
const CHANNEL: i64 = -1001;

/// Feeds events to one shard, in order, numbered and stamped with the
/// stream clock by the engine's `Ingest`.
struct Feed {
    ingest: Ingest,
    shard: ShardState,
    out: Vec<Effect>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            ingest: Ingest::new(),
            shard: ShardState::new(Rules::default()),
            out: Vec::new(),
        }
    }

    fn apply(&mut self, event: Event) {
        match self.ingest.event(event) {
            Outcome::Event(env) => self.shard.apply(&env, &mut self.out),
            other => panic!("a test event rejected: {other:?}"),
        }
    }

    fn settings(&mut self, chat_id: ChatId, at: Nanos) {
        self.apply(Event::Settings {
            chat_id,
            at,
            patch: Box::new(SettingsPatch {
                min_callers: Some(1),
                ..SettingsPatch::default()
            }),
        });
    }

    fn subscribe(&mut self, chat_id: ChatId, at: Nanos, expires_at: Nanos) {
        self.apply(Event::Subscribe {
            chat_id,
            at,
            expires_at,
            plan: None,
        });
    }

    /// Calls a fresh token at `at`; returns the chats it visited and the
    /// chats it alerted.
    fn call(&mut self, n: u64, at: Nanos) -> (u64, Vec<ChatId>) {
        let token = Token::parse(&format!("0x{n:040x}")).expect("test token");
        let before = self.shard.stats().followers_visited;
        self.out.clear();
        self.apply(Event::Call {
            token,
            channel_id: CHANNEL,
            fdv_usd: 100_000.0,
            at,
        });
        let mut alerted: Vec<ChatId> = self.out.iter().map(Effect::chat_id).collect();
        alerted.sort_unstable();
        (self.shard.stats().followers_visited - before, alerted)
    }
}

fn active_ids() -> Vec<ChatId> {
    (IDLE + 1..=IDLE + ACTIVE).collect()
}

#[test]
fn a_call_visits_only_subscribed_chats_not_those_that_only_set_settings() {
    let mut feed = Feed::new();
    for chat in 1..=IDLE {
        feed.settings(chat, BASE);
    }
    for chat in active_ids() {
        feed.settings(chat, BASE);
        feed.subscribe(chat, BASE, BASE + 60 * MINUTE);
    }
    let (visited, alerted) = feed.call(1, BASE + MINUTE);
    assert_eq!(alerted, active_ids());
    assert_eq!(
        visited, ACTIVE as u64,
        "a call walked chats that never subscribed"
    );
}

#[test]
fn lapsed_chats_leave_the_walk_once_a_call_or_the_sweep_meets_them() {
    let mut feed = Feed::new();
    for chat in 1..=IDLE {
        feed.settings(chat, BASE);
        feed.subscribe(chat, BASE, BASE + 10 * MINUTE);
    }
    for chat in active_ids() {
        feed.settings(chat, BASE);
        feed.subscribe(chat, BASE, BASE + 60 * MINUTE);
    }
    // The first call after the lapse meets every lapsed chat once...
    let (_, alerted) = feed.call(1, BASE + 20 * MINUTE);
    assert_eq!(alerted, active_ids());
    // ...and no call after it does.
    let (visited, alerted) = feed.call(2, BASE + 21 * MINUTE);
    assert_eq!(alerted, active_ids());
    assert_eq!(visited, ACTIVE as u64, "lapsed chats are still walked");

    // Without a call, the sweep takes them out a few at a time.
    let mut feed = Feed::new();
    for chat in 1..=IDLE {
        feed.subscribe(chat, BASE, BASE + 10 * MINUTE);
    }
    for chat in active_ids() {
        feed.subscribe(chat, BASE, BASE + 60 * MINUTE);
    }
    feed.settings(1, BASE + 20 * MINUTE);
    for _ in 0..IDLE / 64 + 1 {
        feed.shard.maintain(64);
    }
    let (visited, _) = feed.call(1, BASE + 21 * MINUTE);
    assert_eq!(visited, ACTIVE as u64, "the sweep left lapsed chats");
}

#[test]
fn a_lapsed_chat_still_counts_for_a_call_dated_before_its_expiry() {
    let mut feed = Feed::new();
    feed.settings(7, BASE);
    feed.subscribe(7, BASE, BASE + 10 * MINUTE);
    let (_, alerted) = feed.call(1, BASE + 20 * MINUTE);
    assert!(alerted.is_empty());
    // A call that arrives late, dated while the chat was active.
    let (visited, alerted) = feed.call(2, BASE + 5 * MINUTE);
    assert_eq!((visited, alerted), (1, vec![7]));
    // Renewed: back among the followers.
    feed.subscribe(7, BASE + 21 * MINUTE, BASE + 90 * MINUTE);
    let (visited, alerted) = feed.call(3, BASE + 22 * MINUTE);
    assert_eq!((visited, alerted), (1, vec![7]));
    // A follow list set while lapsed is the one that counts on renewal.
    feed.subscribe(7, BASE + 23 * MINUTE, BASE + 23 * MINUTE);
    feed.call(4, BASE + 24 * MINUTE);
    feed.apply(Event::Settings {
        chat_id: 7,
        at: BASE + 25 * MINUTE,
        patch: Box::new(SettingsPatch {
            follow: Some(vec![-5]),
            ..SettingsPatch::default()
        }),
    });
    feed.subscribe(7, BASE + 26 * MINUTE, BASE + 90 * MINUTE);
    let (visited, alerted) = feed.call(5, BASE + 27 * MINUTE);
    assert_eq!((visited, alerted), (0, vec![]));
}
