//! The broker figures of `onejourney-bench`, measured against a real
//! Kafka-compatible broker with the same simulator events as the core figures:
//!
//! - `drain`: a consumer that reads the four channel topics and does nothing;
//! - `echo`: consume, then produce each message unchanged to another topic
//!   (the least any consume-decide-produce service can do), at full speed and
//!   at half of that rate, where its latency is measured;
//! - `engine`: the onejourney engine itself, in this process, over the same
//!   backlog, then at half of its own full rate with its produce-to-decision
//!   latency and its lag sampled every second.
//!
//! Every client uses the engine's own client settings (`kafka::base_config`,
//! the engine's consumer prefetch and producer batching), so the echo is the
//! fair baseline. Latencies are taken on one monotonic clock: the upstream
//! producer stamps each message (a header for the echo, the event id for the
//! engine) just before sending it; the reader takes the time it receives the
//! output.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use onejourney_engine::config::Settings;
use onejourney_engine::pipeline::emit::enqueue;
use onejourney_engine::{kafka, Engine};

/// Partitions of each channel topic (the bench's events carry their partition).
pub const PARTITIONS: i32 = 2;

/// One simulator event as it goes to the broker.
pub struct Msg {
    /// Index into `Topics::inputs()`: web, pos, app, call center.
    pub channel: usize,
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub event_id: String,
}

/// Rate and latency percentiles of one paced run.
#[derive(Clone, Debug, Default)]
pub struct Paced {
    pub rate: f64,
    pub sent: usize,
    pub seconds: f64,
    /// Milliseconds.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub samples: usize,
    /// Messages sent but not yet consumed by the measured service, sampled
    /// once a second (engine only).
    pub lag: Vec<u64>,
}

pub struct BrokerFigures {
    pub produce: f64,
    pub drain: f64,
    /// Events/s over the published backlog.
    pub echo_backlog: f64,
    /// The highest rate it kept up with, and the trials that found it.
    pub echo: f64,
    pub echo_trials: Vec<Trial>,
    pub echo_paced: Paced,
    pub engine_backlog: f64,
    pub engine: f64,
    pub engine_trials: Vec<Trial>,
    pub engine_paced: Paced,
    /// Profiles the engine built from the backlog.
    pub engine_profiles: usize,
    /// The echo's latency at the engine's paced rate.
    pub echo_at_engine_rate: Paced,
}

pub struct Plan<'a> {
    pub settings: &'a Settings,
    /// Published up front: drain, echo and engine read these.
    pub backlog: &'a [Msg],
    /// Later events (newer event times, new event ids) for the engine's paced run.
    pub fresh: &'a [Msg],
    pub paced_for: Duration,
    /// Paced trials that search for the highest sustained rate, and how long each lasts.
    pub trials: usize,
    pub trial_for: Duration,
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summarise(mut lat_ms: Vec<f64>, rate: f64, sent: usize, seconds: f64, lag: Vec<u64>) -> Paced {
    lat_ms.sort_by(f64::total_cmp);
    Paced {
        rate,
        sent,
        seconds,
        p50: percentile(&lat_ms, 0.50),
        p99: percentile(&lat_ms, 0.99),
        p999: percentile(&lat_ms, 0.999),
        samples: lat_ms.len(),
        lag,
    }
}

async fn create_topics(s: &Settings, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka::base_config(s).create().context("admin client")?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &opts).await.context("creating topics")? {
        if let Err((t, e)) = r {
            anyhow::ensure!(e == RDKafkaErrorCode::TopicAlreadyExists, "creating {t}: {e}");
        }
    }
    Ok(())
}

/// A consumer with the engine's settings, reading `partitions` from `offset`.
fn consumer(s: &Settings, group: &str, partitions: &[(String, i32)], offset: Offset) -> anyhow::Result<StreamConsumer> {
    let mut c = kafka::base_config(s);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    kafka::fetch_defaults(&mut c);
    let consumer: StreamConsumer = c.create().context("bench consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, offset).context("partition list")?;
    }
    consumer.assign(&tpl).context("assigning partitions")?;
    Ok(consumer)
}

/// The upstream producer, with librdkafka's default batching delay (5 ms).
/// Sending every message on its own (`linger.ms=0`) at thousands a second
/// floods tansu with tiny produce requests: acknowledgements then stall for
/// seconds and every figure downstream measures that instead.
fn upstream(s: &Settings) -> anyhow::Result<FutureProducer> {
    let mut c: ClientConfig = kafka::base_config(s);
    c.set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("message.timeout.ms", "120000");
    c.create().context("bench producer")
}

fn all_partitions(topics: &[String], partitions: i32) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.clone(), p)))
        .collect()
}

/// Publishes every message and waits for every acknowledgement; events/s.
async fn publish(producer: &FutureProducer, inputs: &[String], msgs: &[Msg]) -> anyhow::Result<f64> {
    let (tx, mut rx) = mpsc::channel(100_000);
    let acks = tokio::spawn(async move {
        let mut failed = 0usize;
        while let Some(f) = rx.recv().await {
            let f: rdkafka::producer::DeliveryFuture = f;
            if !matches!(f.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    });
    let t = Instant::now();
    for m in msgs {
        let rec = FutureRecord::to(&inputs[m.channel])
            .partition(m.partition)
            .key(m.key.as_str())
            .payload(m.payload.as_slice());
        let f = enqueue(producer, rec).await.context("producing")?;
        tx.send(f).await.context("ack task ended")?;
    }
    drop(tx);
    let failed = acks.await.context("ack task panicked")?;
    anyhow::ensure!(failed == 0, "{failed} messages not acknowledged");
    Ok(msgs.len() as f64 / t.elapsed().as_secs_f64())
}

/// Reads `n` messages; events/s from the first message to the last.
async fn drain(consumer: &StreamConsumer, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the drain stalled for 30 s")?
            .context("consuming")?;
        std::hint::black_box(m.payload().map(<[u8]>::len));
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

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

/// Sends the target's messages at `rate` for `dur`; `stamp` sees each
/// message and its send time, and may replace its key (partitions are
/// explicit, so keys only travel). Returns how many were sent, for how long, and
/// what was still unfinished at each second.
async fn paced(
    producer: &FutureProducer,
    target: &Target<'_>,
    rate: f64,
    dur: Duration,
    epoch: Instant,
    mut stamp: impl FnMut(&Msg, u64) -> Option<String>,
) -> anyhow::Result<(usize, f64, Vec<u64>)> {
    let (tx, mut rx) = mpsc::channel::<rdkafka::producer::DeliveryFuture>(1_000_000);
    let acks = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let msgs = target.msgs;
    let from = (target.finished)();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut lags = Vec::new();
    let mut next_sample = Duration::from_secs(1);
    let more = |sent: usize| target.cycle || sent < msgs.len();
    while !msgs.is_empty() {
        let elapsed = start.elapsed();
        if elapsed >= dur || !more(sent) {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as usize;
        while sent < due && more(sent) {
            let m = &msgs[sent % msgs.len()];
            let key = stamp(m, micros(epoch));
            let rec = FutureRecord::to(&target.inputs[m.channel])
                .partition(m.partition)
                .key(key.as_deref().unwrap_or(m.key.as_str()))
                .payload(m.payload.as_slice());
            let f = enqueue(producer, rec).await.context("producing")?;
            let _ = tx.send(f).await;
            sent += 1;
        }
        if elapsed >= next_sample {
            lags.push((sent as u64).saturating_sub((target.finished)() - from));
            next_sample += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(tx);
    let _ = acks.await;
    Ok((sent, seconds, lags))
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

/// A service under test: where its input goes and how many messages it has
/// finished (a counter that only grows).
#[derive(Clone, Copy)]
struct Target<'a> {
    inputs: &'a [String],
    msgs: &'a [Msg],
    /// Cycle through `msgs` (the echo); the engine needs new event ids.
    cycle: bool,
    finished: &'a (dyn Fn() -> u64 + Sync),
}

/// One paced trial: its rate, and the work still queued at its end.
#[derive(Clone, Debug)]
pub struct Trial {
    pub rate: f64,
    pub lag: Vec<u64>,
    pub flat: bool,
}

/// The highest rate the target keeps up with: bisection between 0 and the
/// rate it drained a backlog at, `trials` paced runs of `each`. A run keeps
/// up when, after its first second, what is sent but not finished never
/// exceeds a tenth of a second of input (or 1,000 messages): the queue stays
/// as short as the pipeline itself, it does not build up.
async fn sustained(
    producer: &FutureProducer,
    target: &Target<'_>,
    backlog_rate: f64,
    trials: usize,
    each: Duration,
    epoch: Instant,
    offset: &mut usize,
) -> anyhow::Result<(f64, Vec<Trial>)> {
    let (mut lo, mut hi) = (0.0f64, backlog_rate);
    let mut log = Vec::new();
    for _ in 0..trials {
        let rate = (lo + hi) / 2.0;
        let from = (target.finished)();
        let rest = Target {
            msgs: &target.msgs[(*offset).min(target.msgs.len())..],
            ..*target
        };
        let (sent, _, lag) = paced(producer, &rest, rate, each, epoch, |_, _| None).await?;
        if !target.cycle {
            *offset += sent;
        }
        let limit = (rate * 0.1).max(1000.0);
        let flat = sent > 0 && lag.iter().skip(1).all(|l| *l as f64 <= limit);
        log.push(Trial { rate, lag, flat });
        if flat {
            lo = rate;
        } else {
            hi = rate;
        }
        // Let it catch up before the next run.
        wait_until(Duration::from_secs(60), || (target.finished)() - from >= sent as u64).await;
    }
    Ok((lo, log))
}

/// Reads `reader` until `cancel`; for every message `sent_at` knows the send
/// time of, records how long ago that was, in milliseconds.
fn spawn_latency_reader(
    reader: StreamConsumer,
    cancel: CancellationToken,
    epoch: Instant,
    mut sent_at: impl FnMut(&BorrowedMessage<'_>) -> Option<u64> + Send + 'static,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut lat = Vec::new();
        loop {
            let m = tokio::select! {
                _ = cancel.cancelled() => break,
                m = reader.recv() => m,
            };
            let Ok(m) = m else { continue };
            let now = micros(epoch);
            if let Some(t0) = sent_at(&m) {
                lat.push(now.saturating_sub(t0) as f64 / 1000.0);
            }
        }
        lat
    })
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

pub async fn run(plan: &Plan<'_>) -> anyhow::Result<BrokerFigures> {
    let epoch = Instant::now();
    let prefix = format!("bench-{}-{}-", std::process::id(), micros(epoch));
    let mut s = plan.settings.clone();
    s.topics = s.topics.prefixed(&prefix);
    s.kafka.group_id = format!("{prefix}engine");
    s.http.addr = "127.0.0.1:0".parse().context("bench HTTP address")?;
    s.state.dir = std::env::temp_dir().join(format!("{prefix}state"));
    let inputs: Vec<String> = s.topics.inputs().iter().map(|(t, _)| t.to_string()).collect();
    let consumed_topics: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics(&s, &consumed_topics, PARTITIONS).await?;
    let echo_in = format!("{prefix}echo-in");
    let echo_out = format!("{prefix}echo-out");
    create_topics(&s, &[echo_in.clone(), echo_out.clone()], 4 * PARTITIONS).await?;
    let n = plan.backlog.len();
    let producer = upstream(&s)?;

    eprintln!("bench: publishing {n} events to the broker");
    let produce = publish(&producer, &inputs, plan.backlog).await?;

    eprintln!("bench: drain");
    let c = consumer(
        &s,
        &format!("{prefix}drain"),
        &all_partitions(&inputs, PARTITIONS),
        Offset::Beginning,
    )?;
    let drain_rate = drain(&c, n).await?;
    drop(c);

    // The echo over the backlog: from the four channel topics into one,
    // partition for partition.
    eprintln!("bench: echo over the backlog");
    let echo_backlog = {
        let acked = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let t = Instant::now();
        let base: HashMap<String, i32> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i32 * PARTITIONS))
            .collect();
        let task = tokio::spawn(echo_loop(
            consumer(
                &s,
                &format!("{prefix}echo"),
                &all_partitions(&inputs, PARTITIONS),
                Offset::Beginning,
            )?,
            kafka::producer(&s)?,
            echo_out.clone(),
            base,
            acked.clone(),
            cancel.clone(),
        ));
        let done = wait_until(Duration::from_secs(600), || acked.load(Ordering::Relaxed) >= n as u64).await;
        let rate = acked.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        cancel.cancel();
        task.await.context("echo task panicked")??;
        anyhow::ensure!(done, "the echo did not finish the backlog within 10 minutes");
        rate
    };
    // Paced input goes to one topic of eight partitions, the same spread.
    let spread: Vec<Msg> = plan
        .backlog
        .iter()
        .map(|m| Msg {
            channel: 0,
            partition: m.channel as i32 * PARTITIONS + m.partition,
            key: m.key.clone(),
            payload: m.payload.clone(),
            event_id: String::new(),
        })
        .collect();
    let echo_inputs = vec![echo_in.clone()];
    let rig = EchoRig::start(&s, &format!("{prefix}rig1"), &echo_in, &echo_out, epoch).await?;
    let counter = rig.acked.clone();
    let echo_acked = move || counter.load(Ordering::Relaxed);
    let echo_target = Target {
        inputs: &echo_inputs,
        msgs: &spread,
        cycle: true,
        finished: &echo_acked,
    };
    eprintln!("bench: echo, highest sustained rate");
    let (echo_rate, echo_trials) = sustained(
        &producer,
        &echo_target,
        echo_backlog,
        plan.trials,
        plan.trial_for,
        epoch,
        &mut 0,
    )
    .await?;
    eprintln!("bench: echo at half rate ({:.0} events/s)", echo_rate / 2.0);
    let echo_paced = rig
        .latency(&producer, &echo_target, echo_rate / 2.0, plan.paced_for)
        .await?;

    eprintln!("bench: the engine over the backlog");
    let engine = Engine::start(s.clone(), CancellationToken::new()).await?;
    let started = wait_until(Duration::from_secs(90), || engine_consumed(&engine) > 0).await;
    anyhow::ensure!(started, "the engine consumed nothing within 90 s");
    let t = Instant::now();
    // Done when every event is settled or waits only for the watermark:
    // at the end of a finite backlog the last events wait for the partitions
    // to count as idle (`timers.idle_after`), which a stream never does.
    let done = wait_until(Duration::from_secs(900), || {
        engine_settled(&engine) + engine.metrics.events_buffered.get().max(0) as u64 >= n as u64
    })
    .await;
    anyhow::ensure!(done, "the engine did not finish the backlog within 15 minutes");
    let engine_backlog = n as f64 / t.elapsed().as_secs_f64();
    let engine_profiles = engine.state.identity.profile_count();
    let settled = || engine_settled(&engine);
    let engine_target = Target {
        inputs: &inputs,
        msgs: plan.fresh,
        cycle: false,
        finished: &settled,
    };
    let mut offset = 0usize;
    let (engine_rate, engine_trials, engine_paced) = {
        let decisions = vec![s.topics.next_best_actions.clone(), s.topics.churn_risk.clone()];
        let parts: Vec<(String, i32)> = kafka::partition_ends(&producer, decisions)
            .await?
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect();
        let reader = consumer(&s, &format!("{prefix}engine-read"), &parts, Offset::End)?;
        let sent_at: Arc<dashmap::DashMap<String, u64>> = Arc::new(dashmap::DashMap::new());
        let read_cancel = CancellationToken::new();
        let stamps = sent_at.clone();
        // The first decision an event caused.
        let reads = spawn_latency_reader(reader, read_cancel.clone(), epoch, move |m| {
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
        eprintln!("bench: the engine, highest sustained rate");
        let (engine_rate, engine_trials) = sustained(
            &producer,
            &engine_target,
            engine_backlog,
            plan.trials,
            plan.trial_for,
            epoch,
            &mut offset,
        )
        .await?;
        eprintln!("bench: the engine at half rate ({:.0} events/s)", engine_rate / 2.0);
        let rate = engine_rate / 2.0;
        let from = settled();
        let stamps = sent_at.clone();
        let rest = Target {
            msgs: &plan.fresh[offset.min(plan.fresh.len())..],
            ..engine_target
        };
        let (sent, seconds, lag) = paced(&producer, &rest, rate, plan.paced_for, epoch, |m, now| {
            stamps.insert(m.event_id.clone(), now);
            None
        })
        .await?;
        wait_until(Duration::from_secs(30), || settled() - from >= sent as u64).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        read_cancel.cancel();
        let lat = reads.await.context("reader panicked")?;
        let skip = lat.len() / 10;
        (
            engine_rate,
            engine_trials,
            summarise(lat[skip..].to_vec(), rate, sent, seconds, lag),
        )
    };
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&s.state.dir);
    // The echo again, at the rate the engine's latency was measured at: the
    // same load, so the two latencies compare.
    eprintln!(
        "bench: echo at the engine's half rate ({:.0} events/s)",
        engine_paced.rate
    );
    let rig = EchoRig::start(&s, &format!("{prefix}rig2"), &echo_in, &echo_out, epoch).await?;
    let counter = rig.acked.clone();
    let echo_acked = move || counter.load(Ordering::Relaxed);
    let echo_target = Target {
        finished: &echo_acked,
        ..echo_target
    };
    let echo_at_engine_rate = rig
        .latency(&producer, &echo_target, engine_paced.rate, plan.paced_for)
        .await?;
    Ok(BrokerFigures {
        produce,
        drain: drain_rate,
        echo_backlog,
        echo: echo_rate,
        echo_trials,
        echo_paced,
        engine_backlog,
        engine: engine_rate,
        engine_trials,
        engine_paced,
        engine_profiles,
        echo_at_engine_rate,
    })
}

/// Polls `done` every 20 ms until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let lat: Vec<f64> = (1..=1000).map(f64::from).collect();
        let p = summarise(lat, 10.0, 1000, 1.0, vec![3, 4]);
        assert_eq!((p.p50, p.p99, p.p999), (501.0, 990.0, 999.0));
        assert_eq!(p.samples, 1000);
        assert!(summarise(Vec::new(), 1.0, 0, 1.0, Vec::new()).p99.is_nan());
    }
}
