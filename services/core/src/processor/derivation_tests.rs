//! One IDs across the change to keyed derivation: a state written before it
//! (snapshot format 2, a fixture the old code wrote) keeps its One IDs and
//! suppressions under a configured key; new state uses the key.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::identity::{Derivation, IdentityKey};
use crate::ids::Namespaces;
use crate::testkit::{core_config, web};

/// Written by the code at commit 46a9b9b (see `identity/fixtures/README.md`)
/// (format 2, plain SHA-256 One IDs): four customers, `bob@example.com`
/// forgotten. The JSON holds its partition into profiles and the forgotten
/// identifier's key.
const V2: &[u8] = include_bytes!("../identity/fixtures/snapshot-v2.msgpack");
const V2_EXPECTED: &str = include_str!("../identity/fixtures/snapshot-v2.json");

fn key() -> IdentityKey {
    IdentityKey::new(b"a production key of thirty-two b").unwrap()
}

fn processor(key: IdentityKey) -> Processor {
    let ns = Arc::new(Namespaces::with_defaults().with_identity_key(key));
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn partition(p: &Processor) -> BTreeMap<String, Vec<String>> {
    let ns = p.state().identity.namespaces().clone();
    p.state()
        .identity
        .partition()
        .into_iter()
        .map(|(o, ids)| {
            let ids = ids
                .iter()
                .map(|k| format!("{}:{}", ns.name(k.ns()), k.value()))
                .collect();
            (o.to_string(), ids)
        })
        .collect()
}

fn restored(bytes: &[u8]) -> Processor {
    let snap: CoreSnapshot = rmp_serde::from_slice(bytes).unwrap();
    let mut p = processor(key());
    p.restore(snap, 0).unwrap();
    p
}

#[test]
fn a_format_2_snapshot_keeps_its_one_ids_and_suppressions_under_a_configured_key() {
    let expected: serde_json::Value = serde_json::from_str(V2_EXPECTED).unwrap();
    let want: BTreeMap<String, Vec<String>> = serde_json::from_value(expected["partition"].clone()).unwrap();
    let p = restored(V2);
    assert_eq!(partition(&p), want, "the same profiles under the same One IDs");
    assert!(matches!(p.state().identity.derivation(), Derivation::Sha256V1));
    // Written before the learned churn model: an untrained one, journeys without examples.
    let live = p.state().churn().as_ref().map(|l| (l.model.examples, l.model.weights));
    assert_eq!(live, Some((0, [0.0; crate::decide::learned::N])));
    assert!(p
        .state()
        .all_journeys()
        .iter()
        .all(|(_, j)| j.churn_examples.pending.is_empty()));

    // The forget done before still suppresses.
    let bob = web("n1", 10, json!({"email": "bob@example.com"}), "login", json!({}));
    let (ns, value) = expected["forgotten"].as_str().unwrap().split_once(':').unwrap();
    assert_eq!(p.state().identity.namespaces().name(bob.ids[0].ns()), ns);
    assert_eq!(bob.ids[0].value(), value);
    assert!(p.state().identity.is_suppressed(&bob.ids[0]));
    assert_eq!(
        p.state().identity.stitch(&bob).map(|s| s.one_id),
        Err(crate::identity::StitchError::Forgotten),
        "a forgotten identifier founds no profile"
    );
    let mut p = p;

    // A new customer gets a One ID the old way, so one derivation holds per state.
    let carol = web("n2", 11, json!({"customer_id": "C-9"}), "login", json!({}));
    let out = p.process(&carol, 0).unwrap();
    assert_eq!(out.one_id, Some(Derivation::Sha256V1.one_id("customer_id", "C-9")));

    // Written again (format 3), it records the old derivation and restores so.
    let again = rmp_serde::to_vec(&p.snapshot()).unwrap();
    let q = restored(&again);
    assert_eq!(partition(&q), partition(&p));
    assert!(matches!(q.state().identity.derivation(), Derivation::Sha256V1));
}

#[test]
fn new_state_derives_one_ids_under_the_key_and_refuses_another_key() {
    let mut p = processor(key());
    let ev = web("n1", 0, json!({"customer_id": "C-9"}), "login", json!({}));
    let one_id = p.process(&ev, 0).unwrap().one_id.unwrap();
    assert_eq!(one_id, Derivation::Keyed(key()).one_id("customer_id", "C-9"));
    assert_ne!(one_id, Derivation::Sha256V1.one_id("customer_id", "C-9"));
    let bytes = rmp_serde::to_vec(&p.snapshot()).unwrap();
    assert_eq!(partition(&restored(&bytes)), partition(&p));

    // Under another key the snapshot would mix two derivations: refused.
    let other = IdentityKey::new(b"another key, just as long as it").unwrap();
    let snap: CoreSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    let err = processor(other).restore(snap, 0).unwrap_err();
    assert!(matches!(err, RestoreError::Derivation(_)), "{err}");
    assert!(err.to_string().contains("--rebuild"));
}
