//! The frozen form: a journey of one login fits an allocation of 128
//! bytes; both encodings (this file's, and MessagePack in a whole frame as
//! builds before session 39 froze) read back equal under the dictionary
//! they were compressed with; the header's flag says whether detail is
//! left to evict; values of another dictionary are re-frozen in this
//! build's form; the encoding of a rich journey is pinned to [`LAYOUT`]
//! (a value of another layout neither thaws nor restores:
//! `processor/frozen_snapshot_tests.rs`).
//!
//! In: journeys built by a processor from logins and a cart. Out:
//! assertions only.

use std::sync::Arc;

use serde_json::json;
use zstd::bulk::Compressor;

use super::*;
use crate::ids::IdentityLimits;
use crate::state::tests::processor_with;
use crate::testkit::{product, web};

/// `n` journeys of one login of three identifiers each (the bench's shape),
/// and, when `cart`, one with an item left in its cart.
fn journeys(n: i64, cart: bool) -> Vec<Arc<Journey>> {
    let mut p = processor_with(IdentityLimits::default());
    for i in 0..n {
        let ids = json!({"customer_id": format!("B{i:09}"), "email": format!("bench.{i}@example.com"),
            "cookie_id": format!("bc-{i:09}")});
        p.process(&web(&format!("pre-{i}"), i, ids, "login", json!({})), 0)
            .expect("stitched");
    }
    if cart {
        p.process(
            &web(
                "cart",
                n,
                json!({"customer_id": "C1"}),
                "add_to_cart",
                product("a", 19.5),
            ),
            0,
        )
        .expect("applied");
    }
    let mut all = p.state().all_journeys();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().map(|(_, j)| j).collect()
}

fn frozen_bytes(s: &Stored) -> &[u8] {
    match s {
        Stored::Frozen(b) => b,
        Stored::Live(_) => panic!("not frozen"),
    }
}

/// `j` frozen as builds before session 39 did: MessagePack in a whole
/// frame (magic number, dictionary id, content size), compressed with
/// `dict` (also what `processor/frozen_snapshot_tests.rs` restores).
pub(crate) fn frozen_before(j: &Journey, dict: &[u8]) -> Stored {
    let encoded = rmp_serde::to_vec(j).expect("encodes");
    let packed = Compressor::with_dictionary(LEVEL, dict)
        .and_then(|mut c| c.compress(&encoded))
        .expect("compresses");
    let mut out = j.last_seen.map_or(i64::MIN, |t| t.0).to_be_bytes().to_vec();
    out.push(u8::from(j.has_detail()));
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&packed);
    Stored::Frozen(out.into_boxed_slice())
}

/// A raw-content dictionary (no id): 4 KB of noise.
pub(crate) fn noise() -> Vec<u8> {
    (0..1024u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect()
}

/// [`noise`], then `of`'s postcard encodings, so that frames of this
/// build's form refer to it.
fn another_dictionary(of: &[Arc<Journey>]) -> Vec<u8> {
    let mut dict = noise();
    for j in of {
        dict.extend(encode(j).expect("encodes"));
    }
    dict
}

#[test]
fn a_journey_of_one_login_freezes_into_128_bytes_and_reads_back_equal() {
    for j in journeys(40, false) {
        let s = Stored::freeze(&j).expect("freezes");
        let b = frozen_bytes(&s);
        // MessagePack in a whole frame took about 165 (an allocation of 192).
        assert!(b.len() <= 128, "{} bytes", b.len());
        assert_eq!(encoding(b), Some(LAYOUT));
        assert!(!b[HEADER..].starts_with(&MAGIC), "the frame's magic number is left out");
        // The frame header's descriptor (RFC 8878, 3.1.1.1.1): no
        // dictionary id (bits 0-1), no content size (the single-segment
        // bit 5 and the size flag, bits 6-7).
        let descriptor = b[HEADER];
        assert_eq!(descriptor & 0b1110_0011, 0, "descriptor {descriptor:#010b}");
        assert_eq!(s.journey(), Some(j.clone()));
        assert_eq!(s.last_seen(), j.last_seen);
    }
}

#[test]
fn the_flag_byte_says_whether_detail_is_left_to_evict() {
    let later = EventTime(i64::MAX / 2);
    for j in journeys(3, true) {
        let mut compacted = (*j).clone();
        assert!(compacted.compact(), "a login leaves detail");
        for j in [(*j).clone(), compacted] {
            let s = Stored::freeze(&j).expect("freezes");
            assert_eq!(s.evictable(later), j.has_detail());
            assert!(!s.evictable(EventTime::MIN), "nothing is idle before all time");
            assert_eq!(frozen_before(&j, DICT).evictable(later), j.has_detail());
        }
    }
}

#[test]
fn values_frozen_before_session_39_read_back_equal_under_their_dictionary() {
    let all = journeys(5, true);
    for j in &all {
        let s = frozen_before(j, DICT);
        assert_eq!(encoding(frozen_bytes(&s)), Some(0));
        assert!(frozen_bytes(&s)[HEADER..].starts_with(&MAGIC));
        assert_eq!(s.journey(), Some(j.clone()));
    }
    let theirs = another_dictionary(&all);
    let mut r = Refreezer::new(&theirs).expect("loads").expect("not this build's");
    for j in &all {
        let ours = r.refreeze(frozen_before(j, &theirs)).expect("decodes under theirs");
        assert_eq!(
            encoding(frozen_bytes(&ours)),
            Some(LAYOUT),
            "re-frozen in this build's form"
        );
        assert_eq!(ours.journey(), Some(j.clone()));
    }
}

#[test]
fn values_of_another_dictionary_in_this_form_are_refrozen_with_this_builds() {
    let all = journeys(5, true);
    let theirs = another_dictionary(&all);
    let mut c = trimmed(Compressor::with_dictionary(LEVEL, &theirs).expect("loads")).expect("trims");
    let mut r = Refreezer::new(&theirs).expect("loads").expect("not this build's");
    for j in &all {
        let ours = Stored::freeze(j).expect("freezes");
        let encoded = encode(j).expect("encodes");
        let packed = c.compress(&encoded).expect("compresses");
        let mut b = frozen_bytes(&ours)[..HEADER].to_vec();
        b.extend_from_slice(packed.strip_prefix(&MAGIC).expect("a frame"));
        let foreign = Stored::Frozen(b.into_boxed_slice());
        assert_eq!(foreign.journey(), None, "not readable with this build's dictionary");
        let back = r.refreeze(foreign).expect("decodes under theirs");
        assert_eq!(back.journey(), Some(j.clone()));
        assert_eq!(
            frozen_bytes(&back),
            frozen_bytes(&ours),
            "the same bytes as this build freezes"
        );
    }
}

#[test]
fn damaged_values_do_not_read_back() {
    let j = journeys(1, false).remove(0);
    let s = Stored::freeze(&j).expect("freezes");
    let b = frozen_bytes(&s);
    let cut = Stored::Frozen(b[..b.len() - 4].into());
    assert_eq!(cut.journey(), None, "a cut frame");
    let mut longer = b.to_vec();
    let len = u32::from_be_bytes(longer[9..HEADER].try_into().expect("4 bytes"));
    longer[9..HEADER].copy_from_slice(&(len + 1).to_be_bytes());
    assert_eq!(
        Stored::Frozen(longer.into()).journey(),
        None,
        "a length the body does not have"
    );
    // A whole frame whose content is the journey and one byte more, the
    // length saying so: postcard must use every byte.
    let mut encoded = encode(&j).expect("encodes");
    encoded.push(0);
    let packed = compressor()
        .expect("a compressor")
        .compress(&encoded)
        .expect("compresses");
    let mut extra = b[..9].to_vec();
    extra.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    extra.extend_from_slice(packed.strip_prefix(&MAGIC).expect("a frame"));
    assert_eq!(Stored::Frozen(extra.into()).journey(), None, "a byte after the journey");
}

/// The length and xxh3 of `compat_tests::rich()`'s encoding in [`LAYOUT`] 1.
const PINNED_LEN: usize = 986;
const PINNED_HASH: u64 = 4_956_248_148_199_960_507;

/// The postcard encoding of a journey that uses every part, pinned: when
/// `Journey` (or anything inside it) changes how it encodes, this fails
/// until [`LAYOUT`] is raised and the pin updated, so that no build takes
/// another's frozen bytes for its own (see `stored.rs`).
#[test]
fn the_encoding_of_a_rich_journey_is_pinned_to_the_layout() {
    let encoded = encode(&crate::journey::compat_tests::rich()).expect("encodes");
    let pin = (encoded.len(), xxhash_rust::xxh3::xxh3_64(&encoded));
    assert_eq!(
        (LAYOUT, pin),
        (1, (PINNED_LEN, PINNED_HASH)),
        "the journey's postcard encoding changed: raise stored::LAYOUT and pin the new (length, hash)"
    );
}
