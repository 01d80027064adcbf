//! The scheduler as a property, on a simulated clock: with enough budget no
//! tracked token goes longer than the ceiling without a poll; with too
//! little, urgent tokens still come first.

use std::collections::HashMap;

use callwatch_sources::network::Network;
use callwatch_sources::schedule::{ScheduleConfig, Scheduler, Tracked};
use engine::time::NANOS_PER_SEC;
use engine::token::Token;
use proptest::prelude::*;

const SEC: i64 = NANOS_PER_SEC;

fn token(i: u64) -> Token {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8] = 1;
    Token::solana(bytes)
}

/// Runs `minutes` of requests, `per_minute` of them evenly spaced, each
/// polling what the scheduler hands out; returns each token's longest gap
/// between polls (from its call for the first), in seconds.
fn run(
    scheduler: &mut Scheduler,
    tracked: &[Tracked],
    per_minute: u32,
    minutes: i64,
    eager: bool,
) -> HashMap<Tracked, i64> {
    let tick = 60 * SEC / i64::from(per_minute);
    let mut last: HashMap<Tracked, i64> = tracked.iter().map(|&t| (t, 0)).collect();
    let mut longest: HashMap<Tracked, i64> = HashMap::new();
    let mut now = 0;
    while now < minutes * 60 * SEC {
        for t in scheduler.next_batch(now, eager) {
            let gap = now - last[&t];
            let l = longest.entry(t).or_default();
            *l = (*l).max(gap / SEC);
            last.insert(t, now);
            scheduler.polled(t, Some(1.0), now);
        }
        now += tick;
    }
    // A token never polled again waited until the end.
    for t in tracked {
        let l = longest.entry(*t).or_default();
        *l = (*l).max((now - last[t]) / SEC);
    }
    longest
}

fn networks() -> impl Strategy<Value = Network> {
    prop::sample::select(Network::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn with_enough_budget_no_token_waits_longer_than_the_ceiling(
        nets in prop::collection::vec(networks(), 1..400),
        per_minute in 20u32..120,
        eager in any::<bool>(),
    ) {
        let config = ScheduleConfig {
            batch: 30,
            urgent_interval_secs: 60,
            ceiling_secs: 600,
            recent_call_secs: 0,
            near_threshold: 0.8,
        };
        // Enough: each network's tokens need at most half the requests a
        // ceiling allows (a request holds one network's tokens only).
        let per_ceiling = u64::from(per_minute) * 10;
        let mut by_net: HashMap<Network, u64> = HashMap::new();
        for n in &nets {
            *by_net.entry(*n).or_default() += 1;
        }
        let needed: u64 = by_net.values().map(|c| c.div_ceil(30)).sum();
        prop_assume!(needed * 2 <= per_ceiling);
        let mut s = Scheduler::new(config);
        let tracked: Vec<Tracked> = nets
            .iter()
            .enumerate()
            .map(|(i, &network)| Tracked { token: token(i as u64), network })
            .collect();
        for t in &tracked {
            s.called(*t, -SEC, 0);
        }
        let longest = run(&mut s, &tracked, per_minute, 40, eager);
        let slack = 60 / i64::from(per_minute) + 1;
        for (t, gap) in longest {
            prop_assert!(gap <= 600 + slack, "{t:?} waited {gap} s");
        }
    }

    #[test]
    fn with_too_little_budget_urgent_tokens_come_first(
        urgent in 1usize..60,
        normal in 2_000usize..4_000,
    ) {
        let config = ScheduleConfig {
            batch: 30,
            urgent_interval_secs: 60,
            ceiling_secs: 300,
            recent_call_secs: 3_600,
            near_threshold: 0.8,
        };
        let mut s = Scheduler::new(config);
        let mk = |i: usize| Tracked { token: token(i as u64), network: Network::Solana };
        let tracked: Vec<Tracked> = (0..urgent + normal).map(mk).collect();
        // Normal tokens were called long ago; urgent ones just now.
        for (i, t) in tracked.iter().enumerate() {
            let at = if i < urgent { 0 } else { -100_000 * SEC };
            s.called(*t, at, 0);
        }
        // 6 requests a minute: 180 tokens, far fewer than the normal
        // tokens need, more than the urgent ones do.
        let longest = run(&mut s, &tracked, 6, 30, false);
        for t in &tracked[..urgent] {
            prop_assert!(longest[t] <= 60 + 10, "urgent {t:?} waited {} s", longest[t]);
        }
        let starved = tracked[urgent..].iter().filter(|t| longest[t] > 300).count();
        prop_assert!(starved > 0, "the budget was too small for the normal tokens");
    }
}

#[test]
fn a_token_near_its_next_crossing_is_urgent() {
    // One token a request: a batch is not topped up with the far one.
    let mut s = Scheduler::new(ScheduleConfig {
        recent_call_secs: 0,
        batch: 1,
        ..ScheduleConfig::default()
    });
    let near = Tracked {
        token: token(1),
        network: Network::Base,
    };
    let far = Tracked {
        token: token(2),
        network: Network::Base,
    };
    for t in [near, far] {
        s.called(t, -SEC, 0);
        s.polled(t, Some(90.0), 0);
    }
    s.next_change(near, 100.0, 0);
    s.next_change(far, 1_000.0, 0);
    assert_eq!(s.stats(0).urgent, 1);
    // After the urgent interval, only the near one is due.
    assert_eq!(s.next_batch(61 * SEC, false), [near]);
    s.forget(far);
    assert_eq!(s.len(), 1);
}
