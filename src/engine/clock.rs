//! Time as the database stores it.
//!
//! The Obby tables hold local time as text, `YYYY-MM-DD HH:MM:SS.ffffff`, the
//! form Python's `sqlite3` binds a `datetime` in, so text comparisons, `DATE()`
//! and `strftime()` in the backend's queries behave. [`StoreClock`] hands out
//! such stamps strictly increasing, so two versions written within one
//! microsecond (or across a backwards clock step) still sort in commit order.
//! The queue's own times are unix milliseconds ([`now_ms`]).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local, TimeDelta, Timelike};

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

/// Hands out strictly increasing local timestamps for one writer.
#[derive(Debug, Default)]
pub struct StoreClock {
    last: Option<DateTime<Local>>,
}

impl StoreClock {
    /// A clock that has stamped nothing yet.
    pub fn new() -> Self {
        StoreClock { last: None }
    }

    /// Starts after `floor`, the newest stamp already in the database, so a
    /// restart after a backwards clock step keeps the order too.
    pub fn starting_after(floor: Option<&str>) -> Self {
        let last = floor
            .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, TIMESTAMP_FORMAT).ok())
            .and_then(|naive| naive.and_local_timezone(Local).earliest());
        StoreClock { last }
    }

    /// The next stamp: now, or one microsecond after the previous stamp.
    pub fn stamp(&mut self) -> String {
        let mut now = Local::now();
        if let Some(last) = self.last
            && now <= last
        {
            now = last + TimeDelta::microseconds(1);
        }
        // Truncate to what the text keeps, so comparisons stay exact.
        let micros = now.timestamp_subsec_micros();
        now = now.with_nanosecond(micros * 1_000).unwrap_or(now);
        self.last = Some(now);
        format_local(now)
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

    #[test]
    fn a_floor_in_the_future_is_respected() {
        let mut clock = StoreClock::starting_after(Some("2999-01-01 00:00:00.000000"));
        assert_eq!(clock.stamp(), "2999-01-01 00:00:00.000001");
    }
}
