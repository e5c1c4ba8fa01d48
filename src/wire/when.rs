//! When a replayed or stored message was sent, as its line shows it (SPEC
//! section 9): `(HH:MM)` in the server's local time zone, or
//! `(YYYY-MM-DD HH:MM)` when it is not from today.
//!
//! The zone is whatever `TZ` says (a zone name, or a POSIX rule string such
//! as `WIB-7`), read by `jiff`: time zone rules are not written by hand here.
//! [`marker`] is pure, given the zone, so it is tested with fixed zones.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The marker for a message sent at `at` and shown at `now` (both seconds
/// since the Unix epoch), in `tz`, parentheses included. A time out of
/// range (a hand-edited file) reads as the epoch rather than failing.
pub fn marker(at: i64, now: i64, tz: &TimeZone) -> String {
    let stamp = |secs: i64| Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    let sent = stamp(at).to_zoned(tz.clone());
    let today = stamp(now).to_zoned(tz.clone());
    if sent.date() == today.date() {
        format!("({})", sent.strftime("%H:%M"))
    } else {
        format!("({})", sent.strftime("%Y-%m-%d %H:%M"))
    }
}

/// The server's local time zone, as `TZ` (or the system) says; UTC if it
/// cannot be read.
pub fn local_zone() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 15:04:05 UTC.
    const AT: i64 = 1_796_051_045;

    #[test]
    fn hours_and_minutes_today_in_the_zone() {
        let wib = TimeZone::posix("WIB-7").unwrap();
        assert_eq!(marker(AT, AT + 60, &TimeZone::UTC), "(15:04)");
        assert_eq!(marker(AT, AT + 60, &wib), "(22:04)");
    }

    #[test]
    fn the_date_when_not_from_today_in_the_zone() {
        let wib = TimeZone::posix("WIB-7").unwrap();
        // Two hours later it is still the 30th in UTC, already the 1st in WIB.
        assert_eq!(marker(AT, AT + 2 * 3600, &TimeZone::UTC), "(15:04)");
        assert_eq!(marker(AT, AT + 2 * 3600, &wib), "(2026-11-30 22:04)");
        assert_eq!(
            marker(AT - 40 * 86400, AT, &TimeZone::UTC),
            "(2026-10-21 15:04)"
        );
    }

    #[test]
    fn posix_rules_with_daylight_saving() {
        // Central Europe: +1 in winter, +2 from the last Sunday of March.
        let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(marker(AT, AT, &cet), "(16:04)");
        let july = AT - 140 * 86400;
        assert_eq!(marker(july, july, &cet), "(17:04)");
    }

    #[test]
    fn out_of_range_times_do_not_panic() {
        assert_eq!(marker(i64::MAX, 0, &TimeZone::UTC), "(00:00)");
        assert_eq!(marker(i64::MIN, 0, &TimeZone::UTC), "(00:00)");
    }
}
