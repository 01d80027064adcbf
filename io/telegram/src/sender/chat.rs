//! Per chat: the two queues of a chat and when it may send next, and the
//! chats found unreachable, whose alerts are dropped on arrival.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use engine::event::ChatId;

use super::{Lane, Message};

/// A message held, with the attempts made to send it.
pub(super) struct Pending {
    pub(super) msg: Message,
    pub(super) attempts: u32,
}

/// One chat's state; it exists while the chat has messages, or had one
/// answered less than `chat_interval` ago.
pub(super) struct Chat {
    pub(super) replies: VecDeque<Pending>,
    pub(super) alerts: VecDeque<Pending>,
    pub(super) in_flight: Option<Pending>,
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
