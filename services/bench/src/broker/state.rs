//! The state figures of issue 14, against the broker: a checkpoint of the
//! preloaded profiles, the engine restoring it from the local state
//! directory and from the broker alone, and the checkpoints it writes while
//! it applies the backlog on top.
//!
//! In: the core's processor with the preloaded profiles (before the core
//! run changes it), the bench's settings with `--brokers`, the backlog.
//! Out: [`Persisted`] (what writing that first checkpoint took) and
//! [`StateFigures`]: `restore_local_s`, `checkpoint_stall_ms`,
//! `changelog_bytes_per_1k_events` and `restore_changelog_s`. Keeps a
//! state directory and topics with a prefix of their own; the directory is
//! removed at the end.
//!
//! Every step goes through the engine's public entry points, so the figures
//! follow changes to them: [`persist`] calls what the checkpoint calls
//! (`pipeline::changelog::Changelog::write`, then `durable::write` of
//! `Processor::snapshot`); [`measure`] starts the engine itself
//! (`Engine::start`, `Engine::stop`) and reads its metrics
//! (`onejourney_checkpoint_stall_seconds`, `onejourney_changelog_bytes_total`,
//! `onejourney_state_restore_seconds`) and its readiness (`Health::ready`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::Processor;
use tokio_util::sync::CancellationToken;

use onejourney_engine::config::Settings;
use onejourney_engine::durable::changelog::Chain;
use onejourney_engine::durable::{self, Header};
use onejourney_engine::metrics::{Metrics, CHANGELOG_KINDS, STALL_PHASES};
use onejourney_engine::pipeline::changelog::Changelog;
use onejourney_engine::{kafka, Engine};

use super::{clients, wait_until, Msg, PARTITIONS};
use crate::Figure;

/// How often the engine checkpoints while it applies the backlog (the
/// default is 5 minutes: the run would see only the final one). Until
/// session 24 the bench used twice its own checkpoint of the whole state
/// when that was longer (45 s at 1M profiles), for an engine whose interval
/// burst missed ticks; the engine's interval now waits a whole interval
/// after a late tick and skips a barrier while a flush runs. With 45 s the
/// engine applied the backlog before its first periodic checkpoint, so the
/// stall measured was the stop's, when nothing is processed any more.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// The checkpoint [`persist`] wrote, and the settings (topics, group, state
/// directory) the engine then restores it with.
pub struct Persisted {
    settings: Settings,
    pub profiles: usize,
    /// Seconds to produce the changelog records and their marker, acknowledged.
    pub changelog_s: f64,
    pub changelog_bytes: u64,
    pub changelog_records: u64,
    /// Seconds to write the snapshot file, and its size.
    pub snapshot_s: f64,
    pub snapshot_bytes: u64,
    pub snapshot_path: PathBuf,
    /// Journeys the snapshot holds frozen.
    pub frozen: usize,
}

pub struct StateFigures {
    /// Start -> ready from the local snapshot, and the engine's own restore time.
    pub restore_local_s: f64,
    pub restore_local_metric_s: f64,
    /// The longest `onejourney_checkpoint_stall_seconds` over the checkpoints.
    pub checkpoint_stall_ms: f64,
    /// Its phases: drain, capture, slice (`STALL_PHASES`).
    pub stall_phases_ms: [f64; 3],
    /// The journey records (and tombstones) its barrier captured.
    pub stall_journeys: u64,
    pub checkpoints: u64,
    /// Changelog bytes per kind while the engine applied the backlog (and
    /// its final checkpoint).
    pub changelog_bytes: Vec<(&'static str, u64)>,
    pub events: usize,
    /// Profiles when the first engine stopped; restored from the broker.
    pub profiles: usize,
    /// Start -> ready with an empty state directory, and the engine's own restore time.
    pub restore_changelog_s: f64,
    pub restore_changelog_metric_s: f64,
}

/// Writes `processor`'s whole state as the engine's checkpoint does (every
/// journey is still marked changed and every identity op still pending, as
/// at the first checkpoint of a state): the changelog records and their
/// marker on the broker, then the snapshot file. Topics, consumer group and
/// state directory are the bench's own.
pub async fn persist(settings: &Settings, processor: &mut Processor) -> anyhow::Result<Persisted> {
    let profiles = processor.state().identity.profile_count();
    let prefix = format!("bench-state-{}-{profiles}-", std::process::id());
    let mut s = settings.clone();
    s.topics = s.topics.prefixed(&prefix);
    s.kafka.group_id = format!("{prefix}engine");
    s.http.addr = "127.0.0.1:0".parse().context("bench HTTP address")?;
    s.state.dir = std::env::temp_dir().join(format!("{prefix}state"));
    let consumed: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    clients::create_topics(&s, &consumed, PARTITIONS).await?;
    let producer = kafka::producer(&s)?;
    let created = kafka::ensure_output_topics(&s, &producer, &CancellationToken::new()).await?;
    anyhow::ensure!(created, "the output and state topics were not created");
    let at_start = s.clone();
    let outputs = tokio::task::spawn_blocking(move || durable::fresh::output_ends(&at_start))
        .await
        .context("reading the output ends panicked")??;
    let header = Header {
        written_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        inputs: Vec::new(),
        outputs,
        changelog: None,
    };
    let metrics = Arc::new(Metrics::new(&s.decide)?);
    let mut changelog = Changelog::new(&s, producer, Chain::empty(s.state.partitions), metrics);
    eprintln!("bench: writing the preloaded state's changelog");
    let t = Instant::now();
    let capture = changelog.capture_now(processor)?;
    let written = changelog.write(capture, &header).await?;
    let changelog_s = t.elapsed().as_secs_f64();
    // As the engine's scan freezes them after a checkpoint: a graceful
    // stop's snapshot holds the idle journeys frozen (format 6).
    let freeze_after = s.state.freeze_journeys_after;
    let cutoff = processor
        .eviction_cutoff(freeze_after)
        .filter(|_| !freeze_after.is_zero());
    let frozen = cutoff.map_or(0, |c| processor.state().freeze_idle(c));
    eprintln!("bench: writing the preloaded state's snapshot ({frozen} journeys frozen)");
    let path = durable::path(&s);
    let t = Instant::now();
    let snapshot_bytes = durable::write(&path, &written.header, &processor.snapshot(), |_| {})?;
    let snapshot_s = t.elapsed().as_secs_f64();
    Ok(Persisted {
        profiles,
        settings: s,
        changelog_s,
        changelog_bytes: written.bytes,
        changelog_records: written.records,
        snapshot_s,
        snapshot_bytes,
        snapshot_path: path,
        frozen,
    })
}

/// Starts the engine on the persisted state (`restore_local_s`), publishes
/// the backlog to it and waits until every event is settled while it
/// checkpoints every [`CHECKPOINT_EVERY`] (`checkpoint_stall_ms`,
/// `changelog_bytes_per_1k_events`), stops it, empties its state directory
/// and starts it again (`restore_changelog_s`).
pub async fn measure(p: &Persisted, backlog: &[Msg]) -> anyhow::Result<StateFigures> {
    let mut settings = p.settings.clone();
    settings.state.snapshot_interval = CHECKPOINT_EVERY;
    let s = &settings;
    eprintln!(
        "bench: the engine restoring {} profiles from its state directory",
        p.profiles
    );
    let (engine, restore_local_s) = start_ready(s).await?;
    let restored = engine.state.identity.profile_count();
    anyhow::ensure!(restored == p.profiles, "restored {restored} of {} profiles", p.profiles);
    let restore_local_metric_s = engine.metrics.restore_seconds.get();
    let before = changelog_bytes(&engine.metrics);
    let inputs: Vec<String> = s.topics.inputs().iter().map(|(t, _)| t.to_string()).collect();
    let producer = clients::upstream(s)?;
    eprintln!(
        "bench: the engine over the backlog, checkpointing every {:.0} s",
        s.state.snapshot_interval.as_secs_f64()
    );
    clients::publish(&producer, &inputs, backlog).await?;
    let mut stalls = Stalls::default();
    let n = backlog.len() as u64;
    let done = wait_until(Duration::from_secs(1800), || {
        stalls.sample(&engine.metrics);
        engine.metrics.events_settled.get() + engine.metrics.events_buffered.get().max(0) as u64 >= n
    })
    .await;
    anyhow::ensure!(done, "the engine did not settle the backlog within 30 minutes");
    let profiles = engine.state.identity.profile_count();
    let metrics = engine.metrics.clone();
    engine.stop().await?;
    stalls.sample(&metrics);
    let after = changelog_bytes(&metrics);
    std::fs::remove_dir_all(&s.state.dir).with_context(|| format!("emptying {}", s.state.dir.display()))?;
    eprintln!("bench: the engine restoring {profiles} profiles from the broker's changelog alone");
    let (engine, restore_changelog_s) = start_ready(s).await?;
    let from_broker = engine.state.identity.profile_count();
    let restore_changelog_metric_s = engine.metrics.restore_seconds.get();
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&s.state.dir);
    anyhow::ensure!(
        from_broker == profiles,
        "the changelog restored {from_broker} of {profiles} profiles"
    );
    Ok(StateFigures {
        restore_local_s,
        restore_local_metric_s,
        checkpoint_stall_ms: stalls.longest_s * 1000.0,
        stall_phases_ms: stalls.phases_s.map(|s| s * 1000.0),
        stall_journeys: stalls.records_at_longest,
        checkpoints: stalls.written,
        changelog_bytes: CHANGELOG_KINDS
            .iter()
            .zip(after.iter().zip(&before))
            .map(|(k, (a, b))| (*k, a.saturating_sub(*b)))
            .collect(),
        events: backlog.len(),
        profiles,
        restore_changelog_s,
        restore_changelog_metric_s,
    })
}

/// Starts the engine and waits until it is ready; returns it and the seconds that took.
async fn start_ready(s: &Settings) -> anyhow::Result<(Engine, f64)> {
    let t = Instant::now();
    let engine = Engine::start(s.clone(), CancellationToken::new()).await?;
    let ready = wait_until(Duration::from_secs(3600), || {
        engine.health.ready() || engine.cancel.is_cancelled()
    })
    .await;
    let took = t.elapsed().as_secs_f64();
    if !ready || engine.cancel.is_cancelled() {
        let e = engine.stop().await.err();
        anyhow::bail!("the engine did not become ready within an hour: {e:?}");
    }
    Ok((engine, took))
}

/// `onejourney_changelog_bytes_total` per kind, in `CHANGELOG_KINDS` order.
fn changelog_bytes(m: &Metrics) -> Vec<u64> {
    CHANGELOG_KINDS
        .iter()
        .map(|k| m.changelog_bytes.with_label_values(&[k]).get())
        .collect()
}

/// The longest checkpoint stall seen: the gauge is read each time the
/// written-snapshot counter moves (it is set just before).
#[derive(Default)]
struct Stalls {
    written: u64,
    longest_s: f64,
    /// The longest stall's phases (`STALL_PHASES` order), seconds.
    phases_s: [f64; 3],
    /// Journey records (and tombstones) written so far, and by the
    /// checkpoint of the longest stall: what its barrier captured.
    records: u64,
    records_at_longest: u64,
}

impl Stalls {
    fn sample(&mut self, m: &Metrics) {
        let written = m.snapshots.with_label_values(&["written"]).get();
        if written != self.written {
            self.written = written;
            let stall = m.checkpoint_stall.get();
            let records: u64 = ["journey", "tombstone"]
                .iter()
                .map(|k| m.changelog_records.with_label_values(&[k]).get())
                .sum();
            if stall >= self.longest_s {
                self.longest_s = stall;
                self.phases_s = STALL_PHASES.map(|p| m.checkpoint_stall_phase.with_label_values(&[p]).get());
                self.records_at_longest = records.saturating_sub(self.records);
            }
            self.records = records;
        }
    }
}

/// The longest stall's phases, as the note prints them.
fn stall_phases(f: &StateFigures) -> String {
    let [drain, capture, slice] = f.stall_phases_ms;
    format!("drain {drain:.1} ms, capture {capture:.1} ms at the barrier, the longest slice after it {slice:.1} ms")
}

/// The four state figures, or placeholders without a broker.
pub(crate) fn figures(p: Option<&Persisted>, f: Option<&StateFigures>) -> Vec<Figure> {
    let (Some(p), Some(f)) = (p, f) else {
        return [
            "checkpoint_stall_ms",
            "restore_local_s",
            "restore_changelog_s",
            "changelog_bytes_per_1k_events",
        ]
        .map(|name| Figure {
            name,
            value: f64::NAN,
            unit: "",
            note: String::from("not measured: no --brokers (make bench starts a broker)"),
        })
        .into();
    };
    let total: u64 = f.changelog_bytes.iter().map(|(_, b)| b).sum();
    let kinds = f
        .changelog_bytes
        .iter()
        .map(|(k, b)| format!("{k} {b}"))
        .collect::<Vec<_>>()
        .join(", ");
    let phases = stall_phases(f);
    vec![
        Figure {
            name: "checkpoint_stall_ms",
            value: f.checkpoint_stall_ms,
            unit: "ms",
            note: format!(
                "longest onejourney_checkpoint_stall_seconds of the engine's {} checkpoints (every {:.0} s and at stop) \
                 while it applied {} events over {} profiles; its phases: {phases} ({} changed journeys); \
                 the bench's own checkpoint of the {} preloaded profiles: changelog {:.1} s ({} records, {:.0} MB), snapshot {:.1} s ({:.0} MB)",
                f.checkpoints,
                CHECKPOINT_EVERY.as_secs_f64(),
                f.events,
                f.profiles,
                f.stall_journeys,
                p.profiles,
                p.changelog_s,
                p.changelog_records,
                p.changelog_bytes as f64 / 1e6,
                p.snapshot_s,
                p.snapshot_bytes as f64 / 1e6
            ),
        },
        Figure {
            name: "restore_local_s",
            value: f.restore_local_s,
            unit: "s",
            note: format!(
                "Engine::start -> ready with the snapshot of {} profiles in the state directory, {} of their \
                 journeys frozen (onejourney_state_restore_seconds {:.1} s; the rest is topics and the group join)",
                p.profiles, p.frozen, f.restore_local_metric_s
            ),
        },
        Figure {
            name: "restore_changelog_s",
            value: f.restore_changelog_s,
            unit: "s",
            note: format!(
                "Engine::start -> ready with an empty state directory: {} profiles from the changelog and identity \
                 log on the broker (onejourney_state_restore_seconds {:.1} s)",
                f.profiles, f.restore_changelog_metric_s
            ),
        },
        Figure {
            name: "changelog_bytes_per_1k_events",
            value: total as f64 * 1000.0 / f.events.max(1) as f64,
            unit: "bytes",
            note: format!(
                "onejourney_changelog_bytes_total while the engine applied {} events and checkpointed {} times: \
                 {total} bytes ({kinds})",
                f.events, f.checkpoints
            ),
        },
    ]
}
