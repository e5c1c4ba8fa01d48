//! What the core hands to the history store (SPEC section 9), and what comes
//! back: the seam between the chat and wherever messages wait.
//!
//! Like [`super::auth`], these are plain values: the core never sees a file,
//! so the file store of today and a Redis store of later (SPEC section 10)
//! take the same jobs and give the same outcomes.

use super::chat::ConnId;

/// A private message for a user who was not online, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique and increasing within one history: what a delivered mark
    /// counts up to.
    pub id: u64,
    /// When it was sent, in seconds since the Unix epoch (UTC).
    pub at: i64,
    pub to: String,
    pub from: String,
    /// Cleaned and trimmed as any relayed text: not empty, no `\n`.
    pub text: String,
}

/// A broadcast kept for `--replay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub id: u64,
    pub at: i64,
    pub from: String,
    pub text: String,
}

/// Work for the history store.
#[derive(Debug)]
pub enum HistoryJob {
    /// Write the message durably, then answer with a [`HistoryDone`] for
    /// `ticket` (the sender's connection, held until then).
    Store { ticket: ConnId, message: Message },
    /// Keep a broadcast for later logins; no answer.
    Broadcast(Broadcast),
    /// Every message to `to` up to id `upto` has been handed to its
    /// connection: do not deliver them again. No answer.
    Delivered { to: String, upto: u64 },
}

/// What came of a [`HistoryJob::Store`].
#[derive(Debug)]
pub struct HistoryDone {
    pub ticket: ConnId,
    /// Whether the message is durably stored; if not, nothing is kept.
    pub stored: bool,
    pub message: Message,
}

/// What a history holds when the server starts: the messages still waiting,
/// oldest first, and the broadcasts that may be replayed, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub messages: Vec<Message>,
    pub broadcasts: Vec<Broadcast>,
    /// The id the next record gets: above every id ever written.
    pub next_id: u64,
}

/// The per-user limits and the replay length (SPEC section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Broadcasts replayed after each login (`--replay`).
    pub replay: usize,
    /// Messages that may wait for one user.
    pub max_messages: usize,
    /// Bytes of text that may wait for one user.
    pub max_bytes: usize,
    /// Messages and broadcasts older than this many days are not delivered
    /// (`--history-days`; the store drops them from the file too).
    pub days: u32,
}

impl HistoryConfig {
    /// The oldest time, in seconds since the Unix epoch, that is still
    /// delivered at `now`.
    pub fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(i64::from(self.days.max(1)) * 86_400)
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            replay: 0,
            max_messages: 100,
            max_bytes: 64 * 1024,
            days: 30,
        }
    }
}
