//! A Rust port of the 2015 ITS chat client-server (see `README.md`).
//!
//! The crate is split so that everything but the event loop can be tested
//! without sockets: [`wire`] turns bytes into lines and commands and holds the
//! reply catalogue, [`core`] is the state machine of who is registered and who
//! is online, [`store`] keeps the accounts file and runs the password hashing
//! off the loop, and [`server`] is the thin mio shell that connects them to real
//! sockets. The terminal client (`client/`) and the load generator (`bench/`)
//! are packages of their own in the same workspace.

pub mod core;
pub mod server;
pub mod store;
pub mod transport;
pub mod wire;
