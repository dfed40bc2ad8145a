//! Time as the database stores it.
//!
//! The Obby tables hold local time as text, `YYYY-MM-DD HH:MM:SS.ffffff`, the
//! form Python's `sqlite3` binds a `datetime` in, so text comparisons, `DATE()`
//! and `strftime()` in the backend's queries behave. [`StoreClock`] hands out
//! such stamps with strictly increasing text, so two versions written within
//! one microsecond, across a backwards clock step or in the repeated hour of
//! a daylight-saving fall-back still sort in commit order; it never follows a
//! stored stamp more than [`MAX_HOLD`] into the future.
//! The queue's own times are unix milliseconds ([`now_ms`]).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local, NaiveDateTime, TimeDelta, Timelike};

/// The text form of every DATETIME column the engine writes.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// Formats a moment as local-time text in [`TIMESTAMP_FORMAT`].
pub fn format_local(t: DateTime<Local>) -> String {
    t.format(TIMESTAMP_FORMAT).to_string()
}

/// Formats a file's modification time (nanoseconds since the epoch).
pub fn format_mtime_ns(mtime_ns: i64) -> String {
    let t = DateTime::from_timestamp_nanos(mtime_ns);
    format_local(t.with_timezone(&Local))
}

/// Milliseconds since the unix epoch, for queue scheduling.
pub fn now_ms() -> i64 {
    system_time_ms(SystemTime::now())
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Nanoseconds since the unix epoch of a file time (negative before 1970).
pub fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// A stored stamp further ahead of the clock than this is not followed: a
/// clock that was wrong once must not freeze every later stamp there (the
/// backend's own trigger refuses stamps over a day ahead). Two hours covers
/// a daylight-saving fall-back, whose repeated hour is held.
pub const MAX_HOLD: TimeDelta = TimeDelta::hours(2);

/// Hands out local timestamps whose text strictly increases, for one writer.
///
/// The order is kept on the local wall-clock time itself, the text the
/// backend sorts and compares: when the clock falls back (the repeated hour
/// at the end of daylight-saving time, or a small step backwards), the stamp
/// is held one microsecond after the last one until the clock catches up. A
/// last stamp more than [`MAX_HOLD`] ahead of the clock is let go of instead
/// (with a warning): stamps follow the clock again.
#[derive(Debug, Default)]
pub struct StoreClock {
    last: Option<NaiveDateTime>,
}

impl StoreClock {
    /// A clock that has stamped nothing yet.
    pub fn new() -> Self {
        StoreClock { last: None }
    }

    /// Starts after `floor`, the newest stamp already in the database, so a
    /// restart after a backwards clock step keeps the order too.
    pub fn starting_after(floor: Option<&str>) -> Self {
        let last = floor.and_then(|s| NaiveDateTime::parse_from_str(s, TIMESTAMP_FORMAT).ok());
        StoreClock { last }
    }

    /// The next stamp: now, or one microsecond after the previous stamp.
    pub fn stamp(&mut self) -> String {
        self.stamp_at(Local::now().naive_local())
    }

    /// [`StoreClock::stamp`] with the local wall-clock time given.
    pub fn stamp_at(&mut self, now: NaiveDateTime) -> String {
        // Truncate to what the text keeps, so comparisons stay exact.
        let micros = now.and_utc().timestamp_subsec_micros();
        let mut now = now.with_nanosecond(micros * 1_000).unwrap_or(now);
        if let Some(last) = self.last
            && now <= last
        {
            if last - now > MAX_HOLD {
                tracing::warn!(
                    newest = %last.format(TIMESTAMP_FORMAT),
                    now = %now.format(TIMESTAMP_FORMAT),
                    "the newest stored time is far ahead of the clock; new times follow the clock"
                );
            } else {
                now = last + TimeDelta::microseconds(1);
            }
        }
        self.last = Some(now);
        now.format(TIMESTAMP_FORMAT).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_have_the_python_datetime_text_form() {
        let s = StoreClock::new().stamp();
        assert_eq!(s.len(), "2026-01-02 03:04:05.123456".len(), "{s}");
        assert_eq!(&s[10..11], " ");
        assert_eq!(&s[19..20], ".");
    }

    #[test]
    fn stamps_strictly_increase_within_one_second() {
        let mut clock = StoreClock::new();
        let stamps: Vec<String> = (0..1000).map(|_| clock.stamp()).collect();
        for pair in stamps.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT).expect("stamp")
    }

    #[test]
    fn a_floor_within_the_hold_is_respected() {
        let mut clock = StoreClock::starting_after(Some("2026-11-01 01:59:00.000000"));
        assert_eq!(
            clock.stamp_at(at("2026-11-01 01:10:00.000000")),
            "2026-11-01 01:59:00.000001"
        );
    }

    #[test]
    fn time_never_goes_backwards_as_text_at_the_fall_back() {
        // The local wall clock during a daylight-saving fall-back: 01:00 to
        // 01:59 twice.
        let mut clock = StoreClock::new();
        let mut stamps = Vec::new();
        for text in [
            "2026-11-01 01:30:00.000000",
            "2026-11-01 01:59:59.999999",
            "2026-11-01 01:00:00.000000",
            "2026-11-01 01:30:00.000000",
            "2026-11-01 02:00:00.500000",
        ] {
            stamps.push(clock.stamp_at(at(text)));
        }
        for pair in stamps.windows(2) {
            assert!(pair[0] < pair[1], "{stamps:?}");
        }
        assert_eq!(stamps[2], "2026-11-01 02:00:00.000000");
        assert_eq!(stamps[3], "2026-11-01 02:00:00.000001");
        assert_eq!(stamps[4], "2026-11-01 02:00:00.500000");
    }

    #[test]
    fn a_stamp_far_in_the_future_does_not_freeze_later_stamps() {
        let mut clock = StoreClock::starting_after(Some("2999-01-01 00:00:00.000000"));
        assert_eq!(
            clock.stamp_at(at("2026-12-02 10:00:00.000000")),
            "2026-12-02 10:00:00.000000"
        );
        assert_eq!(
            clock.stamp_at(at("2026-12-02 10:00:00.000000")),
            "2026-12-02 10:00:00.000001"
        );
    }
}
