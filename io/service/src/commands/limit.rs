//! How often one chat may command the bot: a rate per chat, kept before a
//! command does any work, so that a chat sending thousands costs each of
//! them a map lookup and nothing else, and delays no other chat.
//!
//! Over its rate a chat's commands are dropped unanswered; the first one
//! over in a minute is told to slow down, and every one is counted.
//! `governor`'s keyed limiter (GCRA) keeps one small state per chat; the
//! chats that have not sent a command for a full period are swept every
//! [`SWEEP_EVERY`] checks, so its size is bounded by the chats active
//! within one period.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::event::ChatId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of the chats not seen for a period.
const SWEEP_EVERY: u64 = 4096;

/// The commands' figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct CommandCounters {
    /// Commands let through to be answered.
    pub answered: AtomicU64,
    /// Commands dropped over their chat's rate.
    pub rate_limited: AtomicU64,
    /// Notices (payments, reminders) not queued: their chat or the reply
    /// lane was full.
    pub notices_dropped: AtomicU64,
    /// Unmatched payments below the dust threshold, not told to admins.
    pub unmatched_dust: AtomicU64,
}

/// What to do with a chat's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Over the rate: drop it, and tell the chat it may send again after
    /// this long.
    SlowDown(Duration),
    /// Over the rate, and told so already: drop it.
    Drop,
}

/// The rate of each chat's commands.
pub struct CommandLimit {
    commands: DefaultKeyedRateLimiter<ChatId>,
    /// One "slow down" a minute per chat at most.
    told: DefaultKeyedRateLimiter<ChatId>,
    checks: AtomicU64,
}

impl std::fmt::Debug for CommandLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLimit")
            .field("chats", &self.commands.len())
            .finish()
    }
}

impl CommandLimit {
    /// `per_minute` commands a minute per chat on average, `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> CommandLimit {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        CommandLimit {
            commands: RateLimiter::keyed(quota),
            told: RateLimiter::keyed(Quota::per_minute(one)),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether `chat`'s command now is answered, counted in `counters`.
    pub fn check(&self, chat: ChatId, counters: &CommandCounters) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        match self.commands.check_key(&chat) {
            Ok(()) => {
                counters.answered.fetch_add(1, Ordering::Relaxed);
                Verdict::Answer
            }
            Err(not_until) => {
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                if self.told.check_key(&chat).is_ok() {
                    Verdict::SlowDown(not_until.wait_time_from(DefaultClock::default().now()))
                } else {
                    Verdict::Drop
                }
            }
        }
    }

    /// Forgets the chats whose state is back to full (no command for a
    /// period).
    fn sweep(&self) {
        self.commands.retain_recent();
        self.commands.shrink_to_fit();
        self.told.retain_recent();
        self.told.shrink_to_fit();
    }

    /// Chats held now.
    #[cfg(test)]
    fn chats(&self) -> usize {
        self.commands.len()
    }
}

/// The words for a chat over its rate.
pub fn slow_down_text(wait: Duration) -> String {
    format!(
        "You are sending commands faster than I answer them; the ones over \
         the limit are ignored. Try again in {} s.",
        wait.as_secs().max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_over_its_rate_is_told_once_then_dropped_and_others_go_on() {
        let limit = CommandLimit::new(20, 5);
        let counters = CommandCounters::default();
        let verdicts: Vec<Verdict> = (0..100).map(|_| limit.check(1, &counters)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Answer));
        assert!(matches!(verdicts[5], Verdict::SlowDown(w) if w > Duration::ZERO));
        assert!(verdicts[6..].iter().all(|v| *v == Verdict::Drop));
        assert_eq!(limit.check(2, &counters), Verdict::Answer);
        assert_eq!(counters.answered.load(Ordering::Relaxed), 6);
        assert_eq!(counters.rate_limited.load(Ordering::Relaxed), 95);
    }

    #[test]
    fn the_chats_held_are_swept() {
        let limit = CommandLimit::new(6000, 1);
        let counters = CommandCounters::default();
        for chat in 0..SWEEP_EVERY as i64 - 1 {
            limit.check(chat, &counters);
        }
        assert_eq!(limit.chats(), SWEEP_EVERY as usize - 1);
        // 6,000 a minute is one per 10 ms: a chat is back to full then.
        std::thread::sleep(Duration::from_millis(20));
        limit.check(-1, &counters);
        assert!(limit.chats() <= 1, "{}", limit.chats());
    }
}
