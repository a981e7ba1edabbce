//! The pipeline: ingest -> stitch -> journey -> decide -> emit -> ack.
//!
//! One task polls the consumer and runs the pure core on each message (the
//! single writer of the state); the records it yields are handed to the
//! producer at once, and the ack task stores each input offset once the
//! broker acknowledged everything that message caused.
//!
//! Shutdown (cancel): stop fetching, let the ack task settle every pending
//! delivery, commit the stored offsets, flush the producer.

pub mod ack;
pub mod emit;
pub mod ingest;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::{Decoder, Processor, State};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::health::Health;
use crate::kafka::{self, IngestConsumer, IngestContext};
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;
use ingest::{Ingest, Origin};

/// Runs the pipeline until `cancel`, then drains, commits and flushes.
pub async fn run(
    settings: Arc<Settings>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let producer = kafka::producer(&settings)?;
    if !kafka::ensure_output_topics(&settings, &producer, &cancel).await? {
        return Ok(());
    }
    if !kafka::wait_for_input_topics(&settings, &producer, &cancel).await? {
        return Ok(());
    }
    let consumer = Arc::new(kafka::consumer(
        &settings,
        IngestContext {
            health: health.clone(),
            metrics: metrics.clone(),
            warnings: std::sync::Mutex::new(WarnLimiter::new(settings.log.repeated_warnings_per_minute)),
        },
    )?);
    let inputs: Vec<&str> = settings.topics.consumed();
    consumer.subscribe(&inputs).context("subscribing to the input topics")?;
    info!(topics = ?inputs, group = %settings.kafka.group_id, "consuming");

    let decoder = Decoder::new(settings.namespaces()?, settings.ingest.max_message_bytes)?;
    let processor = Processor::new(Arc::new(settings.core()), state);
    let mut ingest = Ingest::new(
        decoder,
        processor,
        settings.topics.clone(),
        metrics.clone(),
        WarnLimiter::new(settings.log.repeated_warnings_per_minute),
    );

    let (tx, rx) = mpsc::channel(settings.ingest.max_in_flight);
    let acker = tokio::spawn(ack::run(rx, consumer.clone(), metrics.clone(), cancel.clone()));
    let result = poll_loop(&consumer, &producer, &mut ingest, &tx, &health, &metrics, &cancel).await;
    health.set_stopping();
    drop(tx);
    let acked = acker.await.context("the ack task panicked")?;
    shutdown(consumer, producer).await;
    result.and(acked)
}

async fn poll_loop(
    consumer: &IngestConsumer,
    producer: &FutureProducer,
    ingest: &mut Ingest,
    tx: &mpsc::Sender<ack::Pending>,
    health: &Health,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                health.beat();
                metrics.producer_queue.set(i64::from(producer.in_flight_count()));
                continue;
            }
            m = consumer.recv() => m,
        };
        health.beat();
        let msg = match msg {
            Ok(m) => m.detach(),
            Err(e) => {
                metrics.consumer_errors.inc();
                warn!(error = %e, "consume failed");
                continue;
            }
        };
        let received = Instant::now();
        let origin = Origin {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key(),
            payload: msg.payload(),
        };
        let records = ingest.handle(&origin);
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            deliveries.push(
                emit::send(producer, r)
                    .await
                    .context("handing a record to the producer")?,
            );
        }
        metrics.in_flight.inc();
        let pending = ack::Pending {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            deliveries,
            received,
        };
        if tx.send(pending).await.is_err() {
            // The ack task stopped: it failed and cancelled; its error is reported.
            return Ok(());
        }
    }
}

/// Commits stored offsets and flushes the producer, off the async workers.
async fn shutdown(consumer: Arc<IngestConsumer>, producer: FutureProducer) {
    let done = tokio::task::spawn_blocking(move || {
        if let Err(e) = producer.flush(Duration::from_secs(30)) {
            warn!(error = %e, "producer flush incomplete");
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("offsets committed"),
            Err(e) => info!(error = %e, "no offsets committed at shutdown"),
        }
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
    if done.is_err() {
        warn!("shutdown task panicked");
    }
}
