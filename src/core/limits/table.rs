//! Per-address accounting in bounded memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::LimitsConfig;
use super::addr::{AddrKey, Exempt};

/// `--max-new-conns-per-ip` counts connections opened in this many seconds.
pub const NEW_CONN_WINDOW_SECS: u32 = 60;
/// `--max-login-fails` counts failed logins in this many seconds.
pub const LOGIN_FAIL_WINDOW_SECS: u32 = 600;
/// `--max-regist-per-ip` counts registrations in this many seconds.
pub const REGIST_WINDOW_SECS: u32 = 3600;

/// How many idle candidates the eviction scan weighs before choosing one: a
/// small sample keeps eviction O(1) while still usually finding an entry
/// with nothing worth remembering.
const EVICT_SAMPLE: u32 = 8;
/// Idle entries the table looks at, and drops if they remember nothing,
/// each time it adds one; this keeps stale entries from piling up without a
/// timer.
const SWEEP_PER_INSERT: u32 = 2;

/// Why the table refused; each maps to one reply key of SPEC §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `TOO_MANY_CONNS`, then close: over `--max-conns-per-ip` open, or over
    /// `--max-new-conns-per-ip` opened in the last minute.
    TooManyConns,
    /// `THROTTLED`: a `login` from an address over `--max-login-fails`, or a
    /// `regist` over `--max-regist-per-ip`. No hash, no name reserved, not a
    /// failed login.
    Throttled,
    /// `BUSY`: the address holds its whole share of the hash queue, or has
    /// as many logins in flight as it has failures left (see
    /// [`AddressTable::begin_login`]). Not a failed login, no name reserved.
    Busy,
}

/// Proof that a connection was counted, to hand back to
/// [`AddressTable::disconnect`] when it closes. Exempt and untracked
/// connections get an empty claim, whose release does nothing; so does the
/// `Default` one, which lets the loop `std::mem::take` it out of a
/// connection.
#[must_use = "give it back to AddressTable::disconnect when the connection closes"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnClaim {
    key: Option<AddrKey>,
}

impl ConnClaim {
    /// The address counted, if any (`None`: exempt, or not tracked).
    pub fn key(&self) -> Option<AddrKey> {
        self.key
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    #[default]
    Login,
    Regist,
}

/// Proof that a hash job was admitted, to hand back to
/// [`AddressTable::finish`] exactly once when the job's outcome is known
/// (even if its connection has closed meanwhile). The job can carry it.
#[must_use = "give it back to AddressTable::finish when the job ends"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuthClaim {
    key: Option<AddrKey>,
    kind: AuthKind,
}

impl AuthClaim {
    /// The address counted, if any (`None`: exempt, or not tracked).
    pub fn key(&self) -> Option<AddrKey> {
        self.key
    }
}

/// How a hash job ended, as far as the limits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Login: password right. Regist: account durably stored (`REGIST_OK`).
    Succeeded,
    /// Login: wrong password or unknown name (`LOGIN_FAIL`): counts one
    /// failed login. Regist: not stored (`STORAGE_ERROR`): the registration
    /// is not counted.
    Failed,
    /// The job never ran (the queue turned out full, shutdown): nothing is
    /// counted.
    Abandoned,
}

/// A fixed window: `count` events since `start` (whole seconds since the
/// table's epoch). Once `start + len` has passed the count is void.
///
/// At a window's edge a client can get up to twice the limit in a short span
/// (the end of one window and the start of the next); over any long span
/// the average stays within the limit. The window starts at the first
/// event, not on a clock boundary, so a single burst always meets the full
/// window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: u32,
    count: u32,
}

impl Window {
    fn active(&self, t: u32, len: u32) -> bool {
        self.count > 0 && t < self.start.saturating_add(len)
    }

    /// The count, cleared first if the window has passed.
    fn current(&mut self, t: u32, len: u32) -> u32 {
        if !self.active(t, len) {
            self.count = 0;
        }
        self.count
    }

    /// Counts one event at `t` (the window must be current).
    fn add(&mut self, t: u32) {
        if self.count == 0 {
            // Start one second late, so that whole-second time never makes a
            // window end early.
            self.start = t.saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
    }
}

/// What the table knows about one address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: AddrKey,
    /// Connections open now.
    open: u32,
    /// Login hash jobs admitted and not finished.
    logins: u32,
    /// Registration hash jobs admitted and not finished.
    regists: u32,
    new_conns: Window,
    fails: Window,
    /// Registrations stored or in flight this window.
    regs: Window,
}

impl Entry {
    fn new(key: AddrKey) -> Self {
        Entry {
            key,
            open: 0,
            logins: 0,
            regists: 0,
            new_conns: Window::default(),
            fails: Window::default(),
            regs: Window::default(),
        }
    }

    /// Holds something that will be released: never evicted.
    fn is_live(&self) -> bool {
        self.open > 0 || self.logins > 0 || self.regists > 0
    }

    /// Has a count that still matters.
    fn remembers(&self, t: u32) -> bool {
        self.new_conns.active(t, NEW_CONN_WINDOW_SECS)
            || self.fails.active(t, LOGIN_FAIL_WINDOW_SECS)
            || self.regs.active(t, REGIST_WINDOW_SECS)
    }

    /// Eviction preference, lowest first: entries without failed logins
    /// (forgetting those helps a guesser most), then the least recently
    /// counted.
    fn evict_rank(&self, t: u32) -> (bool, u32) {
        let newest = [self.new_conns, self.fails, self.regs]
            .iter()
            .map(|w| w.start)
            .max()
            .unwrap_or(0);
        (self.fails.active(t, LOGIN_FAIL_WINDOW_SECS), newest)
    }

    /// The registration window, renewed if it has passed. Registrations in
    /// flight are carried into the new window, so that refunding one (a
    /// failed write) never takes from a count it was not part of.
    fn regs_current(&mut self, t: u32) -> u32 {
        if !self.regs.active(t, REGIST_WINDOW_SECS) {
            self.regs.count = self.regists;
            self.regs.start = t.saturating_add(1);
        }
        self.regs.count
    }
}

/// Per-address limits of SPEC §7 (see the module documentation for the call
/// protocol).
///
/// Entries live in a dense `Vec`, found through a `HashMap` (SipHash with a
/// random key, so an attacker cannot pick addresses that collide). The
/// table never holds more than `capacity` entries:
/// * an entry with an open connection or a hash job in flight is *live* and
///   is never dropped; there are at most `--max-clients` +
///   `--max-pending-auth` of those;
/// * an idle entry whose windows have all passed remembers nothing and is
///   dropped when met (on release, or by the sweep that each insertion does);
/// * when the table is full, a new address evicts an idle entry found by a
///   clock hand over the `Vec`: the first that remembers nothing, else the
///   best of a small sample (no failed logins first, then least recent).
///   Eviction forgets counts, so an attacker with more addresses than
///   `capacity` can at worst make the table forget some of them — each of
///   which gets no more than its own per-address allowance anyway.
/// * if no idle entry exists at all (only if `capacity` is below
///   `--max-clients` + `--max-pending-auth`), the new address is admitted
///   untracked (fail open; counted in [`untracked`](Self::untracked)).
///
/// Every operation is O(1) amortised. Once the table has reached its peak
/// size, nothing allocates.
#[derive(Debug)]
pub struct AddressTable {
    epoch: Instant,
    exempt: Exempt,
    max_conns: u32,
    max_new_conns: u32,
    max_login_fails: u32,
    max_regist: u32,
    hash_share: u32,
    capacity: usize,
    index: HashMap<AddrKey, u32>,
    entries: Vec<Entry>,
    /// Clock hand for eviction and sweeping: an index into `entries`.
    hand: usize,
    untracked: u64,
}

impl AddressTable {
    /// An empty table; `now` is its epoch (times are kept as whole seconds
    /// since then, to keep entries small).
    pub fn new(cfg: &LimitsConfig, now: Instant) -> Self {
        let capacity = cfg.max_tracked_addrs.clamp(1, u32::MAX as usize);
        let share = (cfg.max_pending_auth / 4).max(1);
        AddressTable {
            epoch: now,
            exempt: cfg.exempt.clone(),
            max_conns: cfg.max_conns_per_ip,
            max_new_conns: cfg.max_new_conns_per_ip,
            max_login_fails: cfg.max_login_fails,
            max_regist: cfg.max_regist_per_ip,
            hash_share: u32::try_from(share).unwrap_or(u32::MAX),
            capacity,
            index: HashMap::new(),
            entries: Vec::new(),
            hand: 0,
            untracked: 0,
        }
    }

    /// Whether `ip` is exempt from the per-address limits (`--exempt`).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.contains(ip)
    }

    /// Counts a new connection from `ip`, or refuses it
    /// ([`Refused::TooManyConns`]: send `TOO_MANY_CONNS` and close). A
    /// refused connection is not counted against the per-minute limit, so a
    /// refused flood does not lock the address out for longer.
    pub fn connect(&mut self, ip: IpAddr, now: Instant) -> Result<ConnClaim, Refused> {
        if self.exempt.contains(ip) {
            return Ok(ConnClaim::default());
        }
        let key = AddrKey::from(ip);
        let t = self.tick(now);
        let Some(i) = self.slot(key, t) else {
            return Ok(ConnClaim::default());
        };
        let e = &mut self.entries[i];
        let over_open = limited(self.max_conns) && e.open >= self.max_conns;
        let opened = e.new_conns.current(t, NEW_CONN_WINDOW_SECS);
        let over_new = limited(self.max_new_conns) && opened >= self.max_new_conns;
        if over_open || over_new {
            self.tidy(i, t);
            return Err(Refused::TooManyConns);
        }
        e.open = e.open.saturating_add(1);
        e.new_conns.add(t);
        Ok(ConnClaim { key: Some(key) })
    }

    /// Releases a connection counted by [`connect`](Self::connect).
    pub fn disconnect(&mut self, claim: ConnClaim, now: Instant) {
        let Some(key) = claim.key else { return };
        let t = self.tick(now);
        if let Some(i) = self.find(key) {
            let e = &mut self.entries[i];
            e.open = e.open.saturating_sub(1);
            self.tidy(i, t);
        }
    }

    /// Admits a `login` hash job from `ip`, before the name is looked up or
    /// any password checked, or refuses it:
    /// * [`Refused::Throttled`] if the address has `--max-login-fails`
    ///   failed logins in its current 10-minute window;
    /// * [`Refused::Busy`] if its failures so far plus its logins in flight
    ///   reach `--max-login-fails` (each in-flight guess may yet fail, so
    ///   without this, parallel connections could get many more password
    ///   checks than the limit), or if it holds its share of the hash queue.
    ///
    /// Call it after the global `--max-pending-auth` check passed, and hand
    /// the claim to [`finish`](Self::finish) when the job ends (with
    /// [`AuthOutcome::Abandoned`] if it could not be queued after all).
    pub fn begin_login(&mut self, ip: IpAddr, now: Instant) -> Result<AuthClaim, Refused> {
        let kind = AuthKind::Login;
        if self.exempt.contains(ip) {
            return Ok(AuthClaim { key: None, kind });
        }
        let key = AddrKey::from(ip);
        let t = self.tick(now);
        let Some(i) = self.slot(key, t) else {
            return Ok(AuthClaim { key: None, kind });
        };
        let e = &mut self.entries[i];
        let fails = e.fails.current(t, LOGIN_FAIL_WINDOW_SECS);
        let limit = limited(self.max_login_fails);
        // Guesses in flight may all fail: admit no more than failures left.
        let no_guess_left = limit && fails.saturating_add(e.logins) >= self.max_login_fails;
        let full_share = e.logins.saturating_add(e.regists) >= self.hash_share;
        let verdict = if limit && fails >= self.max_login_fails {
            Err(Refused::Throttled)
        } else if no_guess_left || full_share {
            Err(Refused::Busy)
        } else {
            e.logins += 1;
            Ok(AuthClaim {
                key: Some(key),
                kind,
            })
        };
        if verdict.is_err() {
            self.tidy(i, t);
        }
        verdict
    }

    /// Admits a `regist` hash job from `ip`, before any name is reserved, or
    /// refuses it: [`Refused::Throttled`] if the address has
    /// `--max-regist-per-ip` registrations stored or in flight this hour,
    /// [`Refused::Busy`] if it holds its share of the hash queue.
    ///
    /// The registration counts from here (so parallel attempts cannot
    /// overshoot), and is refunded by [`finish`](Self::finish) unless it
    /// ends [`AuthOutcome::Succeeded`]: only accounts created count, as the
    /// spec says. Syntax errors and `NAME_TAKEN` are decided by the core
    /// before this and never count.
    pub fn begin_regist(&mut self, ip: IpAddr, now: Instant) -> Result<AuthClaim, Refused> {
        let kind = AuthKind::Regist;
        if self.exempt.contains(ip) {
            return Ok(AuthClaim { key: None, kind });
        }
        let key = AddrKey::from(ip);
        let t = self.tick(now);
        let Some(i) = self.slot(key, t) else {
            return Ok(AuthClaim { key: None, kind });
        };
        let e = &mut self.entries[i];
        let regs = e.regs_current(t);
        let verdict = if limited(self.max_regist) && regs >= self.max_regist {
            Err(Refused::Throttled)
        } else if e.logins.saturating_add(e.regists) >= self.hash_share {
            Err(Refused::Busy)
        } else {
            e.regists += 1;
            e.regs.add(t);
            Ok(AuthClaim {
                key: Some(key),
                kind,
            })
        };
        if verdict.is_err() {
            self.tidy(i, t);
        }
        verdict
    }

    /// Ends a hash job admitted by [`begin_login`](Self::begin_login) or
    /// [`begin_regist`](Self::begin_regist): frees its share of the queue
    /// and counts what `outcome` says (see [`AuthOutcome`]).
    pub fn finish(&mut self, claim: AuthClaim, outcome: AuthOutcome, now: Instant) {
        let Some(key) = claim.key else { return };
        let t = self.tick(now);
        let Some(i) = self.find(key) else { return };
        let e = &mut self.entries[i];
        match claim.kind {
            AuthKind::Login => {
                e.logins = e.logins.saturating_sub(1);
                if outcome == AuthOutcome::Failed {
                    e.fails.current(t, LOGIN_FAIL_WINDOW_SECS);
                    e.fails.add(t);
                }
            }
            AuthKind::Regist => {
                // Renew the window first, while this job is still counted
                // among those carried over.
                e.regs_current(t);
                e.regists = e.regists.saturating_sub(1);
                if outcome != AuthOutcome::Succeeded {
                    e.regs.count = e.regs.count.saturating_sub(1);
                }
            }
        }
        self.tidy(i, t);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most addresses ever tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many times a connection or job was admitted untracked because
    /// the table was full of live entries: non-zero means `capacity` is set
    /// too low for `--max-clients`; worth a warning in the log.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// The most heap this table can ever hold, in bytes, whatever the
    /// addresses seen: its `Vec` at most `capacity` rounded up to a power of
    /// two, and its `HashMap` buckets (a key/index slot plus a control byte
    /// each). With steady insertions and removals, hashbrown's tombstones
    /// make it grow until it holds at most half its capacity, so the bucket
    /// array reaches the power of two at or above `capacity × 2 × 8/7`, and
    /// stops there (after that it rehashes in place).
    ///
    /// For the default 65 536 entries: 3 MiB of entries (48 B each) and
    /// 262 144 buckets of 17 B (4.25 MiB), 7.25 MiB in all: 116 B per entry.
    /// `a_million_addresses_stay_within_the_cap` measures it.
    pub fn heap_bound(&self) -> usize {
        heap_bound(self.capacity)
    }

    /// Whole seconds since the epoch, saturating (136 years).
    fn tick(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    fn find(&self, key: AddrKey) -> Option<usize> {
        self.index.get(&key).map(|&i| i as usize)
    }

    /// The entry for `key`, created if need be; `None` if the table is full
    /// of live entries.
    fn slot(&mut self, key: AddrKey, t: u32) -> Option<usize> {
        if let Some(i) = self.find(key) {
            return Some(i);
        }
        self.sweep(t);
        if self.entries.len() >= self.capacity {
            match self.victim(t) {
                Some(v) => self.remove(v),
                None => {
                    self.untracked += 1;
                    return None;
                }
            }
        }
        let i = self.entries.len();
        self.entries.push(Entry::new(key));
        // `i < capacity <= u32::MAX`.
        self.index.insert(key, i as u32);
        Some(i)
    }

    /// Drops the entry at `i` if it is idle and remembers nothing.
    fn tidy(&mut self, i: usize, t: u32) {
        let e = &self.entries[i];
        if !e.is_live() && !e.remembers(t) {
            self.remove(i);
        }
    }

    /// Looks at a few entries under the hand and drops those that are idle
    /// and remember nothing.
    fn sweep(&mut self, t: u32) {
        for _ in 0..SWEEP_PER_INSERT {
            if self.entries.is_empty() {
                return;
            }
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let e = &self.entries[self.hand];
            if !e.is_live() && !e.remembers(t) {
                // The last entry moves here; look at it next time.
                self.remove(self.hand);
            } else {
                self.hand += 1;
            }
        }
    }

    /// An idle entry to evict: the first under the hand that remembers
    /// nothing, else the lowest [`Entry::evict_rank`] of the first
    /// `EVICT_SAMPLE` idle ones. Live entries are skipped; the hand moves on,
    /// so over successive calls each is passed once per revolution, which is
    /// O(1) amortised while live entries are a minority of the capacity.
    fn victim(&mut self, t: u32) -> Option<usize> {
        let n = self.entries.len();
        let mut best: Option<(usize, (bool, u32))> = None;
        let mut sampled = 0;
        for _ in 0..n {
            if self.hand >= n {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let e = &self.entries[i];
            if e.is_live() {
                continue;
            }
            if !e.remembers(t) {
                return Some(i);
            }
            let rank = e.evict_rank(t);
            if best.is_none_or(|(_, r)| rank < r) {
                best = Some((i, rank));
            }
            sampled += 1;
            if sampled >= EVICT_SAMPLE {
                break;
            }
        }
        best.map(|(i, _)| i)
    }

    /// Removes the entry at `i`, moving the last entry into its place.
    fn remove(&mut self, i: usize) {
        let gone = self.entries.swap_remove(i);
        self.index.remove(&gone.key);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.key, i as u32);
        }
    }
}

fn heap_bound(capacity: usize) -> usize {
    let entries = capacity.next_power_of_two() * size_of::<Entry>();
    let buckets = capacity.saturating_mul(16).div_ceil(7).next_power_of_two();
    // hashbrown adds one group (16 control bytes) past the end.
    let index = buckets * (size_of::<(AddrKey, u32)>() + 1) + 16;
    entries + index
}

/// 0 means no limit.
fn limited(max: u32) -> bool {
    max != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            exempt: Exempt::none(),
            ..LimitsConfig::default()
        }
    }

    /// The map and the vector agree, and the cap holds.
    fn check(t: &AddressTable) {
        assert_eq!(t.index.len(), t.entries.len());
        assert!(t.entries.len() <= t.capacity);
        for (i, e) in t.entries.iter().enumerate() {
            assert_eq!(t.index.get(&e.key), Some(&(i as u32)));
        }
    }

    #[test]
    fn open_connections_per_address_are_capped() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        let mut claims: Vec<_> = (0..20).map(|_| t.connect(a, t0).unwrap()).collect();
        assert_eq!(t.connect(a, t0), Err(Refused::TooManyConns));
        // Another address is not affected.
        let other = t.connect(ip("192.0.2.2"), t0).unwrap();
        t.disconnect(claims.pop().unwrap(), t0);
        let again = t.connect(a, t0).unwrap();
        assert_eq!(t.connect(a, t0), Err(Refused::TooManyConns));
        t.disconnect(again, t0);
        t.disconnect(other, t0);
        for c in claims {
            t.disconnect(c, t0);
        }
        check(&t);
    }

    #[test]
    fn new_connections_per_minute_are_capped() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..60 {
            let c = t.connect(a, t0).unwrap();
            t.disconnect(c, t0);
        }
        assert_eq!(t.connect(a, t0), Err(Refused::TooManyConns));
        // Refusals are not counted, and the window is a minute (time is in
        // whole seconds, and a window never ends early).
        for s in 1..=60 {
            assert_eq!(
                t.connect(a, t0 + secs(s)),
                Err(Refused::TooManyConns),
                "{s}"
            );
        }
        let c = t.connect(a, t0 + secs(61)).unwrap();
        t.disconnect(c, t0 + secs(61));
        check(&t);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address_and_mapped_v4_is_the_v4() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_conns_per_ip: 2,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let _a = t.connect(ip("2001:db8:1:2::1"), t0).unwrap();
        let _b = t.connect(ip("2001:db8:1:2::ffff"), t0).unwrap();
        assert_eq!(
            t.connect(ip("2001:db8:1:2:1::"), t0),
            Err(Refused::TooManyConns)
        );
        let _c = t.connect(ip("2001:db8:1:3::1"), t0).unwrap();
        let _d = t.connect(ip("192.0.2.1"), t0).unwrap();
        let _e = t.connect(ip("::ffff:192.0.2.1"), t0).unwrap();
        assert_eq!(t.connect(ip("192.0.2.1"), t0), Err(Refused::TooManyConns));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn exempt_addresses_pass_everything_and_are_not_stored() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&LimitsConfig::default(), t0);
        assert!(t.is_exempt(ip("127.0.0.5")));
        let mut claims = Vec::new();
        for _ in 0..1000 {
            claims.push(t.connect(ip("127.0.0.5"), t0).unwrap());
            claims.push(t.connect(ip("::1"), t0).unwrap());
            let l = t.begin_login(ip("127.0.0.5"), t0).unwrap();
            t.finish(l, AuthOutcome::Failed, t0);
            let r = t.begin_regist(ip("::1"), t0).unwrap();
            t.finish(r, AuthOutcome::Succeeded, t0);
        }
        assert!(claims.iter().all(|c| c.key().is_none()));
        assert!(t.is_empty());
        // With `--exempt none`, loopback is an address like any other.
        let mut t = AddressTable::new(&cfg(), t0);
        assert!(!t.is_exempt(ip("127.0.0.5")));
        let c = t.connect(ip("127.0.0.5"), t0).unwrap();
        assert_eq!(c.key(), Some(AddrKey::V4([127, 0, 0, 5])));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn failed_logins_throttle_the_address_for_the_window() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        for i in 0..10 {
            let l = t.begin_login(a, t0 + secs(i)).unwrap();
            t.finish(l, AuthOutcome::Failed, t0 + secs(i));
        }
        // THROTTLED is not a failure: many of them do not extend the window.
        for s in 10..600 {
            assert_eq!(t.begin_login(a, t0 + secs(s)), Err(Refused::Throttled));
        }
        // Other addresses log in.
        let other = t.begin_login(ip("192.0.2.2"), t0).unwrap();
        t.finish(other, AuthOutcome::Succeeded, t0);
        // The window (from the first failure) has passed.
        let l = t.begin_login(a, t0 + secs(601)).unwrap();
        t.finish(l, AuthOutcome::Succeeded, t0 + secs(601));
        check(&t);
    }

    #[test]
    fn successful_and_abandoned_logins_are_not_failures() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            let l = t.begin_login(a, t0).unwrap();
            t.finish(l, AuthOutcome::Succeeded, t0);
            let l = t.begin_login(a, t0).unwrap();
            t.finish(l, AuthOutcome::Abandoned, t0);
        }
        assert!(t.is_empty(), "nothing to remember");
    }

    #[test]
    fn a_thousand_guesses_get_at_most_ten_password_checks_even_in_parallel() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        let mut checks = 0;
        let mut in_flight = Vec::new();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            match t.begin_login(a, now) {
                Ok(claim) => {
                    checks += 1;
                    in_flight.push(claim);
                }
                Err(r) => assert!(matches!(r, Refused::Busy | Refused::Throttled)),
            }
            // Jobs finish in batches, all wrong.
            if i % 7 == 0 {
                for c in in_flight.drain(..) {
                    t.finish(c, AuthOutcome::Failed, now);
                }
            }
        }
        assert_eq!(checks, 10);
        for c in in_flight {
            t.finish(c, AuthOutcome::Failed, t0);
        }
        assert_eq!(t.begin_login(a, t0 + secs(2)), Err(Refused::Throttled));
    }

    #[test]
    fn logins_in_flight_count_against_the_failures_left() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..9 {
            let l = t.begin_login(a, t0).unwrap();
            t.finish(l, AuthOutcome::Failed, t0);
        }
        let last = t.begin_login(a, t0).unwrap();
        assert_eq!(t.begin_login(a, t0), Err(Refused::Busy));
        t.finish(last, AuthOutcome::Succeeded, t0);
        let l = t.begin_login(a, t0).unwrap();
        t.finish(l, AuthOutcome::Failed, t0);
        assert_eq!(t.begin_login(a, t0), Err(Refused::Throttled));
    }

    #[test]
    fn registrations_per_hour_are_capped_and_failed_writes_refunded() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            let r = t.begin_regist(a, t0).unwrap();
            t.finish(r, AuthOutcome::Failed, t0);
        }
        for _ in 0..19 {
            let r = t.begin_regist(a, t0).unwrap();
            t.finish(r, AuthOutcome::Succeeded, t0);
        }
        // The 20th is in flight: it counts already.
        let twentieth = t.begin_regist(a, t0).unwrap();
        assert_eq!(t.begin_regist(a, t0), Err(Refused::Throttled));
        t.finish(twentieth, AuthOutcome::Succeeded, t0);
        assert_eq!(t.begin_regist(a, t0 + secs(3600)), Err(Refused::Throttled));
        // Logins are a separate count.
        let l = t.begin_login(a, t0).unwrap();
        t.finish(l, AuthOutcome::Succeeded, t0);
        let r = t.begin_regist(a, t0 + secs(3601)).unwrap();
        t.finish(r, AuthOutcome::Succeeded, t0 + secs(3601));
        check(&t);
    }

    #[test]
    fn a_registration_in_flight_across_the_window_edge_stays_counted() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_regist_per_ip: 2,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let a = ip("192.0.2.1");
        let slow = t.begin_regist(a, t0).unwrap();
        let later = t0 + secs(4000);
        // New window: the slow one is carried over.
        let r = t.begin_regist(a, later).unwrap();
        assert_eq!(t.begin_regist(a, later), Err(Refused::Throttled));
        t.finish(slow, AuthOutcome::Failed, later);
        let r2 = t.begin_regist(a, later).unwrap();
        t.finish(r, AuthOutcome::Succeeded, later);
        t.finish(r2, AuthOutcome::Succeeded, later);
        assert_eq!(t.begin_regist(a, later), Err(Refused::Throttled));
    }

    #[test]
    fn one_address_holds_a_quarter_of_the_hash_queue() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_login_fails: 0,
            max_regist_per_ip: 0,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let a = ip("192.0.2.1");
        let mut jobs: Vec<_> = (0..32).map(|_| t.begin_login(a, t0).unwrap()).collect();
        jobs.extend((0..32).map(|_| t.begin_regist(a, t0).unwrap()));
        assert_eq!(t.begin_login(a, t0), Err(Refused::Busy));
        assert_eq!(t.begin_regist(a, t0), Err(Refused::Busy));
        assert!(t.begin_login(ip("192.0.2.2"), t0).is_ok());
        t.finish(jobs.pop().unwrap(), AuthOutcome::Succeeded, t0);
        assert!(t.begin_login(a, t0).is_ok());

        // A tiny queue still lets each address have one job.
        let c = LimitsConfig {
            max_pending_auth: 2,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let j = t.begin_login(a, t0).unwrap();
        assert_eq!(t.begin_regist(a, t0), Err(Refused::Busy));
        t.finish(j, AuthOutcome::Succeeded, t0);
        assert!(t.begin_regist(a, t0).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_conns_per_ip: 0,
            max_new_conns_per_ip: 0,
            max_login_fails: 0,
            max_regist_per_ip: 0,
            max_pending_auth: 1_000_000,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let a = ip("192.0.2.1");
        let mut conns = Vec::new();
        for _ in 0..1000 {
            conns.push(t.connect(a, t0).unwrap());
            let l = t.begin_login(a, t0).unwrap();
            t.finish(l, AuthOutcome::Failed, t0);
            let r = t.begin_regist(a, t0).unwrap();
            t.finish(r, AuthOutcome::Succeeded, t0);
        }
    }

    #[test]
    fn idle_entries_that_remember_nothing_are_dropped() {
        let t0 = Instant::now();
        let mut t = AddressTable::new(&cfg(), t0);
        let c = t.connect(ip("192.0.2.1"), t0).unwrap();
        let later = t0 + secs(120);
        t.disconnect(c, later);
        assert!(t.is_empty(), "dropped on release once its window passed");
        // Stale entries are swept as new addresses arrive.
        for i in 0..100u8 {
            let c = t
                .connect(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), t0)
                .unwrap();
            t.disconnect(c, t0);
        }
        assert_eq!(t.len(), 100);
        for i in 0..100u8 {
            let c = t
                .connect(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), later)
                .unwrap();
            t.disconnect(c, later);
        }
        assert!(t.len() <= 101, "{}", t.len());
        check(&t);
    }

    #[test]
    fn live_entries_are_never_evicted_and_overflow_fails_open() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_tracked_addrs: 4,
            max_conns_per_ip: 1,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let held: Vec<_> = (1..=4u8)
            .map(|i| {
                t.connect(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), t0)
                    .unwrap()
            })
            .collect();
        let extra = t.connect(ip("198.51.100.1"), t0).unwrap();
        assert_eq!(extra.key(), None);
        assert_eq!(t.untracked(), 1);
        // The held ones are still counted.
        for i in 1..=4u8 {
            let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
            assert_eq!(t.connect(a, t0), Err(Refused::TooManyConns));
        }
        t.disconnect(extra, t0);
        for c in held {
            t.disconnect(c, t0);
        }
        check(&t);
        assert_eq!(t.len(), 4);
        // Now idle (remembering their connection counts): evictable.
        assert!(t.connect(ip("198.51.100.1"), t0).unwrap().key().is_some());
        check(&t);
    }

    #[test]
    fn eviction_spares_addresses_with_failed_logins() {
        let t0 = Instant::now();
        let c = LimitsConfig {
            max_tracked_addrs: 1000,
            ..cfg()
        };
        let mut t = AddressTable::new(&c, t0);
        let guesser = ip("203.0.113.9");
        for _ in 0..10 {
            let l = t.begin_login(guesser, t0).unwrap();
            t.finish(l, AuthOutcome::Failed, t0);
        }
        // 200 000 other addresses connect within the minute, each leaving
        // a count behind, forcing constant eviction.
        for i in 0..200_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 250);
            let c = t
                .connect(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), now)
                .unwrap();
            t.disconnect(c, now);
            assert!(t.len() <= 1000);
        }
        assert_eq!(
            t.begin_login(guesser, t0 + secs(59)),
            Err(Refused::Throttled)
        );
        check(&t);
    }

    #[test]
    fn a_million_addresses_stay_within_the_cap() {
        let t0 = Instant::now();
        let c = cfg();
        let cap = c.max_tracked_addrs;
        let mut t = AddressTable::new(&c, t0);
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            // Half IPv4, half distinct IPv6 /64s; 1 ms apart, so windows are
            // still open for most of them and eviction does the work.
            let a = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(i))
            } else {
                IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64 | 1))
            };
            let now = t0 + Duration::from_millis(u64::from(i));
            let conn = t.connect(a, now).unwrap();
            let l = t.begin_login(a, now).unwrap();
            t.finish(l, AuthOutcome::Failed, now);
            t.disconnect(conn, now);
            peak = peak.max(t.len());
        }
        check(&t);
        assert!(peak <= cap);
        assert_eq!(t.untracked(), 0);
        assert!(t.entries.capacity() <= cap.next_power_of_two());
        // What hashbrown allocates for `capacity()` items: the power of two
        // at or above 8/7 of it (`capacity()` is 7/8 of the buckets).
        let buckets = (t.index.capacity() * 8).div_ceil(7).next_power_of_two();
        let heap = t.entries.capacity() * size_of::<Entry>()
            + buckets * (size_of::<(AddrKey, u32)>() + 1)
            + 16;
        eprintln!(
            "peak {peak} entries of {cap}; entry {} B, map slot {} B, {buckets} buckets; \
             heap {} KiB measured, {} KiB bound ({} B per entry)",
            size_of::<Entry>(),
            size_of::<(AddrKey, u32)>() + 1,
            heap / 1024,
            t.heap_bound() / 1024,
            t.heap_bound() / cap,
        );
        assert!(heap <= t.heap_bound());
        assert!(t.heap_bound() <= 7_700_000);
        assert_eq!(size_of::<Entry>(), 48);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(u8),
        Disconnect(usize),
        Login(u8),
        Regist(u8),
        Finish(usize, u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::Connect),
            any::<usize>().prop_map(Op::Disconnect),
            (0u8..12).prop_map(Op::Login),
            (0u8..12).prop_map(Op::Regist),
            (any::<usize>(), 0u8..3).prop_map(|(i, o)| Op::Finish(i, o)),
            (0u16..900).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Any sequence of calls keeps the table consistent and within its
        /// cap, and never panics; once every claim is returned, no entry is
        /// live, and after the longest window nothing is remembered.
        #[test]
        fn any_sequence_keeps_the_table_consistent(ops in proptest::collection::vec(op(), 1..400)) {
            let t0 = Instant::now();
            let c = LimitsConfig {
                max_tracked_addrs: 5,
                max_conns_per_ip: 3,
                max_new_conns_per_ip: 4,
                max_login_fails: 3,
                max_regist_per_ip: 2,
                max_pending_auth: 8,
                exempt: Exempt::parse("10.0.0.0/31").unwrap(),
                ..LimitsConfig::default()
            };
            let mut t = AddressTable::new(&c, t0);
            let mut now = t0;
            let mut conns = Vec::new();
            let mut jobs = Vec::new();
            let addr = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n));
            for op in ops {
                match op {
                    Op::Connect(n) => {
                        if let Ok(c) = t.connect(addr(n), now) { conns.push(c) }
                    }
                    Op::Disconnect(i) if !conns.is_empty() => {
                        let c = conns.swap_remove(i % conns.len());
                        t.disconnect(c, now);
                    }
                    Op::Login(n) => {
                        if let Ok(j) = t.begin_login(addr(n), now) { jobs.push(j) }
                    }
                    Op::Regist(n) => {
                        if let Ok(j) = t.begin_regist(addr(n), now) { jobs.push(j) }
                    }
                    Op::Finish(i, o) if !jobs.is_empty() => {
                        let j = jobs.swap_remove(i % jobs.len());
                        let o = [AuthOutcome::Succeeded, AuthOutcome::Failed, AuthOutcome::Abandoned][usize::from(o)];
                        t.finish(j, o, now);
                    }
                    Op::Wait(s) => now += secs(u64::from(s)),
                    _ => {}
                }
                check(&t);
            }
            for c in conns {
                t.disconnect(c, now);
            }
            for j in jobs {
                t.finish(j, AuthOutcome::Abandoned, now);
            }
            check(&t);
            prop_assert!(t.entries.iter().all(|e| !e.is_live()));
            let end = t.tick(now + secs(3602));
            prop_assert!(t.entries.iter().all(|e| !e.remembers(end)));
        }
    }
}
