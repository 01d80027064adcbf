//! A call's fan-out: `ShardState::apply` of one `call` event on a shard
//! where many chats follow the calling channel, so that the call is
//! decided for each of them. The target this checks (issue [2.4]): at most
//! 40 ns per following chat, so a call to 100,000 followers in at most
//! 4 ms and a call to 1,000,000 in at most 40 ms.
//!
//! Groups, each reporting time per follower (`Throughput::Elements`):
//! - `first_call/{1000,100000,1000000}`: the first call of a token never
//!   seen before, to chats with default settings (min_callers 2, every
//!   channel followed). Every follower gets a new processed record and is
//!   rejected (one caller): no alert.
//! - `second_call/{1000,100000,1000000}`: a second channel calls the same
//!   token a minute after the first. Every follower now has two callers
//!   and accepts: a call alert and a tracked entry each. The heaviest
//!   call there is. The chats' ids ascend in the order they subscribed,
//!   which is the order a call walks them, so its alerts come out in
//!   output order.
//! - `second_call_mixed/{100000,1000000}`: `second_call` to chats whose
//!   ids are scattered, as real chat ids are against the order chats
//!   come in: the call's alerts are sorted by chat before they leave.
//! - `named/100000`: `first_call` to chats that name the calling channel
//!   in their follow list (three channels each) instead of following
//!   every channel.
//!
//! Only the measured call is timed: building the shard, the first call of
//! `second_call`, and dropping the alerts happen outside the timer.
//!
//! Run: `cargo bench -p callwatch-benches --bench fanout`
//! (one group: `cargo bench -p callwatch-benches --bench fanout -- second_call`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use engine::Rules;
use engine::effect::Effect;
use engine::event::{ChannelId, Envelope, Event, SettingsPatch};
use engine::shard::ShardState;
use engine::sim::{self, Rng};
use engine::time::{NANOS_PER_SEC, Nanos, parse_rfc3339};
use engine::token::Token;

// The service's allocator: an alert's callers are allocated on the path
// measured here, and `callwatch` and `loadtest` run on mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// When the chats subscribe; the calls come a minute and two minutes
/// later. Every call of the bench has one of these two times: the engine
/// reads no clock, and the calls never come within reach of any expiry.
const START: &str = "2026-11-25T10:00:00Z";
const MINUTE: Nanos = 60 * NANOS_PER_SEC;

/// The channel every measured `first_call` and `named` call comes from,
/// and the first caller of `second_call`.
const CALLER: ChannelId = -1_001_000_000_000;
/// The second caller of `second_call`.
const SECOND_CALLER: ChannelId = CALLER - 1;

/// Processed records a bench shard may hold before it is rebuilt (untimed)
/// for the next call: each call makes one per follower, and one record
/// takes about 100 bytes in its token's table, so this keeps a bench
/// under about 1 GB however many calls criterion asks for.
const RECORD_BUDGET: u64 = 8_000_000;

/// The chat ids of a bench shard, against the order the chats subscribe.
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    /// 1, 2, 3, …: a call's alerts come out in chat order.
    Ascending,
    /// Scattered over 1..=2^40 (a bijection of the subscription order).
    Mixed,
}

impl Ids {
    /// The id of the `i`-th chat to subscribe, from 1.
    fn chat_id(self, i: u64) -> i64 {
        const SPAN: u64 = 1 << 40;
        match self {
            Ids::Ascending => i as i64,
            // An odd multiplier permutes the integers modulo 2^40.
            Ids::Mixed => (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % SPAN + 1) as i64,
        }
    }
}

/// Who the followers of a bench shard follow.
#[derive(Clone, Copy, PartialEq)]
enum Follow {
    /// Every channel (an empty follow list, the default).
    All,
    /// Three channels by name: [`CALLER`] and two of 64 others.
    Named,
}

/// A shard whose `followers` chats all follow [`CALLER`] (and, with
/// [`Follow::All`], [`SECOND_CALLER`]), and the tokens the measured calls
/// use. A token is
/// used once per shard, so every call is a first call of its token; when
/// they run out (the record budget reached), the shard is rebuilt and the
/// tokens start over.
struct Bench {
    followers: u64,
    follow: Follow,
    ids: Ids,
    t0: Nanos,
    tokens: Vec<Token>,
    used: usize,
    shard: ShardState,
    seq: u64,
}

impl Bench {
    fn new(followers: u64, follow: Follow, ids: Ids) -> Self {
        let t0 = parse_rfc3339(START).expect("a valid time");
        let calls = (RECORD_BUDGET / followers).max(1) as usize;
        let mut rng = Rng::new(24);
        let tokens = (0..calls).map(|_| sim::token(&mut rng)).collect();
        Bench {
            followers,
            follow,
            ids,
            t0,
            tokens,
            used: 0,
            shard: build_shard(followers, follow, ids, t0),
            seq: 0,
        }
    }

    /// A token this shard has not seen, after a rebuild if need be.
    fn fresh_token(&mut self) -> Token {
        if self.used == self.tokens.len() {
            // Drop the old shard first, so that two never sit in memory.
            self.shard = ShardState::new(Rules::default());
            self.shard = build_shard(self.followers, self.follow, self.ids, self.t0);
            self.used = 0;
        }
        self.used += 1;
        self.tokens[self.used - 1]
    }

    /// A call of `token` by `channel`, `minutes` after the subscriptions.
    fn call(&mut self, token: Token, channel: ChannelId, minutes: i64) -> Envelope {
        self.seq += 1;
        let at = self.t0 + minutes * MINUTE;
        Envelope {
            seq: self.seq,
            clock: at,
            event: Event::Call {
                token,
                channel_id: channel,
                fdv_usd: 250_000.0,
                at,
            },
        }
    }

    /// One measured call: the first of a fresh token, or (`second`) the
    /// second, after an untimed first. Checks that it walked every
    /// follower and alerted each of them exactly when it should, and
    /// leaves `out` empty.
    fn timed_call(&mut self, second: bool, out: &mut Vec<Effect>) -> Duration {
        let token = self.fresh_token();
        let env = if second {
            let first = self.call(token, CALLER, 1);
            self.shard.apply(&first, out);
            assert!(out.is_empty(), "one caller raises no alert");
            self.call(token, SECOND_CALLER, 2)
        } else {
            self.call(token, CALLER, 1)
        };
        let visited = self.shard.stats().followers_visited;
        let start = Instant::now();
        self.shard.apply(black_box(&env), out);
        let elapsed = start.elapsed();
        assert_eq!(
            self.shard.stats().followers_visited - visited,
            self.followers,
            "the call walks every follower"
        );
        let expected = if second { self.followers } else { 0 };
        assert_eq!(out.len() as u64, expected, "an alert per follower, or none");
        black_box(out.len());
        out.clear();
        elapsed
    }
}

/// A shard with chats 1..=`followers` subscribed for good, following
/// every channel or, with [`Follow::Named`], the three of
/// [`named_follow`].
fn build_shard(followers: u64, follow: Follow, ids: Ids, t0: Nanos) -> ShardState {
    let mut shard = ShardState::new(Rules::default());
    let mut out = Vec::new();
    for i in 1..=followers {
        let chat_id = ids.chat_id(i);
        let subscribe = Event::Subscribe {
            chat_id,
            at: t0,
            expires_at: Nanos::MAX,
            plan: None,
        };
        shard.apply(&envelope(subscribe), &mut out);
        if follow == Follow::Named {
            let settings = Event::Settings {
                chat_id,
                at: t0,
                patch: Box::new(SettingsPatch {
                    follow: Some(named_follow(chat_id)),
                    ..SettingsPatch::default()
                }),
            };
            shard.apply(&envelope(settings), &mut out);
        }
    }
    assert!(out.is_empty(), "chat events raise no alert");
    shard
}

/// The follow list of chat `chat_id` in `named`: [`CALLER`] and two other
/// channels, each one of 32 (neither is [`SECOND_CALLER`]), sorted as the
/// engine wants them.
fn named_follow(chat_id: i64) -> Vec<ChannelId> {
    let a = CALLER - 2 - chat_id % 32;
    let b = CALLER - 34 - (chat_id * 7) % 32;
    let mut follow = vec![CALLER, a, b];
    follow.sort_unstable();
    follow
}

/// A chat event at the start, whose stream clock is its own time.
fn envelope(event: Event) -> Envelope {
    Envelope {
        seq: 0,
        clock: event.at(),
        event,
    }
}

/// Measures `second` (or first) calls to `followers` chats following as
/// `follow`, in `group` under the name of the follower count.
fn bench_calls(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    followers: u64,
    follow: Follow,
    ids: Ids,
    second: bool,
) {
    let mut bench = Bench::new(followers, follow, ids);
    let mut out: Vec<Effect> = Vec::new();
    group.throughput(Throughput::Elements(followers));
    // A million followers take tens of milliseconds a call (twice that
    // with the untimed first call and the rebuilds): flat sampling and a
    // longer measurement keep the sample count without the linear ramp.
    if followers >= 1_000_000 {
        group.sampling_mode(SamplingMode::Flat);
        group.measurement_time(Duration::from_secs(10));
    } else {
        group.sampling_mode(SamplingMode::Auto);
        group.measurement_time(Duration::from_secs(3));
    }
    group.bench_function(BenchmarkId::from_parameter(followers), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.timed_call(second, &mut out)).sum());
    });
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group
}

/// `first_call/N`: the first call of a token to N chats that follow every
/// channel: N new records, N rejections, no alert.
fn first_call(c: &mut Criterion) {
    let mut group = group(c, "first_call");
    for followers in [1_000, 100_000, 1_000_000] {
        bench_calls(&mut group, followers, Follow::All, Ids::Ascending, false);
    }
    group.finish();
}

/// `second_call/N`: a second channel's call of the token, a minute after
/// the first (untimed): N records re-checked, N acceptances, N call
/// alerts and N tracked entries.
fn second_call(c: &mut Criterion) {
    let mut group = group(c, "second_call");
    for followers in [1_000, 100_000, 1_000_000] {
        bench_calls(&mut group, followers, Follow::All, Ids::Ascending, true);
    }
    group.finish();
}

/// `second_call_mixed/N`: `second_call/N` to chats whose ids are not in
/// the order they subscribed, so the alerts are sorted by chat.
fn second_call_mixed(c: &mut Criterion) {
    let mut group = group(c, "second_call_mixed");
    for followers in [100_000, 1_000_000] {
        bench_calls(&mut group, followers, Follow::All, Ids::Mixed, true);
    }
    group.finish();
}

/// `named/100000`: `first_call/100000` to chats that follow three channels
/// by name, the caller among them, so the call walks the caller's own
/// follower list and checks each chat's list.
fn named(c: &mut Criterion) {
    let mut group = group(c, "named");
    bench_calls(&mut group, 100_000, Follow::Named, Ids::Ascending, false);
    group.finish();
}

criterion_group!(benches, first_call, second_call, second_call_mixed, named);
criterion_main!(benches);
