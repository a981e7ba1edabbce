//! A snapshot's frozen journeys under a dictionary this build does not
//! have (one written by a build with another `journey.dict`): re-frozen
//! with this build's at restore, equal to what was written; bytes that do
//! not decode under the snapshot's dictionary refuse the restore with what
//! to do; so do bytes of another journey layout, which also do not thaw.
//!
//! In: a processor's snapshot, its frozen journeys swapped for ones
//! compressed with another dictionary, in the layout builds before session
//! 39 froze them (MessagePack in a whole frame: an older build's snapshot).
//! Out: assertions only.

use std::sync::Arc;

use serde_json::json;

use super::{CoreSnapshot, Processor, RestoreError};
use crate::ids::Namespaces;
use crate::snapshot::ByteBuf;
use crate::state::stored::tests::{frozen_before, noise};
use crate::state::stored::LAYOUT;
use crate::state::{State, Stored};
use crate::testkit::{core_config, web};

const LATER: crate::time::EventTime = crate::time::EventTime(i64::MAX / 2);

fn processor() -> Processor {
    Processor::new(
        Arc::new(core_config()),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    )
}

/// A processor with `n` journeys, all frozen, and its snapshot read back.
fn frozen_snapshot(n: i64) -> (Processor, CoreSnapshot) {
    let mut p = processor();
    for i in 0..n {
        let ids = json!({"customer_id": format!("F{i}"), "cookie_id": format!("fc-{i}")});
        p.process(&web(&format!("e{i}"), i, ids, "login", json!({})), 0)
            .expect("stitched");
    }
    p.state().take_dirty();
    assert_eq!(p.state().freeze_idle(LATER), n as usize);
    let bytes = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    (p, rmp_serde::from_slice(&bytes).expect("reads back"))
}

/// A raw-content dictionary the journeys' bytes match, so that their
/// frames refer to it.
fn theirs(snap: &CoreSnapshot) -> Vec<u8> {
    let mut dict = noise();
    for (_, s) in &snap.journeys {
        let j = s.journey().expect("decodes");
        dict.extend(rmp_serde::to_vec(&*j).expect("encodes"));
    }
    dict
}

#[test]
fn frozen_journeys_of_another_dictionary_are_refrozen_with_this_builds() {
    let (p, mut snap) = frozen_snapshot(6);
    let theirs = theirs(&snap);
    for (_, s) in snap.journeys.iter_mut() {
        let j = s.journey().expect("decodes with this build's dictionary");
        let foreign = frozen_before(&j, &theirs);
        assert_ne!(foreign.journey(), Some(j), "not readable with this build's dictionary");
        *s = foreign;
    }
    snap.journey_dict = Some(ByteBuf(theirs));
    let mut q = processor();
    q.restore(snap, 0).expect("restores");
    let all = |p: &Processor| {
        let mut all = p.state().all_journeys();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    assert_eq!(all(&q), all(&p));
    assert_eq!(q.state().size().frozen, 6, "kept frozen, with this build's dictionary");
    assert!(q.state().journeys.iter().all(|e| e.value().is_frozen()));
    assert_eq!(q.state().size(), q.state().recount());
}

#[test]
fn frozen_bytes_that_do_not_decode_under_the_snapshots_dictionary_refuse_the_restore() {
    let (_, mut snap) = frozen_snapshot(2);
    snap.journey_dict = Some(ByteBuf(noise()));
    let mut q = processor();
    let err = q.restore(snap, 0).expect_err("refused");
    assert!(matches!(err, RestoreError::Frozen(_)), "{err:?}");
    assert!(err.to_string().contains("--rebuild"), "{err}");
}

#[test]
fn frozen_bytes_of_another_layout_neither_thaw_nor_restore() {
    let (_, mut snap) = frozen_snapshot(1);
    let (one_id, s) = snap.journeys.first_mut().expect("one journey");
    let Stored::Frozen(b) = s else { panic!("frozen") };
    // The flag byte: bit 0 detail, bits 1-7 the layout; the next layout.
    b[8] += 1 << 1;
    assert_eq!(s.foreign_layout(), Some(LAYOUT + 1));
    assert_eq!(s.journey(), None, "another layout does not thaw");
    let one_id = one_id.clone();
    let mut q = processor();
    let err = q.restore(snap, 0).expect_err("refused");
    assert!(matches!(err, RestoreError::Frozen(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{one_id} was frozen in journey layout {}", LAYOUT + 1)),
        "{text}"
    );
    assert!(text.contains("changelog"), "{text}");
}
