//! The hash maps of the state, with a fast hasher.
//!
//! `std`'s default SipHash-1-3 showed as a tenth of the core's time (every
//! event hashes its identifiers into the index several times); foldhash is
//! several times faster on short keys and still seeds itself per process,
//! so keys sent from outside cannot be chosen to collide.
//!
//! In / out: type aliases, and [`reserve`] for a map a restore fills with
//! a known count; keeps nothing.

pub type BuildHasher = foldhash::fast::RandomState;
pub type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasher>;
pub type HashSet<K> = std::collections::HashSet<K, BuildHasher>;
pub type DashMap<K, V> = dashmap::DashMap<K, V, BuildHasher>;

/// Makes room in `map` for `additional` more entries, so that filling it
/// with a known count (a restore) does not grow its tables step by step:
/// each doubling rehashes every key, and a key of the graph is hashed
/// through a pointer to its text (session 27's profile of the identity
/// replay of a changelog restore: 32% of it was tables growing). Each
/// shard gets its share and a margin for the hash's unevenness. The
/// rehash hashes each entry as the map itself does
/// ([`dashmap::DashMap::hash_usize`], the hash that picks the shard and
/// the slot: dashmap's `raw-api`, for which the feature is on). A no-op
/// where `usize` is narrower than the map's 64-bit hash.
pub fn reserve<K: std::hash::Hash + Eq, V>(map: &DashMap<K, V>, additional: usize) {
    if usize::BITS < u64::BITS || additional == 0 {
        return;
    }
    let shards = map.shards();
    let share = additional / shards.len().max(1);
    // About four standard deviations of a shard's count, and a floor.
    let margin = 4 * share.isqrt() + 16;
    for shard in shards {
        shard.write().reserve(share + margin, |(k, _)| map.hash_usize(k) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries inserted before the reserve are found after it (its rehash
    /// placed them as the map looks for them), and the reserved count
    /// goes in without the map growing.
    #[test]
    fn a_reserved_map_takes_its_count_without_growing_and_finds_every_key() {
        let map: DashMap<String, usize> = DashMap::default();
        for i in 0..1_000 {
            map.insert(format!("before-{i}"), i);
        }
        reserve(&map, 200_000);
        let reserved = map.capacity();
        assert!(reserved >= 201_000, "room for the count: {reserved}");
        for i in 0..200_000 {
            map.insert(format!("after-{i}"), i);
        }
        assert_eq!(map.capacity(), reserved, "no table grew");
        for i in 0..1_000 {
            assert_eq!(map.get(&format!("before-{i}")).map(|v| *v), Some(i));
        }
        for i in (0..200_000).step_by(997) {
            assert_eq!(map.get(&format!("after-{i}")).map(|v| *v), Some(i));
        }
        // Nothing to reserve: nothing changes.
        reserve(&map, 0);
        assert_eq!(map.capacity(), reserved);
    }
}
