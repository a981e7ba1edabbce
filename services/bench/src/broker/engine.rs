//! The engine itself (`Engine::start`, in this process, default settings),
//! measured as the echo is.
//!
//! In: the published backlog, then later simulator events (newer event
//! times, new event ids) paced into the four channel topics. Out:
//! `engine_backlog`, the profiles it built, `engine` (the highest rate of new
//! events it keeps up with, counting settled events) and its
//! produce-to-decision latency at half that rate. Keeps the send time of
//! each paced event id until its first decision arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dashmap::DashMap;
use rdkafka::message::Message;
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

use onejourney_engine::{kafka, Engine};

use super::clients::consumer;
use super::pace::{paced, spawn_latency_reader, summarise, sustained, Paced, Target, Trial};
use super::{wait_until, Bench};

/// What the engine's steps measured.
pub(super) struct EngineRun {
    pub(super) backlog: f64,
    pub(super) profiles: usize,
    pub(super) rate: f64,
    pub(super) trials: Vec<Trial>,
    pub(super) paced: Paced,
}

/// Events counted as consumed by the engine, all channels.
fn engine_consumed(e: &Engine) -> u64 {
    ["web", "pos", "app", "call_center"]
        .iter()
        .map(|c| e.metrics.events_consumed.with_label_values(&[*c]).get())
        .sum()
}

/// Input messages the engine has fully handled (applied, outputs acknowledged).
fn engine_settled(e: &Engine) -> u64 {
    e.metrics.events_settled.get()
}

/// Starts the engine over the backlog, finds its sustained rate and its
/// latency, and stops it.
pub(super) async fn measure(b: &Bench<'_>) -> anyhow::Result<EngineRun> {
    eprintln!("bench: the engine over the backlog");
    let engine = Engine::start(b.s.clone(), CancellationToken::new()).await?;
    let backlog = over_backlog(&engine, b.plan.backlog.len()).await?;
    let profiles = engine.state.identity.profile_count();
    let (rate, trials, paced) = sustained_then_paced(b, &engine, backlog).await?;
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&b.s.state.dir);
    Ok(EngineRun {
        backlog,
        profiles,
        rate,
        trials,
        paced,
    })
}

/// `engine_backlog`: events/s from the engine's first consumed event until
/// every one of the `n` is settled or waits only for the watermark: at the end
/// of a finite backlog the last events wait for the partitions to count as
/// idle (`timers.idle_after`), which a stream never does.
async fn over_backlog(engine: &Engine, n: usize) -> anyhow::Result<f64> {
    let started = wait_until(Duration::from_secs(90), || engine_consumed(engine) > 0).await;
    anyhow::ensure!(started, "the engine consumed nothing within 90 s");
    let t = Instant::now();
    let done = wait_until(Duration::from_secs(900), || {
        engine_settled(engine) + engine.metrics.events_buffered.get().max(0) as u64 >= n as u64
    })
    .await;
    anyhow::ensure!(done, "the engine did not finish the backlog within 15 minutes");
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// A reader of `next-best-actions` and `churn-risk` that takes, for every
/// stamped event id, the latency of the first decision it caused.
struct DecisionReader {
    sent_at: Arc<DashMap<String, u64>>,
    cancel: CancellationToken,
    reads: tokio::task::JoinHandle<Vec<f64>>,
}

impl DecisionReader {
    async fn start(b: &Bench<'_>) -> anyhow::Result<DecisionReader> {
        let decisions = vec![b.s.topics.next_best_actions.clone(), b.s.topics.churn_risk.clone()];
        let parts: Vec<(String, i32)> = kafka::partition_ends(&b.producer, decisions)
            .await?
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect();
        let reader = consumer(&b.s, &format!("{}engine-read", b.prefix), &parts, Offset::End)?;
        let sent_at: Arc<DashMap<String, u64>> = Arc::new(DashMap::new());
        let cancel = CancellationToken::new();
        let stamps = sent_at.clone();
        // The first decision an event caused.
        let reads = spawn_latency_reader(reader, cancel.clone(), b.epoch, move |m| {
            let id = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| {
                    v.pointer("/trigger/event_id")
                        .and_then(|x| x.as_str())
                        .map(str::to_string)
                });
            id.and_then(|id| stamps.remove(&id)).map(|(_, t0)| t0)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(DecisionReader { sent_at, cancel, reads })
    }
}

/// `engine` and `engine_p50/p99/p999`: the highest rate of new events the
/// engine keeps up with, then its produce-to-decision latency at half that
/// rate, with the decision reader running through both.
async fn sustained_then_paced(
    b: &Bench<'_>,
    engine: &Engine,
    backlog_rate: f64,
) -> anyhow::Result<(f64, Vec<Trial>, Paced)> {
    let settled = || engine_settled(engine);
    let target = Target {
        inputs: &b.inputs,
        msgs: b.plan.fresh,
        cycle: false,
        finished: &settled,
    };
    let mut offset = 0usize;
    let reader = DecisionReader::start(b).await?;
    eprintln!("bench: the engine, highest sustained rate");
    let (engine_rate, trials) = sustained(
        &b.producer,
        &target,
        backlog_rate,
        b.plan.trials,
        b.plan.trial_for,
        b.epoch,
        &mut offset,
    )
    .await?;
    eprintln!("bench: the engine at half rate ({:.0} events/s)", engine_rate / 2.0);
    let rate = engine_rate / 2.0;
    let from = settled();
    let stamps = reader.sent_at.clone();
    let rest = Target {
        msgs: &b.plan.fresh[offset.min(b.plan.fresh.len())..],
        ..target
    };
    let (sent, seconds, lag) = paced(&b.producer, &rest, rate, b.plan.paced_for, b.epoch, |m, now| {
        stamps.insert(m.event_id.clone(), now);
        None
    })
    .await?;
    wait_until(Duration::from_secs(30), || settled() - from >= sent as u64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.cancel.cancel();
    let lat = reader.reads.await.context("reader panicked")?;
    let skip = lat.len() / 10;
    Ok((
        engine_rate,
        trials,
        summarise(lat[skip..].to_vec(), rate, sent, seconds, lag),
    ))
}
