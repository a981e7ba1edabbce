//! The text sharing of `intern.rs`: by content, by table, and the errors.

use super::*;
#[derive(Deserialize)]
struct Pair {
    #[serde(deserialize_with = "arc_str")]
    a: ArcStr,
    #[serde(deserialize_with = "arc_str")]
    b: ArcStr,
    #[serde(deserialize_with = "one_id")]
    c: OneId,
    #[serde(deserialize_with = "opt_one_id")]
    d: Option<OneId>,
}

fn pair() -> Vec<u8> {
    rmp_serde::to_vec(&("x", "x", "y", Some("y"))).expect("encodes")
}

#[test]
fn inside_a_scope_equal_texts_are_one_allocation() {
    let bytes = pair();
    let p: Pair = scope(|| rmp_serde::from_slice(&bytes)).expect("decodes");
    assert!(ArcStr::ptr_eq(&p.a, &p.b));
    let d = p.d.expect("some");
    assert!(OneId::ptr_eq(&p.c, &d));
    assert_eq!((&*p.a, &*d), ("x", "y"));
    // The scope's texts went with it: the values are the only holders.
    assert_eq!(OneId::strong_count(&d), Some(2));
}

#[test]
fn outside_a_scope_every_text_is_its_own() {
    let p: Pair = rmp_serde::from_slice(&pair()).expect("decodes");
    assert!(!ArcStr::ptr_eq(&p.a, &p.b));
    assert!(!OneId::ptr_eq(&p.c, p.d.as_ref().expect("some")));
    TEXTS.with(|t| assert!(t.borrow().is_none()));
}

#[test]
fn a_key_read_outside_serde_shares_with_the_decoded_one_ids() {
    let bytes = pair();
    let (p, key) = scope(|| {
        let p: Pair = rmp_serde::from_slice(&bytes).expect("decodes");
        (p, one_id_text("y"))
    });
    assert!(OneId::ptr_eq(&p.c, &key));
    assert!(
        !OneId::ptr_eq(&one_id_text("y"), &one_id_text("y")),
        "no scope: no sharing"
    );
}

/// A snapshot-like record: the format first, then texts of both kinds.
#[derive(Serialize, Deserialize)]
struct Tabled {
    #[serde(deserialize_with = "version")]
    format: u32,
    #[serde(with = "strs")]
    strs: Vec<ArcStr>,
    #[serde(serialize_with = "write_one_id", deserialize_with = "one_id")]
    one_id: OneId,
    #[serde(serialize_with = "write_opt_one_id", deserialize_with = "opt_one_id")]
    again: Option<OneId>,
    #[serde(default, serialize_with = "counts_now")]
    texts: Option<TextCounts>,
}

/// The counts as of this field, as a snapshot writes them last.
fn counts_now<S: Serializer>(_: &Option<TextCounts>, s: S) -> Result<S::Ok, S::Error> {
    Some(written()).serialize(s)
}

mod strs {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct S(#[serde(serialize_with = "write_arc_str", deserialize_with = "arc_str")] ArcStr);

    pub fn serialize<Z: Serializer>(v: &[ArcStr], s: Z) -> Result<Z::Ok, Z::Error> {
        s.collect_seq(v.iter().map(|x| S(x.clone())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ArcStr>, D::Error> {
        Ok(Vec::<S>::deserialize(d)?.into_iter().map(|s| s.0).collect())
    }
}

fn tabled(a: &ArcStr, b: &ArcStr, o: &OneId) -> Tabled {
    Tabled {
        format: TABLE_FORMAT,
        strs: vec![a.clone(), b.clone(), a.clone(), b.clone()],
        one_id: o.clone(),
        again: Some(o.clone()),
        texts: None,
    }
}

/// Written as a snapshot is: in a write scope, the counts at the end.
fn write_tabled(t: &Tabled) -> Vec<u8> {
    write_scope(|| rmp_serde::to_vec(t).expect("encodes"))
}

fn read_tabled(bytes: &[u8]) -> Result<Tabled, rmp_serde::decode::Error> {
    scope(|| {
        let t: Tabled = rmp_serde::from_slice(bytes)?;
        end_table::<rmp_serde::decode::Error>(t.texts)?;
        Ok(t)
    })
}

#[test]
fn a_text_table_writes_each_allocation_once_and_reads_back_its_sharing() {
    // Two equal texts apart, one of them held twice: sharing is by
    // allocation, not by content.
    let (a, b, o) = (ArcStr::from("x"), ArcStr::from("x"), OneId::from("y"));
    let bytes = write_tabled(&tabled(&a, &b, &o));
    let back = read_tabled(&bytes).expect("reads back");
    assert_eq!(
        back.texts,
        Some(TextCounts {
            identifiers: 2,
            one_ids: 1
        }),
        "each allocation in full once"
    );
    let s = &back.strs;
    assert!(ArcStr::ptr_eq(&s[0], &s[2]) && ArcStr::ptr_eq(&s[1], &s[3]));
    assert!(!ArcStr::ptr_eq(&s[0], &s[1]), "apart when written, apart when read");
    assert!(OneId::ptr_eq(&back.one_id, back.again.as_ref().expect("some")));
    assert!(s.iter().all(|x| &**x == "x") && &*back.one_id == "y");
    // Repeats are numbers: the file is smaller than every text in full.
    let full = rmp_serde::to_vec(&tabled(&a, &b, &o)).expect("encodes");
    assert!(bytes.len() < full.len() + 4, "{} against {}", bytes.len(), full.len());
    TEXTS.with(|t| assert!(t.borrow().is_none()));
    WRITTEN.with(|w| assert!(w.borrow().is_none()));
}

#[test]
fn a_text_table_that_does_not_add_up_is_refused() {
    // The counts of another file.
    let bytes = rmp_serde::to_vec(&(TABLE_FORMAT, ["x"], "y", None::<u32>, Some((9, 1)))).expect("encodes");
    let err = read_tabled(&bytes).err().expect("refused").to_string();
    assert!(err.contains("does not add up"), "{err}");
    // A number past the texts read: damaged, said so.
    let bytes = rmp_serde::to_vec(&(TABLE_FORMAT, [7u32], 0u32, None::<u32>, None::<u32>)).expect("encodes");
    let err = read_tabled(&bytes).err().expect("refused").to_string();
    assert!(err.contains("refers to text 7 of 0 read"), "{err}");
    // A number in a format without a table.
    let bytes = rmp_serde::to_vec(&(6u32, [0u32], 0u32, None::<u32>, None::<u32>)).expect("encodes");
    let err = read_tabled(&bytes).err().expect("refused").to_string();
    assert!(err.contains("is a number (0) where this format has a text"), "{err}");
}

#[test]
fn without_a_table_equal_texts_are_shared_by_content() {
    let (a, b, o) = (ArcStr::from("x"), ArcStr::from("x"), OneId::from("y"));
    let mut t = tabled(&a, &b, &o);
    t.format = TABLE_FORMAT - 1;
    // Written outside a write scope: every text in full.
    let bytes = rmp_serde::to_vec(&t).expect("encodes");
    let back = read_tabled(&bytes).expect("reads back");
    assert!(back.strs.iter().all(|x| ArcStr::ptr_eq(x, &back.strs[0])));
    assert!(OneId::ptr_eq(&back.one_id, back.again.as_ref().expect("some")));
}

#[test]
fn nested_scopes_share_the_outermost_texts() {
    let bytes = pair();
    let (p, q): (Pair, Pair) = scope(|| {
        let p = scope(|| rmp_serde::from_slice(&bytes)).expect("decodes");
        (p, rmp_serde::from_slice(&bytes).expect("decodes"))
    });
    assert!(ArcStr::ptr_eq(&p.a, &q.b));
    TEXTS.with(|t| assert!(t.borrow().is_none()));
}
