//! The hash maps of the state, with a fast hasher.
//!
//! `std`'s default SipHash-1-3 showed as a tenth of the core's time (every
//! event hashes its identifiers into the index several times); foldhash is
//! several times faster on short keys and still seeds itself per process,
//! so keys sent from outside cannot be chosen to collide.
//!
//! In / out: type aliases only; keeps nothing.

pub type BuildHasher = foldhash::fast::RandomState;
pub type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasher>;
pub type HashSet<K> = std::collections::HashSet<K, BuildHasher>;
pub type DashMap<K, V> = dashmap::DashMap<K, V, BuildHasher>;
