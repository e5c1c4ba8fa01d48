//! The chat itself, without I/O: who is registered and online, and what each
//! line makes the server say ([`chat`]), what it says as typed events
//! ([`event`]), the hashing jobs it hands off ([`auth`]), and the limits
//! against abuse ([`limits`]).

pub mod auth;
pub mod chat;
pub mod event;
pub mod history;
pub mod inbox;
pub mod limits;
