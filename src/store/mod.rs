//! What outlives the process: the accounts file and the worker threads that
//! hash passwords and write to it.
//!
//! - [`parse`]: the file's format and rules, on bytes, with no I/O;
//! - [`accounts`]: the file itself: open, lock, check, append;
//! - [`hash`]: argon2id with one reused block of memory per worker;
//! - [`worker`]: the threads that run hashes and writes off the event loop;
//! - [`history`], [`history_parse`]: the history file of SPEC section 9
//!   and its writer thread, and its format as a pure parser;
//! - [`file`]: what every store file shares: opened one way, appended to
//!   with an fsync, cut back to its last whole line when an append fails;
//! - [`lock`]: the one-server-per-file lock, shared with later stores.

pub mod accounts;
pub(crate) mod file;
pub mod hash;
pub mod history;
pub mod history_parse;
pub mod lock;
pub mod parse;
pub mod worker;

pub use lock::lock_exclusive;
