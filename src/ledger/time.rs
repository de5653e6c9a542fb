//! Timestamps as the state file holds them: warden writes UTC RFC 3339 with milliseconds; the
//! original wrote naive ISO-8601 in local time, which is read as such.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};

/// Parses a timestamp the way the state file may hold it: RFC 3339 with an offset, or the
/// original's naive ISO-8601, which it wrote in local time.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Python's isoformat with an offset but a space separator, or with "+00:00" and micros.
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// UTC RFC 3339 with milliseconds, as warden writes every timestamp.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
