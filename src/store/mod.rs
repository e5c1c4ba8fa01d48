//! What outlives the process: the accounts file and the worker threads that
//! hash passwords and write to it.

pub mod accounts;
