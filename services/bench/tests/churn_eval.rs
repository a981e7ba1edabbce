//! The learned churn model against its baselines on the harder simulator
//! (issue 16's must-show: at least as good as the better baseline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onejourney_bench::churn::{evaluate, ChurnEvalArgs};
use onejourney_engine::config::Settings;

#[test]
fn the_learned_churn_model_beats_recency_the_hand_weights_and_bgnbd() {
    let eval = evaluate(
        &Settings::defaults().unwrap(),
        &ChurnEvalArgs {
            customers: 700,
            days: 240,
            ..ChurnEvalArgs::default()
        },
    )
    .unwrap();
    eprintln!("{}", serde_json::to_string(&eval).unwrap());
    assert!(eval.examples > 5_000, "{} examples", eval.examples);
    assert!(eval.positives > 500, "{} churned", eval.positives);
    let best_baseline = eval.recency_auc.max(eval.hand_weighted_auc).max(eval.bgnbd_auc);
    assert!(
        eval.learned_auc >= best_baseline,
        "learned {:.3} vs best baseline {best_baseline:.3}",
        eval.learned_auc
    );
    // The baselines are real: each orders churners above stayers, BG/NBD
    // over everyone (a customer with no purchase scores 1 by convention) and
    // among the buyers it models; the learned model beats it there too.
    assert!(eval.recency_auc > 0.6, "{}", eval.recency_auc);
    assert!(eval.bgnbd_auc > 0.5, "{}", eval.bgnbd_auc);
    assert!(eval.buyer_examples > 5_000, "{} buyer examples", eval.buyer_examples);
    assert!(eval.bgnbd_buyers_auc > 0.5, "{}", eval.bgnbd_buyers_auc);
    assert!(
        eval.learned_buyers_auc > eval.bgnbd_buyers_auc,
        "among buyers, learned {:.3} vs BG/NBD {:.3}",
        eval.learned_buyers_auc,
        eval.bgnbd_buyers_auc
    );
}
