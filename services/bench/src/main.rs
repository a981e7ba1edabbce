//! `onejourney-bench`: measure throughput, latency and memory figures on this
//! machine (see docs/benchmarks.md and [`onejourney_bench`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use onejourney_bench::BenchArgs;
use onejourney_engine::cli::Common;

/// As the engine binary: mimalloc, chosen by measurement (docs/benchmarks.md).
#[cfg(not(any(feature = "system-allocator", feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc, measured against mimalloc (`--features jemalloc`).
#[cfg(all(feature = "jemalloc", not(feature = "system-allocator")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Measure throughput, latency and memory figures on this machine (see docs/benchmarks.md).
#[derive(Parser)]
#[command(name = "onejourney-bench", version)]
struct Args {
    /// Write the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Simulator events to measure with.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Profiles in memory before the core is measured; several sizes
    /// (`--profiles 1000000,10000000`) measure every figure that depends on
    /// them once per size, in one run and one JSON.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    profiles: Vec<usize>,
    /// Measure parse_floor and memory only (for large --profiles).
    #[arg(long)]
    memory_only: bool,
    /// Measure parse_floor, memory, core, core_all_cores and recovery
    /// only (the core's own snapshot, written and read back without a
    /// broker, its state dropped first): for --profiles sizes whose engine
    /// figures (a second copy of the state) do not fit in memory (10M on 24
    /// GiB, with --events 60000).
    #[arg(long, conflicts_with = "memory_only")]
    core_only: bool,
    /// A Kafka-compatible broker for the drain, echo and engine figures
    /// (left out without one).
    #[arg(long)]
    brokers: Option<String>,
    /// With --brokers: the state figures only, not drain, echo and engine.
    #[arg(long)]
    state_only: bool,
    /// Events of the backlog for the scaleout figures (1, 2 and 3 engine
    /// instances of one group, and the identity log's ceiling); 0 leaves
    /// them out.
    #[arg(long, default_value_t = 50_000)]
    scaleout_events: usize,
    /// With --brokers: the scaleout figures only.
    #[arg(long, requires = "brokers")]
    scaleout_only: bool,
    /// Without --brokers, one --profiles size: write recovery's snapshot
    /// here and keep it, for a later --restore-only run.
    #[arg(long, conflicts_with_all = ["brokers", "memory_only"])]
    keep_snapshot: Option<PathBuf>,
    /// Only recovery_restart: restore this snapshot (written with
    /// --keep-snapshot and the same settings) in this new process, as a
    /// restarted engine reads its local snapshot; --profiles, --events and
    /// the other modes do not apply.
    #[arg(long, conflicts_with_all = ["keep_snapshot", "brokers", "memory_only"])]
    restore_only: Option<PathBuf>,
    /// Seconds each half-rate latency run lasts.
    #[arg(long, default_value_t = 10)]
    paced_secs: u64,
    #[command(flatten)]
    common: Common,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let settings = args.common.settings(None)?;
    // The engines the bench starts log only when asked (`RUST_LOG=info`):
    // their restore phases and checkpoints, with times, for a profile.
    if std::env::var_os("RUST_LOG").is_some() {
        onejourney_engine::logging::init(&settings.log);
    }
    onejourney_bench::run(
        &settings,
        &BenchArgs {
            out: args.out,
            events: args.events,
            profiles: args.profiles,
            memory_only: args.memory_only,
            core_only: args.core_only,
            brokers: args.brokers,
            state_only: args.state_only,
            paced_for: std::time::Duration::from_secs(args.paced_secs),
            scaleout_events: args.scaleout_events,
            scaleout_only: args.scaleout_only,
            keep_snapshot: args.keep_snapshot,
            restore_only: args.restore_only,
            allocator: if cfg!(feature = "system-allocator") {
                "system"
            } else if cfg!(feature = "jemalloc") {
                "jemalloc"
            } else {
                "mimalloc"
            },
        },
        &runtime,
    )
}
