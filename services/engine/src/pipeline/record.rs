//! The records the pipeline publishes, and the steps that carry them from
//! ingest to the in-flight queue.
//!
//! In: what [`super::ingest`] makes of a message or a tick. Out: [`Step`]s,
//! read by [`super::inflight`], whose [`OutRecord`]s [`super::emit`] hands to
//! the producer. Plain data: it keeps nothing.

use rdkafka::message::OwnedHeaders;

/// What handling a message or a tick produced, for the pipeline's
/// bookkeeping of offsets.
pub enum Step {
    /// Message `seq` is fully processed; these are all its records.
    Done { seq: u64, records: Vec<OutRecord> },
    /// Timer outputs: they keep message `seq` (if any) from being acknowledged
    /// until they are delivered.
    Attach { seq: Option<u64>, records: Vec<OutRecord> },
}

/// A record to publish.
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    /// `None`: the producer's partitioner picks (by key).
    pub partition: Option<i32>,
}

impl OutRecord {
    /// Its headers as (key, value) pairs.
    pub fn header_pairs(&self) -> Vec<(&str, Option<&[u8]>)> {
        use rdkafka::message::Headers;
        self.headers
            .as_ref()
            .map(|h| h.iter().map(|x| (x.key, x.value)).collect())
            .unwrap_or_default()
    }
}
