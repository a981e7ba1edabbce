//! End-to-end: the learned churn model in the running engine (issue 16).
//!
//! The harder simulator's stream, published to a real broker: the engine
//! labels examples from the stream itself (a customer silent for the churn
//! horizon churned, one back within it did not) and learns, test-then-train.
//! `GET /v1/models/churn` reports the labelled examples and the prequential
//! AUCs; the metrics say the same; the `churn-risk` records carry the model's
//! score (not the hand-weighted one, which they carry beside it); and the
//! model survives a restart (the same weights from the snapshot).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onejourney_e2e::{settings, TestEngine};
use onejourney_simulator::{generate, SimConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(600);

fn auc(model: &Value, which: &str) -> f64 {
    model["auc"][which]
        .as_f64()
        .unwrap_or_else(|| panic!("no {which} AUC: {model}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_learns_churn_from_the_stream_and_keeps_the_model() {
    let s = settings("churn-model");
    let mut e = TestEngine::start(s.clone()).await;
    let sim = generate(&SimConfig {
        customers: 300,
        seed: 16,
        days: 150,
        harder: true,
        ..SimConfig::default()
    });
    e.publish_sim(&sim.events).await;
    e.wait_applied(sim.events.len(), WAIT).await;

    // The endpoint: labelled examples of both kinds, and the AUCs on them.
    let (status, model) = e.get_json("/v1/models/churn").await;
    assert_eq!(status, 200, "{model}");
    let examples = model["examples"].as_u64().unwrap();
    let positives = model["positives"].as_u64().unwrap();
    let negatives = model["negatives"].as_u64().unwrap();
    eprintln!(
        "{} events: {examples} labelled examples ({positives} churned), prequential AUC learned {:.3}, hand {:.3}, recency {:.3}",
        sim.events.len(),
        auc(&model, "learned"),
        auc(&model, "hand"),
        auc(&model, "recency")
    );
    assert!(positives > 0 && negatives > 0, "{model}");
    assert_eq!(positives + negatives, examples);
    assert!(auc(&model, "learned") > 0.5, "better than chance: {model}");
    assert_eq!(model["weights"].as_array().unwrap().len(), 15);

    // The metrics say the same.
    assert_eq!(e.metric("onejourney_churn_model_examples_total").await, examples as f64);
    for which in ["learned", "hand", "recency"] {
        let m = e
            .metric(&format!("onejourney_churn_model_auc{{model=\"{which}\"}}"))
            .await;
        assert_eq!(m, auc(&model, which), "{which}");
    }

    // The churn-risk records carry the model's score: once the model has
    // learned from many examples it departs from the hand-weighted score.
    let mut published = 0.0;
    for band in ["low", "medium", "high"] {
        published += e
            .metric(&format!("onejourney_churn_band_changes_total{{band=\"{band}\"}}"))
            .await;
    }
    let topic = e.topics.churn_risk.clone();
    let records = e.read_until(&topic, WAIT, |r| r.len() as f64 >= published).await;
    assert_eq!(records.len() as f64, published, "every churn-risk record read");
    let mature: Vec<Value> = records
        .iter()
        .map(|r| r.json())
        .filter(|v| v["model_examples"].as_u64().unwrap_or(0) >= 1_500)
        .collect();
    let departs = mature
        .iter()
        .filter(|v| (v["score"].as_f64().unwrap() - v["hand_score"].as_f64().unwrap()).abs() > 0.02)
        .count();
    eprintln!(
        "{} churn-risk records, {} after 1500 examples, {departs} of them away from the hand score",
        records.len(),
        mature.len()
    );
    assert!(!mature.is_empty(), "records after the model learned");
    assert!(departs * 2 > mature.len(), "{departs} of {}", mature.len());

    // A restart restores the model from the snapshot: the same weights, examples and AUCs.
    e.stop().await;
    let e = TestEngine::start(s).await;
    let (status, restored) = e.get_json("/v1/models/churn").await;
    assert_eq!(status, 200);
    for field in ["weights", "bias", "examples", "positives", "auc"] {
        assert_eq!(restored[field], model[field], "{field} after the restart");
    }
    let mut e = e;
    e.stop().await;
}
