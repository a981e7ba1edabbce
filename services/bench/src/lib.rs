//! `onejourney-bench`: throughput, latency and memory, measured in one run on
//! this machine with the same simulator events, printed as a table and
//! written as JSON: `parse_floor` (serde_json alone), `core` (decode, stitch,
//! journey and decide with N profiles already in memory, on one thread and
//! pipelined over all cores), `memory` (resident bytes per profile),
//! `recovery` (writing and restoring a snapshot of that state) and, given a
//! broker, `drain`, `echo` and `engine` ([`broker`]).

pub mod bgnbd;
pub mod broker;
pub mod churn;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::processor::Released;
use onejourney_core::{Channel, ChannelEvent, Decoder, Processor, State};
use onejourney_simulator::{generate, SimConfig};
use serde::Serialize;
use serde_json::json;

use onejourney_engine::config::Settings;
use onejourney_engine::durable;

pub struct BenchArgs {
    pub out: Option<PathBuf>,
    /// Simulator events to measure with.
    pub events: usize,
    /// Profiles loaded before the core is measured.
    pub profiles: usize,
    /// Stop after parse_floor and memory.
    pub memory_only: bool,
    /// A Kafka-compatible broker for drain, echo and engine; without one
    /// those figures are left out.
    pub brokers: Option<String>,
    /// How long each paced (half-rate) latency run lasts.
    pub paced_for: std::time::Duration,
}

#[derive(Serialize)]
pub(crate) struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    note: String,
}

/// Offers one event; returns how many outputs it released.
fn offer(processor: &mut Processor, ev: ChannelEvent, part: u32, seq: &mut u64) -> usize {
    *seq += 1;
    count_outputs(processor.offer(ev, part, *seq, 0))
}

/// How many outputs released results carry.
pub fn count_outputs(released: Vec<Released>) -> usize {
    released
        .into_iter()
        .map(|r| r.result.map_or(0, |p| p.outputs.len()))
        .sum()
}

/// Decodes bench events, keeping their partitions (every simulator event is valid).
fn decode_all(decoder: &Decoder, events: &[(Channel, &[u8], u32)]) -> Vec<(ChannelEvent, u32)> {
    events
        .iter()
        .filter_map(|(c, b, p)| decoder.decode(*c, b).ok().map(|e| (e, *p)))
        .collect()
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A ratio: its name, its value and its goal.
type Ratio = (&'static str, f64, &'static str);

pub fn run(settings: &Settings, args: &BenchArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    // memory and the preload, first: before the simulation is generated, so
    // that no memory it freed is reused by the profiles and hidden from the
    // resident growth.
    let (mut core, memory) = Core::preload(settings, args.profiles)?;
    let mut figures = vec![memory];
    let msgs = simulate(args.events);
    let (backlog, later) = msgs.split_at(args.events.min(msgs.len()));
    let events = core_events(backlog);
    let mean_bytes = events.iter().map(|e| e.1.len()).sum::<usize>() as f64 / events.len() as f64;
    eprintln!("bench: {} events, {:.0} bytes on average", events.len(), mean_bytes);
    let parse_floor = parse_floor(&events, mean_bytes);
    let parse_floor_rate = parse_floor.value;
    figures.push(parse_floor);
    if args.memory_only {
        return report(&figures, &[], events.len(), mean_bytes, args);
    }
    // The state figures' checkpoint: the preloaded profiles as the engine
    // writes them (changelog on the broker, snapshot file), before the core
    // run changes them.
    let persisted = match &args.brokers {
        Some(brokers) => {
            let mut s = settings.clone();
            s.kafka.brokers = brokers.clone();
            Some(runtime.block_on(broker::state::persist(&s, &mut core.processor))?)
        }
        None => None,
    };
    // core: the first half of the events on one thread, the second half
    // pipelined over every core.
    let (first, second) = events.split_at(events.len() / 2);
    let one_thread = core.one_thread(first, args.profiles);
    let all_cores = core.all_cores(second);
    let mut ratios = vec![
        ("core/parse_floor", one_thread.value / parse_floor_rate, "goal >= 0.33"),
        (
            "core_all_cores/parse_floor",
            all_cores.value / parse_floor_rate,
            "goal >= 0.33",
        ),
    ];
    figures.extend([one_thread, all_cores]);
    // The broker figures run an engine of their own: the core's state (2 x
    // 1M profiles) goes first, so they do not share the heap with it.
    figures.push(core.recovery(settings, persisted.as_ref())?);
    let state = match &persisted {
        Some(p) => Some(runtime.block_on(broker::state::measure(p, backlog))?),
        None => None,
    };
    figures.extend(broker::state::figures(persisted.as_ref(), state.as_ref()));
    let (more, more_ratios) = broker_part(settings, args, runtime, backlog, later)?;
    figures.extend(more);
    ratios.extend(more_ratios);
    report(&figures, &ratios, events.len(), mean_bytes, args)
}

/// The realistic mix: about 28 events per simulated person, as they go to the
/// broker. Eight times `events`: the later events (newer event times, new ids)
/// feed the engine's paced runs, which must not repeat an event id.
fn simulate(events: usize) -> Vec<broker::Msg> {
    let sim = generate(&SimConfig {
        customers: (8 * events / 28).max(10),
        seed: 42,
        ..SimConfig::default()
    });
    sim.events
        .iter()
        .map(|e| {
            let c = e.stream.channel();
            broker::Msg {
                channel: c.index(),
                partition: e.key_partition(broker::PARTITIONS as u32) as i32,
                key: e.key.clone(),
                payload: e.bytes(),
                event_id: e.value["event_id"].as_str().unwrap_or_default().to_string(),
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

/// The pure core with the preloaded profiles in memory: what `memory`,
/// `core`, `core_all_cores` and `recovery` measure.
struct Core {
    decoder: Decoder,
    state: Arc<State>,
    processor: Processor,
    /// The last offer's sequence number, over both halves of the run.
    seq: u64,
}

impl Core {
    /// Loads `profiles` profiles of three identifiers (customer id, email,
    /// cookie) and one login each through the real decoder and processor;
    /// returns the core and the `memory` figure.
    fn preload(settings: &Settings, profiles: usize) -> anyhow::Result<(Core, Figure)> {
        let ns = settings.namespaces()?;
        let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes)?;
        let state = Arc::new(State::new(ns));
        let mut processor = Processor::new(Arc::new(settings.core()), state.clone());
        let rss_before = rss_bytes();
        let start_ms = SimConfig::default().start_ms - 86_400_000;
        let t = Instant::now();
        for i in 0..profiles {
            let at = onejourney_simulator::rfc3339(start_ms + (i as i64 % 86_400) * 1000);
            let v = json!({"event_id": format!("pre-{i}"), "event_type": "login", "occurred_at": at,
                "session_id": "s", "identifiers": {"customer_id": format!("B{i:09}"),
                "email": format!("bench.{i}@example.com"), "cookie_id": format!("bc-{i:09}")}});
            let bytes = serde_json::to_vec(&v)?;
            let ev = decoder
                .decode(Channel::Web, &bytes)
                .context("decoding a preload event")?;
            processor.process(&ev, 0).context("preloading a profile")?;
        }
        let preload_s = t.elapsed().as_secs_f64();
        let rss_after = rss_bytes();
        let grown = rss_after.saturating_sub(rss_before) as f64;
        let per_profile = grown / profiles.max(1) as f64;
        let identifiers = state.identity.identifier_count();
        let memory = Figure {
            name: "memory",
            value: per_profile,
            unit: "bytes/profile",
            note: format!(
                "resident growth over {} profiles, {} identifiers ({:.0} bytes/identifier; 3 identifiers and one login each); \
                 state estimate {} bytes/profile; preload {:.1} s",
                profiles,
                identifiers,
                grown / identifiers.max(1) as f64,
                state.approx_bytes() / profiles.max(1),
                preload_s
            ),
        };
        let core = Core {
            decoder,
            state,
            processor,
            seq: 0,
        };
        Ok((core, memory))
    }

    /// `core`: decode, stitch, journey, decide on one thread (decode is timed
    /// separately and added).
    fn one_thread(&mut self, events: &[(Channel, &[u8], u32)], profiles: usize) -> Figure {
        let h = events.len() as f64;
        let t = Instant::now();
        for (c, b, _) in events {
            black_box(self.decoder.decode(*c, b).ok());
        }
        let decode_only = h / t.elapsed().as_secs_f64();
        let decoded = decode_all(&self.decoder, events);
        let t = Instant::now();
        let mut outputs = 0usize;
        for (ev, part) in decoded {
            outputs += offer(&mut self.processor, ev, part, &mut self.seq);
        }
        let process_s = t.elapsed().as_secs_f64();
        Figure {
            name: "core",
            value: h / (h / decode_only + process_s),
            unit: "events/s",
            note: format!(
                "one thread, {} profiles loaded, {} events: decode {:.0} events/s, stitch+journey+decide {:.0} events/s, {} outputs",
                profiles,
                events.len(),
                decode_only,
                h / process_s,
                outputs
            ),
        }
    }

    /// `core_all_cores`: decoding (stateless) on the other cores, in blocks
    /// handed over in order, while this thread stitches, updates journeys and
    /// decides (the state has one writer).
    fn all_cores(&mut self, events: &[(Channel, &[u8], u32)]) -> Figure {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let decoders = cores.saturating_sub(1).max(1);
        let t = Instant::now();
        let mut outputs_all = 0usize;
        const BLOCK: usize = 1024;
        let blocks: Vec<&[(Channel, &[u8], u32)]> = events.chunks(BLOCK).collect();
        let (decoder, processor, seq) = (&self.decoder, &mut self.processor, &mut self.seq);
        std::thread::scope(|scope| {
            let mut rxs = Vec::new();
            for d in 0..decoders {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(ChannelEvent, u32)>>(16);
                rxs.push(rx);
                let blocks = &blocks;
                scope.spawn(move || {
                    for block in blocks.iter().skip(d).step_by(decoders) {
                        if tx.send(decode_all(decoder, block)).is_err() {
                            return;
                        }
                    }
                });
            }
            for i in 0..blocks.len() {
                let Ok(block) = rxs[i % decoders].recv() else {
                    break;
                };
                for (ev, part) in block {
                    outputs_all += offer(processor, ev, part, seq);
                }
            }
        });
        outputs_all += count_outputs(self.processor.tick(u64::MAX));
        let all_s = t.elapsed().as_secs_f64();
        Figure {
            name: "core_all_cores",
            value: events.len() as f64 / all_s,
            unit: "events/s",
            note: format!(
                "{cores} cores, the next {} events: {decoders} decoding thread(s) feeding the single writer; {outputs_all} outputs",
                events.len()
            ),
        }
    }

    /// `recovery`: the state read back from a snapshot into a new
    /// processor, as a restart does: the checkpoint [`broker::state::persist`]
    /// wrote (the preloaded profiles), or without a broker a snapshot of
    /// everything the core holds now, written here. Ends the core: its state
    /// is gone when this returns.
    fn recovery(self, settings: &Settings, persisted: Option<&broker::state::Persisted>) -> anyhow::Result<Figure> {
        let dir = std::env::temp_dir().join(format!("onejourney-bench-{}", std::process::id()));
        let (file, size, write_s, profiles_now) = match persisted {
            Some(p) => (p.snapshot_path.clone(), p.snapshot_bytes, p.snapshot_s, p.profiles),
            None => {
                let file = dir.join("bench.snapshot");
                let t = Instant::now();
                let snapshot = self.processor.snapshot();
                let size = durable::write(&file, &durable::Header::default(), &snapshot, |_| {})?;
                let profiles = self.state.identity.profile_count();
                (file, size, t.elapsed().as_secs_f64(), profiles)
            }
        };
        drop(self.processor);
        let t = Instant::now();
        let (_, core_snap) = durable::read(&file, |_| {})?.context("the snapshot just written")?;
        let fresh = Arc::new(State::new(settings.namespaces()?));
        let mut restored = Processor::new(Arc::new(settings.core()), fresh.clone());
        restored.restore(core_snap, 0)?;
        let restore_s = t.elapsed().as_secs_f64();
        anyhow::ensure!(fresh.identity.profile_count() == profiles_now, "restore lost profiles");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Figure {
            name: "recovery",
            value: restore_s,
            unit: "s",
            note: format!(
                "read + restore of a {:.0} MB snapshot with {} profiles, no engine (snapshot write {:.1} s); \
                 a restart adds reading back outputs published since the snapshot",
                size as f64 / 1e6,
                profiles_now,
                write_s
            ),
        })
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
    let Some(brokers) = &args.brokers else {
        let figures = ["drain", "echo", "engine"].map(|name| Figure {
            name,
            value: f64::NAN,
            unit: "",
            note: String::from("not measured: no --brokers (make bench starts a broker)"),
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
    }))?;
    let ratios = vec![
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
    Ok((broker_figures(&b, backlog.len()), ratios))
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

/// Prints the table and writes the JSON.
fn report(
    figures: &[Figure],
    ratios: &[(&str, f64, &str)],
    events: usize,
    mean_bytes: f64,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let num = |v: f64| if v.is_nan() { serde_json::Value::Null } else { json!(v) };
    println!("{:<28} {:>12} {:<14} note", "figure", "value", "unit");
    for f in figures {
        let v = if f.value.is_nan() {
            String::from("-")
        } else if f.value.abs() < 100.0 {
            format!("{:.2}", f.value)
        } else {
            format!("{:.0}", f.value)
        };
        println!("{:<28} {:>12} {:<14} {}", f.name, v, f.unit, f.note);
    }
    for (name, v, goal) in ratios {
        println!("{name:<28} {v:>12.3} {:<14} {goal}", "ratio");
    }
    if let Some(out) = &args.out {
        let report = json!({
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "events": events,
            "mean_event_bytes": mean_bytes,
            "figures": figures.iter().map(|f| json!({"name": f.name, "value": num(f.value), "unit": f.unit, "note": f.note})).collect::<Vec<_>>(),
            "ratios": ratios.iter().map(|(name, v, goal)| (name.to_string(), json!({"value": num(*v), "goal": goal}))).collect::<serde_json::Map<_, _>>(),
        });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
