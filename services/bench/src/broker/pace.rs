//! Paced runs against a service under test, and what they yield.
//!
//! In: a [`Target`] (where its input goes, the messages to send, a counter of
//! what it has finished), a rate and a duration. Out: what was sent, for how
//! long, and the backlog sampled every second ([`paced`]); the highest rate it
//! keeps up with ([`sustained`]); latencies read off an output topic
//! ([`spawn_latency_reader`]) and their percentiles ([`summarise`]). Keeps
//! nothing between runs: every time is taken on the caller's monotonic `epoch`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use onejourney_engine::pipeline::emit::enqueue;

use super::{micros, wait_until, Msg};

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

/// One paced trial: its rate, and the work still queued at its end.
#[derive(Clone, Debug)]
pub struct Trial {
    pub rate: f64,
    pub lag: Vec<u64>,
    pub flat: bool,
}

/// A service under test: where its input goes and how many messages it has
/// finished (a counter that only grows).
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) inputs: &'a [String],
    pub(super) msgs: &'a [Msg],
    /// Cycle through `msgs` (the echo); the engine needs new event ids.
    pub(super) cycle: bool,
    pub(super) finished: &'a (dyn Fn() -> u64 + Sync),
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn summarise(mut lat_ms: Vec<f64>, rate: f64, sent: usize, seconds: f64, lag: Vec<u64>) -> Paced {
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

/// Sends the target's messages at `rate` for `dur`; `stamp` sees each
/// message and its send time, and may replace its key (partitions are
/// explicit, so keys only travel). Returns how many were sent, for how long, and
/// what was still unfinished at each second.
pub(super) async fn paced(
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

/// The highest rate the target keeps up with: bisection between 0 and the
/// rate it drained a backlog at, `trials` paced runs of `each`. A run keeps
/// up when, after its first second, what is sent but not finished never
/// exceeds a tenth of a second of input (or 1,000 messages): the queue stays
/// as short as the pipeline itself, it does not build up.
pub(super) async fn sustained(
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
pub(super) fn spawn_latency_reader(
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
