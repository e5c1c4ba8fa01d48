//! What the core says, before any door turns it into bytes.
//!
//! The core decides *what* a connection is told; each dialect (the seed's line
//! protocol today, IRC next) decides *how* it looks on the wire. Keeping the
//! two apart is what lets one chat have several doors: a broadcast is one
//! [`Event`], rendered once per dialect present, not once per reader.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::chat::ConnId;
use crate::wire::protocol::Reply;

/// One thing a connection is told.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A fixed reply of the catalogue (SPEC section 3).
    Reply(Reply),
    /// A prompt of the `login` / `regist` dialogue.
    Prompt(Prompt),
    /// The list of commands.
    Help,
    /// `send-to` named a user who is not logged in.
    NotOnline(&'a str),
    /// `list-user`: every logged-in name, in byte order.
    Users(Users<'a>),
    /// A private message from `from`.
    Private { from: &'a str, text: &'a str },
    /// A broadcast from `from`.
    Chat { from: &'a str, text: &'a str },
    /// `user` left (logged out, quit, or was disconnected).
    Offline(&'a str),
    /// `send-to` named a registered user who is not online, and the message
    /// is on disk for them (`STORED`, SPEC section 9).
    Stored(&'a str),
    /// `send-to` named a user whose inbox is full (`INBOX_FULL`).
    InboxFull(&'a str),
    /// A message from before this login: a replayed broadcast or a stored
    /// private message, with when it was sent.
    Replayed(Replayed<'a>),
}

/// A message delivered after the fact (SPEC section 9). The time is the
/// core's, passed in; how it reads (time zone, today or not) is the
/// dialect's business.
#[derive(Debug, Clone, Copy)]
pub struct Replayed<'a> {
    pub from: &'a str,
    pub text: &'a str,
    /// When it was sent, seconds since the Unix epoch.
    pub at: i64,
    /// Now, by the same clock: the marker shows the date only when `at` is
    /// not from today.
    pub now: i64,
    /// A stored private message, or (false) a replayed broadcast.
    pub private: bool,
}

/// The two prompts of the dialogue that a bare `login` or `regist` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Username,
    Password,
}

/// A view of who is online, in byte order, without copying the names.
#[derive(Debug, Clone, Copy)]
pub struct Users<'a>(pub(crate) &'a BTreeMap<Arc<str>, ConnId>);

impl<'a> Users<'a> {
    /// The names, in byte order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.keys().map(|name| &**name)
    }
}
