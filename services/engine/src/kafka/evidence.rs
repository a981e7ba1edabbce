//! The identity evidence topic at the Kafka edge (scale-out stage 1,
//! `docs/scaling.md` section 1).
//!
//! In: the settings. Out: a reader of partition 0 of
//! `topics.identity_evidence`, assigned from the start of the topic outside
//! the consumer group (every process reads every record; nothing is
//! committed), its records in log order as (offset, bytes), and the topic's
//! end offset. Keeps the offset it expects next, to report a gap (a record
//! the broker skipped would leave this process's graph short of the
//! others').

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tracing::error;

use super::whole_topic_reader;
use crate::config::Settings;

pub struct EvidenceReader {
    consumer: Arc<StreamConsumer>,
    topic: String,
    next: i64,
}

impl EvidenceReader {
    /// A reader assigned the whole topic from offset 0.
    pub fn open(s: &Settings) -> anyhow::Result<EvidenceReader> {
        let topic = s.topics.identity_evidence.clone();
        let consumer = whole_topic_reader(s, "identity-evidence", &topic)?;
        Ok(EvidenceReader {
            consumer: Arc::new(consumer),
            topic,
            next: 0,
        })
    }

    /// The topic's end offset now (asked on a blocking thread).
    pub async fn end(&self) -> anyhow::Result<i64> {
        let c = self.consumer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || c.fetch_watermarks(&topic, 0, Duration::from_secs(30)))
            .await
            .context("the end offset reader panicked")?
            .with_context(|| format!("reading the end offset of {}", self.topic))
            .map(|(_, high)| high)
    }

    /// The offset of the next record to fold.
    pub fn position(&self) -> i64 {
        self.next
    }

    /// The next record: its offset and bytes (empty for a record without a
    /// payload).
    pub async fn recv(&mut self) -> Result<(i64, Vec<u8>), KafkaError> {
        let m = self.consumer.recv().await?;
        let offset = m.offset();
        if offset > self.next {
            error!(
                topic = %self.topic,
                expected = self.next,
                got = offset,
                "identity evidence records skipped: this process's graph may differ from the others'"
            );
        }
        self.next = self.next.max(offset + 1);
        Ok((offset, m.payload().unwrap_or_default().to_vec()))
    }
}
