//! The learned churn model in the processor: labels from the stream, the
//! score it emits, the lookup as of the watermark, and the model in the
//! snapshot.

use serde_json::json;

use super::*;
use crate::ids::Namespaces;
use crate::output::{ChurnRisk, Output};
use crate::testkit::{core_config, web};

const DAY: i64 = 24 * 60;

fn processor() -> Processor {
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn visit(id: &str, day: i64, customer: &str) -> ChannelEvent {
    web(
        id,
        day * DAY,
        json!({ "customer_id": customer }),
        "page_view",
        json!({}),
    )
}

fn churn_records(outs: &[Output]) -> Vec<&ChurnRisk> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Churn(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn model(p: &Processor) -> crate::decide::learned::ChurnModel {
    p.state()
        .churn()
        .as_ref()
        .map(|l| l.model.clone())
        .expect("a model is attached")
}

/// A customer back within the horizon (42 days) gives a negative example;
/// one who stays away gives a positive when the horizon ends, not before.
#[test]
fn labels_come_from_the_stream() {
    let mut p = processor();
    for ev in [visit("a0", 0, "A"), visit("b0", 0, "B"), visit("a10", 10, "A")] {
        p.process(&ev, 0).unwrap();
    }
    // A's first example (day 0) is labelled by A's return: a negative.
    let m = model(&p);
    assert_eq!((m.examples, m.positives), (1, 0));
    // Day 41: B's horizon has not ended yet.
    p.process(&visit("c41", 41, "C"), 0).unwrap();
    assert_eq!(model(&p).examples, 1);
    // Day 50: B's example of day 0 (due day 42) is a positive. The examples
    // taken since (A's on day 10 and 40, B's quiet check on day 30, C's)
    // wait.
    p.process(&visit("d50", 50, "D"), 0).unwrap();
    let m = model(&p);
    assert_eq!((m.examples, m.positives), (2, 1));
    let (pos, neg) = m.auc.learned.count();
    assert_eq!((pos, neg), (1, 1), "each example scored before it was learned");
    let b = p.state().identity.one_id_of(&visit("x", 0, "B").ids[0]).unwrap();
    let pending: Vec<EventTime> = p
        .state()
        .journey(&b)
        .unwrap()
        .churn_examples
        .pending
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(pending, vec![crate::testkit::t(30 * DAY)]);
}

/// The score emitted is the model's probability, not the hand-weighted one:
/// a model sure that everyone churns puts a brand-new visitor in `high`.
#[test]
fn the_emitted_score_is_the_models() {
    let mut p = processor();
    if let Some(live) = p.state().churn_mut().as_mut() {
        live.model.examples = 1_000_000;
        live.model.bias = 5.0;
    }
    let outs = p.process(&visit("a0", 0, "A"), 0).unwrap().outputs;
    let records = churn_records(&outs);
    assert_eq!(records.len(), 1, "{outs:?}");
    let r = records[0];
    assert!(r.score > 0.99, "{}", r.score);
    assert!(r.hand_score < 0.4, "{}", r.hand_score);
    assert_eq!(r.model_examples, 1_000_000);
    assert_eq!(r.band, crate::vocab::Band::High);
}

/// A lookup shows the score as of the engine's event time: a customer gone
/// quiet for 100 days is riskier than at their last event.
#[test]
fn a_lookup_sees_the_score_as_of_the_watermark() {
    let mut p = processor();
    p.process(&visit("a0", 0, "A"), 0).unwrap();
    let key = visit("x", 0, "A").ids[0].clone();
    let at_event = p.state().view(&key).unwrap().churn;
    assert_eq!(at_event.evaluated_at, Some(crate::testkit::t(0)));
    p.process(&visit("b100", 100, "B"), 0).unwrap();
    let one_id = p.state().identity.one_id_of(&key).unwrap();
    let stored = p.state().journey(&one_id).unwrap().churn.clone();
    let later = p.state().view(&key).unwrap().churn;
    assert_eq!(later.evaluated_at, Some(crate::testkit::t(100 * DAY)));
    // What the engine stored is as of its last evaluation (a quiet check).
    assert!(stored.evaluated_at.get() < later.evaluated_at);
    assert!(
        later.score > at_event.score + 0.1,
        "as of day 100 {} vs day 0 {}",
        later.score,
        at_event.score
    );
    let days = later
        .factors
        .iter()
        .find(|f| f.name == crate::vocab::FactorName::DaysSinceLastActivity)
        .map(|f| f.value);
    assert_eq!(days, Some(100.0));
}

/// The model is part of the durable state: same weights, counts and AUC
/// histograms after a restore; the pending examples too.
#[test]
fn the_model_survives_a_snapshot() {
    let mut p = processor();
    for d in 0..20 {
        p.process(&visit(&format!("a{d}"), d * 9, "A"), 0).unwrap();
        p.process(&visit(&format!("b{d}"), d * 3, if d % 2 == 0 { "B" } else { "C" }), 0)
            .unwrap();
    }
    let before = model(&p);
    assert!(before.examples > 0);
    let bytes = rmp_serde::to_vec(&p.snapshot()).unwrap();
    let snap: CoreSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    let mut q = processor();
    q.restore(snap, 0).unwrap();
    assert_eq!(model(&q), before);
    let examples = |p: &Processor| {
        let mut v: Vec<_> = p
            .state()
            .all_journeys()
            .into_iter()
            .map(|(id, j)| (id, j.churn_examples.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(examples(&q), examples(&p));
    // And it goes on learning alike.
    for proc in [&mut p, &mut q] {
        proc.process(&visit("z", 400, "Z"), 0).unwrap();
    }
    assert_eq!(model(&q), model(&p));
}
