//! The messages that wait, as the core keeps them: one inbox per user with
//! its caps, and the last broadcasts for `--replay` (SPEC section 9).
//!
//! This is the core's view only; what is durable is the store's business,
//! reached through [`HistoryJob`](super::history::HistoryJob)s. A message
//! enters an inbox only once the store says it is on disk, and while its
//! write is in flight it holds a reservation, so that the caps count it and
//! a burst cannot overshoot them.

use std::collections::{HashMap, VecDeque};

use super::history::{Broadcast, HistoryConfig, Loaded, Message};

/// One user's waiting messages.
#[derive(Debug, Default)]
struct Inbox {
    /// Stored, oldest first.
    waiting: VecDeque<Message>,
    /// Writes in flight for this user.
    pending: usize,
    /// Text bytes of `waiting` and of the writes in flight.
    bytes: usize,
}

/// Every inbox and the replay buffer.
#[derive(Debug)]
pub struct Inboxes {
    config: HistoryConfig,
    boxes: HashMap<String, Inbox>,
    /// The last `config.replay` broadcasts, oldest first.
    recent: VecDeque<Broadcast>,
    next_id: u64,
}

impl Inboxes {
    /// The inboxes as the store had them at start.
    pub fn new(config: HistoryConfig, loaded: Loaded) -> Self {
        let mut inboxes = Self {
            config,
            boxes: HashMap::new(),
            recent: VecDeque::new(),
            next_id: loaded.next_id.max(1),
        };
        for message in loaded.messages {
            let inbox = inboxes.boxes.entry(message.to.clone()).or_default();
            inbox.bytes += message.text.len();
            inbox.waiting.push_back(message);
        }
        for broadcast in loaded.broadcasts {
            inboxes.remember(broadcast);
        }
        inboxes
    }

    /// A fresh id for a new record.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        // A hand-written file could hold the largest id: never panic on it.
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Reserves room for a message of `len` text bytes to `to`; false when
    /// the inbox is full (`INBOX_FULL`).
    pub fn reserve(&mut self, to: &str, len: usize) -> bool {
        let inbox = self.boxes.entry(to.to_owned()).or_default();
        if inbox.waiting.len() + inbox.pending >= self.config.max_messages
            || inbox.bytes + len > self.config.max_bytes
        {
            if inbox.waiting.is_empty() && inbox.pending == 0 {
                self.boxes.remove(to);
            }
            return false;
        }
        inbox.pending += 1;
        inbox.bytes += len;
        true
    }

    /// The write of a reserved message finished: it waits now if `stored`,
    /// or its reservation is given back.
    pub fn settle(&mut self, message: Message, stored: bool) {
        let inbox = self.boxes.entry(message.to.clone()).or_default();
        inbox.pending = inbox.pending.saturating_sub(1);
        if stored {
            inbox.waiting.push_back(message);
        } else {
            inbox.bytes = inbox.bytes.saturating_sub(message.text.len());
            if inbox.waiting.is_empty() && inbox.pending == 0 {
                self.boxes.remove(&message.to);
            }
        }
    }

    /// Takes every stored message for `to`, oldest first; writes still in
    /// flight keep their reservation.
    pub fn take(&mut self, to: &str) -> Vec<Message> {
        let Some(inbox) = self.boxes.get_mut(to) else {
            return Vec::new();
        };
        let taken: Vec<Message> = inbox.waiting.drain(..).collect();
        let freed: usize = taken.iter().map(|m| m.text.len()).sum();
        inbox.bytes = inbox.bytes.saturating_sub(freed);
        if inbox.pending == 0 {
            self.boxes.remove(to);
        }
        taken
    }

    /// Whether broadcasts are kept for replay at all.
    pub fn replaying(&self) -> bool {
        self.config.replay > 0
    }

    /// Keeps a broadcast for replay, forgetting the oldest past the limit.
    pub fn remember(&mut self, broadcast: Broadcast) {
        if self.config.replay == 0 {
            return;
        }
        if self.recent.len() >= self.config.replay {
            self.recent.pop_front();
        }
        self.recent.push_back(broadcast);
    }

    /// The broadcasts to replay at `now`, oldest first, without those
    /// past `--history-days`.
    pub fn recent(&self, now: i64) -> impl Iterator<Item = &Broadcast> {
        let cutoff = self.config.cutoff(now);
        self.recent.iter().filter(move |b| b.at >= cutoff)
    }

    /// The oldest time still delivered at `now`.
    pub fn cutoff(&self, now: i64) -> i64 {
        self.config.cutoff(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, to: &str, text: &str) -> Message {
        Message {
            id,
            at: 0,
            to: to.into(),
            from: "s".into(),
            text: text.into(),
        }
    }

    #[test]
    fn caps_count_reservations_and_free_on_failure_and_take() {
        let mut boxes = Inboxes::new(
            HistoryConfig {
                replay: 2,
                max_messages: 2,
                max_bytes: 10,
                days: 1,
            },
            Loaded::default(),
        );
        assert!(boxes.reserve("u", 4));
        assert!(boxes.reserve("u", 4));
        assert!(!boxes.reserve("u", 1), "two messages at most");
        boxes.settle(message(1, "u", "abcd"), false);
        assert!(!boxes.reserve("u", 7), "ten bytes at most");
        assert!(boxes.reserve("u", 6));
        boxes.settle(message(2, "u", "abcd"), true);
        assert_eq!(boxes.take("u").len(), 1);
        // The write of six bytes is still in flight.
        assert!(!boxes.reserve("u", 5));
        assert!(boxes.reserve("u", 4));
        for id in 0..3 {
            boxes.remember(Broadcast {
                id,
                at: 0,
                from: "a".into(),
                text: "t".into(),
            });
        }
        assert_eq!(boxes.recent(0).map(|b| b.id).collect::<Vec<_>>(), [1, 2]);
    }
}
