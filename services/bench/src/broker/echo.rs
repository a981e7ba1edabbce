//! The echo: the least any consume-decide-produce service can do, and the
//! fair baseline for the engine.
//!
//! In: the published backlog (four channel topics) or paced input on one
//! topic of eight partitions. Out: `echo_backlog` (consume -> produce
//! unchanged over the backlog), `echo` (the highest rate it keeps up with)
//! and its produce-to-echo latency at a given rate ([`EchoRig`]). Keeps
//! nothing between steps: each rig has its own consumer group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use onejourney_engine::config::Settings;
use onejourney_engine::kafka;
use onejourney_engine::pipeline::emit::enqueue;

use super::clients::{all_partitions, consumer};
use super::pace::{paced, spawn_latency_reader, summarise, sustained, Paced, Target, Trial};
use super::{micros, wait_until, Bench, Msg, PARTITIONS};

/// Consume -> produce unchanged (key, payload, headers), keeping every
/// delivery in flight; counts acknowledged messages into `acked`.
async fn echo_loop(
    consumer: StreamConsumer,
    producer: FutureProducer,
    out: String,
    map: HashMap<String, i32>,
    acked: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<rdkafka::producer::DeliveryFuture>(100_000);
    let counter = acked.clone();
    let acks = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if matches!(f.await, Ok(Ok(_))) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m.context("echo consuming")?,
        };
        let base = map.get(m.topic()).copied().unwrap_or(0);
        let mut rec = FutureRecord::to(&out).partition(base + m.partition());
        if let Some(k) = m.key() {
            rec = rec.key(std::str::from_utf8(k).unwrap_or(""));
        }
        if let Some(p) = m.payload() {
            rec = rec.payload(p);
        }
        if let Some(h) = m.headers() {
            rec = rec.headers(h.detach());
        }
        let f = enqueue(&producer, rec).await.context("producing")?;
        if tx.send(f).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = acks.await;
    Ok(())
}

/// An echo from one topic to another with a reader on the output that
/// takes the latency of every message whose key carries its send time.
struct EchoRig {
    acked: Arc<AtomicU64>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    reads: tokio::task::JoinHandle<Vec<f64>>,
    epoch: Instant,
}

impl EchoRig {
    async fn start(s: &Settings, group: &str, input: &str, output: &str, epoch: Instant) -> anyhow::Result<EchoRig> {
        let acked = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(echo_loop(
            consumer(
                s,
                group,
                &all_partitions(&[input.to_string()], 4 * PARTITIONS),
                Offset::End,
            )?,
            kafka::producer(s)?,
            output.to_string(),
            [(input.to_string(), 0)].into_iter().collect(),
            acked.clone(),
            cancel.clone(),
        ));
        let reader = consumer(
            s,
            &format!("{group}-read"),
            &all_partitions(&[output.to_string()], 4 * PARTITIONS),
            Offset::End,
        )?;
        // Messages stamped before this rig started (a previous run's tail)
        // are not this run's.
        let since = micros(epoch);
        let reads = spawn_latency_reader(reader, cancel.clone(), epoch, move |m| {
            m.key()
                .and_then(|k| k.strip_prefix(b"t0:"))
                .and_then(|k| std::str::from_utf8(k).ok()?.parse::<u64>().ok())
                .filter(|t0| *t0 >= since)
        });
        // Both consumers resolve "end" before anything is sent.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(EchoRig {
            acked,
            cancel,
            task,
            reads,
            epoch,
        })
    }

    /// A paced run at `rate`, every message stamped (the send time travels
    /// in the key: partitions are explicit); stops the rig.
    async fn latency(
        self,
        producer: &FutureProducer,
        target: &Target<'_>,
        rate: f64,
        dur: Duration,
    ) -> anyhow::Result<Paced> {
        let from = (target.finished)();
        let (sent, seconds, lag) = paced(producer, target, rate, dur, self.epoch, |_, now| {
            Some(format!("t0:{now}"))
        })
        .await?;
        wait_until(Duration::from_secs(30), || (target.finished)() - from >= sent as u64).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.cancel.cancel();
        self.task.await.context("echo task panicked")??;
        let lat = self.reads.await.context("reader panicked")?;
        // The first tenth warms the clients up.
        let skip = lat.len() / 10;
        Ok(summarise(lat[skip..].to_vec(), rate, sent, seconds, lag))
    }
}

/// `echo_backlog`: the echo over the published backlog, from the four
/// channel topics into one, partition for partition; events/s.
pub(super) async fn over_backlog(b: &Bench<'_>) -> anyhow::Result<f64> {
    let n = b.plan.backlog.len();
    let acked = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let t = Instant::now();
    let base: HashMap<String, i32> = b
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as i32 * PARTITIONS))
        .collect();
    let task = tokio::spawn(echo_loop(
        consumer(
            &b.s,
            &format!("{}echo", b.prefix),
            &all_partitions(&b.inputs, PARTITIONS),
            Offset::Beginning,
        )?,
        kafka::producer(&b.s)?,
        b.echo_out.clone(),
        base,
        acked.clone(),
        cancel.clone(),
    ));
    let done = wait_until(Duration::from_secs(600), || acked.load(Ordering::Relaxed) >= n as u64).await;
    let rate = acked.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    cancel.cancel();
    task.await.context("echo task panicked")??;
    anyhow::ensure!(done, "the echo did not finish the backlog within 10 minutes");
    Ok(rate)
}

/// The backlog as paced echo input: one topic of eight partitions, the same
/// spread as the four channel topics of two.
pub(super) fn spread(backlog: &[Msg]) -> Vec<Msg> {
    backlog
        .iter()
        .map(|m| Msg {
            channel: 0,
            partition: m.channel as i32 * PARTITIONS + m.partition,
            key: m.key.clone(),
            payload: m.payload.clone(),
            event_id: String::new(),
        })
        .collect()
}

/// `echo` and `echo_p50/p99/p999`: the highest rate the echo keeps up with,
/// then its latency at half that rate, with one rig running through both.
pub(super) async fn sustained_then_paced(
    b: &Bench<'_>,
    spread: &[Msg],
    backlog_rate: f64,
) -> anyhow::Result<(f64, Vec<Trial>, Paced)> {
    let inputs = vec![b.echo_in.clone()];
    let rig = EchoRig::start(&b.s, &format!("{}rig1", b.prefix), &b.echo_in, &b.echo_out, b.epoch).await?;
    let counter = rig.acked.clone();
    let echo_acked = move || counter.load(Ordering::Relaxed);
    let target = Target {
        inputs: &inputs,
        msgs: spread,
        cycle: true,
        finished: &echo_acked,
    };
    eprintln!("bench: echo, highest sustained rate");
    let (rate, trials) = sustained(
        &b.producer,
        &target,
        backlog_rate,
        b.plan.trials,
        b.plan.trial_for,
        b.epoch,
        &mut 0,
    )
    .await?;
    eprintln!("bench: echo at half rate ({:.0} events/s)", rate / 2.0);
    let paced = rig.latency(&b.producer, &target, rate / 2.0, b.plan.paced_for).await?;
    Ok((rate, trials, paced))
}

/// `echo_p50/p99/p999_at_engine_rate`: the echo's latency at `rate` (the
/// engine's half rate), on a fresh rig.
pub(super) async fn at_rate(b: &Bench<'_>, spread: &[Msg], rate: f64) -> anyhow::Result<Paced> {
    let inputs = vec![b.echo_in.clone()];
    let rig = EchoRig::start(&b.s, &format!("{}rig2", b.prefix), &b.echo_in, &b.echo_out, b.epoch).await?;
    let counter = rig.acked.clone();
    let echo_acked = move || counter.load(Ordering::Relaxed);
    let target = Target {
        inputs: &inputs,
        msgs: spread,
        cycle: true,
        finished: &echo_acked,
    };
    rig.latency(&b.producer, &target, rate, b.plan.paced_for).await
}
