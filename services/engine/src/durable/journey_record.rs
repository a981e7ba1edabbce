//! The journeys changelog's record format: one record per One ID (the
//! latest wins), written by each checkpoint and, with scale-out, by a
//! process handing a state partition over (see [`super::changelog`] for the
//! topic and `durable::partition` for a new owner's read).
//!
//! In: a journey (or none), the timers homed at its One ID and, with
//! scale-out, the dedupe keys of the events in it with the writer's
//! applied-to time. Out: the record's bytes (none: a tombstone) and back.
//! The first byte is the version: 1 (still read), the journey alone; 2, the
//! journey and its timers; 3, and the keys and applied-to time (written
//! only when there are keys, so one-process records stay version 2). It
//! keeps nothing.

use anyhow::Context as _;
use onejourney_core::journey::Journey;
use onejourney_core::processor::{AppliedKey, Timer};
use onejourney_core::EventTime;

use super::changelog::{decode, RECORD_VERSION};

/// The first byte of a journey record: 2, the journey (or none) and the
/// timers homed there; 1 (still read), the journey alone.
pub const JOURNEY_RECORD_VERSION: u8 = 2;
/// A journey record with the dedupe keys of the events applied to it
/// (scale-out, `scaleout.route_journeys`): the journey, its timers, the keys.
pub const APPLIED_RECORD_VERSION: u8 = 3;

/// A journey record: the journey (none: it went) and the timers homed at
/// its One ID; none (a tombstone) when it has neither.
pub fn encode_journey(
    journey: Option<&Journey>,
    timers: &[Timer],
    applied: &[AppliedKey],
    applied_to: EventTime,
) -> anyhow::Result<Option<Vec<u8>>> {
    if journey.is_none() && timers.is_empty() {
        return Ok(None);
    }
    let mut out;
    if applied.is_empty() {
        out = vec![JOURNEY_RECORD_VERSION];
        rmp_serde::encode::write(&mut out, &(journey, timers)).context("encoding a journey record")?;
    } else {
        out = vec![APPLIED_RECORD_VERSION];
        rmp_serde::encode::write(&mut out, &(journey, timers, applied, applied_to.0))
            .context("encoding a journey record")?;
    }
    Ok(Some(out))
}

/// A journey record with what scale-out adds: the dedupe keys of the
/// events in it and the writer's applied-to time (ms).
pub type AppliedRecord = (Option<Journey>, Vec<Timer>, Vec<AppliedKey>, i64);

/// A journey record read back, of any version, with the dedupe keys of
/// the events in it (none in records of version 2 and 1, whose applied-to
/// time reads as `i64::MIN`).
pub fn decode_journey_applied(bytes: &[u8]) -> anyhow::Result<AppliedRecord> {
    let damaged = "a damaged journey record in the changelog";
    match bytes.split_first() {
        Some((&APPLIED_RECORD_VERSION, body)) => rmp_serde::from_slice(body).context(damaged),
        Some((&JOURNEY_RECORD_VERSION, body)) => {
            let (j, t): (Option<Journey>, Vec<Timer>) = rmp_serde::from_slice(body).context(damaged)?;
            Ok((j, t, Vec::new(), i64::MIN))
        }
        Some((&RECORD_VERSION, _)) => Ok((Some(decode(bytes, "journey")?), Vec::new(), Vec::new(), i64::MIN)),
        Some((v, _)) => anyhow::bail!(
            "a journey record of changelog format {v} (this build reads {RECORD_VERSION}, \
             {JOURNEY_RECORD_VERSION} and {APPLIED_RECORD_VERSION}): run the version that wrote it"
        ),
        None => anyhow::bail!("an empty journey record in the changelog"),
    }
}

/// A journey record read back: the journey (none: it went) and its timers.
pub fn decode_journey(bytes: &[u8]) -> anyhow::Result<(Option<Journey>, Vec<Timer>)> {
    decode_journey_applied(bytes).map(|(j, t, _, _)| (j, t))
}

#[cfg(test)]
mod tests {
    use super::super::changelog::encode;
    use super::*;

    #[test]
    fn a_journey_record_carries_its_timers_and_one_of_version_1_still_reads() {
        use onejourney_core::processor::TimerKind;
        let j = Journey::default();
        let key = onejourney_core::ids::IdKey::new(onejourney_core::ids::Ns(3), "c-1");
        let timers = vec![(EventTime(5), TimerKind::Quiet, key)];
        let both = encode_journey(Some(&j), &timers, &[], EventTime::MIN)
            .expect("encodes")
            .expect("a value");
        assert_eq!(both[0], JOURNEY_RECORD_VERSION);
        let (back, t) = decode_journey(&both).expect("decodes");
        assert_eq!((format!("{back:?}"), &t), (format!("{:?}", Some(&j)), &timers));
        let alone = encode_journey(None, &timers, &[], EventTime::MIN)
            .expect("encodes")
            .expect("timers alone: a value");
        assert_eq!(decode_journey(&alone).expect("decodes"), (None, timers));
        assert_eq!(
            encode_journey(None, &[], &[], EventTime::MIN).expect("encodes"),
            None,
            "neither: a tombstone"
        );
        // What main wrote: a version byte 1 and the journey.
        let old = encode(&j).expect("encodes");
        let (back, t) = decode_journey(&old).expect("version 1 reads");
        assert!(back.is_some() && t.is_empty());
        let mut other = old;
        other[0] = 9;
        let e = decode_journey(&other).expect_err("refused").to_string();
        assert!(e.contains("format 9"), "{e}");
    }

    #[test]
    fn a_record_with_keys_reads_back_with_them_and_without_them_as_before() {
        let j = Journey::default();
        let keys = vec![(5, 42)];
        let v3 = encode_journey(Some(&j), &[], &keys, EventTime(7))
            .expect("encodes")
            .expect("a value");
        assert_eq!(v3[0], APPLIED_RECORD_VERSION);
        let (back, t, k, to) = decode_journey_applied(&v3).expect("decodes");
        assert_eq!((back.is_some(), t.len(), k, to), (true, 0, keys, 7));
        assert!(decode_journey(&v3).expect("decodes").0.is_some());
        let v2 = encode_journey(Some(&j), &[], &[], EventTime(7))
            .expect("encodes")
            .expect("a value");
        assert_eq!(decode_journey_applied(&v2).expect("decodes").2, Vec::new());
    }
}
