//! What the scale-out end-to-end tests share (`scaleout.rs`,
//! `scaleout_moves.rs`): the simulated customers, the group's topics and
//! members, waiting until a group has drained, and reading its decisions.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use onejourney_core::EventTime;
use onejourney_e2e::{create_inputs_on, read_all_on, TestEngine};
use onejourney_engine::config::Settings;
use onejourney_simulator::{generate, SimConfig, Simulation};

/// Input partitions per topic: enough that both processes get some of each.
pub const PARTITIONS: i32 = 4;

pub fn sim() -> Simulation {
    generate(&SimConfig {
        customers: 250,
        seed: 15,
        days: 60,
        harder: true,
        ..SimConfig::default()
    })
}

/// The group's input topics, with `PARTITIONS` partitions each.
pub async fn create_inputs(s: &Settings) {
    create_inputs_on(&s.kafka.brokers, s, PARTITIONS).await;
}

/// One process's settings of a group of two; `name` is the group's.
pub fn member(group: &Settings, which: &str) -> Settings {
    let mut s = group.clone();
    s.state.dir = group.state.dir.join(which);
    s
}

pub async fn consumed(e: &TestEngine) -> f64 {
    let mut n = 0.0;
    for c in ["web", "pos", "app", "call_center"] {
        n += e
            .metric(&format!("onejourney_events_consumed_total{{channel=\"{c}\"}}"))
            .await;
    }
    n
}

/// Waits until `engines` consumed `n` events between them, hold none back,
/// and (with the identity log) each folded every record all published and
/// has no routed record waiting.
pub async fn wait_drained(engines: &[&TestEngine], n: usize, identity_log: bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut each = Vec::new();
        for e in engines {
            each.push(consumed(e).await);
        }
        let total: f64 = each.iter().sum();
        let mut done = total >= n as f64;
        for e in engines {
            done &= e.metric("onejourney_events_buffered").await == 0.0;
        }
        if identity_log && done {
            let mut published = 0.0;
            for e in engines {
                published += e.metric("onejourney_identity_evidence_published_total").await;
            }
            for e in engines {
                let folded = e
                    .metric("onejourney_identity_evidence_folded_total{origin=\"own\"}")
                    .await
                    + e.metric("onejourney_identity_evidence_folded_total{origin=\"other\"}")
                        .await;
                done &= e.metric("onejourney_identity_evidence_waiting").await == 0.0
                    && e.metric("onejourney_routed_waiting").await == 0.0
                    && folded >= published;
            }
        }
        if done {
            eprintln!("consumed: {each:?} by the processes");
            return;
        }
        assert!(Instant::now() < deadline, "consumed {each:?} of {n} within 300 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A decision: One ID, decided at, and "action on trigger kind".
pub type Decision = (String, i64, String);

/// The decisions on `next-best-actions` by action id, and how many action
/// ids came twice.
pub async fn decisions(s: &Settings) -> (BTreeMap<String, Decision>, usize) {
    let mut by_id = BTreeMap::new();
    let mut twice = 0;
    for r in read_all_on(&s.kafka.brokers, &s.topics.next_best_actions).await {
        let v = r.json();
        let at: EventTime = serde_json::from_value(v["decided_at"].clone()).unwrap();
        let id = v["action_id"].as_str().unwrap().to_string();
        let one_id = v["one_id"].as_str().unwrap().to_string();
        let what = format!(
            "{} on {}",
            v["action"].as_str().unwrap(),
            v["trigger"]["kind"].as_str().unwrap()
        );
        if by_id.insert(id.clone(), (one_id, at.0, what)).is_some() {
            twice += 1;
            if twice <= 5 {
                eprintln!(
                    "{id} published twice (again at partition {} offset {})",
                    r.partition, r.offset
                );
            }
        }
    }
    (by_id, twice)
}

/// Decisions over the cross-channel budget: per One ID, more than `max` in
/// a window of `per_ms`.
pub fn over_budget(actions: &BTreeMap<String, Decision>, max: usize, per_ms: i64) -> usize {
    let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (one_id, at, _) in actions.values() {
        times.entry(one_id).or_default().push(*at);
    }
    let mut over = 0;
    for t in times.values_mut() {
        t.sort_unstable();
        over += t.windows(max + 1).filter(|w| w[max] - w[0] < per_ms).count();
    }
    over
}

/// The group's cross-channel budget held per One ID over `actions`.
pub fn assert_budget_held(group: &Settings, actions: &BTreeMap<String, Decision>) {
    let budget = &group.decide.policy.budget;
    let (max, per) = budget.as_ref().map(|b| (b.max, b.per)).unwrap();
    let per_ms = i64::try_from(per.as_millis()).unwrap();
    assert_eq!(
        over_budget(actions, max as usize, per_ms),
        0,
        "the budget held per One ID"
    );
}

/// A journey as comparable text.
pub fn journey_text(
    events: &[u64],
    purchases: u64,
    revenue: f64,
    returns: u64,
    complaints: u64,
    first: Option<EventTime>,
    last: Option<EventTime>,
) -> String {
    format!("events {events:?} purchases {purchases} revenue {revenue:.2} returns {returns} complaints {complaints} first {first:?} last {last:?}")
}

/// Per One ID, its journey as comparable text, from one process's state.
pub fn journeys_of(e: &TestEngine) -> BTreeMap<String, String> {
    e.state()
        .all_journeys()
        .into_iter()
        .map(|(one_id, j)| {
            let events: Vec<u64> = j.channels.iter().map(|c| c.events).collect();
            let text = journey_text(
                &events,
                u64::from(j.purchases),
                j.revenue,
                u64::from(j.returns),
                u64::from(j.complaints),
                j.first_seen,
                j.last_seen,
            );
            (one_id.to_string(), text)
        })
        .collect()
}

/// The keys whose values differ between `a` and `b` (missing from one
/// counts).
pub fn differing<'a, K: Ord, V: PartialEq>(a: &'a BTreeMap<K, V>, b: &'a BTreeMap<K, V>) -> BTreeSet<&'a K> {
    a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect()
}
