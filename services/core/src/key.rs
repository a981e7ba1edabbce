//! The identity key: the secret under which One IDs and suppression entries
//! are derived (see `identity/derive.rs` for why).
//!
//! In: the secret's bytes, handed over by the caller (the engine reads
//! `identity.key` or `identity.key_file`; the core reads no environment).
//! Out: HMAC-SHA256 under it, and a public id of the key that snapshots
//! record. Keeps the secret; its `Debug` shows only the id. Imports nothing
//! of the core, so the namespace table can carry it.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key a core uses when none is handed over: public, for development
/// and tests only (the engine warns loudly when it runs with it).
const DEVELOPMENT_KEY: &[u8] = b"onejourney development identity key: not a secret";

/// The secret key of keyed derivation.
#[derive(Clone)]
pub struct IdentityKey {
    bytes: Arc<[u8]>,
    /// A public name of the key, recorded in snapshots.
    id: Arc<str>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyError {
    #[error("the identity key must be at least {min} bytes long (it is {len})")]
    TooShort { min: usize, len: usize },
}

impl IdentityKey {
    /// The shortest key accepted.
    pub const MIN_BYTES: usize = 16;

    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < Self::MIN_BYTES {
            return Err(KeyError::TooShort {
                min: Self::MIN_BYTES,
                len: secret.len(),
            });
        }
        let mut key = IdentityKey {
            bytes: Arc::from(secret),
            id: Arc::from(""),
        };
        key.id = Arc::from(format!(
            "hmac-{}",
            hex::encode(&key.mac(&[b"onejourney/key-id/v1"])[..8])
        ));
        Ok(key)
    }

    /// The public development key (see [`DEVELOPMENT_KEY`]).
    pub fn development() -> Self {
        // Longer than MIN_BYTES: cannot fail.
        Self::new(DEVELOPMENT_KEY).unwrap_or_else(|_| unreachable!("the development key is long enough"))
    }

    pub fn is_development(&self) -> bool {
        &*self.bytes == DEVELOPMENT_KEY
    }

    /// HMAC-SHA256 of the concatenated `parts` under this key.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes a key of any length: `new_from_slice` cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A public name of the key: 8 bytes of an HMAC under it. Tells keys
    /// apart, gives nothing of the key away.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Default for IdentityKey {
    fn default() -> Self {
        Self::development()
    }
}
