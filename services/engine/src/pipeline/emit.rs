//! Emit: hand records to the producer without waiting for the broker.
//!
//! In: [`OutRecord`]s. Out: one [`DeliveryFuture`] per record, awaited later
//! by the ack stage. Many sends stay in flight; a full local queue is waited
//! out, never dropped.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::record::OutRecord;

pub async fn send(producer: &FutureProducer, r: &OutRecord) -> Result<DeliveryFuture, KafkaError> {
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic).payload(&r.payload[..]);
    if let Some(k) = &r.key {
        rec = rec.key(&k[..]);
    }
    if let Some(h) = &r.headers {
        rec = rec.headers(h.clone());
    }
    if let Some(p) = r.partition {
        rec = rec.partition(p);
    }
    enqueue(producer, rec).await
}

/// Hands one record to the producer, waiting while its local queue is full.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut rec: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
