//! Input partitions the consumer stopped delivering: counted, logged, and
//! kept from holding every other partition back.
//!
//! In: consumer errors, and each input partition's next offset against the
//! broker's end offset, every tick. Out: a `reason` label for
//! `onejourney_input_fetch_errors_total`, and which partitions are stalled
//! (`onejourney_input_partitions_stalled`, an error log naming the topic,
//! partition and offset).
//!
//! Why: a record batch librdkafka cannot decode (a codec it was built
//! without, a corrupt batch) comes back as a consumer error that names no
//! partition (rust-rdkafka keeps only the code), and librdkafka fetches the
//! same batch again and again: the partition makes no progress, with no
//! message to dead-letter. The one sign that names the partition is that the
//! broker holds records past the next offset and none arrives. Such a
//! partition is reported after `ingest.stall_after`, and stops holding the
//! watermark back (it counts as idle), so the other partitions' decisions go
//! on; its own events are applied late once it moves again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, info};

/// The `reason` label of a consumer error that concerns input records.
pub fn fetch_error_reason(e: &KafkaError) -> &'static str {
    let Some(code) = e.rdkafka_error_code() else {
        return "other";
    };
    match code {
        RDKafkaErrorCode::BadCompression => "bad_compression",
        // librdkafka's answer to a codec (or message format) it was built without.
        RDKafkaErrorCode::NotImplemented => "unsupported",
        RDKafkaErrorCode::BadMessage | RDKafkaErrorCode::InvalidMessage => "corrupt",
        RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset => "offset_out_of_range",
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed => "unauthorized",
        _ => "other",
    }
}

/// Every value [`fetch_error_reason`] returns.
pub const FETCH_ERROR_REASONS: [&str; 6] = [
    "bad_compression",
    "unsupported",
    "corrupt",
    "offset_out_of_range",
    "unauthorized",
    "other",
];

/// Tracks each input partition's progress while the broker holds more.
pub struct StallWatch {
    after: Duration,
    /// Next offset last seen for a partition with a backlog, and since when.
    since: HashMap<(String, i32), (i64, Instant)>,
    stalled: HashSet<(String, i32)>,
}

impl StallWatch {
    pub fn new(after: Duration) -> StallWatch {
        StallWatch {
            after,
            since: HashMap::new(),
            stalled: HashSet::new(),
        }
    }

    /// Records that the partition's next offset is `next` and the broker's
    /// end `end` at `now`; `paused` when the engine itself stopped fetching.
    /// Returns whether the partition is stalled.
    pub fn observe(&mut self, topic: &str, partition: i32, next: i64, end: i64, now: Instant, paused: bool) -> bool {
        let key = (topic.to_string(), partition);
        if next >= end || paused {
            self.since.remove(&key);
            self.resumed(&key, next);
            return false;
        }
        let seen = self.since.entry(key.clone()).or_insert((next, now));
        if seen.0 != next {
            *seen = (next, now);
            self.resumed(&key, next);
            return false;
        }
        if now.duration_since(seen.1) < self.after {
            return self.stalled.contains(&key);
        }
        if self.stalled.insert(key) {
            error!(
                topic,
                partition,
                offset = next,
                end,
                stalled_for = ?self.after,
                "input partition stalled: the broker holds records the consumer does not deliver \
                 (see onejourney_input_fetch_errors_total); it no longer holds the watermark back"
            );
        }
        true
    }

    fn resumed(&mut self, key: &(String, i32), next: i64) {
        if self.stalled.remove(key) {
            info!(
                topic = key.0,
                partition = key.1,
                offset = next,
                "stalled input partition moves again"
            );
        }
    }

    /// Partitions stalled now.
    pub fn count(&self) -> usize {
        self.stalled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_with_a_backlog_and_no_progress_is_stalled_until_it_moves() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(60));
        assert!(!w.observe("web", 0, 10, 20, t0, false));
        assert!(!w.observe("web", 0, 10, 20, t0 + Duration::from_secs(59), false));
        assert!(w.observe("web", 0, 10, 20, t0 + Duration::from_secs(61), false));
        assert_eq!(w.count(), 1);
        // Progress clears it.
        assert!(!w.observe("web", 0, 11, 20, t0 + Duration::from_secs(62), false));
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn caught_up_or_paused_partitions_are_never_stalled() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(1));
        assert!(!w.observe("web", 0, 20, 20, t0, false));
        assert!(!w.observe("web", 0, 20, 20, t0 + Duration::from_secs(100), false));
        assert!(!w.observe("pos", 1, 3, 9, t0, true));
        assert!(!w.observe("pos", 1, 3, 9, t0 + Duration::from_secs(100), true));
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn decoding_errors_get_their_own_reason() {
        let e = KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented);
        assert_eq!(fetch_error_reason(&e), "unsupported");
        let e = KafkaError::MessageConsumption(RDKafkaErrorCode::BadCompression);
        assert_eq!(fetch_error_reason(&e), "bad_compression");
        assert!(FETCH_ERROR_REASONS.contains(&fetch_error_reason(&KafkaError::Canceled)));
    }
}
