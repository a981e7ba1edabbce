//! `onejourney-sim`: generate simulated channel traffic to a file or a broker.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use onejourney_simulator::{generate, kafka, SimConfig, Stream};

#[derive(Parser)]
#[command(name = "onejourney-sim", about = "Simulated omnichannel traffic with ground truth")]
struct Args {
    /// How many people.
    #[arg(long, default_value_t = 1000)]
    customers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Days of event time.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// The harder mix: more segments, shared tablets, junk values, late events.
    #[arg(long)]
    harder: bool,
    /// Write events as JSON lines here (`{"topic","key","value"}`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the ground truth (one person a line) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Publish to this broker instead of (or as well as) a file.
    #[arg(long)]
    brokers: Option<String>,
    /// Prefix for the default topic names.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Events per second when publishing (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// A librdkafka property for the publisher, KEY=VALUE (repeatable), e.g.
    /// `--client security.protocol=SASL_SSL`. The environment's
    /// `ONEJOURNEY_KAFKA_CLIENT_<NAME>` variables (as for the engine) come
    /// first; these win.
    #[arg(long = "client", value_name = "KEY=VALUE")]
    client: Vec<String>,
}

/// The fixed start (2026-08-01), or earlier when `days` from it would reach
/// past today: the engine dead-letters events dated ahead of its clock
/// (`timers.max_future_skew`), so simulated traffic always ends by now.
fn start_ms(days: u32) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let fixed = SimConfig::default().start_ms;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(fixed, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let latest = (now / DAY_MS - i64::from(days)) * DAY_MS;
    fixed.min(latest)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sim = generate(&SimConfig {
        customers: args.customers,
        seed: args.seed,
        days: args.days,
        start_ms: start_ms(args.days),
        harder: args.harder,
    });
    eprintln!(
        "{} people, {} events, segments {:?}",
        sim.people.len(),
        sim.events.len(),
        sim.segment_counts()
    );
    if let Some(p) = &args.out {
        std::fs::write(p, sim.events_jsonl()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.truth {
        std::fs::write(p, sim.truth_jsonl()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(brokers) = &args.brokers {
        let mut client = kafka::client_properties_from_env(std::env::vars());
        for kv in &args.client {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--client {kv}: expected KEY=VALUE"))?;
            client.insert(k.to_string(), v.to_string());
        }
        let producer = kafka::producer_with(brokers, &client)?;
        let prefix = args.topic_prefix.clone();
        let topic_of = move |s: Stream| format!("{prefix}{}", s.default_topic());
        kafka::publish(&producer, &sim.events, &topic_of, args.rate).await?;
        eprintln!("published {} events", sim.events.len());
    }
    Ok(())
}
