//! `onejourney`: the real-time customer journey engine.
//!
//! `run` consumes and publishes on a Kafka cluster; `check-config` prints the
//! effective settings. The embedded demo is `onejourney-demo`
//! (services/demo) and the benchmark `onejourney-bench` (services/bench).

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use onejourney_engine::cli::{self, Common};
use onejourney_engine::{logging, Engine};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// mimalloc instead of the system allocator: chosen by measurement
/// (`docs/benchmarks.md`: core +12-17 %, all cores +7-36 %, recovery -8 %,
/// memory -1 % at 1M profiles).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "onejourney", version, about = "Real-time customer journey engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run against a Kafka cluster.
    Run {
        /// Bootstrap servers, HOST:PORT[,HOST:PORT...].
        #[arg(long)]
        brokers: Option<String>,
        /// Ignore any snapshot and committed offsets: rebuild the state from
        /// the beginning of the input topics (`state.rebuild`).
        #[arg(long)]
        rebuild: bool,
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

fn main() -> anyhow::Result<()> {
    // `--version` prints what `onejourney version` prints.
    let text = onejourney_engine::version::text();
    // clap puts the name in front of it.
    let long_version: &'static str = Box::leak(text.trim_start_matches("onejourney ").into());
    let args = Cli::from_arg_matches(&Cli::command().long_version(long_version).get_matches())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        Command::Run {
            brokers,
            rebuild,
            common,
        } => {
            let mut settings = common.settings(brokers)?;
            // A flag, the last layer: it can only switch the rebuild on.
            settings.state.rebuild |= rebuild;
            logging::init(&settings.log);
            onejourney_engine::allocator::report();
            runtime.block_on(async {
                let cancel = CancellationToken::new();
                let engine = Engine::start(settings, cancel.clone()).await?;
                info!(http = %engine.http_addr, "onejourney running");
                tokio::spawn(cli::cancel_on_signal(cancel));
                engine.wait().await
            })
        }
        Command::Version => {
            println!("{}", onejourney_engine::version::text());
            Ok(())
        }
        Command::CheckConfig { common } => match common.settings(None) {
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
