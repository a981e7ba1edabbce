//! The identity evidence topic at the Kafka edge (scale-out stage 1,
//! `docs/scaling.md` section 1).
//!
//! In: the settings. Out: a reader of partition 0 of
//! `topics.identity_evidence`, assigned from the start of the topic outside
//! the consumer group (every process reads every record; nothing is
//! committed), its records in log order as (offset, bytes), and the topic's
//! end offset. Keeps the offset it expects next: a record the broker
//! skipped would leave this process's graph short of the others', so a gap
//! is fetched again (see [`Gapless`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;
use tracing::{error, warn};

use super::resume::{Follow, Gapless};
use super::whole_topic_reader;
use crate::config::Settings;

pub struct EvidenceReader {
    consumer: Arc<StreamConsumer>,
    topic: String,
    follow: Gapless,
    /// Counts the re-fetches after a gap.
    rewinds: Option<prometheus::IntCounter>,
}

impl EvidenceReader {
    /// A reader assigned the whole topic from offset 0.
    pub fn open(s: &Settings) -> anyhow::Result<EvidenceReader> {
        let topic = s.topics.identity_evidence.clone();
        let consumer = whole_topic_reader(s, "identity-evidence", &topic)?;
        Ok(EvidenceReader {
            consumer: Arc::new(consumer),
            topic,
            follow: Gapless::new(0),
            rewinds: None,
        })
    }

    /// Counts each re-fetch after a gap on `c`.
    pub fn counting(mut self, c: prometheus::IntCounter) -> Self {
        self.rewinds = Some(c);
        self
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
        self.follow.next()
    }

    /// The next record: its offset and bytes (empty for a record without a
    /// payload).
    pub async fn recv(&mut self) -> Result<(i64, Vec<u8>), KafkaError> {
        loop {
            let m = self.consumer.recv().await?;
            let offset = m.offset();
            let expected = self.follow.next();
            match self.follow.record(offset) {
                Follow::Take => {}
                Follow::Skip => continue,
                Follow::Missing(from) => error!(
                    topic = %self.topic,
                    from,
                    to = offset,
                    "identity evidence records missing at the broker: this process's graph may differ from the others'"
                ),
                Follow::Rewind(back) => {
                    warn!(
                        topic = %self.topic,
                        expected,
                        got = offset,
                        rewind_to = back,
                        "the broker skipped identity evidence records; fetching them again"
                    );
                    if let Some(c) = &self.rewinds {
                        c.inc();
                    }
                    let (c, topic) = (self.consumer.clone(), self.topic.clone());
                    let seek = move || c.seek(&topic, 0, Offset::Offset(back), Duration::from_secs(10));
                    if let Ok(Err(e)) | Err(e) = tokio::task::spawn_blocking(seek)
                        .await
                        .map_err(|e| KafkaError::Seek(e.to_string()))
                    {
                        warn!(error = %e, "seeking back in the identity evidence failed; retrying on the next record");
                        self.follow.rewind_failed();
                    }
                    continue;
                }
            }
            return Ok((offset, m.payload().unwrap_or_default().to_vec()));
        }
    }
}
