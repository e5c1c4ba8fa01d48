//! A Rust port of the 2015 ITS chat client-server (see `README.md`).
//!
//! The crate is split so that everything but the event loop can be tested
//! without sockets: [`framing`] turns bytes into lines, [`protocol`] turns lines
//! into commands and holds the reply catalogue, [`chat`] is the state machine of
//! who is registered and who is online, [`accounts`] keeps the accounts file and
//! runs the password hashing off the loop, and [`server`] is the thin mio shell
//! that connects them to real sockets. [`client`] is the terminal client.

pub mod accounts;
pub mod chat;
pub mod client;
pub mod framing;
pub mod protocol;
pub mod server;
