//! The `scaleout` figures (issue 15, `docs/scaling.md`): the engine as 1, 2
//! and 3 instances of one consumer group with `scaleout.identity_log` and
//! `scaleout.route_journeys` on, and as one instance with both off (the
//! default, the baseline), each over the same backlog on topics and a group
//! of its own; and the identity log's ceiling.
//!
//! In: the backlog's messages and the broker. Out: per run, the aggregate
//! rate (events applied to journeys per second, from the first message
//! published to the last event applied; the backlog is published while the
//! instances run, faster than they consume) and CPU-seconds per 1,000
//! events; `identity_log_ceiling`: evidence records per second that one
//! partition takes from a producer and one process reads back and folds
//! into its graph. Keeps nothing once it returns.
//!
//! The instances run in this process (as `Engine::start`, each with its own
//! consumer, producer, state and HTTP port), so their CPU is this process's
//! CPU time over the run, less the CPU the publishing of the same backlog
//! takes alone (measured first); per instance it is that divided by the
//! number of instances. On this 2-core machine the CPU figure is the one
//! that speaks: three instances share two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::evidence::{EvidenceBody, EvidenceRecord, Origin};
use onejourney_core::processor::Holding;
use onejourney_core::{Channel, Decoder, Processor, State};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use onejourney_engine::config::Settings;
use onejourney_engine::kafka::evidence::EvidenceReader;
use onejourney_engine::pipeline::emit::enqueue;
use onejourney_engine::Engine;

use super::clients::{create_topics, publish, upstream};
use super::{micros, own_settings, wait_until, Msg, PARTITIONS};

/// One run of the engine over the backlog.
pub struct GroupRun {
    pub instances: usize,
    /// Both scale-out settings on.
    pub routed: bool,
    /// Events applied to journeys per second, all instances.
    pub rate: f64,
    /// CPU-seconds per 1,000 events, all instances together.
    pub cpu_per_1k: f64,
    /// Events applied, all instances.
    pub applied: u64,
    /// CPU-seconds per second the instances take together with nothing to
    /// do (polling, progress records): the fixed cost in `cpu_per_1k`.
    pub idle_cpu: f64,
    /// Events that skipped the identity log's round trip (known sets).
    pub skipped: u64,
}

pub struct ScaleoutFigures {
    pub runs: Vec<GroupRun>,
    /// Evidence records per second produced to one partition.
    pub log_produce: f64,
    /// Evidence records per second read back and folded by one process.
    pub log_fold: f64,
}

/// This process's CPU time so far (user and system), in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s, as on every Linux build).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command name, which is in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / 100.0
}

/// Settings for one run: topics, group and state of its own.
fn run_settings(base: &Settings, name: &str, routed: bool) -> anyhow::Result<Settings> {
    let prefix = format!("bench-{}-{}-{name}-", std::process::id(), micros(Instant::now()));
    let mut s = own_settings(base, &prefix)?;
    s.scaleout.identity_log = routed;
    s.scaleout.route_journeys = routed;
    Ok(s)
}

fn sum(engines: &[Engine], f: impl Fn(&Engine) -> i64) -> i64 {
    engines.iter().map(f).sum()
}

/// Every sample of a counter family, summed.
fn total(v: &prometheus::IntCounterVec) -> i64 {
    use prometheus::core::Collector as _;
    let sum: f64 = v
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum();
    sum as i64
}

/// Per instance, its clocks that hold the watermark back, by reason
/// (`onejourney_watermark_holding`): what buffered events wait for.
fn holding(engines: &[Engine]) -> Vec<[i64; 3]> {
    let reasons = Holding::default().by_reason().map(|(r, _)| r);
    engines
        .iter()
        .map(|e| reasons.map(|r| e.metrics.watermark_holding.with_label_values(&[r]).get()))
        .collect()
}

/// The events one instance has finished with or holds: applied to a
/// journey, waiting for the watermark, duplicates, forgotten, dead-lettered.
fn accounted(e: &Engine) -> i64 {
    let m = &e.metrics;
    let counted = m.events_applied.get() + m.events_forgotten.get();
    i64::try_from(counted).unwrap_or(i64::MAX)
        + m.events_buffered.get().max(0)
        + total(&m.events_duplicate)
        + total(&m.events_invalid)
}

/// What a group that did not account for its `n` events within 10 minutes
/// says: where the events are, per instance.
fn not_accounted(engines: &[Engine], n: i64) -> String {
    let per_instance: Vec<_> = engines
        .iter()
        .map(|e| {
            let m = &e.metrics;
            let applied = i64::try_from(m.events_applied.get()).unwrap_or(i64::MAX);
            let waiting = (m.evidence.waiting.get(), m.evidence.routed_waiting.get());
            (
                accounted(e),
                applied,
                m.events_buffered.get().max(0),
                waiting.0,
                waiting.1,
            )
        })
        .collect();
    format!(
        "the backlog was not accounted for within 10 minutes: {} of {n} events; per instance (accounted, applied, \
         buffered, evidence waiting, routed waiting): {per_instance:?}; clocks holding the watermark (backlog, recent, \
         unread_end): {:?}",
        sum(engines, accounted),
        holding(engines)
    )
}

/// Starts `instances` engines of one group, waits until each holds
/// partitions, publishes the backlog, and times it until every event is
/// accounted for ([`accounted`]).
async fn run_group(
    base: &Settings,
    backlog: &[Msg],
    instances: usize,
    routed: bool,
    publish_cpu: f64,
) -> anyhow::Result<GroupRun> {
    let name = format!("{}x{instances}", if routed { "routed" } else { "plain" });
    eprintln!("bench: scaleout {name}");
    let s = run_settings(base, &name, routed)?;
    let inputs: Vec<String> = s.topics.inputs().iter().map(|(t, _)| t.to_string()).collect();
    let consumed: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics(&s, &consumed, PARTITIONS).await?;
    let mut engines = Vec::new();
    for i in 0..instances {
        let mut own = s.clone();
        own.state.dir = s.state.dir.join(format!("instance-{i}"));
        engines.push(Engine::start(own, CancellationToken::new()).await?);
    }
    let ready = wait_until(Duration::from_secs(120), || engines.iter().all(|e| e.health.ready())).await;
    anyhow::ensure!(ready, "{name}: not every instance was ready within 120 s");
    // Let the group settle: every member holds its partitions.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let producer = upstream(&s)?;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    publish(&producer, &inputs, backlog).await?;
    let applied = |e: &Engine| i64::try_from(e.metrics.events_applied.get()).unwrap_or(i64::MAX);
    let buffered = |e: &Engine| e.metrics.events_buffered.get().max(0);
    let n = i64::try_from(backlog.len()).unwrap_or(i64::MAX);
    // Done when every event is accounted for; the last ones wait for the
    // watermark (idle_after) at the end of a finite backlog, which a stream
    // never does, so waiting counts as done.
    let done = wait_until(Duration::from_secs(600), || sum(&engines, accounted) >= n).await;
    let seconds = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0 - publish_cpu;
    anyhow::ensure!(done, "{name}: {}", not_accounted(&engines, n));
    // The last events wait for the watermark (idle_after) at the end of a
    // finite backlog: counted once released, outside the timing.
    let released = wait_until(Duration::from_secs(60), || sum(&engines, buffered) == 0).await;
    anyhow::ensure!(
        released,
        "{name}: {} events still buffered 60 s after the backlog was accounted for; clocks holding the watermark (backlog, recent, unread_end): {:?}",
        sum(&engines, buffered),
        holding(&engines)
    );
    let total = u64::try_from(sum(&engines, applied)).unwrap_or(0);
    let skipped = engines.iter().map(|e| e.metrics.evidence.skipped.get()).sum();
    let idle = Instant::now();
    let idle_cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = (cpu_seconds() - idle_cpu0) / idle.elapsed().as_secs_f64();
    for e in engines {
        e.stop().await?;
    }
    let _ = std::fs::remove_dir_all(&s.state.dir);
    let n = backlog.len() as f64;
    Ok(GroupRun {
        instances,
        routed,
        rate: n / seconds,
        cpu_per_1k: cpu / n * 1000.0,
        applied: total,
        idle_cpu,
        skipped,
    })
}

/// The CPU-seconds publishing `backlog` takes alone (on topics of its own).
async fn publish_cpu(base: &Settings, backlog: &[Msg]) -> anyhow::Result<f64> {
    let s = run_settings(base, "publish", false)?;
    let inputs: Vec<String> = s.topics.inputs().iter().map(|(t, _)| t.to_string()).collect();
    create_topics(&s, &inputs, PARTITIONS).await?;
    let producer = upstream(&s)?;
    let cpu0 = cpu_seconds();
    publish(&producer, &inputs, backlog).await?;
    Ok(cpu_seconds() - cpu0)
}

/// `identity_log_ceiling`: the backlog's events as evidence records, produced
/// to one partition as fast as the producer goes, then read back and folded
/// into an empty graph by one reader. Returns (produced/s, folded/s).
async fn log_ceiling(base: &Settings, backlog: &[Msg]) -> anyhow::Result<(f64, f64)> {
    eprintln!("bench: scaleout identity log ceiling");
    let s = run_settings(base, "idlog", true)?;
    let ns = s.namespaces()?;
    let decoder = Decoder::new(ns.clone(), s.ingest.max_message_bytes)?;
    let records: Vec<Vec<u8>> = backlog
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let ev = decoder.decode(Channel::ALL[m.channel], &m.payload).ok()?;
            let origin = Origin {
                process: 1,
                seq: i as u64,
            };
            Some(EvidenceRecord::of_event(origin, &ev).encode(&ns))
        })
        .collect();
    let topic = s.topics.identity_evidence.clone();
    create_topics(&s, std::slice::from_ref(&topic), 1).await?;
    let producer = upstream(&s)?;
    let t = Instant::now();
    let mut acks = Vec::with_capacity(records.len());
    for r in &records {
        let rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic).partition(0).payload(r.as_slice());
        acks.push(enqueue(&producer, rec).await.context("producing evidence")?);
    }
    for a in acks {
        anyhow::ensure!(matches!(a.await, Ok(Ok(_))), "an evidence record was not acknowledged");
    }
    let produced = records.len() as f64 / t.elapsed().as_secs_f64();
    let mut reader = EvidenceReader::open(&s)?;
    let mut processor = Processor::new(Arc::new(s.core()), Arc::new(State::new(ns.clone())));
    let t = Instant::now();
    for _ in 0..records.len() {
        let (_, bytes) = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .context("the evidence reader stalled for 30 s")?
            .context("reading evidence")?;
        let rec = EvidenceRecord::decode(&bytes, &ns).context("an evidence record the bench wrote")?;
        if let EvidenceBody::Event(e) = rec.body {
            std::hint::black_box(processor.fold_event(&e, false));
        }
    }
    let folded = records.len() as f64 / t.elapsed().as_secs_f64();
    Ok((produced, folded))
}

/// Every scaleout figure over `backlog`.
pub async fn measure(base: &Settings, backlog: &[Msg]) -> anyhow::Result<ScaleoutFigures> {
    let publish_cpu = publish_cpu(base, backlog).await?;
    let mut runs = vec![run_group(base, backlog, 1, false, publish_cpu).await?];
    for instances in 1..=3 {
        runs.push(run_group(base, backlog, instances, true, publish_cpu).await?);
    }
    let (log_produce, log_fold) = log_ceiling(base, backlog).await?;
    Ok(ScaleoutFigures {
        runs,
        log_produce,
        log_fold,
    })
}

/// The figures and ratios `make bench` prints and writes.
pub(crate) fn figures(f: &ScaleoutFigures, n: usize) -> (Vec<crate::Figure>, Vec<crate::Ratio>) {
    let mut figures = Vec::new();
    let names = [
        ("scaleout_off_x1", "scaleout_off_x1_cpu"),
        ("scaleout_x1", "scaleout_x1_cpu"),
        ("scaleout_x2", "scaleout_x2_cpu"),
        ("scaleout_x3", "scaleout_x3_cpu"),
    ];
    for (run, (rate, cpu)) in f.runs.iter().zip(names) {
        let how = if run.routed {
            "identity_log and route_journeys on"
        } else {
            "scale-out off (the default)"
        };
        figures.push(crate::Figure {
            name: rate,
            value: run.rate,
            unit: "events/s",
            note: format!(
                "{} instance(s) of one group, {how}, over {n} events published while they run, until all are applied; {} applied, {} without the identity log's round trip",
                run.instances, run.applied, run.skipped
            ),
        });
        figures.push(crate::Figure {
            name: cpu,
            value: run.cpu_per_1k,
            unit: "CPU-s/1k ev",
            note: format!(
                "all {} instance(s) together (in this process, less publishing); per instance {:.3}; idle, they take {:.3} CPU-s per second",
                run.instances,
                run.cpu_per_1k / run.instances as f64,
                run.idle_cpu
            ),
        });
    }
    figures.push(crate::Figure {
        name: "identity_log_ceiling",
        value: f.log_produce.min(f.log_fold),
        unit: "records/s",
        note: format!(
            "one partition: {:.0} evidence records/s produced, {:.0}/s read back and folded by one process",
            f.log_produce, f.log_fold
        ),
    });
    let rate = |i: usize| f.runs.get(i).map_or(f64::NAN, |r| r.rate);
    let cpu = |i: usize| f.runs.get(i).map_or(f64::NAN, |r| r.cpu_per_1k);
    let ratios = vec![
        (
            "scaleout_x1/off_x1",
            rate(1) / rate(0),
            "events/s, one instance: the cost of the identity log and the routed hop",
        ),
        (
            "scaleout_x1_cpu/off_x1_cpu",
            cpu(1) / cpu(0),
            "CPU per event, one instance, scale-out on against off",
        ),
        (
            "scaleout_x3/scaleout_x1",
            rate(3) / rate(1),
            "events/s, three instances against one (2 cores: CPU-bound)",
        ),
        (
            "scaleout_x3_cpu/scaleout_x1_cpu",
            cpu(3) / cpu(1),
            "CPU per event, three instances against one (the coordination overhead)",
        ),
    ];
    (figures, ratios)
}
