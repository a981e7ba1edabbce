//! Quiet hours in the customer's local time.
//!
//! In: the `[decide.policy.quiet_hours]` settings ([`QuietHours`]), the
//! customer's UTC offset as the newest event that carried one said
//! ([`LocalClock`]) and an event time. Out: when the quiet period that `now`
//! falls in ends ([`quiet_until`]), or `None` outside it or when the
//! customer's local time is not known. Keeps nothing.
//!
//! The period is `[start, end)` local time and may wrap midnight
//! (`21:00`-`08:00`). An action due inside it on a quiet channel is deferred
//! to its end (an event-time timer the processor arms) or dropped, per
//! `during`; so nothing is ever sent inside.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::journey::LocalClock;
use crate::time::EventTime;
use crate::vocab::ContactChannel;

const DAY_MS: i64 = 24 * 3_600_000;

/// A local time of day, `HH:MM` in config, kept as minutes after midnight.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day HH:MM (00:00 to 23:59)");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 || s.len() != 5 {
            return Err(bad());
        }
        Ok(TimeOfDay(h * 60 + m))
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        t.to_string()
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// What happens to an action due inside quiet hours.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum During {
    /// Decided again when the quiet period ends (its facts re-checked then).
    Defer,
    /// Not sent.
    Drop,
}

/// No message on `channels` between `start` and `end`, customer's local time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    /// The channels that keep quiet (a web or store message waits for the
    /// customer to come by and needs no quiet hours).
    pub channels: Vec<ContactChannel>,
    pub during: During,
}

impl QuietHours {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.start == self.end {
            return Err("policy.quiet_hours: start and end must differ");
        }
        if self.channels.is_empty() {
            return Err("policy.quiet_hours: channels is empty");
        }
        Ok(())
    }
}

/// When the quiet period `now` falls in ends, for a message on `c`; `None`
/// outside it, on a channel that need not keep quiet, or when the
/// customer's local time is not known.
pub fn quiet_until(q: &QuietHours, clock: Option<LocalClock>, c: ContactChannel, now: EventTime) -> Option<EventTime> {
    let clock = clock?;
    if !q.channels.contains(&c) {
        return None;
    }
    let local = now.millis() + i64::from(clock.utc_offset_minutes) * 60_000;
    let of_day = local.rem_euclid(DAY_MS);
    let (start, end) = (
        i64::from(q.start.minutes()) * 60_000,
        i64::from(q.end.minutes()) * 60_000,
    );
    let inside = if start < end {
        of_day >= start && of_day < end
    } else {
        of_day >= start || of_day < end
    };
    inside.then(|| EventTime::from_millis(now.millis() + (end - of_day).rem_euclid(DAY_MS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: TimeOfDay::try_from(start.to_string()).unwrap(),
            end: TimeOfDay::try_from(end.to_string()).unwrap(),
            channels: vec![ContactChannel::Sms, ContactChannel::Push],
            during: During::Defer,
        }
    }

    /// 2026-11-01 at `h:m` UTC.
    fn utc(h: i64, m: i64) -> EventTime {
        EventTime::from_millis(1_793_491_200_000 + (h * 60 + m) * 60_000)
    }

    fn clock(offset: i16) -> Option<LocalClock> {
        Some(LocalClock {
            utc_offset_minutes: offset,
            at: utc(0, 0),
        })
    }

    #[test]
    fn quiet_hours_follow_the_customers_clock_and_wrap_midnight() {
        let night = q("21:00", "08:00");
        // 22:30 UTC is 23:30 in UTC+1: quiet until 08:00 local, 07:00 UTC.
        assert_eq!(
            quiet_until(&night, clock(60), ContactChannel::Sms, utc(22, 30)),
            Some(utc(31, 0))
        );
        // 22:30 UTC is 17:30 in UTC-5: not quiet.
        assert_eq!(quiet_until(&night, clock(-300), ContactChannel::Sms, utc(22, 30)), None);
        // Unknown local time, or a channel that need not keep quiet.
        assert_eq!(quiet_until(&night, None, ContactChannel::Sms, utc(23, 0)), None);
        assert_eq!(quiet_until(&night, clock(0), ContactChannel::Web, utc(23, 0)), None);
        // The end itself is outside; the start inside.
        assert_eq!(quiet_until(&night, clock(0), ContactChannel::Push, utc(8, 0)), None);
        assert_eq!(
            quiet_until(&night, clock(0), ContactChannel::Push, utc(21, 0)),
            Some(utc(32, 0))
        );
        // A period within one day.
        let lunch = q("12:00", "14:00");
        assert_eq!(
            quiet_until(&lunch, clock(0), ContactChannel::Sms, utc(13, 15)),
            Some(utc(14, 0))
        );
        assert_eq!(quiet_until(&lunch, clock(0), ContactChannel::Sms, utc(14, 15)), None);
    }

    #[test]
    fn times_of_day_parse_strictly() {
        for bad in ["24:00", "7:00", "07:60", "0700", "", "ab:cd"] {
            assert!(TimeOfDay::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert_eq!(TimeOfDay::try_from("07:05".to_string()).unwrap().minutes(), 425);
    }

    proptest! {
        /// Deferring to the returned time always lands outside the quiet
        /// period, and nothing between now and then is outside it.
        #[test]
        fn the_end_of_quiet_is_outside_and_the_wait_is_inside(
            start in 0..1440u16, end in 0..1440u16, offset in -840..=840i16, minute in 0..(3 * 1440i64),
        ) {
            prop_assume!(start != end);
            let qh = QuietHours { start: TimeOfDay(start), end: TimeOfDay(end), ..q("21:00", "08:00") };
            let now = utc(0, minute);
            if let Some(until) = quiet_until(&qh, clock(offset), ContactChannel::Sms, now) {
                prop_assert!(until > now);
                prop_assert_eq!(quiet_until(&qh, clock(offset), ContactChannel::Sms, until), None);
                let before = EventTime::from_millis(until.millis() - 60_000);
                prop_assert!(quiet_until(&qh, clock(offset), ContactChannel::Sms, before).is_some());
            }
        }
    }
}
