//! The snapshot directory: written atomically, pruned to the newest few,
//! and at load the newest valid file wins while damaged ones are named.

use std::path::PathBuf;

use callwatch_state::snapshots::SnapshotStore;
use engine::EngineConfig;
use engine::router;
use engine::shard::Restore;
use engine::token::Token;

/// A directory of this test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("callwatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        shards: 2,
        pin_threads: false,
        ..EngineConfig::default()
    }
}

/// Writes a snapshot of an engine holding `keys` tracked entries.
fn write_one(store: &SnapshotStore, keys: u64) -> PathBuf {
    let config = config();
    let (mut router, mut effects, workers) = router::start(&config).unwrap();
    let drained = std::thread::spawn(move || while let Ok(Some(_)) = effects.next_batch() {});
    for i in 0..keys {
        let mut bytes = [7u8; 32];
        bytes[..8].copy_from_slice(&i.to_le_bytes());
        router
            .restore(Restore {
                token: Token::solana(bytes),
                chat_id: 100 + i as i64,
                fdv_at_call: 1e5,
                started: 1_000,
                last_threshold: None,
            })
            .unwrap();
    }
    let taken = router
        .snapshot(config.thresholds.clone())
        .unwrap()
        .wait()
        .unwrap();
    let meta = format!("{{\"keys\":{keys}}}");
    let written = store.write(&taken.image, meta.as_bytes()).unwrap();
    assert_eq!(
        std::fs::metadata(&written.path).unwrap().len(),
        written.bytes
    );
    router.finish().unwrap();
    workers.join().unwrap();
    drained.join().unwrap();
    written.path
}

fn tracked(states: &[engine::shard::ShardState]) -> u64 {
    states.iter().map(|s| s.stats().tracked).sum()
}

#[test]
fn the_newest_valid_snapshot_loads_and_damaged_ones_are_named() {
    let dir = Dir::new("snapshots-newest");
    let store = SnapshotStore::new(&dir.0, 2);
    assert!(store.load_newest(&config()).unwrap().loaded.is_none());
    let first = write_one(&store, 10);
    let second = write_one(&store, 20);
    let third = write_one(&store, 30);
    // Two kept, the oldest deleted; no temporary file left behind.
    assert_eq!(store.list().unwrap(), vec![second.clone(), third.clone()]);
    assert!(!first.exists());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);

    let newest = store.load_newest(&config()).unwrap();
    let loaded = newest.loaded.expect("a snapshot loads");
    assert_eq!(
        (loaded.path, &loaded.meta[..]),
        (third.clone(), &b"{\"keys\":30}"[..])
    );
    assert_eq!(tracked(&loaded.states), 30);
    assert!(newest.refused.is_empty());

    // The newest cut short: refused by name, and the one before loads.
    let bytes = std::fs::read(&third).unwrap();
    std::fs::write(&third, &bytes[..bytes.len() - 3]).unwrap();
    let newest = store.load_newest(&config()).unwrap();
    assert_eq!(
        tracked(&newest.loaded.expect("the older one loads").states),
        20
    );
    assert_eq!(newest.refused.len(), 1);
    assert_eq!(newest.refused[0].0, third);
    assert!(
        newest.refused[0].1.contains("truncated"),
        "{}",
        newest.refused[0].1
    );

    // Both damaged: nothing loads, both named.
    let mut bytes = std::fs::read(&second).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&second, &bytes).unwrap();
    let newest = store.load_newest(&config()).unwrap();
    assert!(newest.loaded.is_none());
    assert_eq!(newest.refused.len(), 2);
    assert!(
        newest.refused[1].1.contains("checksum"),
        "{}",
        newest.refused[1].1
    );
}

#[test]
fn names_stay_ordered_when_written_within_one_millisecond() {
    let dir = Dir::new("snapshots-order");
    let store = SnapshotStore::new(&dir.0, 5);
    let paths: Vec<PathBuf> = (0..4).map(|i| write_one(&store, i)).collect();
    assert_eq!(store.list().unwrap(), paths);
    let newest = store.load_newest(&config()).unwrap();
    assert!(newest.refused.is_empty(), "{:?}", newest.refused);
    assert_eq!(tracked(&newest.loaded.unwrap().states), 3);
}
