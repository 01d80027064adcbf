//! The predecessor's multiplier tracking, re-implemented faithfully in Rust
//! so the engine can be compared with it in the same run.
//!
//! What it keeps of the seed (`seeds/code-examples.md`, "Optimized
//! Multiplier Tracking"), on purpose:
//! - one shared state behind one lock;
//! - `tracked_tokens_by_token`: token → list of users;
//! - per key, a JSON record under `multiplier:{token}:{user}` in a key-value
//!   map standing in for Redis (looked up and parsed once per user per
//!   update, as `redis.get` + `json.loads` were);
//! - the 5 s / 2 % gating per token, against the event's time;
//! - the threshold loop that stops at the lowest threshold reached;
//! - notification de-duplication in the seed's SmartCache: TTL plus an
//!   O(n) least-recently-used eviction (a scan for the oldest access time).
//!
//! Only Redis's network round trips are gone, which flatters the baseline.

use std::collections::HashMap;
use std::sync::Mutex;

use engine::time::{NANOS_PER_SEC, Nanos};

/// The seed's `SmartCache`: TTL, LRU by a full scan on eviction.
#[derive(Debug)]
struct SmartCache {
    max_size: usize,
    ttl_nanos: Nanos,
    /// key → expires_at
    entries: HashMap<String, Nanos>,
    /// key → last access
    access: HashMap<String, Nanos>,
}

impl SmartCache {
    fn new(max_size: usize, ttl_secs: i64) -> Self {
        SmartCache {
            max_size,
            ttl_nanos: ttl_secs * NANOS_PER_SEC,
            entries: HashMap::new(),
            access: HashMap::new(),
        }
    }

    fn contains(&mut self, key: &str, now: Nanos) -> bool {
        match self.entries.get(key) {
            Some(&exp) if now <= exp => {
                self.access.insert(key.to_owned(), now);
                true
            }
            Some(_) => {
                self.entries.remove(key);
                self.access.remove(key);
                false
            }
            None => false,
        }
    }

    fn set(&mut self, key: String, now: Nanos) {
        if self.entries.len() >= self.max_size && !self.entries.contains_key(&key) {
            // O(n): the seed's `min(self._access_times, key=...)`.
            if let Some(lru) = self
                .access
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&lru);
                self.access.remove(&lru);
            }
        }
        self.entries.insert(key.clone(), now + self.ttl_nanos);
        self.access.insert(key, now);
    }
}

#[derive(Debug)]
struct State {
    tracked_tokens_by_token: HashMap<String, Vec<i64>>,
    /// Stands in for Redis: key → JSON value.
    redis: HashMap<String, String>,
    price_cache: HashMap<String, f64>,
    last_price_update_time: HashMap<String, Nanos>,
    sent: SmartCache,
    notifications: u64,
}

/// The seed's tracker: everything behind one lock.
#[derive(Debug)]
pub struct SeedTracker {
    state: Mutex<State>,
}

const THRESHOLDS: [f64; 6] = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0];

impl SeedTracker {
    pub fn new() -> Self {
        SeedTracker {
            state: Mutex::new(State {
                tracked_tokens_by_token: HashMap::new(),
                redis: HashMap::new(),
                price_cache: HashMap::new(),
                last_price_update_time: HashMap::new(),
                sent: SmartCache::new(1000, 7 * 24 * 3600),
                notifications: 0,
            }),
        }
    }

    /// `track_call`: store the record, add the user to the token's list
    /// (with the seed's linear `not in` check).
    pub fn track_call(&self, token: &str, user: i64, channel: i64, fdv_at_call: f64, at: Nanos) {
        let mut s = self.state.lock().expect("no panics while locked");
        let key = format!("multiplier:{token}:{user}");
        let value = format!(
            "{{\"channel_id\": {channel}, \"fdv_at_call\": {fdv_at_call}, \"timestamp\": \"{at}\"}}"
        );
        s.redis.insert(key, value);
        let users = s
            .tracked_tokens_by_token
            .entry(token.to_owned())
            .or_default();
        if !users.contains(&user) {
            users.push(user);
        }
    }

    /// `process_price_update`; returns whether the gating let it through.
    pub fn process_price_update(&self, token: &str, current_fdv: f64, now: Nanos) -> bool {
        let mut guard = self.state.lock().expect("no panics while locked");
        let s = &mut *guard;
        if let Some(&last) = s.last_price_update_time.get(token)
            && now - last < 5 * NANOS_PER_SEC
        {
            return false;
        }
        if let Some(&prev) = s.price_cache.get(token)
            && ((current_fdv - prev) / prev).abs() < 0.02
        {
            return false;
        }
        let Some(users) = s.tracked_tokens_by_token.get(token) else {
            return false;
        };
        for &user in users {
            let key = format!("multiplier:{token}:{user}");
            let Some(raw) = s.redis.get(&key) else {
                continue;
            };
            let data: serde_json::Value = serde_json::from_str(raw).expect("records are JSON");
            let fdv_at_call = data["fdv_at_call"].as_f64().unwrap_or(0.0);
            if fdv_at_call == 0.0 {
                continue;
            }
            let multiplier = current_fdv / fdv_at_call;
            for threshold in THRESHOLDS {
                if multiplier >= threshold {
                    let sent_key = format!("{token}:{user}:{threshold}");
                    if !s.sent.contains(&sent_key, now) {
                        s.sent.set(sent_key, now);
                        s.notifications += 1;
                    }
                    break;
                }
            }
        }
        s.price_cache.insert(token.to_owned(), current_fdv);
        s.last_price_update_time.insert(token.to_owned(), now);
        true
    }

    pub fn notifications(&self) -> u64 {
        self.state
            .lock()
            .expect("no panics while locked")
            .notifications
    }
}

/// The seed's gating alone, to find which updates it would have looked at.
#[derive(Debug, Default)]
pub struct Gate {
    last: HashMap<u32, (Nanos, f64)>,
}

impl Gate {
    /// Whether the seed would process this update (and remember it if so).
    pub fn passes(&mut self, token: u32, fdv: f64, now: Nanos) -> bool {
        if let Some(&(t, prev)) = self.last.get(&token)
            && (now - t < 5 * NANOS_PER_SEC || ((fdv - prev) / prev).abs() < 0.02)
        {
            // The seed checks time first, then change; either stops it.
            return false;
        }
        self.last.insert(token, (now, fdv));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gating_skips_updates_within_5s_or_under_2_percent() {
        let mut g = Gate::default();
        let s = NANOS_PER_SEC;
        assert!(g.passes(1, 100.0, 0));
        assert!(!g.passes(1, 300.0, 4 * s), "too soon");
        assert!(!g.passes(1, 101.0, 6 * s), "under 2 %");
        assert!(g.passes(1, 103.0, 7 * s));
    }

    #[test]
    fn seed_notifies_the_lowest_threshold_reached() {
        let t = SeedTracker::new();
        t.track_call("tok", 1, -1, 100.0, 0);
        assert!(t.process_price_update("tok", 1_250.0, 0));
        assert_eq!(t.notifications(), 1, "2x, not 10x: the seed's defect");
        assert!(t.process_price_update("tok", 2_600.0, 10 * NANOS_PER_SEC));
        assert_eq!(t.notifications(), 1, "2x again, de-duplicated");
    }

    #[test]
    fn smart_cache_evicts_the_least_recently_used() {
        let mut c = SmartCache::new(2, 100);
        c.set("a".into(), 1);
        c.set("b".into(), 2);
        assert!(c.contains("a", 3));
        c.set("c".into(), 4);
        assert!(c.contains("a", 5) && c.contains("c", 5));
        assert!(!c.contains("b", 5));
    }
}
