//! The pipeline: restore -> ingest -> stitch -> journey -> decide -> emit ->
//! ack -> checkpoint.
//!
//! In: the settings, the shared state, the Kafka clients. Out: decisions and
//! identity changes on the output topics, snapshots, committed offsets. It
//! keeps nothing itself: each stage below says what it keeps.
//!
//! One task ([`poll`]) polls the consumer and runs the pure core on each
//! message (the single writer of the state): [`partitions`] admits the
//! message, [`ingest`] turns it into [`record`]s, [`inflight`] hands them to
//! the producer ([`emit`]) and the finished messages to the [`ack`] task,
//! which waits for the broker's acknowledgement of everything each message
//! caused.
//!
//! Durability (see [`crate::durable`]): at start the last snapshot is
//! restored ([`restore`]) and every assigned partition resumes at the offset
//! it covers; records published after it are read back so that re-processing
//! does not publish them twice; every erasure recorded so far is installed
//! before the first input is read, so no replay un-forgets anyone. Every
//! `state.snapshot_interval` the [`checkpoint`] takes the changes since the
//! last one at a barrier and, in the background while processing goes on,
//! waits until every output up to the barrier is acknowledged, writes the
//! changes with the input offsets they cover and the output end offsets to
//! the changelog topics, then commits those input offsets. A crash
//! re-processes at most one interval of input (plus a flush).
//!
//! Scale-out stage 1 (`scaleout.identity_log`, `docs/scaling.md`): before
//! it is ready, the process folds the identity evidence topic up to its end
//! as of start; then the poll loop folds every new record as it comes
//! ([`evidence`] holds what waits for its own record).
//!
//! Shutdown (cancel): stop fetching, apply every buffered event, checkpoint
//! and write the full snapshot file (so a restart re-processes nothing and
//! reads no changelog), flush the producer.

pub mod ack;
pub mod changelog;
pub mod checkpoint;
pub mod emit;
pub mod evict;
pub mod evidence;
pub mod handoff;
pub mod inflight;
pub mod ingest;
pub mod lanes;
pub mod moving;
pub mod partitions;
pub mod poll;
pub mod record;
pub mod restore;
pub mod route;
pub mod unfinished;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::{Decoder, Processor, State};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::durable;
use crate::health::{self, Health};
use crate::kafka::{self, edge, IngestConsumer, IngestContext};
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;
use checkpoint::Checkpoint;
use inflight::InFlight;
use ingest::Ingest;
use partitions::Partitions;
use poll::Poll;

/// Runs the pipeline until `cancel`, then drains, checkpoints and flushes.
/// `membership` (with `scaleout.route_journeys`): where the state partitions
/// this process owns go once each assignment is settled, and who else still
/// names a partition it was given.
pub async fn run(
    settings: Arc<Settings>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
    membership: Option<handoff::Membership>,
) -> anyhow::Result<()> {
    let producer = kafka::producer(&settings)?;
    if !topics_ready(&settings, &producer, &health, &cancel).await? {
        return Ok(());
    }
    let Some(Started {
        header,
        published,
        ingest,
        evidence,
    }) = start(&settings, &producer, state, &metrics, &health, &cancel, membership).await?
    else {
        return Ok(());
    };
    let (edge_tx, edge_rx) = edge::channel();
    let context = IngestContext::new(
        health.clone(),
        metrics.clone(),
        WarnLimiter::new(settings.log.repeated_warnings_per_minute),
        edge_tx.clone(),
        header.resume_offsets(),
    )
    .with_scaleout(settings.scaleout.route_journeys);
    let consumer = subscribe(&settings, context)?;
    let delivered: ack::Delivered = Arc::default();
    let checkpoint = checkpointer(&settings, &producer, &metrics, &health, &cancel, &header).await?;
    let (ack_tx, ack_rx) = mpsc::channel(settings.ingest.max_in_flight);
    let acker = tokio::spawn(ack::run(ack_rx, metrics.clone(), delivered, cancel.clone()));
    let watcher = tokio::spawn(edge::watch_end_offsets(
        consumer.clone(),
        settings.topics.clone(),
        edge_tx,
        cancel.clone(),
    ));
    let mut poll = Poll {
        consumer: consumer.clone(),
        edge: edge_rx,
        ingest,
        evidence,
        partitions: Partitions::new(header.resume_offsets(), settings.ingest.stall_after)
            .with_contiguous(&settings.topics.routed),
        in_flight: InFlight::new(producer.clone(), published, ack_tx, metrics.clone()),
        checkpoint,
        eviction: evict::Eviction::new(
            settings.state.evict_journeys_after,
            settings.state.freeze_journeys_after,
        ),
        settings: settings.clone(),
        health: health.clone(),
        metrics,
        cancel,
        clock: Instant::now(),
    };
    let result = poll.run().await;
    watcher.abort();
    health.set_stopping();
    // Closes the ack channel: the ack task settles what it holds and ends.
    drop(poll);
    let acked = acker.await.context("the ack task panicked")?;
    shutdown(consumer, producer).await;
    result.and(acked)
}

/// The checkpointer, once it has read where the output topics end.
async fn checkpointer(
    settings: &Arc<Settings>,
    producer: &FutureProducer,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    cancel: &CancellationToken,
    header: &durable::Header,
) -> anyhow::Result<Checkpoint> {
    let checkpoint = Checkpoint::new(
        settings,
        producer,
        metrics.clone(),
        health.clone(),
        cancel.clone(),
        header.changelog.clone().unwrap_or_default(),
    );
    health::waiting(health, "reading where the output topics end", checkpoint).await
}

/// Creates the output topics and waits for the input topics; each long phase
/// keeps the process alive and logs its progress (see `health::Phase`).
/// False when cancelled meanwhile.
async fn topics_ready(
    settings: &Settings,
    producer: &FutureProducer,
    health: &Arc<Health>,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let outputs = kafka::ensure_output_topics(settings, producer, cancel);
    if !health::waiting(health, "creating the output topics", outputs).await? {
        return Ok(false);
    }
    let inputs = kafka::wait_for_input_topics(settings, producer, cancel);
    health::waiting(health, "waiting for the input topics", inputs).await
}

/// What the poll loop starts from.
struct Started {
    header: durable::Header,
    published: durable::Published,
    ingest: Ingest,
    evidence: Option<kafka::evidence::EvidenceReader>,
}

/// Restores the state, installs every erasure and, with
/// `scaleout.identity_log`, folds the identity evidence topic to its end;
/// then the process counts as restored. `None` when cancelled meanwhile.
async fn start(
    settings: &Arc<Settings>,
    producer: &FutureProducer,
    state: Arc<State>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    cancel: &CancellationToken,
    membership: Option<handoff::Membership>,
) -> anyhow::Result<Option<Started>> {
    let decoder =
        Decoder::new(settings.namespaces()?, settings.ingest.max_message_bytes)?.with_limits(settings.input_limits());
    let mut processor = Processor::new(Arc::new(settings.core()), state);
    let started = Instant::now();
    let (header, published) = if settings.scaleout.route_journeys {
        // The state partitions are restored as the group assigns them
        // (`moving.rs`); the graph is the identity evidence topic's.
        restore::routed_start(settings, health).await?
    } else {
        let restored = restore::restore(settings, &mut processor, health, metrics).await?;
        restore::dedupe_to_changelog(&restored.0, &mut processor);
        restored
    };
    restore::install_erasures(settings, &mut processor, health).await?;
    let warnings = WarnLimiter::new(settings.log.repeated_warnings_per_minute);
    let mut ingest = Ingest::new(decoder, processor, settings.topics.clone(), metrics.clone(), warnings);
    let mut evidence = None;
    if settings.scaleout.identity_log {
        ingest = ingest.with_identity_log();
        tracing::debug!(process = ingest.process_id(), dir = %settings.state.dir.display(), "this process's id in the identity log");
        if settings.scaleout.route_journeys {
            let inputs = kafka::input_partitions(settings, producer).await?;
            let idle_after = settings.timers.idle_after;
            if let Some(m) = &membership {
                m.announce_nothing_yet();
            }
            ingest = ingest.with_routing(settings.state.partitions, &inputs, idle_after, membership);
        }
        let mut reader = kafka::evidence::EvidenceReader::open(settings)?
            .counting(metrics.fetch_rewinds.with_label_values(&["evidence"]));
        if !catch_up(&mut reader, &mut ingest, health, cancel).await? {
            return Ok(None);
        }
        evidence = Some(reader);
    }
    metrics.restore_seconds.set(started.elapsed().as_secs_f64());
    health.set_restored(true);
    Ok(Some(Started {
        header,
        published,
        ingest,
        evidence,
    }))
}

/// Folds the identity evidence topic up to its end as of now (before the
/// process is ready). False when cancelled meanwhile.
async fn catch_up(
    reader: &mut kafka::evidence::EvidenceReader,
    ingest: &mut Ingest,
    health: &Arc<Health>,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let end = health::waiting(health, "reading where the identity evidence ends", reader.end()).await?;
    let mut phase = health::Phase::start(health, "folding the identity evidence");
    while reader.position() < end {
        let (offset, payload) = tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            r = reader.recv() => r.context("reading the identity evidence")?,
        };
        // Records of earlier runs and of other processes: nothing waits.
        let steps = ingest.fold(offset, &payload, 0, None);
        debug_assert!(steps.is_empty());
        phase.progress(u64::try_from(offset).unwrap_or(0), "records");
    }
    phase.done(u64::try_from(end).unwrap_or(0), "records");
    Ok(true)
}

/// The input consumer, subscribed to every consumed topic.
fn subscribe(settings: &Settings, context: IngestContext) -> anyhow::Result<Arc<IngestConsumer>> {
    let consumer = Arc::new(kafka::consumer(settings, context)?);
    let mut inputs: Vec<&str> = settings.topics.consumed();
    if settings.scaleout.route_journeys {
        inputs.push(&settings.topics.routed);
    }
    consumer.subscribe(&inputs).context("subscribing to the input topics")?;
    info!(topics = ?inputs, group = %settings.kafka.group_id, "consuming");
    Ok(consumer)
}

/// Runs CPU-heavy work (serialising the state) without starving the other
/// tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Flushes the producer and leaves the group, off the async workers.
/// Leaving: the group takes the partitions back (the revocation is served
/// while the consumer is polled; messages that arrive meanwhile are left to
/// the next owner), then the consumer closes. Closing in the middle of an
/// incremental rebalance can hang librdkafka (its issue 4527).
async fn shutdown(consumer: Arc<IngestConsumer>, producer: FutureProducer) {
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.assignment().is_ok_and(|a| a.count() > 0) && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }
    let done = tokio::task::spawn_blocking(move || {
        if let Err(e) = producer.flush(Duration::from_secs(30)) {
            warn!(error = %e, "producer flush incomplete");
        }
        drop(consumer);
    })
    .await;
    if done.is_err() {
        warn!("shutdown task panicked");
    }
}
