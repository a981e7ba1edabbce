//! Ack: store an input offset once everything it caused is durable.
//!
//! In: [`Pending`] entries in processing order, each with the delivery futures
//! of its outputs. Out: stored offsets (committed by the consumer's background
//! commit and at shutdown). Invariant: offsets are stored in processing order,
//! each only after its own outputs and every earlier message's outputs are
//! acknowledged, so the stored offset of a partition is always a contiguous
//! processed prefix. A delivery failure stops the pipeline without storing.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::Consumer;
use rdkafka::producer::DeliveryFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::kafka::IngestConsumer;
use crate::metrics::Metrics;

pub struct Pending {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub deliveries: Vec<DeliveryFuture>,
    pub received: Instant,
}

/// Runs until the sender side is dropped and every pending entry is settled.
pub async fn run(
    mut rx: mpsc::Receiver<Pending>,
    consumer: Arc<IngestConsumer>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(p) = rx.recv().await {
        let had_outputs = !p.deliveries.is_empty();
        for d in p.deliveries {
            let failure = match d.await {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(e.to_string()),
                Err(_) => Some(String::from("the producer dropped the message")),
            };
            if let Some(e) = failure {
                metrics.delivery_errors.inc();
                error!(topic = %p.topic, partition = p.partition, offset = p.offset, error = %e,
                    "an output was not delivered; stopping without storing its offset");
                cancel.cancel();
                anyhow::bail!("output delivery failed: {e}");
            }
        }
        if had_outputs {
            metrics.event_to_output.observe(p.received.elapsed().as_secs_f64());
        }
        metrics.in_flight.dec();
        // Fails only when the partition was revoked meanwhile: its new owner
        // re-processes from the last commit (at-least-once).
        if let Err(e) = consumer.store_offset(&p.topic, p.partition, p.offset) {
            debug!(topic = %p.topic, partition = p.partition, error = %e, "offset not stored");
        }
    }
    Ok(())
}
