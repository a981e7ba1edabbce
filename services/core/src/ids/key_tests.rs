//! An `IdKey` in one pointer behaves as the struct of a namespace and a
//! value it replaced: same order, hash, debug text and serialised bytes,
//! and the text table shares it as it shared the value.

use std::hash::{DefaultHasher, Hash, Hasher};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

/// The layout before: `IdKey { ns, value }` with derived traits.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename = "IdKey")]
struct Before {
    ns: Ns,
    value: String,
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn pair() -> impl Strategy<Value = (u8, String)> {
    // Namespaces across the one- and two-byte characters; values with
    // non-ASCII text and the empty value.
    (prop_oneof![0u8..4, 120u8..=255], "[a-c\u{e9}\u{1F600}0-9@.]{0,6}")
}

proptest! {
    #[test]
    fn it_orders_hashes_prints_and_serialises_as_the_struct_it_replaced(
        (an, av) in pair(),
        (bn, bv) in pair(),
    ) {
        let (a, b) = (IdKey::new(Ns(an), &av), IdKey::new(Ns(bn), &bv));
        let (old_a, old_b) = (Before { ns: Ns(an), value: av.clone() }, Before { ns: Ns(bn), value: bv.clone() });
        prop_assert_eq!((a.ns(), a.value()), (Ns(an), av.as_str()));
        prop_assert_eq!(a.cmp(&b), old_a.cmp(&old_b));
        prop_assert_eq!(a == b, old_a == old_b);
        prop_assert_eq!(hash_of(&a), hash_of(&old_a));
        prop_assert_eq!(format!("{a:?}"), format!("{old_a:?}").replace("Before", "IdKey"));
        let bytes = rmp_serde::to_vec(&a).unwrap();
        prop_assert_eq!(&bytes, &rmp_serde::to_vec(&old_a).unwrap());
        prop_assert_eq!(rmp_serde::to_vec_named(&a).unwrap(), rmp_serde::to_vec_named(&old_a).unwrap());
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&old_a).unwrap());
        prop_assert_eq!(rmp_serde::from_slice::<IdKey>(&bytes).unwrap(), a.clone());
        let named = rmp_serde::to_vec_named(&old_a).unwrap();
        prop_assert_eq!(rmp_serde::from_slice::<IdKey>(&named).unwrap(), a.clone());
        let json = serde_json::to_string(&old_a).unwrap();
        prop_assert_eq!(serde_json::from_str::<IdKey>(&json).unwrap(), a);
    }
}

#[test]
fn a_map_may_give_the_value_before_the_namespace_and_other_fields() {
    let k: IdKey = serde_json::from_str(r#"{"value": "c-1", "extra": [1], "ns": 3}"#).unwrap();
    assert_eq!(k, IdKey::new(Ns(3), "c-1"));
    for bad in [
        r#"{"value": "c-1"}"#,
        r#"{"ns": 3}"#,
        r#"{"ns": 3, "ns": 4, "value": "x"}"#,
    ] {
        assert!(serde_json::from_str::<IdKey>(bad).is_err(), "{bad}");
    }
}

/// A snapshot-like record: the format (a text table from 7 on), then keys.
#[derive(Serialize, Deserialize)]
struct Tabled {
    #[serde(deserialize_with = "crate::intern::version")]
    format: u32,
    keys: Vec<IdKey>,
}

#[test]
fn a_text_table_writes_a_key_once_and_reads_its_copies_back_as_one_allocation() {
    let a = IdKey::new(Ns(1), "c-1");
    let same_value_other_ns = IdKey::new(Ns(2), "c-1");
    let t = Tabled {
        format: crate::intern::TABLE_FORMAT,
        keys: vec![a.clone(), a.clone(), same_value_other_ns],
    };
    let bytes = crate::intern::write_scope(|| rmp_serde::to_vec(&t)).unwrap();
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Written {
        Full(String),
        Number(u32),
    }
    let written: (u32, Vec<(u8, Written)>) = rmp_serde::from_slice(&bytes).unwrap();
    let full = |s: &str| Written::Full(s.to_string());
    assert_eq!(
        written.1,
        [(1, full("c-1")), (1, Written::Number(0)), (2, full("c-1"))],
        "in full, its number, in full"
    );
    let back: Tabled = crate::intern::scope(|| rmp_serde::from_slice(&bytes)).unwrap();
    assert_eq!(back.keys, t.keys);
    assert!(IdKey::ptr_eq(&back.keys[0], &back.keys[1]));
    assert!(!IdKey::ptr_eq(&back.keys[0], &back.keys[2]));
    // Without a table (an older format), equal keys are shared by content.
    let old = Tabled { format: 6, ..t };
    let bytes = rmp_serde::to_vec(&old).unwrap();
    let back: Tabled = crate::intern::scope(|| rmp_serde::from_slice(&bytes)).unwrap();
    assert_eq!(back.keys, old.keys);
    assert!(IdKey::ptr_eq(&back.keys[0], &back.keys[1]));
    assert!(!IdKey::ptr_eq(&back.keys[0], &back.keys[2]));
}

#[test]
fn a_number_past_the_table_is_an_error_that_names_the_identifier() {
    let bytes = rmp_serde::to_vec(&(crate::intern::TABLE_FORMAT, vec![(1u8, 5u32)])).unwrap();
    let err = crate::intern::scope(|| rmp_serde::from_slice::<Tabled>(&bytes))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("identifier refers to text 5 of 0"), "{err}");
}

#[test]
fn it_is_one_pointer() {
    assert_eq!(std::mem::size_of::<IdKey>(), 8);
    assert_eq!(std::mem::size_of::<Option<IdKey>>(), 8);
}
