//! The same history gives the same decisions whether it is replayed at full
//! speed or lived through in event-time order with pauses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use onejourney_core::{ChannelEvent, Decoder, Processor, State};
use onejourney_e2e::{exploring, TestEngine};
use onejourney_engine::config::Settings;
use onejourney_simulator::{generate, SimConfig, SimEvent};

/// Two partitions per channel, chosen by key as Kafka would spread them.
fn partition_of(e: &SimEvent) -> u32 {
    e.stream.channel() as u32 * 2 + e.key_partition(2)
}

fn processor() -> (Processor, Decoder) {
    let s = Settings::defaults().unwrap();
    let ns = s.namespaces().unwrap();
    let decoder = Decoder::new(ns.clone(), 1 << 20).unwrap();
    let mut p = Processor::new(Arc::new(s.core()), Arc::new(State::new(ns)));
    for part in 0..8 {
        p.register_partition(part, 0);
    }
    (p, decoder)
}

fn outputs(released: Vec<onejourney_core::processor::Released>) -> Vec<Vec<u8>> {
    released
        .into_iter()
        .flat_map(|r| r.result.unwrap().outputs)
        .map(|o| o.to_json())
        .collect()
}

#[test]
fn core_full_speed_and_paced_replays_decide_the_same() {
    let sim = generate(&SimConfig {
        customers: 800,
        seed: 5,
        ..SimConfig::default()
    });
    let decoded = |d: &Decoder, e: &SimEvent| -> ChannelEvent { d.decode(e.stream.channel(), &e.bytes()).unwrap() };

    // Full speed: partitions drained in fetch-sized batches, one after the
    // other, with no processing time passing at all.
    let (mut a, d) = processor();
    let mut queues: BTreeMap<u32, Vec<&SimEvent>> = BTreeMap::new();
    for e in &sim.events {
        queues.entry(partition_of(e)).or_default().push(e);
    }
    let mut out_a = Vec::new();
    let mut seq = 0;
    while queues.values().any(|q| !q.is_empty()) {
        for (part, q) in queues.iter_mut() {
            let batch: Vec<&SimEvent> = q.drain(..q.len().min(700)).collect();
            for e in batch {
                out_a.extend(outputs(a.offer(decoded(&d, e), *part, seq, 0)));
                seq += 1;
            }
        }
    }
    out_a.extend(outputs(a.tick(u64::MAX)));

    // Lived through: event-time order, 1 ms apart, with a 5 s pause (longer
    // than idle_after: every partition goes idle) after every 500 events.
    let (mut b, d) = processor();
    let mut out_b = Vec::new();
    let mut now = 0u64;
    for (i, e) in sim.events.iter().enumerate() {
        now += 1;
        out_b.extend(outputs(b.offer(decoded(&d, e), partition_of(e), i as u64, now)));
        if i % 500 == 499 {
            now += 5_000;
            out_b.extend(outputs(b.tick(now)));
        }
    }
    out_b.extend(outputs(b.tick(u64::MAX)));

    assert!(out_a.len() > 1000, "{} outputs", out_a.len());
    assert_eq!(out_a.len(), out_b.len());
    assert!(out_a == out_b, "identical outputs, in the same order");
    assert_eq!(a.state().identity.partition(), b.state().identity.partition());
}

/// The sum of every sample of a counter family on `/metrics`.
async fn family_sum(e: &TestEngine, family: &str) -> f64 {
    e.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Late events and identity rebuilds, as the engine counted them.
async fn late_and_rebuilt(e: &TestEngine) -> (f64, f64) {
    (
        e.metric("onejourney_events_late_total").await,
        e.metric("onejourney_identity_rebuilds_total").await,
    )
}

/// Every record of the three output topics, as sorted payloads.
async fn all_outputs(e: &TestEngine) -> Vec<String> {
    let t = &e.topics;
    let mut out = Vec::new();
    for (topic, family) in [
        (&t.next_best_actions, "onejourney_actions_emitted_total"),
        (&t.churn_risk, "onejourney_churn_band_changes_total"),
        (&t.identity_changes, "onejourney_identity_merges_total"),
    ] {
        let want = family_sum(e, family).await;
        let records = e
            .read_until(topic, Duration::from_secs(60), |r| r.len() as f64 >= want)
            .await;
        assert_eq!(records.len() as f64, want, "{topic}: every record the engine counted");
        out.extend(records.iter().map(|r| String::from_utf8_lossy(&r.payload).to_string()));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_broker_full_speed_and_paced_replays_decide_the_same() {
    let sim = generate(&SimConfig {
        customers: 300,
        seed: 9,
        ..SimConfig::default()
    });
    // Full speed: everything published at once, consumed as fast as it goes.
    // idle_after well above the broker's worst fetch stall on a loaded 2-core
    // machine (a partition that stalls longer looks idle and its events come
    // in late: 555 late events in one run with the default 2 s).
    let timed = |name: &str| {
        let mut s = exploring(name);
        s.timers.idle_after = Duration::from_secs(4);
        s
    };
    let mut fast = TestEngine::start(timed("replay-fast")).await;
    fast.publish_sim(&sim.events).await;
    fast.wait_applied(sim.events.len(), Duration::from_secs(300)).await;
    let a = all_outputs(&fast).await;
    println!("full speed: {:?}", late_and_rebuilt(&fast).await);
    fast.stop().await;

    // Lived through: in event-time order, ten slices, pauses longer than idle_after.
    let mut paced = TestEngine::start(timed("replay-paced")).await;
    for slice in sim.events.chunks(sim.events.len().div_ceil(6)) {
        paced.publish_sim(slice).await;
        tokio::time::sleep(Duration::from_millis(5_000)).await;
    }
    paced.wait_applied(sim.events.len(), Duration::from_secs(300)).await;
    let b = all_outputs(&paced).await;
    let late = late_and_rebuilt(&paced).await;
    println!("paced: {late:?}");
    paced.stop().await;

    println!(
        "replay: {} events, {} output records each way",
        sim.events.len(),
        a.len()
    );
    assert!(a.len() > 500);
    let only_fast: Vec<&String> = a.iter().filter(|r| !b.contains(r)).take(5).collect();
    let only_paced: Vec<&String> = b.iter().filter(|r| !a.contains(r)).take(5).collect();
    assert!(
        a == b,
        "the same output records: {} vs {} (paced run: {} late events, {} identity rebuilds); \
         only at full speed: {only_fast:#?}; only paced: {only_paced:#?}",
        a.len(),
        b.len(),
        late.0,
        late.1
    );
}
