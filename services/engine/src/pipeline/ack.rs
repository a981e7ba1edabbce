//! Ack: wait until everything a message caused is acknowledged by the broker.
//!
//! In: [`Item`]s in processing order: finished messages with the delivery
//! futures of their outputs, and outputs no message holds; beside them, a
//! checkpoint's [`Barrier`]s, each naming how many items come before it and
//! carrying the outputs of the messages not finished yet. Out: a barrier is
//! answered once every output handed over before it is acknowledged, with
//! where the outputs end then;
//! the checkpoint's background flush waits for it before it writes the
//! marker, so a checkpoint (and the input offsets it commits) never covers an
//! output that is not durable, while processing goes on. A delivery failure
//! stops the pipeline; its state is not written.
//!
//! Why barriers go beside the items: the items' channel is bounded (it is
//! the back-pressure on the writer). A barrier sent through it waited for
//! room whenever the producer had a backlog: the `drain` phase of the
//! checkpoint stall, 25-37 ms of the 30-41 ms measured at 1M profiles in
//! sessions 24 and 25. A barrier on its own unbounded channel (one a
//! checkpoint) does not wait; it names its place among the items instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::DeliveryFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::Metrics;

pub struct Pending {
    pub topic: String,
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
    /// Outputs no message holds: settled here, in order, like a finished
    /// message's.
    Outputs(Vec<Delivery>),
}

/// A checkpoint's barrier: answered once the first `after` items and
/// `outputs` (those of the messages not finished at the barrier) are
/// acknowledged, with where this process's acknowledged outputs end at that
/// point: the output positions as of the barrier, whatever is published
/// after it. The sender sends it before any item that comes after it.
pub struct Barrier {
    pub after: u64,
    pub outputs: Vec<Delivery>,
    pub reply: oneshot::Sender<Ends>,
}

/// Per output partition, the offset after the last acknowledged record.
pub type Ends = std::collections::HashMap<(String, i32), i64>;

/// Runs until the items' sender is dropped and every pending entry is
/// settled.
pub async fn run(
    mut rx: mpsc::Receiver<Item>,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
    metrics: Arc<Metrics>,
    delivered: Delivered,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut taken: u64 = 0;
    let mut waiting: VecDeque<Barrier> = VecDeque::new();
    let mut barriers_open = true;
    loop {
        // A barrier is sent before the items after it, so every barrier
        // that belongs before the next item is in its channel by now.
        while let Ok(b) = barriers.try_recv() {
            waiting.push_back(b);
        }
        while let Some(b) = waiting.pop_front() {
            if b.after > taken {
                waiting.push_front(b);
                break;
            }
            settle_all(b.outputs, &delivered, &metrics, &cancel).await?;
            let ends = delivered.lock().map(|m| m.clone()).unwrap_or_default();
            let _ = b.reply.send(ends);
        }
        let item = tokio::select! {
            biased;
            b = barriers.recv(), if barriers_open => {
                match b {
                    Some(b) => waiting.push_back(b),
                    None => barriers_open = false,
                }
                continue;
            }
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        taken += 1;
        let p = match item {
            Item::Done(p) => p,
            Item::Outputs(deliveries) => {
                settle_all(deliveries, &delivered, &metrics, &cancel).await?;
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

/// Settles outputs no finished message holds, in order.
async fn settle_all(
    deliveries: Vec<Delivery>,
    delivered: &Delivered,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    for d in deliveries {
        if let Err(e) = settle(d, delivered).await {
            metrics.delivery_errors.inc();
            error!(error = %e, "an output was not delivered; stopping before the checkpoint covers it");
            cancel.cancel();
            anyhow::bail!("output delivery failed: {e}");
        }
    }
    Ok(())
}
