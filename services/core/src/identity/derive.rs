//! One IDs and suppression entries, derived from identifiers.
//!
//! In: an identifier's namespace name and value, and the graph's
//! [`Derivation`]. Out: a One ID (`oj-` and 24 hex digits) or a suppression
//! entry (16 bytes). It keeps nothing; the key lives in [`IdentityKey`]
//! (`key.rs`), handed over by the caller with the namespace table (the
//! engine reads it from its configuration; the core reads no environment).
//!
//! Why keyed: a plain SHA-256 of `customer_id:C-123` or of a phone number's
//! hash can be recomputed by anyone holding a list of candidate identifiers,
//! so a One ID or a suppression entry would give the identifier away. Under
//! HMAC-SHA256 with a secret key, neither can be matched to an identifier
//! without the key. The contract's `email_sha256` / `phone_sha256` values
//! stay plain SHA-256: upstream systems compute them.
//!
//! Compatibility: state written before keyed derivation (snapshot format 2)
//! restores with [`Derivation::Sha256V1`], so existing customers keep their
//! One IDs and existing suppressions keep matching; a `--rebuild` moves it to
//! the configured key. A snapshot records its derivation
//! ([`DerivationRecord`]), key included (by its id, never the key), and a
//! snapshot made under another key is refused rather than mixed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::types::OneId;
pub use crate::key::{IdentityKey, KeyError};

/// How a graph derives One IDs and suppression entries.
#[derive(Clone, Debug)]
pub enum Derivation {
    /// Plain SHA-256: state written before keyed derivation (snapshot format
    /// 2) keeps it until it is rebuilt.
    Sha256V1,
    /// HMAC-SHA256 under the key.
    Keyed(IdentityKey),
}

impl Default for Derivation {
    fn default() -> Self {
        Derivation::Keyed(IdentityKey::development())
    }
}

/// Which derivation a snapshot's graph used; the default is what a snapshot
/// without one (format 2) used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivationRecord {
    /// `sha256-v1` or `hmac-sha256-v1`.
    pub scheme: String,
    /// The key's [`IdentityKey::id`]; empty for `sha256-v1`.
    pub key_id: String,
}

const SHA256_V1: &str = "sha256-v1";
const HMAC_V1: &str = "hmac-sha256-v1";

impl Default for DerivationRecord {
    fn default() -> Self {
        DerivationRecord {
            scheme: SHA256_V1.to_string(),
            key_id: String::new(),
        }
    }
}

/// A snapshot's derivation that this graph cannot continue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DerivationError {
    #[error(
        "the snapshot's One IDs were derived under identity key {snapshot}, not the configured {configured}: \
         configure the key it was written with, or start once with `onejourney run --rebuild` to rebuild the \
         state under the new key"
    )]
    OtherKey { snapshot: String, configured: String },
    #[error("the snapshot's One ID derivation {0:?} is unknown to this build")]
    Unknown(String),
}

impl Derivation {
    /// What a snapshot records of it.
    pub fn record(&self) -> DerivationRecord {
        match self {
            Derivation::Sha256V1 => DerivationRecord::default(),
            Derivation::Keyed(key) => DerivationRecord {
                scheme: HMAC_V1.to_string(),
                key_id: key.id().to_string(),
            },
        }
    }

    /// The derivation to continue a snapshot's graph with, `key` configured.
    pub fn continuing(record: &DerivationRecord, key: &IdentityKey) -> Result<Derivation, DerivationError> {
        match record.scheme.as_str() {
            SHA256_V1 => Ok(Derivation::Sha256V1),
            HMAC_V1 if record.key_id == key.id() => Ok(Derivation::Keyed(key.clone())),
            HMAC_V1 => Err(DerivationError::OtherKey {
                snapshot: record.key_id.clone(),
                configured: key.id().to_string(),
            }),
            other => Err(DerivationError::Unknown(other.to_string())),
        }
    }

    /// The One ID of a profile founded by `namespace:value`.
    pub fn one_id(&self, namespace: &str, value: &str) -> OneId {
        let digest = self.digest("one-id", namespace, value);
        let mut text = [0u8; 3 + 24];
        OneId::from(crate::hex_text::write(&mut text, "oj-", &digest[..12]))
    }

    /// The suppression entry of a forgotten `namespace:value`.
    pub fn suppression_entry(&self, namespace: &str, value: &str) -> [u8; 16] {
        let digest = self.digest("forget", namespace, value);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    fn digest(&self, purpose: &str, namespace: &str, value: &str) -> [u8; 32] {
        match self {
            // The format 2 derivation, byte for byte.
            Derivation::Sha256V1 => {
                let mut h = Sha256::new();
                h.update(b"onejourney/");
                h.update(purpose.as_bytes());
                h.update(b"/v1\0");
                h.update(namespace.as_bytes());
                h.update(b"\0");
                h.update(value.as_bytes());
                h.finalize().into()
            }
            Derivation::Keyed(key) => key.mac(&[
                b"onejourney/",
                purpose.as_bytes(),
                b"/hmac-v1\0",
                namespace.as_bytes(),
                b"\0",
                value.as_bytes(),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IdentityKey {
        IdentityKey::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn the_same_identifier_gives_different_one_ids_under_two_keys_and_equal_under_one() {
        let a = Derivation::Keyed(key("first key, sixteen bytes or more"));
        let b = Derivation::Keyed(key("second key, sixteen bytes or more"));
        let a2 = Derivation::Keyed(key("first key, sixteen bytes or more"));
        assert_ne!(a.one_id("customer_id", "C-1"), b.one_id("customer_id", "C-1"));
        assert_eq!(a.one_id("customer_id", "C-1"), a2.one_id("customer_id", "C-1"));
        assert_ne!(
            a.suppression_entry("customer_id", "C-1"),
            b.suppression_entry("customer_id", "C-1")
        );
        assert_ne!(a.one_id("customer_id", "C-1"), a.one_id("customer_id", "C-2"));
        assert_ne!(
            key("first key, sixteen bytes or more").id(),
            key("second key, sixteen bytes or more").id()
        );
    }

    #[test]
    fn a_dictionary_of_plain_sha256_derivations_finds_no_keyed_one_id() {
        // What someone holding a One ID or a suppression entry and a list of
        // candidate identifiers could compute without the key.
        let plain = |purpose: &str, ns: &str, v: &str| {
            let mut h = Sha256::new();
            h.update(format!("onejourney/{purpose}/v1\0{ns}\0{v}").as_bytes());
            h.finalize()
        };
        let keyed = Derivation::Keyed(key("a production secret of some length"));
        for phone in (0..1000).map(|i| format!("+4915112345{i:03}")) {
            let hashed = crate::ids::sha256_hex(&phone);
            let one_id = keyed.one_id("phone_sha256", &hashed);
            let guess = format!("oj-{}", hex::encode(&plain("one-id", "phone_sha256", &hashed)[..12]));
            assert_ne!(&*one_id, guess.as_str());
            assert_ne!(
                &keyed.suppression_entry("phone_sha256", &hashed)[..],
                &plain("forget", "phone_sha256", &hashed)[..16]
            );
            // The old derivation is exactly that plain hash.
            assert_eq!(&*Derivation::Sha256V1.one_id("phone_sha256", &hashed), guess.as_str());
        }
    }

    #[test]
    fn the_old_derivation_is_kept_byte_for_byte() {
        // Values the format 2 code derived (`derive_one_id`, `suppression_entry`).
        assert_eq!(
            &*Derivation::Sha256V1.one_id("cookie_id", "c-1"),
            "oj-".to_string()
                + &{
                    let mut h = Sha256::new();
                    h.update(b"onejourney/one-id/v1\0cookie_id\0c-1");
                    hex::encode(&h.finalize()[..12])
                }
        );
    }

    #[test]
    fn a_snapshot_continues_with_its_own_derivation_or_is_refused() {
        let k = key("the configured key, long enough");
        let old = DerivationRecord::default();
        assert!(matches!(Derivation::continuing(&old, &k), Ok(Derivation::Sha256V1)));
        let same = Derivation::Keyed(k.clone()).record();
        assert!(matches!(Derivation::continuing(&same, &k), Ok(Derivation::Keyed(_))));
        let other = Derivation::Keyed(key("another key, also long enough")).record();
        assert!(matches!(
            Derivation::continuing(&other, &k),
            Err(DerivationError::OtherKey { .. })
        ));
        assert_eq!(
            IdentityKey::new(b"short").unwrap_err(),
            KeyError::TooShort { min: 16, len: 5 }
        );
        assert!(!format!("{k:?}").contains("configured key"));
    }
}
