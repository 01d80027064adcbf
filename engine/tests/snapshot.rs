//! Snapshots: a run cut by a snapshot, loaded into new shards (as many or
//! not) and continued, gives exactly the output of the run uncut, also when
//! the run goes on while the shards write the snapshot; and a damaged or
//! foreign file is refused whole.

use engine::config::EngineConfig;
use engine::effect::Effect;
use engine::event::{Envelope, Event};
use engine::ingest::{Ingest, Outcome};
use engine::router::{self, Router};
use engine::shard::{Restore, ShardState};
use engine::sim::{Market, MarketConfig, Rng};
use engine::snapshot::{self, Snapshot, SnapshotError};
use engine::time::NANOS_PER_SEC;
use proptest::prelude::*;

/// A market whose prices jump, whose calls come again (some late), whose records and entries expire within
/// the run, and whose chats' subscriptions lapse and renew along the way.
fn events(seed: u64, n: usize) -> Vec<Envelope> {
    let start = 1_795_600_800 * NANOS_PER_SEC;
    let mut market = Market::new(MarketConfig {
        seed,
        tokens: 60,
        channels: 8,
        chats: 12,
        call_share: 0.2,
        step_nanos: 40 * NANOS_PER_SEC,
        start,
    });
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut ingest = Ingest::new();
    let mut out = Vec::with_capacity(n);
    let mut calls = Vec::new();
    while out.len() < n {
        let mut event = market.next_event();
        // Jumps, so that thresholds are crossed within the run.
        if let Event::Price { fdv_usd, .. } = &mut event
            && rng.below(6) == 0
        {
            *fdv_usd *= 1.0 + rng.below(30) as f64;
        }
        // Calls again, some late: the checked channels decide those.
        if let Event::Call { .. } = event {
            calls.push(event.clone());
        } else if !calls.is_empty() && rng.below(12) == 0 {
            let i = calls.len() - 1 - rng.below(calls.len().min(20) as u64) as usize;
            event = calls[i].clone();
            if let Event::Call { at, .. } = &mut event {
                *at -= rng.below(3) as i64 * 60 * NANOS_PER_SEC;
            }
        }
        if rng.below(40) == 0 {
            let at = event.at();
            event = Event::Subscribe {
                chat_id: 1_000 + rng.below(12) as i64,
                at,
                expires_at: at + (rng.below(4) as i64) * 3600 * NANOS_PER_SEC,
                plan: None,
            };
        }
        if let Outcome::Event(env) = ingest.event(event) {
            out.push(env);
        }
    }
    out
}

fn config(shards: usize, fanout_slice: usize) -> EngineConfig {
    EngineConfig {
        shards,
        ttl_nanos: 2 * 3600 * NANOS_PER_SEC,
        pin_threads: false,
        batch_events: 16,
        fanout_slice,
        ..EngineConfig::default()
    }
}

/// `config`, writing snapshots `step` records at a time.
fn stepped(shards: usize, fanout_slice: usize, step: u64) -> EngineConfig {
    EngineConfig {
        snapshot_step_records: step,
        ..config(shards, fanout_slice)
    }
}

/// Tracked entries loaded from storage before the input, as a rebuild
/// loads them: each adds its chat only to the shard that owns its token,
/// so the shards' chat tables differ.
fn restore(router: &mut Router, envs: &[Envelope]) {
    let tokens = envs.iter().filter_map(|e| e.event.token().copied());
    for (i, token) in tokens.take(40).enumerate().filter(|(i, _)| i % 3 == 0) {
        router
            .restore(Restore {
                token,
                chat_id: 9_000 + (i % 7) as i64,
                fdv_at_call: 1e4,
                started: 1_795_600_800 * NANOS_PER_SEC,
                last_threshold: None,
            })
            .expect("restore");
    }
}

/// Restores entries for the tokens of `restores` first, then has `feed`
/// submit the input, then finishes the router; returns every effect.
fn drive(
    mut router: Router,
    effects: router::Effects,
    restores: &[Envelope],
    feed: impl FnOnce(&mut Router),
) -> Vec<Effect> {
    std::thread::scope(|s| {
        let collector = s.spawn(move || {
            let mut effects = effects;
            let mut all = Vec::new();
            while let Some(mut batch) = effects.next_batch().expect("engine stopped") {
                all.append(&mut batch);
            }
            all
        });
        restore(&mut router, restores);
        feed(&mut router);
        router.finish().expect("finish");
        collector.join().expect("collector")
    })
}

fn run(config: &EngineConfig, loaded: Vec<ShardState>, envs: &[Envelope]) -> Vec<Effect> {
    let restores = if loaded.is_empty() { envs } else { &[] };
    let (router, effects, workers) = router::start_from(config, loaded).expect("config");
    let out = drive(router, effects, restores, |router| submit(router, envs));
    workers.join().expect("shards");
    out
}

fn submit(router: &mut Router, envs: &[Envelope]) {
    for env in envs {
        router.submit(env.clone()).expect("submit");
    }
}

/// Runs all of `all` (after its restores), with a snapshot taken after
/// `all[..cut]`: the events after the cut are submitted before the
/// snapshot is waited for, so the shards apply them while they write it.
/// Returns the whole run's output and the file.
fn snapshot_at(config: &EngineConfig, all: &[Envelope], cut: usize) -> (Vec<Effect>, Vec<u8>) {
    let (before, after) = all.split_at(cut);
    let (router, effects, workers) = router::start(config).expect("config");
    let mut file = Vec::new();
    let out = drive(router, effects, all, |router| {
        submit(router, before);
        let taking = router
            .snapshot(config.thresholds.clone())
            .expect("snapshot");
        assert_eq!(taking.upto_seq(), before.last().map_or(0, |e| e.seq));
        submit(router, after);
        router.flush().expect("flush");
        let taken = taking.wait().expect("parts");
        taken.image.write_to(&mut file, b"meta").expect("write");
        assert_eq!(taken.image.file_len(b"meta"), file.len() as u64);
    });
    workers.join().expect("shards");
    (out, file)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_continues_the_run_exactly(
        seed in any::<u64>(),
        cut in 0usize..1_500,
        before in 1usize..4,
        after in 1usize..4,
        slice in prop_oneof![Just(1usize), Just(3), Just(4096)],
        step in prop_oneof![Just(1u64), Just(5), Just(16_384)],
    ) {
        let envs = events(seed, 1_500);
        let whole = run(&config(1, 4096), Vec::new(), &envs);
        let multipliers = whole.iter().filter(|e| matches!(e, Effect::MultiplierAlert(_))).count();
        prop_assert!(whole.len() > 50 && multipliers > 5, "{} effects, {} multipliers", whole.len(), multipliers);
        let (through, file) = snapshot_at(&stepped(before, slice, step), &envs, cut);
        prop_assert!(through == whole, "output changed by writing a snapshot at {}", cut);
        let parsed = Snapshot::parse(&file).expect("a fresh snapshot parses");
        prop_assert_eq!(parsed.meta, b"meta");
        let cfg = config(after, slice);
        let loaded = snapshot::load(&cfg, &parsed).expect("a fresh snapshot loads");
        let rest = run(&cfg, loaded, &envs[cut..]);
        let upto = envs[..cut].last().map_or(0, |e| e.seq);
        let after_cut: Vec<Effect> = whole.into_iter().filter(|e| e.order_key().0 > upto).collect();
        prop_assert!(rest == after_cut, "output differs after a snapshot at {}", cut);
    }
}

#[test]
fn a_damaged_or_foreign_file_is_refused_whole() {
    let envs = events(3, 800);
    let cfg = config(2, 4096);
    let (_, file) = snapshot_at(&cfg, &envs, envs.len());
    assert!(snapshot::load(&cfg, &Snapshot::parse(&file).unwrap()).is_ok());
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let mut bad = file.clone();
        let i = rng.below(bad.len() as u64) as usize;
        bad[i] ^= 1 << rng.below(8);
        let err = Snapshot::parse(&bad).expect_err("a flipped bit is found");
        assert!(
            matches!(
                err,
                SnapshotError::Checksum { .. }
                    | SnapshotError::Foreign
                    | SnapshotError::Version { .. }
                    | SnapshotError::Truncated { .. }
                    | SnapshotError::Corrupt { .. }
            ),
            "{err}"
        );
    }
    for len in [0, 7, 8, 20, 40, file.len() / 2, file.len() - 1] {
        let err = Snapshot::parse(&file[..len]).expect_err("a cut file is refused");
        assert!(
            matches!(
                err,
                SnapshotError::Truncated { .. } | SnapshotError::Foreign
            ),
            "{len}: {err}"
        );
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(Snapshot::parse(&longer).is_err());
    let err = Snapshot::parse(b"{\"not\": \"a snapshot\"}").unwrap_err();
    assert_eq!(err, SnapshotError::Foreign);
    assert!(err.to_string().contains("not a callwatch snapshot"));
    let mut other = file.clone();
    other[8] = 9;
    assert_eq!(
        Snapshot::parse(&other).unwrap_err(),
        SnapshotError::Version { found: 9 }
    );
    let strict = EngineConfig {
        thresholds: vec![3.0, 7.0],
        ..cfg
    };
    let err = snapshot::load(&strict, &Snapshot::parse(&file).unwrap()).unwrap_err();
    assert!(matches!(err, SnapshotError::Thresholds { .. }), "{err}");
}
