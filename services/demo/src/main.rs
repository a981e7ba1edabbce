//! `onejourney-demo`: the engine on an embedded broker, with no broker to
//! install (`make run`). See [`demo`] for what it starts and prints.

mod demo;

use anyhow::Context as _;
use clap::Parser;
use onejourney_engine::cli::{self, Common};
use onejourney_engine::logging;
use tokio_util::sync::CancellationToken;

/// Run the embedded default: an in-process broker fed by the simulator.
#[derive(Parser)]
#[command(name = "onejourney-demo", version)]
struct Args {
    /// Simulated people.
    #[arg(long, default_value_t = 400)]
    customers: usize,
    /// Simulated events published per second.
    #[arg(long, default_value_t = 400)]
    rate: u32,
    #[command(flatten)]
    common: Common,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = args.common.settings(None)?;
    logging::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(cli::cancel_on_signal(cancel.clone()));
        demo::run(settings, args.customers, args.rate, cancel).await
    })
}
