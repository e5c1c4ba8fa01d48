//! Limits against abuse (SPEC §7), without I/O: no sockets, no clock, no
//! threads. Every method takes the time as `now: Instant`, so the loop reads
//! the clock once per poll round and tests drive a fake clock.
//!
//! # What each limit is for
//!
//! * **Flood control** ([`TokenBucket`], one per connection, every address
//!   including exempt ones): one fast sender must not push every other
//!   reader past the 1 MiB output limit. Over the rate, its lines are not
//!   dropped; the loop just reads it more slowly.
//! * **Connections per address** ([`AddressTable::connect`]): one address
//!   must not take all of `--max-clients`, nor churn connections to reset
//!   the per-connection failed-login count.
//! * **Password guessing** ([`AddressTable::begin_login`]): after
//!   `--max-login-fails` failures in 10 minutes every login from the address
//!   is `THROTTLED` without a hash, so guessing costs the attacker time and
//!   us no CPU.
//! * **Registrations per address** ([`AddressTable::begin_regist`]): one
//!   address must not fill the accounts file or squat on names.
//! * **Fair hashing** (also in `begin_*`): one address may hold at most a
//!   quarter of `--max-pending-auth` jobs, so it cannot keep everybody else
//!   at `BUSY`.
//!
//! Per-address state is bounded: [`AddressTable`] holds at most
//! [`LimitsConfig::max_tracked_addrs`] entries (default 65 536) whatever
//! the number of addresses seen, and evicts idle ones. Its heap never
//! exceeds [`AddressTable::heap_bound`]: for the default, 7.25 MiB (116 B
//! per entry: a 48-byte entry plus its hash-map buckets, which hashbrown
//! keeps at most half full under churn). The unit test
//! `a_million_addresses_stay_within_the_cap` feeds a million distinct
//! addresses and checks the entry count and the containers' real
//! capacities against that bound.
//!
//! # Call protocol
//!
//! The loop (one [`AddressTable`] for the server, built from the CLI's
//! [`LimitsConfig`]):
//! 1. On accept, after the `--max-clients` check: `table.connect(peer.ip(),
//!    now)`. `Err(TooManyConns)`: write `TOO_MANY_CONNS`, close. `Ok(claim)`:
//!    keep the [`ConnClaim`] in the connection, and give it a
//!    `cfg.bucket(now)`.
//! 2. For each complete line read, before handing it to the core:
//!    `bucket.try_take(now)`. On `false`, leave this and later lines in the
//!    input buffer, stop reading the socket (no more `read` calls, so the
//!    kernel buffer fills and TCP slows the sender), and arm a timer at
//!    `bucket.ready_at(now)`; on that timer, carry on from the buffered
//!    lines. No other connection is affected. No syscall or allocation per
//!    line: the check is a few integer operations on the connection's
//!    struct.
//! 3. On close, for any reason: `table.disconnect(claim, now)`.
//!
//! The core, for a `login` or `regist` that has passed syntax checks (and,
//! for `regist`, the `NAME_TAKEN` check) and the global `--max-pending-auth`
//! check, and **before** looking up the name, so the reply and its timing do
//! not depend on whether the name exists:
//! 1. `table.begin_login(ip, now)` / `table.begin_regist(ip, now)`.
//!    `Err(Throttled)`: reply `THROTTLED` (not a failed login; no name
//!    reserved). `Err(Busy)`: reply `BUSY`. `Ok(claim)`: reserve the name
//!    (regist), start the hash job, and keep the [`AuthClaim`] with it.
//! 2. When the job's outcome is known, even if the connection has gone:
//!    `table.finish(claim, outcome, now)` with [`AuthOutcome::Succeeded`]
//!    (login ok / `REGIST_OK`), [`AuthOutcome::Failed`] (`LOGIN_FAIL` /
//!    `STORAGE_ERROR`) or [`AuthOutcome::Abandoned`] (never ran).
//!
//! Exempt addresses (`--exempt`) get empty claims and are never stored.
//! A limit set to 0 means no limit (as `--flood-rate 0` turns flood control
//! off).

mod addr;
mod bucket;
mod table;

pub use addr::{AddrKey, Exempt, ExemptParseError};
pub use bucket::TokenBucket;
pub use table::{
    AddressTable, AuthClaim, AuthOutcome, ConnClaim, LOGIN_FAIL_WINDOW_SECS, NEW_CONN_WINDOW_SECS,
    REGIST_WINDOW_SECS, Refused,
};

use std::time::Instant;

/// The knobs of SPEC §7, with its defaults. A limit of 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `--flood-burst N` (default 20): lines a connection may send at once.
    pub flood_burst: u32,
    /// `--flood-rate R` (default 5): lines per second after the burst; 0
    /// turns flood control off.
    pub flood_rate: u32,
    /// `--max-conns-per-ip N` (default 20): connections open at once from
    /// one address.
    pub max_conns_per_ip: u32,
    /// `--max-new-conns-per-ip N` (default 60): connections opened per
    /// minute from one address.
    pub max_new_conns_per_ip: u32,
    /// `--max-login-fails N` (default 10): failed logins from one address in
    /// 10 minutes before its logins are `THROTTLED`.
    pub max_login_fails: u32,
    /// `--max-regist-per-ip N` (default 20): accounts created per hour from
    /// one address.
    pub max_regist_per_ip: u32,
    /// `--max-pending-auth N` (default 256, SPEC §4): the global hash queue;
    /// one address may hold a quarter of it, at least one job.
    pub max_pending_auth: usize,
    /// `--exempt LIST` (default `127.0.0.0/8,::1`): addresses free of the
    /// per-address limits, not of flood control.
    pub exempt: Exempt,
    /// Most addresses tracked at once (no flag; default 65 536). Keep it
    /// well above `--max-clients` + `--max-pending-auth`, the most entries
    /// that can be live at once, so eviction always finds idle ones fast.
    pub max_tracked_addrs: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            flood_burst: 20,
            flood_rate: 5,
            max_conns_per_ip: 20,
            max_new_conns_per_ip: 60,
            max_login_fails: 10,
            max_regist_per_ip: 20,
            max_pending_auth: 256,
            exempt: Exempt::loopback(),
            max_tracked_addrs: 65_536,
        }
    }
}

impl LimitsConfig {
    /// A new connection's flood-control bucket, full.
    pub fn bucket(&self, now: Instant) -> TokenBucket {
        TokenBucket::new(self.flood_burst, self.flood_rate, now)
    }
}
