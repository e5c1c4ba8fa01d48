//! Flood control: a token bucket per connection.

use std::time::{Duration, Instant};

/// One token, in the bucket's fixed-point unit. A token is worth
/// `NANOS_PER_TOKEN` units and time refills `rate` units per nanosecond, so a
/// refill is `elapsed_ns × rate`: exact integers, no division, no rounding,
/// and therefore no drift however long the connection lives.
const UNITS_PER_TOKEN: u64 = 1_000_000_000;

/// Lines a connection may send: `burst` at once, then `rate` per second.
///
/// The loop keeps one per connection and takes one token per complete line
/// before handing the line to the core. When [`try_take`](Self::try_take)
/// says no, the loop stops reading that connection (its lines stay in our
/// buffer, then the kernel's, then the client's: nothing is dropped and the
/// order is kept) and arms a timer for [`ready_at`](Self::ready_at).
///
/// Four words, no allocation, no clock of its own: the caller passes `now`,
/// which the loop reads once per poll round, so a line costs a few integer
/// operations and no syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// When `units` was last brought up to date.
    last: Instant,
    /// Credit at `last`, in units (`UNITS_PER_TOKEN` per token); at most
    /// `burst × UNITS_PER_TOKEN + rate - 1`, which fits in a `u64` for any
    /// `u32` burst and rate.
    units: u64,
    /// Capacity in tokens; at least 1.
    burst: u32,
    /// Tokens per second; 0 means flood control is off.
    rate: u32,
}

impl TokenBucket {
    /// A full bucket at `now`. `rate_per_sec == 0` turns flood control off
    /// (`--flood-rate 0`). A `burst` of 0 is taken as 1: a bucket that can
    /// never hold a token would stall its connection for ever.
    pub fn new(burst: u32, rate_per_sec: u32, now: Instant) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            last: now,
            units: u64::from(burst) * UNITS_PER_TOKEN,
            burst,
            rate: rate_per_sec,
        }
    }

    /// Whether flood control is off for this bucket (rate 0).
    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Takes the token for one line if there is one. `false` means: stop
    /// reading this connection until [`ready_at`](Self::ready_at).
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Gives back the token of a line that was not there after all (the
    /// loop takes a token before it looks for the next line, so that looking
    /// costs nothing when there is none to spend).
    pub fn refund(&mut self) {
        if self.rate != 0 {
            let cap =
                u64::from(self.burst) * UNITS_PER_TOKEN + u64::from(self.rate).saturating_sub(1);
            self.units = self.units.saturating_add(UNITS_PER_TOKEN).min(cap);
        }
    }

    /// `None` if a token is available at `now` (or flood control is off);
    /// otherwise the earliest instant at which [`try_take`](Self::try_take)
    /// will succeed, which the loop uses as the timer to resume reading. The
    /// instant is exact: one nanosecond earlier there is no token yet.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let units = self.units_at(now);
        if units >= UNITS_PER_TOKEN {
            return None;
        }
        let rate = u64::from(self.rate);
        // ceil(missing / rate) ns: at most 1e9 ns, since rate >= 1.
        let wait_ns = (UNITS_PER_TOKEN - units).div_ceil(rate);
        // `now` is at least `last` here in practice; if the caller passed an
        // older instant, count the wait from the later of the two.
        let from = now.max(self.last);
        Some(
            from.checked_add(Duration::from_nanos(wait_ns))
                .unwrap_or(from),
        )
    }

    /// Credit at `now` without changing the bucket. A `now` older than the
    /// last update (a stale reading) adds nothing rather than going back.
    fn units_at(&self, now: Instant) -> u64 {
        // Capped at `burst` tokens, plus less than one nanosecond's refill:
        // `ready_at` rounds the wait up to a whole nanosecond, so a client
        // that waits for it overshoots by up to `rate - 1` units, and
        // clipping those at a full bucket would slow that client below
        // `rate` (with burst 1, 3/s would give 8999 tokens in 3000 s).
        let cap = u64::from(self.burst) * UNITS_PER_TOKEN + u64::from(self.rate).saturating_sub(1);
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.units
            .saturating_add(elapsed.saturating_mul(u64::from(self.rate)))
            .min(cap)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.units = self.units_at(now);
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 5, t0);
        for _ in 0..20 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
        assert_eq!(b.ready_at(t0), Some(t0 + ms(200)));
        assert!(!b.try_take(t0 + ms(199)));
        assert!(b.try_take(t0 + ms(200)));
        assert!(!b.try_take(t0 + ms(200)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(b.try_take(later));
        }
        assert!(!b.try_take(later));
    }

    #[test]
    fn ready_at_is_none_while_tokens_remain() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 1, t0);
        assert_eq!(b.ready_at(t0), None);
        assert!(b.try_take(t0));
        assert_eq!(b.ready_at(t0), None);
        assert!(b.try_take(t0));
        assert_eq!(b.ready_at(t0), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_refunded_token_can_be_taken_again_but_never_overfills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 1, t0);
        assert!(b.try_take(t0));
        b.refund();
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        b.refund();
        b.refund();
        b.refund();
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0), "a refund filled the bucket over its burst");
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 0, t0);
        assert!(b.is_unlimited());
        for _ in 0..100_000 {
            assert!(b.try_take(t0));
        }
        assert_eq!(b.ready_at(t0), None);
    }

    #[test]
    fn burst_zero_acts_as_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn rate_not_dividing_a_second_does_not_drift() {
        // 3 per second: each token is 333_333_333.3 ns; over 3000 s exactly
        // 9000 tokens come, not 9000 ± rounding.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 3, t0);
        assert!(b.try_take(t0));
        let mut granted = 0u32;
        let mut t = t0;
        let end = t0 + Duration::from_secs(3000);
        while let Some(r) = b.ready_at(t) {
            if r > end {
                break;
            }
            t = r;
            assert!(b.try_take(t));
            granted += 1;
        }
        assert_eq!(granted, 9000);
    }

    #[test]
    fn stale_now_neither_panics_nor_refills() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t0));
        assert_eq!(b.ready_at(t0), Some(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn extreme_parameters_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, t0);
        assert!(b.try_take(t0 + Duration::from_secs(1 << 40)));
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t0 + Duration::from_secs(1 << 40)));
        assert!(std::mem::size_of::<TokenBucket>() <= 32);
    }

    proptest! {
        /// Within any interval [t0, t1] of a run of takes at non-decreasing
        /// times, at most burst + rate × (t1 − t0) + 1 are granted; and a
        /// refused caller that waits until `ready_at` gets its token, which
        /// was not there a nanosecond earlier.
        #[test]
        fn grants_never_exceed_burst_plus_rate(
            burst in 1u32..40,
            rate in 1u32..200,
            steps in proptest::collection::vec((0u64..400_000_000, any::<bool>()), 1..300),
        ) {
            let base = Instant::now();
            let mut b = TokenBucket::new(burst, rate, base);
            let mut t = base;
            let mut granted: Vec<Instant> = Vec::new();
            for (gap_ns, wait_if_refused) in steps {
                t += Duration::from_nanos(gap_ns);
                if b.try_take(t) {
                    granted.push(t);
                    continue;
                }
                let r = b.ready_at(t);
                prop_assert!(r.is_some());
                let r = r.unwrap_or(t);
                prop_assert!(r > t);
                let mut early = b;
                prop_assert!(!early.try_take(r - Duration::from_nanos(1)));
                if wait_if_refused {
                    t = r;
                    prop_assert!(b.try_take(t));
                    granted.push(t);
                }
            }
            for i in 0..granted.len() {
                for j in i..granted.len() {
                    let span = granted[j] - granted[i];
                    let n = (j - i + 1) as f64;
                    let bound = f64::from(burst) + f64::from(rate) * span.as_secs_f64() + 1.0;
                    prop_assert!(n <= bound, "{n} grants in {span:?} (burst {burst}, rate {rate})");
                }
            }
        }
    }
}
