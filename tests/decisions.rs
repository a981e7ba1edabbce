//! End-to-end: decisions on simulator traffic through a real broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use onejourney_core::ids::sha256_hex;
use onejourney_e2e::{exploring, TestEngine};
use onejourney_simulator::{generate, Segment, SimConfig};

/// Area under the ROC curve of `scores` for positives vs negatives (ties count half).
fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_separates_churners_and_the_contact_policy_holds_over_100k_events() {
    // As shipped: exploration and the holdout on.
    let mut e = TestEngine::start(exploring("sim")).await;
    let t = e.topics.clone();
    let sim = generate(&SimConfig {
        customers: 3600,
        seed: 21,
        days: 120,
        ..SimConfig::default()
    });
    assert!(sim.events.len() >= 100_000, "{} events", sim.events.len());
    e.publish_sim(&sim.events).await;
    // Consumed, and applied: nothing left waiting for the watermark.
    e.wait_applied(sim.events.len(), Duration::from_secs(600)).await;
    assert_eq!(
        e.metric("onejourney_dead_letter_total").await,
        0.0,
        "the simulator's events are all valid"
    );

    // --- churn: churners end high more often than loyal customers ---
    let ns = e.state().identity.namespaces().clone();
    let person_score = |customer_id: &str| {
        let key = ns.normalise("customer_id", customer_id).unwrap().unwrap();
        let id = e.state().identity.one_id_of(&key)?;
        let j = e.state().journey(&id)?;
        Some((j.churn.score, j.churn.band))
    };
    let (mut churners, mut loyal) = (Vec::new(), Vec::new());
    let (mut churners_high, mut loyal_high) = (0usize, 0usize);
    for p in &sim.people {
        let Some(cid) = &p.customer_id else { continue };
        let Some((score, band)) = person_score(cid) else {
            continue;
        };
        let high = band == Some(onejourney_core::journey::Band::High);
        match p.segment {
            Segment::Churning => {
                churners.push(score);
                churners_high += usize::from(high);
            }
            Segment::Loyal => {
                loyal.push(score);
                loyal_high += usize::from(high);
            }
            _ => {}
        }
    }
    let churn_rate = churners_high as f64 / churners.len() as f64;
    let loyal_rate = loyal_high as f64 / loyal.len() as f64;
    let area = auc(&churners, &loyal);
    println!(
        "churn: {} churners, {:.1}% in band high; {} loyal, {:.1}% in band high; AUC {:.3}",
        churners.len(),
        100.0 * churn_rate,
        loyal.len(),
        100.0 * loyal_rate,
        area
    );
    assert!(churners.len() > 300 && loyal.len() > 800);
    assert!(churn_rate > loyal_rate, "{churn_rate} vs {loyal_rate}");
    assert!(area > 0.8, "AUC {area}");

    // --- contact policy: nobody gets more than the caps allow ---
    // Every action the engine counted as emitted is on the topic.
    let emitted: f64 = e
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("onejourney_actions_emitted_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let actions = e
        .read_until(&t.next_best_actions, Duration::from_secs(120), |r| {
            r.len() as f64 >= emitted
        })
        .await;
    assert_eq!(actions.len() as f64, emitted, "every emitted action read back");
    // Every identifier value (hashed like the engine does) -> person.
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, p) in sim.people.iter().enumerate() {
        for v in [&p.customer_id, &p.loyalty_id, &p.device_id].into_iter().flatten() {
            owner.insert(v.clone(), i);
        }
        if let Some(email) = &p.email {
            owner.insert(sha256_hex(&email.trim().to_lowercase()), i);
        }
        for c in &p.cookies {
            owner.insert(c.clone(), i);
        }
    }
    let mut sent: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for r in &actions {
        let v = r.json();
        let ids = v["identifiers"].as_object().unwrap();
        let person = ids
            .values()
            .find_map(|x| owner.get(x.as_str().unwrap()))
            .copied()
            .expect("every action names a known identifier");
        let at = chrono_ms(v["decided_at"].as_str().unwrap());
        sent.entry((person, v["channel"].as_str().unwrap().to_string()))
            .or_default()
            .push(at);
        *by_action.entry(v["action"].as_str().unwrap().to_string()).or_default() += 1;
    }
    println!("{} actions: {by_action:?}", actions.len());
    let metrics = e.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("onejourney_actions_suppressed_total") && !l.ends_with(" 0"))
    {
        println!("{line}");
    }
    let day = 86_400_000i64;
    let caps = [("email", 1usize, 7 * day), ("sms", 1, 7 * day), ("push", 3, day)];
    let mut checked = 0;
    for ((person, channel), mut times) in sent {
        times.sort_unstable();
        for (cap_channel, max, per) in caps {
            if channel != cap_channel {
                continue;
            }
            for (i, start) in times.iter().enumerate() {
                let in_window = times[i..].iter().take_while(|t| **t < start + per).count();
                assert!(
                    in_window <= max,
                    "person {person} got {in_window} {channel} messages within {per} ms"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked} capped messages checked");
    assert!(
        by_action.len() >= 5,
        "most of the catalog fires on simulator traffic: {by_action:?}"
    );

    // The holdout on simulator traffic: withheld within the binomial's
    // tolerance, and every action's figures at the endpoint.
    let (status, models) = e.get_json("/v1/models/actions").await;
    assert_eq!(status, 200);
    let models = models["actions"].as_array().unwrap();
    let sum = |f: &str| models.iter().map(|m| m[f].as_u64().unwrap()).sum::<u64>();
    let (sent, held) = (sum("sent"), sum("held_out"));
    assert_eq!(sent as f64, emitted, "every published decision counted as sent");
    let share = e.settings.decide.holdout_share;
    let n = (sent + held) as f64;
    // The group is drawn once per (One ID, action): clusters of decisions,
    // not independent ones. Var(held) = share (1 - share) x sum of squared
    // cluster sizes, estimated from the published clusters (a share
    // 1 - share of all); five standard deviations.
    let mut clusters: HashMap<(String, String), f64> = HashMap::new();
    for r in &actions {
        let v = r.json();
        let key = (
            v["one_id"].as_str().unwrap().to_string(),
            v["action"].as_str().unwrap().to_string(),
        );
        *clusters.entry(key).or_default() += 1.0;
    }
    let squares: f64 = clusters.values().map(|m| m * m).sum::<f64>() / (1.0 - share);
    let sd = (share * (1.0 - share) * squares).sqrt();
    assert!(
        (held as f64 - n * share).abs() < 5.0 * sd,
        "{held} of {n} held out (sd {sd:.1})"
    );
    println!(
        "action models: {sent} sent, {held} held out (expected {:.0} +- {sd:.1})",
        n * share
    );
    for m in models {
        println!(
            "  {:<26} sent {:>5} held {:>4} conv {:>5}/{:<4} rate {:?}/{:?} uplift {:?} [{:?}, {:?}] p {}",
            m["action"].as_str().unwrap(),
            m["sent"],
            m["held_out"],
            m["conversions_sent"],
            m["conversions_held_out"],
            m["rate_sent"].as_f64(),
            m["rate_held_out"].as_f64(),
            m["uplift"].as_f64(),
            m["uplift_ci_low"].as_f64(),
            m["uplift_ci_high"].as_f64(),
            m["posterior_mean"]
        );
    }

    // Explain: a One ID's last decisions with their reasons, and its churn factors.
    let one = actions[0].json();
    let (status, view) = e
        .get_json(&format!("/v1/profiles/one_id/{}", one["one_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    let recent = view["recent_actions"].as_array().unwrap();
    assert!(recent
        .iter()
        .any(|r| r["action"] == one["action"] && r["reason"].as_str().unwrap().contains("expected value")));
    assert!(!view["churn"]["factors"].as_array().unwrap().is_empty());
    e.stop().await;
}

fn chrono_ms(s: &str) -> i64 {
    onejourney_core::EventTime::parse_rfc3339(s).unwrap().millis()
}
