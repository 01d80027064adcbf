//! Who may change a chat's settings or subscription: in a private chat its
//! user, who owns it; in a group, the group's administrators (Telegram's
//! `getChatMember` status `creator` or `administrator`) and whoever writes
//! on the group's own behalf (an anonymous administrator: the message's
//! sender chat is the group). Everyone else is refused, and so is anyone
//! Telegram could not be asked about: a failed lookup asks to try again,
//! never allows.
//!
//! # Bounds
//! An answer is kept for [`ADMIN_CACHE_NANOS`] per (chat, user), so a flood
//! of commands is one lookup a minute per person; failures are not kept.
//! At most [`ADMIN_CACHE_ENTRIES`] answers are kept: when full, those that
//! have lapsed are dropped, and if none has, the new answer is not kept
//! (counted in [`RightsCounters::uncached`]; its next command asks again).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::event::ChatId;
use engine::time::{NANOS_PER_SEC, Nanos};
use parking_lot::Mutex;

use super::Backend;
use crate::updates::Incoming;

/// How long an answer about one person in one group is kept.
pub const ADMIN_CACHE_NANOS: Nanos = 60 * NANOS_PER_SEC;

/// The most answers kept at once.
pub const ADMIN_CACHE_ENTRIES: usize = 10_000;

/// The reply to a group member who is not one of its administrators.
pub const NOT_AN_ADMIN: &str =
    "Only this group's administrators can change its settings or subscription.";

/// The reply when Telegram could not say who administers the group.
pub const CANNOT_CHECK: &str = "I could not check that you administer this group (Telegram did \
                                not answer). Please try again in a minute.";

/// What the checks came to, for `/metrics`.
#[derive(Debug, Default)]
pub struct RightsCounters {
    /// `getChatMember` lookups made (answers not found in the cache).
    pub lookups: AtomicU64,
    /// Of those, the ones that failed (each refused its command).
    pub lookup_failures: AtomicU64,
    /// Commands refused because their sender does not administer the group.
    pub refused: AtomicU64,
    /// Answers not kept because the cache was full of live ones.
    pub uncached: AtomicU64,
}

/// The check, with its cache of answers.
#[derive(Debug, Default)]
pub(super) struct Rights {
    /// (group, user) → (administers it, when Telegram said so). A std map
    /// behind parking_lot's Mutex: never held across an await.
    cache: Mutex<HashMap<(ChatId, i64), (bool, Nanos)>>,
    counters: Arc<RightsCounters>,
}

impl Rights {
    /// A check that counts into `counters`.
    pub(super) fn counting(counters: Arc<RightsCounters>) -> Rights {
        Rights {
            cache: Mutex::default(),
            counters,
        }
    }

    /// `Ok` if the sender of `req` may change its chat at `now`; otherwise
    /// the reply that says why not.
    pub(super) async fn may_change<B: Backend>(
        &self,
        backend: &B,
        req: &Incoming,
        now: Nanos,
    ) -> Result<(), &'static str> {
        let chat = req.chat_id;
        if chat > 0 || req.sender_chat_id == Some(chat) {
            return Ok(());
        }
        let admin = match (req.user_id, self.cached(chat, req.user_id, now)) {
            (None, _) => false,
            (Some(_), Some(known)) => known,
            (Some(user), None) => {
                self.counters.lookups.fetch_add(1, Ordering::Relaxed);
                match backend.is_chat_admin(chat, user).await {
                    Ok(admin) => {
                        self.keep(chat, user, admin, now);
                        admin
                    }
                    Err(e) => {
                        self.counters
                            .lookup_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(chat_id = chat, user_id = user, error = %e,
                            "could not check a group administrator; command refused");
                        return Err(CANNOT_CHECK);
                    }
                }
            }
        };
        if admin {
            Ok(())
        } else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            Err(NOT_AN_ADMIN)
        }
    }

    /// The kept answer for `user` in `chat`, if it is younger than
    /// [`ADMIN_CACHE_NANOS`] (and not from a clock since set back).
    fn cached(&self, chat: ChatId, user: Option<i64>, now: Nanos) -> Option<bool> {
        let user = user?;
        let cache = self.cache.lock();
        let &(admin, at) = cache.get(&(chat, user))?;
        fresh(at, now).then_some(admin)
    }

    /// Keeps an answer, within [`ADMIN_CACHE_ENTRIES`].
    fn keep(&self, chat: ChatId, user: i64, admin: bool, now: Nanos) {
        let mut cache = self.cache.lock();
        if cache.len() >= ADMIN_CACHE_ENTRIES && !cache.contains_key(&(chat, user)) {
            cache.retain(|_, &mut (_, at)| fresh(at, now));
            if cache.len() >= ADMIN_CACHE_ENTRIES {
                self.counters.uncached.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        cache.insert((chat, user), (admin, now));
    }
}

/// Whether an answer given at `at` still holds at `now`.
fn fresh(at: Nanos, now: Nanos) -> bool {
    (at..at.saturating_add(ADMIN_CACHE_NANOS)).contains(&now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_holds_for_a_minute_and_not_across_a_clock_set_back() {
        assert!(fresh(100, 100));
        assert!(fresh(100, 100 + ADMIN_CACHE_NANOS - 1));
        assert!(!fresh(100, 100 + ADMIN_CACHE_NANOS));
        assert!(!fresh(100, 99));
    }

    #[test]
    fn the_cache_keeps_at_most_its_bound_and_drops_lapsed_answers_first() {
        let rights = Rights::default();
        for user in 0..ADMIN_CACHE_ENTRIES as i64 {
            rights.keep(-1, user, true, 0);
        }
        // Full of live answers: a new one is not kept, and counted.
        rights.keep(-1, -7, true, 1);
        assert_eq!(rights.cached(-1, Some(-7), 1), None);
        assert_eq!(rights.counters.uncached.load(Ordering::Relaxed), 1);
        // An answer already kept is refreshed all the same.
        rights.keep(-1, 5, false, 1);
        assert_eq!(rights.cached(-1, Some(5), 1), Some(false));
        // Once they lapse, they make room.
        let later = ADMIN_CACHE_NANOS + 2;
        rights.keep(-1, -7, true, later);
        assert_eq!(rights.cached(-1, Some(-7), later), Some(true));
        assert!(rights.cache.lock().len() <= 2);
    }
}
