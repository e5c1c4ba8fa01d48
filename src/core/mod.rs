//! The chat itself, without I/O: who is registered and online, and what each
//! line makes the server say ([`chat`]), and the hashing jobs it hands off
//! ([`auth`]).

pub mod auth;
pub mod chat;
pub mod limits;
