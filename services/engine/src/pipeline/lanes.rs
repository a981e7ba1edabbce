//! Lanes: the owner's clock keys in scale-out (`docs/scaling.md` section
//! 3). In: a routed partition and an input partition. Out: one number
//! naming the pair, and back. Keeps nothing.

/// The owner's clock key (the core's "partition") for the events of input
/// partition `source` that arrive on routed partition `q`: a lane. Events of
/// one input partition arrive in order on each routed partition, not across
/// them, so each pair has its own clock, as each channel has in Flink.
/// Sources use 23 bits (`ingest::source_id`), so `q` < 511.
pub fn lane(q: u32, source: u32) -> u32 {
    ((q + 1) << 23) | (source & SOURCE_BITS)
}

/// The input partition of a lane (a plain source number is its own).
pub fn source_of(lane: u32) -> u32 {
    lane & SOURCE_BITS
}

/// The routed partition of a lane (`None`: a plain source number).
pub(super) fn partition_of(lane: u32) -> Option<u32> {
    (lane >> 23).checked_sub(1)
}

const SOURCE_BITS: u32 = (1 << 23) - 1;

/// [`lane`] tells apart up to [`crate::config::MAX_ROUTED_PARTITIONS`]
/// routed partitions: `(q + 1) << 23` fits in 32 bits for q < 511.
const _: () = assert!((crate::config::MAX_ROUTED_PARTITIONS + 1) < (1 << 9));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_names_one_routed_partition_and_one_input_partition() {
        let sources = [0, 1, (1 << 20) | 3, (4 << 20) | 0xF_FFFF];
        let mut seen = std::collections::HashSet::new();
        for q in [0, 1, 31, crate::config::MAX_ROUTED_PARTITIONS - 1] {
            for s in sources {
                let l = lane(q, s);
                assert_eq!(source_of(l), s);
                assert!(!sources.contains(&l), "lane {l} is also an input partition's number");
                assert!(seen.insert(l), "lane ({q}, {s}) named twice");
            }
        }
    }
}
