//! Time as fastpix-sync stores it: `i64` nanoseconds since the Unix epoch (exact on SQLite and PostgreSQL).

use chrono::{DateTime, Utc};

/// Parses an RFC 3339 time at full precision (FastPix sends up to nanoseconds).
pub fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()?
        .timestamp_nanos_opt()
}

/// The current time in nanoseconds.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Converts stored nanoseconds back to a UTC time.
pub fn from_ns(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_survive_a_round_trip() {
        let ns = parse_rfc3339_ns("2026-06-22T12:39:41.907113512Z").unwrap();
        assert_eq!(ns % 1_000_000_000, 907_113_512);
        assert_eq!(
            from_ns(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "2026-06-22T12:39:41.907113512Z"
        );
        assert_eq!(parse_rfc3339_ns("yesterday"), None);
    }
}
