//! Criterion micro-benchmarks of the pure core on simulator events:
//! serde_json alone (the floor), decoding (validation, typed fields,
//! identifier hashing) and processing (stitch, journey, decide) into a fresh
//! state. `make bench` runs them before `onejourney-bench`, which measures
//! the same stages at scale (1M profiles) and through the broker.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use onejourney_bench::count_outputs;
use onejourney_core::{Channel, ChannelEvent, Decoder, Processor, State};
use onejourney_engine::config::Settings;
use onejourney_simulator::{generate, SimConfig};

const EVENTS: usize = 10_000;

fn events() -> Vec<(Channel, Vec<u8>)> {
    let sim = generate(&SimConfig {
        customers: EVENTS / 28 + 1,
        seed: 7,
        ..SimConfig::default()
    });
    sim.events
        .iter()
        .take(EVENTS)
        .map(|e| (e.stream.channel(), e.bytes()))
        .collect()
}

fn core(c: &mut Criterion) {
    let settings = Settings::defaults().expect("the built-in defaults load");
    let ns = settings.namespaces().expect("the default namespaces");
    let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes).expect("the schemas compile");
    let events = events();
    let decoded: Vec<ChannelEvent> = events
        .iter()
        .filter_map(|(ch, b)| decoder.decode(*ch, b).ok())
        .collect();
    assert_eq!(decoded.len(), events.len(), "every simulator event decodes");

    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("parse_floor", |b| {
        b.iter(|| {
            for (_, bytes) in &events {
                black_box(serde_json::from_slice::<serde_json::Value>(bytes).ok());
            }
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            for (ch, bytes) in &events {
                black_box(decoder.decode(*ch, bytes).ok());
            }
        })
    });
    let cfg = Arc::new(settings.core());
    g.bench_function("process_into_empty_state", |b| {
        b.iter_batched(
            || {
                (
                    Processor::new(cfg.clone(), Arc::new(State::new(ns.clone()))),
                    decoded.clone(),
                )
            },
            |(mut p, evs)| {
                let mut outputs = 0usize;
                for (i, ev) in evs.into_iter().enumerate() {
                    outputs += count_outputs(p.offer(ev, (i % 8) as u32, i as u64, 0));
                }
                black_box(outputs)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
