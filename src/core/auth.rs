//! The slow work the chat core hands off: hashing a password for a new
//! account (and storing it), or checking one at login.
//!
//! These types sit between the core, which starts jobs and takes their
//! outcomes, and the store, which runs them on worker threads; neither
//! depends on the other.

use std::sync::Arc;

use super::chat::ConnId;

/// Which connection a job is for: its [`ConnId`], which the shell never
/// reuses, so a result for a connection that has gone reaches nobody.
pub type Ticket = ConnId;

/// Slow work the core hands to the accounts worker.
#[derive(Debug)]
pub enum AuthJob {
    /// Hash the password, append the account to the file and fsync it.
    Register {
        ticket: Ticket,
        username: String,
        password: String,
    },
    /// Check a password against a stored hash; `None` means the user does not
    /// exist and the worker verifies against a dummy hash, so that an unknown
    /// name costs as much time as a wrong password.
    Verify {
        ticket: Ticket,
        phc: Option<Arc<str>>,
        password: String,
    },
}

/// What came of an [`AuthJob`].
#[derive(Debug)]
pub enum AuthOutcome {
    /// The account is durably stored under this PHC hash string.
    Registered { username: String, phc: Arc<str> },
    /// The account could not be written; the name must be freed.
    StorageFailed { username: String },
    /// Whether the password matched.
    Verified(bool),
}

/// A finished [`AuthJob`], sent back to the loop.
#[derive(Debug)]
pub struct AuthDone {
    pub ticket: Ticket,
    pub outcome: AuthOutcome,
}
