//! Ack: wait until everything a message caused is acknowledged by the broker.
//!
//! In: [`Item`]s in processing order: the delivery futures of outputs as
//! they are made, finished messages (the finished front of the in-flight
//! queue with its own outputs), and barriers. Out: a barrier is answered
//! once every output handed over before it is acknowledged, with where the
//! outputs end then; the checkpoint's background flush waits for it before
//! it writes the marker, so a checkpoint (and the input offsets it commits)
//! never covers an output that is not durable, while processing goes on. A
//! delivery failure stops the pipeline; its state is not written.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::DeliveryFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::Metrics;

pub struct Pending {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub deliveries: Vec<Delivery>,
    pub received: Instant,
}

/// One output handed to the producer.
pub struct Delivery {
    pub topic: Arc<str>,
    pub future: DeliveryFuture,
}

/// The end of what this process published: per output partition, the
/// offset after the last acknowledged record.
pub type Delivered = Arc<std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>>;

/// Awaits one delivery; records where it landed.
pub async fn settle(d: Delivery, delivered: &Delivered) -> Result<(), String> {
    match d.future.await {
        Ok(Ok(done)) => {
            if let Ok(mut m) = delivered.lock() {
                let end = m.entry((d.topic.to_string(), done.partition)).or_insert(0);
                *end = (*end).max(done.offset + 1);
            }
            Ok(())
        }
        Ok(Err((e, _))) => Err(e.to_string()),
        Err(_) => Err(String::from("the producer dropped the message")),
    }
}

pub enum Item {
    Done(Pending),
    /// Outputs as they are made (of a message not at the front of the
    /// in-flight queue, or of a timer): settled here, in order, like a
    /// finished message's. `received`: when the message they are all the
    /// outputs of was received (for the event-to-output histogram), `None`
    /// for a timer's or scale-out's.
    Outputs {
        deliveries: Vec<Delivery>,
        received: Option<Instant>,
    },
    /// Answered when everything before it is acknowledged, with where this
    /// process's acknowledged outputs end at that point: the output
    /// positions as of the barrier, whatever is published after it.
    Barrier(oneshot::Sender<Ends>),
}

/// Per output partition, the offset after the last acknowledged record.
pub type Ends = std::collections::HashMap<(String, i32), i64>;

/// Runs until the sender side is dropped and every pending entry is settled.
pub async fn run(
    mut rx: mpsc::Receiver<Item>,
    metrics: Arc<Metrics>,
    delivered: Delivered,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(item) = rx.recv().await {
        let p = match item {
            Item::Done(p) => p,
            Item::Outputs { deliveries, received } => {
                let had_outputs = !deliveries.is_empty();
                for d in deliveries {
                    if let Err(e) = settle(d, &delivered).await {
                        metrics.delivery_errors.inc();
                        error!(error = %e, "an output was not delivered; stopping before the checkpoint covers it");
                        cancel.cancel();
                        anyhow::bail!("output delivery failed: {e}");
                    }
                }
                if let Some(received) = received.filter(|_| had_outputs) {
                    metrics.event_to_output.observe(received.elapsed().as_secs_f64());
                }
                continue;
            }
            Item::Barrier(reply) => {
                let ends = delivered.lock().map(|m| m.clone()).unwrap_or_default();
                let _ = reply.send(ends);
                continue;
            }
        };
        let had_outputs = !p.deliveries.is_empty();
        for d in p.deliveries {
            if let Err(e) = settle(d, &delivered).await {
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
        metrics.events_settled.inc();
    }
    Ok(())
}
