//! Emit: hand records to the producer without waiting for the broker.
//!
//! In: [`OutRecord`]s. Out: one [`DeliveryFuture`] per record, awaited later
//! by the ack stage. Many sends stay in flight; a full local queue is waited
//! out, never dropped.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::ingest::OutRecord;

pub async fn send(producer: &FutureProducer, r: &OutRecord) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic).payload(&r.payload[..]);
        if let Some(k) = &r.key {
            rec = rec.key(&k[..]);
        }
        if let Some(h) = &r.headers {
            rec = rec.headers(h.clone());
        }
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
