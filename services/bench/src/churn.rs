//! The learned churn model evaluated on the harder simulator, next to the
//! hand-weighted score, recency alone and the BG/NBD expected-purchases
//! baseline, all on the same labelled examples (issue 16).
//!
//! In: the simulator's harder mix, run through the real decoder and core
//! processor in publication order. Every `check_days` of event time, each
//! customer active within the horizon gives an example: their features then.
//! `horizon_days` later the stream itself labels it: no activity since (a
//! churner, positive) or back (negative). The model scores each example
//! before it learns from it (prequential). Out: [`ChurnEval`], the AUCs and
//! the learned weights, and the figures of the model the engine's processor
//! trained on its own examples of the same stream. Keeps nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use onejourney_core::decide::churn;
use onejourney_core::decide::learned::{self, ChurnModel, Features, Histogram, LearnConfig};
use onejourney_core::{Decoder, EventTime, OneId, Processor, State};
use onejourney_engine::config::Settings;
use onejourney_simulator::{generate, SimConfig};
use serde::Serialize;

use crate::bgnbd::{BgNbd, History};

#[derive(Clone, Debug)]
pub struct ChurnEvalArgs {
    pub customers: usize,
    pub days: u32,
    pub seed: u64,
    /// No activity for this long after a check: the customer churned.
    pub horizon_days: u32,
    /// Days of event time between checks (the horizon is a multiple of it).
    pub check_days: u32,
}

impl Default for ChurnEvalArgs {
    fn default() -> Self {
        ChurnEvalArgs {
            customers: 3000,
            days: 365,
            seed: 11,
            horizon_days: 42,
            check_days: 7,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnEval {
    pub examples: u64,
    pub positives: u64,
    pub events: usize,
    /// Prequential AUC of the learned model (blended with its prior).
    pub learned_auc: f64,
    pub hand_weighted_auc: f64,
    pub recency_auc: f64,
    /// 1 / (1 + expected purchases over the horizon), BG/NBD refitted at
    /// every check. Customers with no purchase yet score 1 (no purchase
    /// expected): BG/NBD models buyers only.
    pub bgnbd_auc: f64,
    /// The examples of customers with at least one purchase, the population
    /// BG/NBD is a model of: its AUC there, and the learned model's on the
    /// same examples (the fair comparison).
    pub buyer_examples: u64,
    pub bgnbd_buyers_auc: f64,
    pub learned_buyers_auc: f64,
    pub weights: Vec<(&'static str, f64)>,
    pub bias: f64,
    /// The model the engine itself trained while processing the same
    /// stream (its own examples: one per journey per `sample_every`, taken
    /// at evaluations, labelled by the stream), as `GET /v1/models/churn`
    /// shows it.
    pub engine: Option<EngineModel>,
}

/// The engine's own churn model at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct EngineModel {
    pub examples: u64,
    pub positives: u64,
    pub learned_auc: Option<f64>,
    pub hand_weighted_auc: Option<f64>,
    pub recency_auc: Option<f64>,
}

struct Example {
    one_id: OneId,
    at: EventTime,
    x: Features,
    hand: f64,
    bgnbd: f64,
    /// At least one purchase by `at`.
    buyer: bool,
}

/// The AUCs of the examples of buyers only.
#[derive(Default)]
struct BuyerAucs {
    examples: u64,
    bgnbd: Histogram,
    learned: Histogram,
}

/// Runs the evaluation.
pub fn evaluate(settings: &Settings, args: &ChurnEvalArgs) -> anyhow::Result<ChurnEval> {
    let sim = generate(&SimConfig {
        customers: args.customers,
        seed: args.seed,
        days: args.days,
        harder: true,
        ..SimConfig::default()
    });
    let ns = settings.namespaces()?;
    let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes)?;
    let state = Arc::new(State::new(ns));
    state.keep_dirty(false);
    let core = settings.core();
    let churn_cfg = core.decide.churn.clone();
    let mut processor = Processor::new(Arc::new(core), state.clone());
    let day = Duration::from_secs(86_400);
    let step = day * args.check_days;
    let horizon = day * args.horizon_days;
    let mut model = ChurnModel::new(LearnConfig::default());
    let mut bg_hist = Histogram::default();
    let mut buyers = BuyerAucs::default();
    let mut pending: VecDeque<Example> = VecDeque::new();
    let first = sim.events.first().map_or(0, |e| e.at_ms);
    let mut next_check = EventTime::from_millis(first).plus(step);
    for e in &sim.events {
        let clock = EventTime::from_millis(e.at_ms + e.late_ms);
        while clock >= next_check {
            label(
                &state,
                &mut pending,
                next_check,
                horizon,
                &mut model,
                &mut bg_hist,
                &mut buyers,
            );
            sample(&state, &churn_cfg, next_check, horizon, &mut pending);
            next_check = next_check.plus(step);
        }
        if let Ok(ev) = decoder.decode(e.stream.channel(), &e.bytes()) {
            // Events with only junk identifiers cannot be placed; the engine
            // dead-letters them.
            let _ = processor.process(&ev, 0);
        }
    }
    label(
        &state,
        &mut pending,
        next_check,
        horizon,
        &mut model,
        &mut bg_hist,
        &mut buyers,
    );
    let auc = |h: &Histogram| h.auc().unwrap_or(0.5);
    Ok(ChurnEval {
        examples: model.examples,
        positives: model.positives,
        events: sim.events.len(),
        learned_auc: auc(&model.auc.learned),
        hand_weighted_auc: auc(&model.auc.hand),
        recency_auc: auc(&model.auc.recency),
        bgnbd_auc: auc(&bg_hist),
        buyer_examples: buyers.examples,
        bgnbd_buyers_auc: auc(&buyers.bgnbd),
        learned_buyers_auc: auc(&buyers.learned),
        weights: learned::FEATURES.iter().copied().zip(model.weights).collect(),
        bias: model.bias,
        engine: state.churn_model_view().map(|v| EngineModel {
            examples: v.examples,
            positives: v.positives,
            learned_auc: v.auc.learned,
            hand_weighted_auc: v.auc.hand,
            recency_auc: v.auc.recency,
        }),
    })
}

/// Labels the examples whose horizon ended by `now`: churned when the
/// customer showed no activity after the check.
fn label(
    state: &State,
    pending: &mut VecDeque<Example>,
    now: EventTime,
    horizon: Duration,
    model: &mut ChurnModel,
    bg: &mut Histogram,
    buyers: &mut BuyerAucs,
) {
    while pending.front().is_some_and(|x| x.at.plus(horizon) <= now) {
        let Some(x) = pending.pop_front() else { break };
        // A profile merged into another since: its example is dropped.
        let Some(j) = state.journey(&x.one_id) else {
            continue;
        };
        let churned = j.last_seen.is_none_or(|t| t <= x.at);
        if x.buyer {
            buyers.examples += 1;
            buyers.bgnbd.add(x.bgnbd, churned);
            // Scored before it learns from this example, as `learn` does.
            buyers.learned.add(model.predict(&x.x, x.hand), churned);
        }
        model.learn(&x.x, x.hand, churned);
        bg.add(x.bgnbd, churned);
    }
}

/// One example per customer active within the horizon, at `now`.
fn sample(
    state: &State,
    churn_cfg: &churn::ChurnConfig,
    now: EventTime,
    horizon: Duration,
    pending: &mut VecDeque<Example>,
) {
    let history = |j: &onejourney_core::journey::Journey| {
        let first = j.first_seen?;
        let last = j.last_purchase?;
        Some(History {
            x: f64::from(j.purchases.saturating_sub(1)),
            t_x: last.days_since(first),
            t: now.days_since(first),
        })
    };
    let journeys = state.all_journeys();
    let buyers: Vec<History> = journeys.iter().filter_map(|(_, j)| history(j)).collect();
    let bg = BgNbd::fit(&buyers);
    let horizon_days = horizon.as_secs_f64() / 86_400.0;
    let mut batch: Vec<Example> = journeys
        .into_iter()
        .filter(|(_, j)| j.last_seen.is_some_and(|t| t <= now && t > now.minus(horizon)))
        .map(|(one_id, j)| {
            let expected = history(&j).map_or(0.0, |h| bg.expected(&h, horizon_days));
            Example {
                one_id,
                at: now,
                x: learned::features(&j, now),
                hand: churn::score(churn_cfg, &j, now).score,
                bgnbd: 1.0 / (1.0 + expected),
                buyer: j.last_purchase.is_some(),
            }
        })
        .collect();
    // DashMap iterates in no fixed order: sort so the run is deterministic.
    batch.sort_by(|a, b| a.one_id.cmp(&b.one_id));
    pending.extend(batch);
}
