//! `onejourney-bench`: throughput, latency and memory, measured in one run on
//! this machine with the same simulator events, printed as a table and
//! written as JSON: `parse_floor` (serde_json alone), `core` (decode, stitch,
//! journey and decide with N profiles already in memory, on one thread and
//! pipelined over all cores), `memory` (resident bytes per profile),
//! `recovery` (writing and restoring a snapshot of that state) and, given a
//! broker, `drain`, `echo` and `engine` ([`broker`]). `--restore-only`
//! measures `recovery_restart` alone: a snapshot an earlier run kept
//! (`--keep-snapshot`) restored in a process that did nothing before.

pub mod bgnbd;
pub mod broker;
pub mod churn;

mod preloaded;
pub mod simulated;
mod stall;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::Channel;
use onejourney_simulator::{generate, SimConfig};
use serde::Serialize;
use serde_json::json;

use onejourney_engine::config::Settings;
pub use preloaded::count_outputs;
use preloaded::{peak_rss_bytes, rss_bytes, Core, BLOCK};

pub struct BenchArgs {
    pub out: Option<PathBuf>,
    /// Simulator events to measure with.
    pub events: usize,
    /// Profiles loaded before the core is measured: every figure that
    /// depends on them is measured once per size, in order.
    pub profiles: Vec<usize>,
    /// Stop after parse_floor and memory.
    pub memory_only: bool,
    /// Stop after parse_floor, memory, core and core_all_cores: for sizes
    /// whose `recovery` (a second copy of the state beside the first) does
    /// not fit in memory.
    pub core_only: bool,
    /// A Kafka-compatible broker for the state figures, drain, echo and
    /// engine; without one those figures are left out.
    pub brokers: Option<String>,
    /// With a broker: the state figures only (no drain, echo, engine).
    pub state_only: bool,
    /// How long each paced (half-rate) latency run lasts.
    pub paced_for: std::time::Duration,
    /// Events of the backlog the `scaleout` figures use (0: left out).
    pub scaleout_events: usize,
    /// With a broker: the scaleout figures only.
    pub scaleout_only: bool,
    /// The global allocator the figures ran on (`mimalloc`, `jemalloc` or `system`).
    pub allocator: &'static str,
    /// Where `recovery` writes its snapshot without a broker, kept for a
    /// later `restore_only` run.
    pub keep_snapshot: Option<PathBuf>,
    /// Only `recovery_restart`: this snapshot restored in a process that
    /// did nothing before.
    pub restore_only: Option<PathBuf>,
}

#[derive(Serialize)]
pub(crate) struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    note: String,
}

/// A ratio: its name, its value and its goal.
type Ratio = (&'static str, f64, &'static str);

/// Says which allocator and mimalloc purge delay the figures run on (the
/// JSON keeps both too): the delay moves the core's figures by 5-25%
/// (`onejourney_engine::allocator`).
fn say_allocator(args: &BenchArgs) {
    eprintln!(
        "bench: allocator {}, mimalloc purge delay {} ms (negative: never; {})",
        args.allocator,
        onejourney_engine::allocator::configured_ms(),
        onejourney_engine::allocator::PURGE_DELAY_VAR
    );
}

pub fn run(settings: &Settings, args: &BenchArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    say_allocator(args);
    if let Some(file) = &args.restore_only {
        return restart_only(settings, file, args);
    }
    if args.scaleout_only {
        return scaleout_only(settings, args, runtime);
    }
    let (&first, more_sizes) = args.profiles.split_first().context("--profiles needs a size")?;
    one_size_kept(args)?;
    // memory and the preload, first: before the simulation is generated, so
    // that no memory it freed is reused by the profiles and hidden from the
    // resident growth.
    let rss_at_start = rss_bytes();
    // The state figures write the preload's changelog: it is kept until
    // then, and keeps every journey live. `memory` is the state as the
    // engine holds it between checkpoints: measured on a preload of its
    // own first (the changelog dropped and idle journeys frozen as the
    // engine's checkpoints and scans do), the other preload's growth in
    // its note.
    let keep = args.brokers.is_some() && !args.memory_only && !args.core_only;
    let (core, memory) = if keep {
        let (clean, mut memory) = Core::preload(settings, first, None, false)?;
        drop(clean);
        let (core, kept) = Core::preload(settings, first, None, true)?;
        memory.note = format!(
            "{}; with the bookkeeping (a second preload, memory the first freed reused): {:.0} bytes/profile, {}",
            memory.note, kept.value, kept.note
        );
        (core, memory)
    } else {
        Core::preload(settings, first, None, false)?
    };
    let rss_before_sim = rss_bytes();
    let rates = args.brokers.is_some() && !args.memory_only && !args.state_only;
    let msgs = simulate(args.events, rates);
    let (backlog, later) = msgs.split_at(args.events.min(msgs.len()));
    let events = core_events(backlog);
    let sim_bytes = rss_bytes().saturating_sub(rss_before_sim);
    let baseline = Some(rss_at_start + sim_bytes);
    let mean_bytes = events.iter().map(|e| e.1.len()).sum::<usize>() as f64 / events.len().max(1) as f64;
    eprintln!("bench: {} events, {:.0} bytes on average", events.len(), mean_bytes);
    let parse_floor = parse_floor(&events, mean_bytes);
    let ctx = Sized {
        settings,
        args,
        runtime,
        events: &events,
        backlog,
        parse_floor: parse_floor.value,
    };
    let mut groups = Vec::new();
    if args.memory_only {
        drop(core);
        groups.push(Group::of(first, vec![memory, parse_floor], Vec::new()));
        for &n in more_sizes {
            groups.push(Group::of(
                n,
                vec![Core::preload(settings, n, baseline, keep)?.1],
                Vec::new(),
            ));
        }
    } else {
        let (mut figures, mut ratios) = ctx.measure(core, first)?;
        figures.insert(0, parse_floor);
        figures.insert(0, memory);
        let (more, more_ratios) = broker_part(settings, args, runtime, backlog, later)?;
        figures.extend(more);
        ratios.extend(more_ratios);
        groups.push(Group::of(first, figures, ratios));
        for &n in more_sizes {
            let (core, memory) = Core::preload(settings, n, baseline, keep)?;
            let (mut figures, ratios) = ctx.measure(core, n)?;
            figures.insert(0, memory);
            groups.push(Group::of(n, figures, ratios));
        }
    }
    groups[0].figures.push(overhead(sim_bytes, &events, first));
    report(&groups, events.len(), mean_bytes, args)
}

/// `--restore-only`: `recovery_restart` alone.
fn restart_only(settings: &Settings, file: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let (figure, profiles) = preloaded::restart(settings, file)?;
    report(&[Group::of(profiles, vec![figure], Vec::new())], 0, 0.0, args)
}

/// `--keep-snapshot` keeps the one file `recovery` writes without a
/// broker: not with several sizes (each would write it in turn), a broker
/// (`recovery` restores the state figures' checkpoint) or `--memory-only`
/// (no `recovery`). The command line refuses the last two as well.
fn one_size_kept(args: &BenchArgs) -> anyhow::Result<()> {
    if args.keep_snapshot.is_none() {
        return Ok(());
    }
    anyhow::ensure!(
        args.brokers.is_none() && !args.memory_only,
        "--keep-snapshot needs a run without --brokers or --memory-only"
    );
    anyhow::ensure!(
        args.profiles.len() <= 1,
        "--keep-snapshot keeps the snapshot of one --profiles size, not {}",
        args.profiles.len()
    );
    Ok(())
}

/// `bench_overhead`: what the bench holds besides the state.
fn overhead(sim_bytes: u64, events: &[(Channel, &[u8], u32)], profiles: usize) -> Figure {
    let held: usize = events.iter().map(|e| e.1.len()).sum();
    Figure {
        name: "bench_overhead",
        value: sim_bytes as f64 / 1e6,
        unit: "MB",
        note: format!(
            "resident growth while the simulation was generated and kept ({} events, {:.0} MB of payloads, plus \
             the later events for the engine's paced runs with --brokers); the preload streams its {profiles} \
             profiles one at a time and the core run decodes in blocks of {BLOCK}; peak resident {:.0} MB",
            events.len(),
            held as f64 / 1e6,
            peak_rss_bytes() as f64 / 1e6
        ),
    }
}

/// The figures of one `--profiles` size, and their ratios.
struct Group {
    profiles: usize,
    figures: Vec<Figure>,
    ratios: Vec<Ratio>,
}

impl Group {
    fn of(profiles: usize, figures: Vec<Figure>, ratios: Vec<Ratio>) -> Group {
        Group {
            profiles,
            figures,
            ratios,
        }
    }
}

/// What the figures of every size share.
struct Sized<'a> {
    settings: &'a Settings,
    args: &'a BenchArgs,
    runtime: &'a tokio::runtime::Runtime,
    events: &'a [(Channel, &'a [u8], u32)],
    backlog: &'a [broker::Msg],
    parse_floor: f64,
}

impl Sized<'_> {
    /// `core`, `core_all_cores`, `recovery` and the state figures with
    /// `core`'s `profiles` preloaded; ends the core.
    fn measure(&self, mut core: Core, profiles: usize) -> anyhow::Result<(Vec<Figure>, Vec<Ratio>)> {
        // The state figures' checkpoint: the preloaded profiles as the
        // engine writes them (changelog on the broker, snapshot file),
        // before the core run changes them.
        let persisted = match &self.args.brokers {
            Some(brokers) => {
                let mut s = self.settings.clone();
                s.kafka.brokers = brokers.clone();
                Some(self.runtime.block_on(broker::state::persist(&s, &mut core.processor))?)
            }
            None => None,
        };
        // core: the first half of the events on one thread, the second half
        // pipelined over every core.
        let (first, second) = self.events.split_at(self.events.len() / 2);
        let (one_thread, checkpoints) = core.one_thread(first, profiles)?;
        let all_cores = core.all_cores(second);
        let ratios = vec![
            ("core/parse_floor", one_thread.value / self.parse_floor, "goal >= 0.33"),
            (
                "core_all_cores/parse_floor",
                all_cores.value / self.parse_floor,
                "goal >= 0.33",
            ),
        ];
        let mut figures = vec![one_thread, all_cores];
        figures.extend(checkpoints.figure(profiles));
        if self.args.core_only {
            // Without a broker: the snapshot file written and restored
            // by the core alone. What is measured so far is printed first:
            // a restore that does not fit ends the process.
            for f in &figures {
                eprintln!("bench: {} = {:.0} {} ({})", f.name, f.value, f.unit, f.note);
            }
            figures.push(core.recovery(self.settings, None, self.args.keep_snapshot.as_deref())?);
            return Ok((figures, ratios));
        }
        // The engines below have a state of their own: the core's goes
        // first, so they do not share the heap with it.
        figures.push(core.recovery(self.settings, persisted.as_ref(), self.args.keep_snapshot.as_deref())?);
        let state = match &persisted {
            Some(p) => Some(self.runtime.block_on(broker::state::measure(p, self.backlog))?),
            None => None,
        };
        figures.extend(broker::state::figures(persisted.as_ref(), state.as_ref()));
        Ok((figures, ratios))
    }
}

/// The realistic mix: about 28 events per simulated person, as they go to the
/// broker: the population of eight times `events`, so that the first
/// `events` (the backlog) span about an eighth of the simulated days. With
/// `later`, the rest are kept: the later events (newer event times, new ids)
/// feed the engine's paced runs, which must not repeat an event id; without,
/// they are dropped.
///
/// The population is the same in every mode, so that `core` measures the
/// same work with or without `--brokers` and `--state-only`. (Until session
/// 10 the population was eight times smaller without `later`: the backlog
/// then spanned half the simulated days, past the day the preloaded
/// profiles' quiet timers fall due, and the `core` run also fired a timer
/// for every preloaded profile: 5x slower, not comparable.)
pub fn simulate(events: usize, later: bool) -> Vec<broker::Msg> {
    let customers = 8 * events / 28;
    let sim = generate(&SimConfig {
        customers: customers.max(10),
        seed: 42,
        ..SimConfig::default()
    });
    let keep = if later { usize::MAX } else { events };
    sim.events
        .into_iter()
        .take(keep)
        .map(|e| {
            let (payload, partition) = (e.bytes(), e.key_partition(broker::PARTITIONS as u32) as i32);
            let event_id = e.value["event_id"].as_str().unwrap_or_default().to_string();
            broker::Msg {
                channel: e.stream.channel().index(),
                partition,
                key: e.key,
                payload,
                event_id,
            }
        })
        .collect()
}

/// The backlog as the core sees it: channel, bytes and a partition number
/// unique over the four channel topics.
fn core_events(backlog: &[broker::Msg]) -> Vec<(Channel, &[u8], u32)> {
    backlog
        .iter()
        .map(|m| {
            let c = Channel::ALL[m.channel];
            (
                c,
                m.payload.as_slice(),
                m.channel as u32 * broker::PARTITIONS as u32 + m.partition as u32,
            )
        })
        .collect()
}

/// `parse_floor`: serde_json into a Value, nothing else.
fn parse_floor(events: &[(Channel, &[u8], u32)], mean_bytes: f64) -> Figure {
    let t = Instant::now();
    for (_, bytes, _) in events {
        black_box(serde_json::from_slice::<serde_json::Value>(bytes).ok());
    }
    Figure {
        name: "parse_floor",
        value: events.len() as f64 / t.elapsed().as_secs_f64(),
        unit: "events/s",
        note: format!("serde_json::from_slice to Value, {mean_bytes:.0}-byte events"),
    }
}

/// The broker figures and their ratios against `backlog` (and `later` for
/// the engine's paced runs), or placeholders without `--brokers`.
fn broker_part(
    settings: &Settings,
    args: &BenchArgs,
    runtime: &tokio::runtime::Runtime,
    backlog: &[broker::Msg],
    later: &[broker::Msg],
) -> anyhow::Result<(Vec<Figure>, Vec<Ratio>)> {
    let (Some(brokers), false) = (&args.brokers, args.state_only) else {
        let figures = ["drain", "echo", "engine"].map(|name| Figure {
            name,
            value: f64::NAN,
            unit: "",
            note: String::from("not measured: no --brokers (make bench starts a broker), or --state-only"),
        });
        return Ok((figures.into(), Vec::new()));
    };
    let mut s = settings.clone();
    s.kafka.brokers = brokers.clone();
    let b = runtime.block_on(broker::run(&broker::Plan {
        settings: &s,
        backlog,
        fresh: later,
        paced_for: args.paced_for,
        trials: 5,
        trial_for: std::time::Duration::from_secs(4),
        scaleout_events: args.scaleout_events,
    }))?;
    let mut ratios = vec![
        ("engine/echo", b.engine / b.echo, "goal >= 0.6"),
        (
            "engine p99 - echo p99",
            b.engine_paced.p99 - b.echo_paced.p99,
            "ms, goal <= 2 (each at half its own sustained rate)",
        ),
        (
            "engine p99 - echo p99, same rate",
            b.engine_paced.p99 - b.echo_at_engine_rate.p99,
            "ms (the echo at the engine's half rate)",
        ),
    ];
    let mut figures = broker_figures(&b, backlog.len());
    if let Some(s) = &b.scaleout {
        let (more, more_ratios) = broker::scaleout::figures(s, args.scaleout_events.min(backlog.len()));
        figures.extend(more);
        ratios.extend(more_ratios);
    }
    Ok((figures, ratios))
}

/// `--scaleout-only`: the scaleout figures over `scaleout_events` events.
fn scaleout_only(settings: &Settings, args: &BenchArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let brokers = args.brokers.as_ref().context("--scaleout-only needs --brokers")?;
    let mut s = settings.clone();
    s.kafka.brokers = brokers.clone();
    let backlog = simulate(args.scaleout_events, false);
    let mean = backlog.iter().map(|m| m.payload.len()).sum::<usize>() as f64 / backlog.len().max(1) as f64;
    let f = runtime.block_on(broker::scaleout::measure(&s, &backlog))?;
    let (figures, ratios) = broker::scaleout::figures(&f, backlog.len());
    report(&[Group::of(0, figures, ratios)], backlog.len(), mean, args)
}

/// The paced trials of a sustained-rate search, as a note.
fn trials_note(t: &[broker::Trial]) -> String {
    t.iter()
        .map(|t| format!("{:.0}{}", t.rate, if t.flat { " kept up" } else { " fell behind" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The p50, p99 and p999 figures of one paced run, named `names`.
fn latency_figures(names: [&'static str; 3], p: &broker::Paced, what: &str) -> Vec<Figure> {
    let lags = p.lag.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    names
        .into_iter()
        .zip([p.p50, p.p99, p.p999])
        .map(|(name, value)| Figure {
            name,
            value,
            unit: "ms",
            note: format!(
                "{what} at {:.0} events/s (half the sustained rate) for {:.0} s: {} sent, {} samples; queued each second: {}",
                p.rate, p.seconds, p.sent, p.samples, lags
            ),
        })
        .collect()
}

fn broker_figures(b: &broker::BrokerFigures, n: usize) -> Vec<Figure> {
    let echo_latency = "produce-to-echo latency";
    let decision = "produce-to-decision latency (an event's first decision)";
    let mut figures = vec![
        Figure {
            name: "produce",
            value: b.produce,
            unit: "events/s",
            note: format!("publishing the {n} events, every one acknowledged (context, not a goal)"),
        },
        Figure {
            name: "drain",
            value: b.drain,
            unit: "events/s",
            note: format!("an rdkafka consumer reading the {n} events (4 topics, 8 partitions) and doing nothing"),
        },
        Figure {
            name: "echo_backlog",
            value: b.echo_backlog,
            unit: "events/s",
            note: format!("consume -> produce unchanged over the {n} published events, every delivery acknowledged"),
        },
        Figure {
            name: "echo",
            value: b.echo,
            unit: "events/s",
            note: format!(
                "highest paced rate the echo kept up with (4 s trials: {})",
                trials_note(&b.echo_trials)
            ),
        },
    ];
    figures.extend(latency_figures(
        ["echo_p50", "echo_p99", "echo_p999"],
        &b.echo_paced,
        echo_latency,
    ));
    figures.extend([
        Figure {
            name: "engine_backlog",
            value: b.engine_backlog,
            unit: "events/s",
            note: format!(
                "the engine over the same {n} events, from its first event until all are applied and their outputs acknowledged; {} profiles",
                b.engine_profiles
            ),
        },
        Figure {
            name: "engine",
            value: b.engine,
            unit: "events/s",
            note: format!(
                "highest paced rate of new events the engine kept up with (4 s trials: {})",
                trials_note(&b.engine_trials)
            ),
        },
    ]);
    figures.extend(latency_figures(
        ["engine_p50", "engine_p99", "engine_p999"],
        &b.engine_paced,
        decision,
    ));
    figures.extend(latency_figures(
        [
            "echo_p50_at_engine_rate",
            "echo_p99_at_engine_rate",
            "echo_p999_at_engine_rate",
        ],
        &b.echo_at_engine_rate,
        echo_latency,
    ));
    figures
}

/// Prints the table and writes the JSON: the first size's figures under
/// their own names, every further size's as `name@profiles`.
fn report(groups: &[Group], events: usize, mean_bytes: f64, args: &BenchArgs) -> anyhow::Result<()> {
    let num = |v: f64| if v.is_nan() { serde_json::Value::Null } else { json!(v) };
    let named = |i: usize, g: &Group, name: &str| {
        if i == 0 {
            name.to_string()
        } else {
            format!("{name}@{}", g.profiles)
        }
    };
    println!("{:<28} {:>12} {:<14} note", "figure", "value", "unit");
    let (mut figures, mut ratios) = (Vec::new(), serde_json::Map::new());
    for (i, g) in groups.iter().enumerate() {
        for f in &g.figures {
            let v = if f.value.is_nan() {
                String::from("-")
            } else if f.value.abs() < 100.0 {
                format!("{:.2}", f.value)
            } else {
                format!("{:.0}", f.value)
            };
            let name = named(i, g, f.name);
            println!("{name:<28} {v:>12} {:<14} {}", f.unit, f.note);
            figures.push(
                json!({"name": name, "value": num(f.value), "unit": f.unit, "note": f.note, "profiles": g.profiles}),
            );
        }
        for (name, v, goal) in &g.ratios {
            let name = named(i, g, name);
            println!("{name:<28} {v:>12.3} {:<14} {goal}", "ratio");
            ratios.insert(name, json!({"value": num(*v), "goal": goal}));
        }
    }
    if let Some(out) = &args.out {
        let report = json!({
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "allocator": {"name": args.allocator, "mimalloc_purge_delay_ms": onejourney_engine::allocator::configured_ms()},
            "events": events,
            "mean_event_bytes": mean_bytes,
            // --restore-only: the profiles the snapshot held, not --profiles.
            "profiles": if args.restore_only.is_some() {
                groups.iter().map(|g| g.profiles).collect()
            } else {
                args.profiles.clone()
            },
            "figures": figures,
            "ratios": ratios,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
