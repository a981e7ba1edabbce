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
//! producer stamps each message (its key for the echo, its event id for the
//! engine) just before sending it; the reader takes the time it receives the
//! output.
//!
//! Layout: [`clients`] (topics, consumers, the upstream producer, `produce`
//! and `drain`), [`pace`] (paced runs, the sustained-rate search, latency
//! readers and percentiles), [`echo`] and [`engine`] (the two services under
//! test), and [`state`] (the state figures: checkpoint, restore, changelog).
//! [`run`] takes a [`Plan`] and returns the [`BrokerFigures`]; it keeps
//! nothing once it returns (its topics have a prefix of their own).

mod clients;
mod echo;
mod engine;
mod pace;
pub mod scaleout;
pub mod state;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;

use onejourney_engine::config::Settings;

pub use pace::{Paced, Trial};

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
    /// Without `scaleout_events`: not measured.
    pub scaleout: Option<scaleout::ScaleoutFigures>,
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
    /// Events of the backlog the scaleout runs use (0: none).
    pub scaleout_events: usize,
}

/// What every step shares: the settings with this run's own topics, group
/// and state directory, the topic names, the upstream producer and the clock
/// every latency is taken on.
struct Bench<'a> {
    plan: &'a Plan<'a>,
    s: Settings,
    prefix: String,
    /// The four channel topics, in `Topics::inputs()` order.
    inputs: Vec<String>,
    echo_in: String,
    echo_out: String,
    producer: FutureProducer,
    epoch: Instant,
}

impl<'a> Bench<'a> {
    /// Names this run's topics (a prefix of its own), creates them, and
    /// starts the upstream producer.
    async fn setup(plan: &'a Plan<'a>) -> anyhow::Result<Bench<'a>> {
        let epoch = Instant::now();
        let prefix = format!("bench-{}-{}-", std::process::id(), micros(epoch));
        let s = own_settings(plan.settings, &prefix)?;
        let inputs: Vec<String> = s.topics.inputs().iter().map(|(t, _)| t.to_string()).collect();
        let consumed_topics: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
        clients::create_topics(&s, &consumed_topics, PARTITIONS).await?;
        let echo_in = format!("{prefix}echo-in");
        let echo_out = format!("{prefix}echo-out");
        clients::create_topics(&s, &[echo_in.clone(), echo_out.clone()], 4 * PARTITIONS).await?;
        let producer = clients::upstream(&s)?;
        Ok(Bench {
            plan,
            s,
            prefix,
            inputs,
            echo_in,
            echo_out,
            producer,
            epoch,
        })
    }

    /// `drain`: a consumer of the four channel topics that does nothing.
    async fn drain(&self) -> anyhow::Result<f64> {
        let c = clients::consumer(
            &self.s,
            &format!("{}drain", self.prefix),
            &clients::all_partitions(&self.inputs, PARTITIONS),
            Offset::Beginning,
        )?;
        clients::drain(&c, self.plan.backlog.len()).await
    }
}

/// Every broker figure, in the order `make bench` measures them.
pub async fn run(plan: &Plan<'_>) -> anyhow::Result<BrokerFigures> {
    let b = Bench::setup(plan).await?;
    let n = plan.backlog.len();
    eprintln!("bench: publishing {n} events to the broker");
    let produce = clients::publish(&b.producer, &b.inputs, plan.backlog).await?;
    eprintln!("bench: drain");
    let drain = b.drain().await?;
    eprintln!("bench: echo over the backlog");
    let echo_backlog = echo::over_backlog(&b).await?;
    let spread = echo::spread(plan.backlog);
    let (echo, echo_trials, echo_paced) = echo::sustained_then_paced(&b, &spread, echo_backlog).await?;
    let engine = engine::measure(&b).await?;
    // The echo again, at the rate the engine's latency was measured at: the
    // same load, so the two latencies compare.
    eprintln!(
        "bench: echo at the engine's half rate ({:.0} events/s)",
        engine.paced.rate
    );
    let echo_at_engine_rate = echo::at_rate(&b, &spread, engine.paced.rate).await?;
    let scaleout = match plan.scaleout_events.min(n) {
        0 => None,
        k => Some(scaleout::measure(plan.settings, &plan.backlog[..k]).await?),
    };
    Ok(BrokerFigures {
        produce,
        drain,
        echo_backlog,
        echo,
        echo_trials,
        echo_paced,
        engine_backlog: engine.backlog,
        engine: engine.rate,
        engine_trials: engine.trials,
        engine_paced: engine.paced,
        engine_profiles: engine.profiles,
        echo_at_engine_rate,
        scaleout,
    })
}

/// `base` with topics, a consumer group, an HTTP port and a state directory
/// of its own, named under `prefix`: one measured run.
fn own_settings(base: &Settings, prefix: &str) -> anyhow::Result<Settings> {
    let mut s = base.clone();
    s.topics = s.topics.prefixed(prefix);
    s.kafka.group_id = format!("{prefix}engine");
    s.http.addr = "127.0.0.1:0".parse().context("bench HTTP address")?;
    s.state.dir = std::env::temp_dir().join(format!("{prefix}state"));
    Ok(s)
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
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
