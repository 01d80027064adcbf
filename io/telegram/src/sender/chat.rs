//! Per chat: the two queues of a chat and when it may send next, the
//! groups' recent sends (Telegram's per-group limit), and the chats found
//! unreachable, whose alerts are dropped on arrival.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use engine::event::ChatId;

use super::shared::Ticket;
use super::{Lane, Message};

/// A message held, with the attempts made to send it.
pub(super) struct Pending {
    pub(super) msg: Message,
    pub(super) attempts: u32,
    /// When the message was taken, until its first attempt starts.
    pub(super) queued_at: Option<Instant>,
}

/// One chat's state; it exists while the chat has messages, or had one
/// answered less than `chat_interval` ago.
pub(super) struct Chat {
    pub(super) replies: VecDeque<Pending>,
    pub(super) alerts: VecDeque<Pending>,
    pub(super) in_flight: Option<Pending>,
    /// Its reservation in the shared limits, while in flight.
    pub(super) ticket: Option<Ticket>,
    /// The earliest its next message may leave.
    pub(super) next_at: Instant,
    /// Whether it is in the scheduler's ready line of each lane, so that
    /// it is never in one twice.
    pub(super) in_ready: [bool; 2],
}

impl Chat {
    pub(super) fn new(now: Instant) -> Chat {
        Chat {
            replies: VecDeque::new(),
            alerts: VecDeque::new(),
            in_flight: None,
            ticket: None,
            next_at: now,
            in_ready: [false; 2],
        }
    }

    pub(super) fn has_work(&self) -> bool {
        !self.replies.is_empty() || !self.alerts.is_empty()
    }

    pub(super) fn queue(&mut self, lane: Lane) -> &mut VecDeque<Pending> {
        match lane {
            Lane::Reply => &mut self.replies,
            Lane::Alert => &mut self.alerts,
        }
    }
}

/// The sends to groups (chats with a negative id) within the last
/// `window`, so that a group is sent no more than `limit` of them per
/// `window` (Telegram: 20 a minute), however often its chat state is
/// forgotten. Bounded by the sends of one window.
pub(super) struct GroupSends {
    by_group: HashMap<ChatId, VecDeque<Instant>>,
    order: VecDeque<(Instant, ChatId)>,
    limit: usize,
    window: Duration,
}

/// Whether Telegram's per-group limit applies to a chat.
pub(super) fn is_group(chat: ChatId) -> bool {
    chat < 0
}

impl GroupSends {
    pub(super) fn new(limit: usize, window: Duration) -> GroupSends {
        GroupSends {
            by_group: HashMap::new(),
            order: VecDeque::new(),
            limit,
            window,
        }
    }

    /// A message to `chat` was sent (answered) at `at`.
    pub(super) fn record(&mut self, chat: ChatId, at: Instant) {
        if !is_group(chat) {
            return;
        }
        self.expire(at);
        self.by_group.entry(chat).or_default().push_back(at);
        self.order.push_back((at, chat));
    }

    /// The earliest `chat`'s next message may leave for its group's limit:
    /// `None` if the limit does not hold it back.
    pub(super) fn release(&mut self, chat: ChatId, now: Instant) -> Option<Instant> {
        if !is_group(chat) {
            return None;
        }
        self.expire(now);
        let sends = self.by_group.get(&chat)?;
        let n = sends.len();
        (n >= self.limit).then(|| sends[n - self.limit] + self.window)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, chat)) = self.order.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            if let Some(sends) = self.by_group.get_mut(&chat) {
                sends.pop_front();
                if sends.is_empty() {
                    self.by_group.remove(&chat);
                }
            }
        }
    }
}

/// Chats found unreachable, remembered for a while, oldest first out.
pub(super) struct Unreachable {
    since: HashMap<ChatId, Instant>,
    order: VecDeque<(Instant, ChatId)>,
    ttl: Duration,
    capacity: usize,
}

impl Unreachable {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Unreachable {
        Unreachable {
            since: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity,
        }
    }

    pub(super) fn insert(&mut self, chat: ChatId, now: Instant) {
        self.expire(now);
        self.since.insert(chat, now);
        self.order.push_back((now, chat));
        while self.since.len() > self.capacity {
            self.pop_oldest();
        }
    }

    pub(super) fn contains(&mut self, chat: ChatId, now: Instant) -> bool {
        self.expire(now);
        self.since.contains_key(&chat)
    }

    pub(super) fn remove(&mut self, chat: ChatId) {
        self.since.remove(&chat);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.ttl)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((at, chat)) = self.order.pop_front()
            && self.since.get(&chat) == Some(&at)
        {
            self.since.remove(&chat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_waits_for_its_oldest_send_in_the_window_to_age_out() {
        let mut g = GroupSends::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for i in 0..3 {
            assert_eq!(g.release(-5, t0 + s(i)), None);
            g.record(-5, t0 + s(i));
            g.record(7, t0 + s(i)); // a private chat: never held back
        }
        assert_eq!(g.release(-5, t0 + s(3)), Some(t0 + s(60)));
        assert_eq!(g.release(-6, t0 + s(3)), None, "another group");
        assert_eq!(g.release(7, t0 + s(3)), None);
        g.record(-5, t0 + s(60));
        assert_eq!(g.release(-5, t0 + s(60)), Some(t0 + s(61)));
        assert_eq!(g.release(-5, t0 + s(200)), None, "all aged out");
        assert!(g.by_group.is_empty() && g.order.is_empty());
    }

    #[test]
    fn unreachable_chats_are_forgotten_after_their_ttl_and_bounded() {
        let mut u = Unreachable::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        u.insert(1, t0);
        u.insert(2, t0 + Duration::from_secs(1));
        assert!(u.contains(1, t0 + Duration::from_secs(2)));
        u.insert(3, t0 + Duration::from_secs(2));
        assert!(!u.contains(1, t0 + Duration::from_secs(2)), "capacity 2");
        assert!(u.contains(2, t0 + Duration::from_secs(2)));
        assert!(!u.contains(2, t0 + Duration::from_secs(11)), "expired");
        u.remove(3);
        u.insert(3, t0 + Duration::from_secs(11));
        // The first insertion of 3 expiring must not forget the second.
        assert!(u.contains(3, t0 + Duration::from_secs(12)));
    }
}
