//! Restore: the state and offsets of the last checkpoint, at start.
//!
//! In: the snapshot files of this consumer group (the newest and the
//! previous generation), the changelog topics, the group's committed
//! offsets, `state.rebuild`. A snapshot file is written at a graceful stop;
//! the checkpoints after it are on the changelog only: the snapshot is
//! restored, then the tail (the records of the checkpoints committed after
//! it, when the last marker builds on the snapshot's chain). With no
//! snapshot file, the whole state comes from the changelog.
//! Out: the core's state loaded into the processor, the snapshot's
//! [`Header`] (where each input partition resumes, where each output
//! partition ended) and the records published after it ([`Published`]), read
//! back so that re-processing does not publish them twice. It keeps nothing.
//!
//! Missing state is an error, not an empty start: with no snapshot but
//! offsets committed by the group, the state it built is gone and starting
//! empty would silently lose it, so the engine refuses and says what to do.
//! A rebuild (`--rebuild`) starts every input partition at its beginning,
//! with fresh state, and reads back every retained output so that nothing
//! already published goes out again.
//!
//! Forget holds across both: after the state is loaded (or not), every
//! erasure recorded on the erasure topic is installed ([`install_erasures`])
//! before the first input is read, so no replay brings a forgotten
//! identifier back, whatever order the topics are consumed in.
//!
//! No duplicate without a checkpoint either: a new group (no snapshot, no
//! committed offsets) writes a snapshot of its empty state before it
//! consumes or publishes anything, recording where every output partition
//! ends. A crash before the first interval's checkpoint then restarts from
//! that snapshot like from any other: the inputs from where the group
//! starts (nothing is committed), and every output published since read
//! back and skipped once when re-processing regenerates it. (Without it the
//! restart had no snapshot, read back nothing and published the whole
//! backlog's outputs a second time: issue 13.)

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::Processor;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::durable::changelog::{self, Chain};
use crate::durable::{self, decoding, fresh, Header, Loaded, Published};
use crate::health::{self, Health, Phase};
use crate::metrics::Metrics;

const MIB: u64 = 1 << 20;

/// Loads the last snapshot into `processor` and reads back what was published
/// after it. No snapshot: empty state for a new group, an error for a group
/// that committed offsets; a rebuild: empty state from the inputs' beginning.
pub async fn restore(
    settings: &Arc<Settings>,
    processor: &mut Processor,
    health: &Arc<Health>,
    metrics: &Metrics,
) -> anyhow::Result<(Header, Published)> {
    let path = durable::path(settings);
    if durable::remove_partial(&path)? {
        warn!(path = %path.display(), "removed a partial snapshot (.tmp) left by a crash or a full disk");
    }
    if settings.state.rebuild {
        return rebuild(settings, health).await;
    }
    let started = Instant::now();
    let Some(mut loaded) = load(&path, health).await? else {
        if let Some(restored) = from_broker(settings, processor, health).await? {
            return Ok(restored);
        }
        return start_empty(settings, processor, &path, health).await;
    };
    if let Some(e) = &loaded.passed_over {
        metrics.snapshots.with_label_values(&["corrupt"]).inc();
        error!(
            error = %e,
            restored_from = %loaded.from.display(),
            "the newest state snapshot is damaged: restoring the previous generation (more input is re-processed)"
        );
    }
    let profiles = loaded.core.profiles();
    let chain = super::changelog::chain_at_start(&loaded.header, settings.state.partitions, profiles)?;
    if !chain.complete {
        warn!(
            "the state snapshot predates the changelog: a restore from the broker alone is not possible until the \
             state is rebuilt (`onejourney run --rebuild`) or started empty"
        );
    }
    loaded.header.changelog = Some(chain);
    processor
        .restore(loaded.core, 0)
        .with_context(|| format!("restoring {}", loaded.from.display()))?;
    loaded.header = tail(settings, processor, loaded.header, health).await?;
    let read_at = started.elapsed();
    let published = read_back(settings, health, loaded.header.outputs.clone()).await?;
    info!(
        path = %loaded.from.display(),
        profiles,
        read_seconds = read_at.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        published_after_snapshot = published.len(),
        "state restored"
    );
    Ok((loaded.header, published))
}

/// Reads the newest sound snapshot off the async workers, beating and
/// logging as the bytes come in.
async fn load(path: &Path, health: &Arc<Health>) -> anyhow::Result<Option<Loaded>> {
    let mut phase = Phase::start(health, "reading the state snapshot");
    let p = path.to_path_buf();
    let (loaded, phase) = tokio::task::spawn_blocking(move || {
        let mut read = 0;
        let loaded = durable::read_latest(&p, |n| {
            read = n;
            phase.progress(n / MIB, "MiB");
        });
        phase.progress(read / MIB, "MiB");
        (loaded, phase)
    })
    .await
    .context("the snapshot reader panicked")?;
    phase.done(0, "MiB");
    Ok(loaded?)
}

/// No snapshot: a new consumer group starts empty, from a snapshot of its
/// empty state written at once (see the module's documentation); one that
/// has committed offsets lost its state, and the engine refuses to start.
async fn start_empty(
    settings: &Arc<Settings>,
    processor: &Processor,
    path: &Path,
    health: &Arc<Health>,
) -> anyhow::Result<(Header, Published)> {
    let committed = query(
        settings,
        health,
        "reading the group's committed offsets",
        fresh::committed_inputs,
    )
    .await?;
    if let Some((topic, partition, offset)) = committed.first() {
        anyhow::bail!(
            "no state snapshot at {} (nor its previous generation), but consumer group {} has committed offsets on \
             {} input partitions ({topic}/{partition} at {offset}, ...): the state it built is missing (a lost volume, \
             or state.dir pointing elsewhere) and starting empty would silently lose it. Restore the state \
             directory, or start once with `onejourney run --rebuild` (state.rebuild = true) to rebuild the state \
             from the beginning of the input topics",
            path.display(),
            settings.kafka.group_id,
            committed.len(),
        );
    }
    // Inputs: none recorded, so every partition starts where the group's
    // `auto.offset.reset` puts it, now and after a crash alike.
    let header = empty_header(settings, health, Some(Chain::empty(settings.state.partitions))).await?;
    super::blocking(|| durable::write(path, &header, &processor.snapshot(), |_| health.beat()))
        .with_context(|| format!("writing the first state snapshot to {}", path.display()))?;
    info!(
        path = %path.display(),
        outputs = ?header.outputs,
        "no state snapshot and no committed offsets: a new consumer group starts empty (snapshot of the empty state written)"
    );
    Ok((header, Published::default()))
}

/// No snapshot file (an empty disk): the last checkpoint this consumer
/// group committed on the changelog, when there is one: the identity log
/// replayed over the committed ranges, the latest journey per One ID, the
/// globals, the header (inputs resume, outputs read back) from the marker.
async fn from_broker(
    settings: &Arc<Settings>,
    processor: &mut Processor,
    health: &Arc<Health>,
) -> anyhow::Result<Option<(Header, Published)>> {
    let started = Instant::now();
    let (marker, phase) = reading(
        settings,
        health,
        "reading the changelog's checkpoint markers",
        |s, progress| changelog::last_marker(s, progress),
    )
    .await?;
    let Some(marker) = marker.context("reading the changelog's checkpoint markers")? else {
        phase.done(0, "markers");
        return Ok(None);
    };
    phase.done(1, "markers");
    check_chain(settings, &marker.header.changelog.clone().unwrap_or_default())?;
    let m = marker.clone();
    let (committed, phase) = reading(settings, health, "reading the state changelog", move |s, progress| {
        changelog::read_committed(s, &m, progress)
    })
    .await?;
    let committed = committed.context("reading the state changelog")?;
    phase.done(committed.records, "records");
    let mut globals: onejourney_core::processor::CoreGlobals =
        rmp_serde::from_slice(&committed.globals).context("the changelog's globals record is damaged")?;
    globals.add_dedupe(committed.dedupe);
    let ops = committed.ops.len();
    // The journey records decode on the other cores while this one replays
    // the identity log; the core takes them as they come, into a map sized
    // for them (and for the few tombstones).
    onejourney_core::hash::reserve(&processor.state().journeys, committed.latest.len());
    super::blocking(|| {
        std::thread::scope(|s| {
            let (sinks, received) = decoding::Sinks::new();
            let decoding = committed.latest.decode_on(s, sinks, decoding::cores());
            let restored = processor.restore_changelog(
                globals,
                &committed.ops,
                received.journeys.iter(),
                received.timers.iter(),
                0,
            );
            decoding::join(decoding).context("decoding the journeys changelog")?;
            restored.context("restoring the state from the changelog")
        })
    })?;
    // A fresh state: every journey held came from the changelog.
    let journeys = processor.state().journeys.len();
    let read_at = started.elapsed();
    let published = read_back(settings, health, marker.header.outputs.clone()).await?;
    info!(
        group = %settings.kafka.group_id,
        records = committed.records,
        identity_ops = ops,
        journeys,
        profiles = processor.state().identity.profile_count(),
        read_seconds = read_at.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        published_after_checkpoint = published.len(),
        "no state snapshot: state restored from the changelog on the broker"
    );
    Ok(Some((marker.header, published)))
}

/// A changelog a process with an empty state directory can restore from:
/// whole, and written with this deployment's number of state partitions.
fn check_chain(settings: &Settings, chain: &Chain) -> anyhow::Result<()> {
    anyhow::ensure!(
        chain.complete,
        "no state snapshot at {}, and the changelog of consumer group {} does not hold the whole state (it was \
         written by a process restored from a snapshot older than the changelog): restore the state directory, or \
         start once with `onejourney run --rebuild`",
        durable::path(settings).display(),
        settings.kafka.group_id,
    );
    anyhow::ensure!(
        chain.partitions == settings.state.partitions,
        "state.partitions is {} but the changelog was written with {}: the number is fixed for the life of a \
         deployment; set it back to {}",
        settings.state.partitions,
        chain.partitions,
        chain.partitions,
    );
    Ok(())
}

/// After a local snapshot is loaded: the checkpoints committed on the
/// broker since it was written (the tail), when the group's last marker
/// builds on the snapshot's chain: the identity ops and journeys past the
/// snapshot's chain, and the marker's globals. Returns the header to resume
/// from: the marker's, or the snapshot's when there is no tail.
async fn tail(
    settings: &Arc<Settings>,
    processor: &mut Processor,
    header: Header,
    health: &Arc<Health>,
) -> anyhow::Result<Header> {
    let started = Instant::now();
    let base = header.changelog.clone().unwrap_or_default();
    let (marker, phase) = reading(
        settings,
        health,
        "reading the changelog's checkpoint markers",
        |s, progress| changelog::last_marker(s, progress),
    )
    .await?;
    let marker = marker.context("reading the changelog's checkpoint markers")?;
    phase.done(u64::from(marker.is_some()), "markers");
    let Some((marker, chain)) = marker.and_then(|m| m.header.changelog.clone().map(|c| (m, c))) else {
        return Ok(header);
    };
    if chain == base {
        return Ok(header);
    }
    if !chain.extends(&base) {
        warn!(
            "the last checkpoint on the broker does not build on the local state snapshot (another lineage, or an \
             older checkpoint): restoring the snapshot alone; its inputs are re-processed"
        );
        return Ok(header);
    }
    let m = marker.clone();
    let (read, phase) = reading(
        settings,
        health,
        "reading the state changelog past the snapshot",
        move |s, progress| changelog::read_past(s, &m, Some(&base), progress),
    )
    .await?;
    let read = read.context("reading the state changelog past the snapshot")?;
    phase.done(read.records, "records");
    let mut globals: onejourney_core::processor::CoreGlobals =
        rmp_serde::from_slice(&read.globals).context("the changelog's globals record is damaged")?;
    globals.add_dedupe(read.dedupe);
    let ops = read.ops.len();
    let decoded = super::blocking(|| read.latest.decode()).context("decoding the journeys changelog")?;
    let (journeys, gone) = (decoded.journeys.len(), decoded.gone.len());
    super::blocking(|| {
        processor.apply_changelog_tail(globals, &read.ops, decoded.journeys, decoded.gone, decoded.timers, 0)
    })
    .context("applying the state changelog past the snapshot")?;
    info!(
        records = read.records,
        identity_ops = ops,
        journeys,
        gone,
        seconds = started.elapsed().as_secs_f64(),
        "state changelog past the snapshot applied"
    );
    Ok(marker.header)
}

/// A state whose changelog holds no dedupe delta (written before they
/// existed, or none yet): the next checkpoint writes every dedupe key once,
/// so that a restore from the broker alone has them.
pub fn dedupe_to_changelog(header: &Header, processor: &mut Processor) {
    if header.changelog.as_ref().is_none_or(|c| c.dedupe.0.is_empty()) {
        processor.mark_dedupe_fresh();
    }
}

/// Scale-out (`scaleout.route_journeys`): nothing is restored at start.
/// The graph is folded from the identity evidence topic and each state
/// partition is restored when the group assigns it (`super::moving`);
/// inputs and routed partitions start where the group committed. Returns
/// where the outputs end now (the checkpoints' lower bound).
pub async fn routed_start(settings: &Arc<Settings>, health: &Arc<Health>) -> anyhow::Result<(Header, Published)> {
    let header = empty_header(settings, health, None).await?;
    Ok((header, Published::new(&settings.topics)))
}

/// A header with no input offsets and where the output topics end now.
async fn empty_header(
    settings: &Arc<Settings>,
    health: &Arc<Health>,
    changelog: Option<Chain>,
) -> anyhow::Result<Header> {
    let outputs = query(
        settings,
        health,
        "reading where the output topics end",
        fresh::output_ends,
    )
    .await?;
    Ok(Header {
        written_at_ms: crate::clock::unix_ms(),
        inputs: Vec::new(),
        outputs,
        changelog,
    })
}

/// A rebuild: every input from its beginning into fresh state; every
/// retained output read back, so that re-processing publishes nothing twice.
async fn rebuild(settings: &Arc<Settings>, health: &Arc<Health>) -> anyhow::Result<(Header, Published)> {
    warn!(
        group = %settings.kafka.group_id,
        "state.rebuild: ignoring any snapshot and committed offsets; rebuilding the state from the beginning of \
         the input topics (turn it off once a snapshot is written)"
    );
    let header = query(settings, health, "reading where the topics begin", fresh::beginnings).await?;
    let published = read_back(settings, health, header.outputs.clone()).await?;
    info!(
        inputs = ?header.inputs,
        published_before = published.len(),
        "rebuilding: every input partition starts at its beginning"
    );
    Ok((header, published))
}

/// Reads the erasure topic to its end and installs every suppression entry
/// it carries in the identity graph: called before any input is consumed.
pub async fn install_erasures(
    settings: &Arc<Settings>,
    processor: &mut Processor,
    health: &Arc<Health>,
) -> anyhow::Result<()> {
    let (read, phase) = reading(settings, health, "reading the erasure records", |s, progress| {
        durable::erasures::read(s, progress)
    })
    .await?;
    let read = read.context("reading the erasure records")?;
    phase.done(read.records, "records");
    let entries = read.entries.len();
    let new = processor.install_suppressions(read.entries);
    info!(
        topic = %settings.topics.erasures,
        records = read.records,
        unreadable = read.unreadable,
        entries,
        new,
        "erasures installed: forgotten identifiers stay forgotten"
    );
    Ok(())
}

/// The records published after `since`, read back off the async workers.
async fn read_back(
    settings: &Arc<Settings>,
    health: &Arc<Health>,
    since: Vec<(String, i32, i64)>,
) -> anyhow::Result<Published> {
    let (published, phase) = reading(
        settings,
        health,
        "reading back published outputs",
        move |s, progress| durable::read_published(s, &since, progress),
    )
    .await?;
    let published = published.context("reading back the outputs published after the snapshot")?;
    phase.done(published.len() as u64, "records");
    Ok(published)
}

/// A blocking broker query of the settings, off the async workers, as a
/// phase named `what` that keeps the process alive while it waits.
async fn query<T: Send + 'static>(
    settings: &Arc<Settings>,
    health: &Arc<Health>,
    what: &'static str,
    query: fn(&Settings) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let s = settings.clone();
    health::waiting(health, what, tokio::task::spawn_blocking(move || query(&s)))
        .await
        .with_context(|| format!("{what}: the task panicked"))?
}

/// A blocking read that counts records, off the async workers, as a phase
/// named `what` reporting its progress; returns the phase for its end line.
async fn reading<T: Send + 'static>(
    settings: &Arc<Settings>,
    health: &Arc<Health>,
    what: &'static str,
    read: impl FnOnce(&Settings, &mut dyn FnMut(u64)) -> T + Send + 'static,
) -> anyhow::Result<(T, Phase)> {
    let mut phase = Phase::start(health, what);
    let s = settings.clone();
    tokio::task::spawn_blocking(move || {
        let out = read(&s, &mut |n| phase.progress(n, "records"));
        (out, phase)
    })
    .await
    .with_context(|| format!("{what}: the task panicked"))
}
