//! Scale-out stage 1 (issue 15, `docs/scaling.md` section 1): two engine
//! processes in one consumer group, each consuming some of the input
//! partitions, hold one identity graph when `scaleout.identity_log` is on:
//! every identifier the simulator produced has the same One ID on both
//! processes' lookup API, and the same as one process stitching every event.
//! With the setting off the same two processes disagree (each knows only
//! the identifiers of the partitions it consumed): the test proves something.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onejourney_core::IdentityGraph;
use onejourney_e2e::{create_topics_on, settings, TestEngine};
use onejourney_engine::config::Settings;
use onejourney_simulator::truth::IdentityTruth;
use onejourney_simulator::{generate, SimConfig, Simulation};

/// Input partitions per topic: enough that both processes get some of each.
const PARTITIONS: i32 = 4;

fn sim() -> Simulation {
    generate(&SimConfig {
        customers: 250,
        seed: 15,
        days: 60,
        harder: true,
        ..SimConfig::default()
    })
}

/// One process's settings of a group of two; `name` is the group's.
fn member(group: &Settings, which: &str) -> Settings {
    let mut s = group.clone();
    s.state.dir = group.state.dir.join(which);
    s
}

/// The One ID one process stitching every event (in publication order; the
/// graph does not depend on the order) gives each identifier.
fn one_process(settings: &Settings, sim: &Simulation) -> IdentityGraph {
    let ns = settings.namespaces().unwrap();
    let decoder = onejourney_core::Decoder::new(ns.clone(), settings.ingest.max_message_bytes).unwrap();
    let graph = IdentityGraph::new(ns);
    for e in &sim.events {
        if let Ok(ev) = decoder.decode(e.stream.channel(), &e.bytes()) {
            if graph.can_link(&ev) {
                graph.stitch(&ev).unwrap();
            }
        }
    }
    graph
}

async fn consumed(e: &TestEngine) -> f64 {
    let mut n = 0.0;
    for c in ["web", "pos", "app", "call_center"] {
        n += e
            .metric(&format!("onejourney_events_consumed_total{{channel=\"{c}\"}}"))
            .await;
    }
    n
}

/// Waits until the two processes consumed `n` events between them, hold
/// none back, and (with the identity log) each folded every record both
/// published.
async fn wait_drained(a: &TestEngine, b: &TestEngine, n: usize, identity_log: bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (ca, cb) = (consumed(a).await, consumed(b).await);
        let mut done = ca + cb >= n as f64;
        for e in [a, b] {
            done &= e.metric("onejourney_events_buffered").await == 0.0;
        }
        if identity_log && done {
            let published = a.metric("onejourney_identity_evidence_published_total").await
                + b.metric("onejourney_identity_evidence_published_total").await;
            for e in [a, b] {
                let folded = e
                    .metric("onejourney_identity_evidence_folded_total{origin=\"own\"}")
                    .await
                    + e.metric("onejourney_identity_evidence_folded_total{origin=\"other\"}")
                        .await;
                done &= e.metric("onejourney_identity_evidence_waiting").await == 0.0 && folded >= published;
            }
        }
        if done {
            eprintln!("consumed: {ca} by one process, {cb} by the other");
            return;
        }
        assert!(Instant::now() < deadline, "consumed {ca} + {cb} of {n} within 300 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Each identifier's One ID on one process's lookup API (`None`: 404).
async fn lookups(e: &TestEngine, ids: &[(String, String)]) -> BTreeMap<(String, String), Option<String>> {
    let mut out = BTreeMap::new();
    for (n, v) in ids {
        // The identifier in the body: e-mails and phones stay out of URLs.
        let (status, body) = e
            .post_json("/v1/profiles/lookup", &serde_json::json!({"namespace": n, "value": v}))
            .await;
        let one_id = match status {
            200 => Some(body["one_id"].as_str().unwrap().to_string()),
            404 => None,
            other => panic!("lookup {n}: status {other}: {body}"),
        };
        out.insert((n.clone(), v.clone()), one_id);
    }
    out
}

/// Runs two processes of one group over `sim` and returns each one's lookups.
async fn two_processes(
    name: &str,
    identity_log: bool,
    sim: &Simulation,
    ids: &[(String, String)],
) -> (
    BTreeMap<(String, String), Option<String>>,
    BTreeMap<(String, String), Option<String>>,
    Settings,
) {
    let mut group = settings(name);
    group.scaleout.identity_log = identity_log;
    let inputs: Vec<String> = group.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics_on(
        &group.kafka.brokers,
        &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        PARTITIONS,
    )
    .await;
    let mut a = TestEngine::start(member(&group, "a")).await;
    let mut b = TestEngine::start(member(&group, "b")).await;
    // Both members of the group hold partitions before any input arrives.
    for e in [&a, &b] {
        e.wait_ready(Duration::from_secs(90)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.publish_sim(&sim.events).await;
    wait_drained(&a, &b, sim.events.len(), identity_log).await;
    let (ca, cb) = (consumed(&a).await, consumed(&b).await);
    assert!(ca > 0.0 && cb > 0.0, "both processes consumed input: {ca} and {cb}");
    if identity_log {
        // The graphs themselves, not only the lookups: the same profiles
        // with the same One IDs.
        assert_eq!(a.state().identity.partition(), b.state().identity.partition());
        assert!(a.metric("onejourney_identity_evidence_round_trip_seconds_count").await > 0.0);
    }
    let la = lookups(&a, ids).await;
    let lb = lookups(&b, ids).await;
    a.stop().await;
    b.stop().await;
    (la, lb, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_the_identity_log_hold_the_graph_of_one() {
    let sim = sim();
    let truth = IdentityTruth::from_simulation(&sim);
    let ids: Vec<(String, String)> = truth.owners.keys().cloned().collect();
    assert!(ids.len() > 500, "{} identifiers", ids.len());

    let (a, b, group) = two_processes("scaleout-on", true, &sim, &ids).await;
    let reference = one_process(&group, &sim);
    let ns = group.namespaces().unwrap();
    let mut found = 0;
    for (k, one_id) in &a {
        assert_eq!(one_id, &b[k], "{} differs between the processes", k.0);
        let expected = ns
            .normalise(&k.0, &k.1)
            .ok()
            .and_then(Result::ok)
            .and_then(|key| reference.one_id_of(&key))
            .map(|o| o.to_string());
        assert_eq!(one_id, &expected, "{} differs from one process's", k.0);
        found += usize::from(one_id.is_some());
    }
    eprintln!(
        "identity log on: {} identifiers, {found} in a profile, the same One ID on both processes and in one process",
        a.len()
    );
    assert!(found > 500, "{found} identifiers found");

    // Without the identity log the same two processes disagree.
    let (a, b, _) = two_processes("scaleout-off", false, &sim, &ids).await;
    let disagree = a.iter().filter(|(k, one_id)| **one_id != b[*k]).count();
    eprintln!(
        "identity log off: {disagree} of {} identifiers differ between the processes",
        a.len()
    );
    assert!(
        disagree > 0,
        "two processes without the identity log agreed on every identifier"
    );
}
