//! Event time. The core never reads a clock: every instant it sees is an
//! [`EventTime`] that came in with an event or was computed from one.
//!
//! In: RFC 3339 strings and milliseconds. Out: [`EventTime`] and windowed
//! counts over sorted times ([`count_within`]). Keeps nothing.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, in event time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime(pub i64);

impl EventTime {
    pub const MIN: EventTime = EventTime(i64::MIN);

    /// Parses an RFC 3339 timestamp with an offset (`Z` or `+hh:mm`).
    pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| EventTime(t.timestamp_millis()))
    }

    pub fn from_millis(ms: i64) -> EventTime {
        EventTime(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> EventTime {
        EventTime(self.0.saturating_add(duration_ms(d)))
    }

    pub fn minus(self, d: Duration) -> EventTime {
        EventTime(self.0.saturating_sub(duration_ms(d)))
    }

    /// Whole and fractional days from `earlier` to `self` (0 when `earlier` is later).
    pub fn days_since(self, earlier: EventTime) -> f64 {
        (self.0.saturating_sub(earlier.0)).max(0) as f64 / 86_400_000.0
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => String::from("invalid-time"),
        }
    }
}

/// How many of `v` fall within `window` before `now` (inclusive of `now`).
pub fn count_within(v: &[EventTime], now: EventTime, window: Duration) -> usize {
    let from = now.minus(window);
    v.iter().filter(|t| **t > from && **t <= now).count()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// RFC 3339 in human-readable formats (the JSON of outputs and the API);
/// milliseconds in binary ones (state snapshots).
impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            EventTime::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 timestamp"))
        } else {
            i64::deserialize(d).map(EventTime)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_the_same_instant() {
        let a = EventTime::parse_rfc3339("2026-11-21T10:15:00.123Z").unwrap();
        let b = EventTime::parse_rfc3339("2026-11-21T11:15:00.123+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-21T10:15:00.123Z");
    }

    #[test]
    fn rejects_timestamps_without_offset() {
        assert!(EventTime::parse_rfc3339("2026-11-21T10:15:00").is_none());
        assert!(EventTime::parse_rfc3339("2026-13-21T10:15:00Z").is_none());
    }

    #[test]
    fn days_since_never_negative() {
        let a = EventTime(0);
        let b = EventTime(86_400_000 * 3 / 2);
        assert_eq!(b.days_since(a), 1.5);
        assert_eq!(a.days_since(b), 0.0);
    }
}
