//! `onejourney`: the real-time customer journey engine.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use onejourney_engine::config::{Overrides, Settings};
use onejourney_engine::{demo, logging, Engine};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(name = "onejourney", version, about = "Real-time customer journey engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Config file (TOML) layered over the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz, /readyz and the lookup API.
    #[arg(long)]
    http_addr: Option<String>,
    /// Consumer group id.
    #[arg(long)]
    group_id: Option<String>,
    /// Where local state lives.
    #[arg(long)]
    state_dir: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run against a Kafka cluster.
    Run {
        /// Bootstrap servers, HOST:PORT[,HOST:PORT...].
        #[arg(long)]
        brokers: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Run the embedded default: an in-process broker fed by the simulator.
    Demo {
        /// Simulated people.
        #[arg(long, default_value_t = 400)]
        customers: usize,
        /// Simulated events published per second.
        #[arg(long, default_value_t = 400)]
        rate: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Measure throughput, latency and memory figures on this machine (see docs/benchmarks.md).
    Bench {
        /// Write the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Simulator events to measure with.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Profiles in memory before the core is measured.
        #[arg(long, default_value_t = 1_000_000)]
        profiles: usize,
        /// Measure parse_floor and memory only (for large --profiles).
        #[arg(long)]
        memory_only: bool,
        /// A Kafka-compatible broker for the drain, echo and engine figures
        /// (left out without one).
        #[arg(long)]
        brokers: Option<String>,
        /// Seconds each half-rate latency run lasts.
        #[arg(long, default_value_t = 10)]
        paced_secs: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Print the engine's version, librdkafka's version and its builtin features.
    Version,
    /// Print the effective configuration, or the first error with its key.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
}

fn load(brokers: Option<String>, c: &Common) -> anyhow::Result<Settings> {
    let overrides = Overrides {
        brokers,
        http_addr: c.http_addr.clone(),
        group_id: c.group_id.clone(),
        state_dir: c.state_dir.clone(),
    };
    Ok(Settings::load(c.config.as_deref(), None, &overrides)?)
}

fn main() -> anyhow::Result<()> {
    // `--version` prints what `onejourney version` prints.
    let text = onejourney_engine::version::text();
    // clap puts the name in front of it.
    let long_version: &'static str = Box::leak(text.trim_start_matches("onejourney ").into());
    let cli = Cli::from_arg_matches(&Cli::command().long_version(long_version).get_matches())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run { brokers, common } => {
            let settings = load(brokers, &common)?;
            logging::init(&settings.log);
            runtime.block_on(async {
                let cancel = CancellationToken::new();
                let engine = Engine::start(settings, cancel.clone()).await?;
                info!(http = %engine.http_addr, "onejourney running");
                tokio::spawn(cancel_on_signal(cancel));
                engine.wait().await
            })
        }
        Command::Demo {
            customers,
            rate,
            common,
        } => {
            let settings = load(None, &common)?;
            logging::init(&settings.log);
            runtime.block_on(async {
                let cancel = CancellationToken::new();
                tokio::spawn(cancel_on_signal(cancel.clone()));
                demo::run(settings, customers, rate, cancel).await
            })
        }
        Command::Bench {
            out,
            events,
            profiles,
            memory_only,
            brokers,
            paced_secs,
            common,
        } => {
            let settings = load(None, &common)?;
            onejourney_engine::bench::run(
                &settings,
                &onejourney_engine::bench::BenchArgs {
                    out,
                    events,
                    profiles,
                    memory_only,
                    brokers,
                    paced_for: std::time::Duration::from_secs(paced_secs),
                },
                &runtime,
            )
        }
        Command::Version => {
            println!("{}", onejourney_engine::version::text());
            Ok(())
        }
        Command::CheckConfig { common } => match load(None, &common) {
            Ok(settings) => {
                println!("{}", settings.to_masked_toml()?);
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
    }
}

/// Cancels on SIGINT or SIGTERM.
async fn cancel_on_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("signal received; draining, flushing and committing");
    cancel.cancel();
}
