//! Scale-out: a state partition changes hands only after its journeys have
//! (`scaleout.route_journeys`, `docs/scaling.md` section 4).
//!
//! In: after each settled assignment (`moving.rs`), the state partitions
//! this process owns and has restored; the member directory
//! (`kafka::members` fills it from the members topic, every process's
//! record). Out: this process's announced partitions (its members record,
//! and the HTTP side's `own`): a partition given up leaves it once its
//! journeys are written for the next owner, a partition gained joins it
//! once restored; and for partitions just gained, those another process's
//! record still names, whose restore waits until that process lets them go
//! ([`HANDOFF_WAIT`] at most: a process that crashed never does). Keeps
//! nothing of its own.
//!
//! Why: the group gives a partition to its new owner as soon as the old
//! one has released it in the rebalance, which does not wait for the old
//! owner's poll loop to write the partition's journeys. A new owner that
//! read the changelog first restored older journeys (or none), applied the
//! routed events again, and published their decisions a second time
//! (measured: 38 and 39 `action_id`s twice in two of twelve runs of
//! `tests/scaleout.rs` stopping its members one at a time).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::http::forward::Directory;

/// How long a restore waits for the previous owner of a partition to let it
/// go before it restores what the changelog holds.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(15);

/// This process's side of the member directory.
pub struct Membership {
    owned: watch::Sender<Vec<u32>>,
    directory: Arc<Directory>,
    me: Arc<str>,
}

impl Membership {
    pub fn new(owned: watch::Sender<Vec<u32>>, directory: Arc<Directory>, me: Arc<str>) -> Self {
        Membership { owned, directory, me }
    }

    /// Announces `owned` (owned and restored) when it changed.
    pub fn announce(&self, mut owned: Vec<u32>) {
        owned.sort_unstable();
        self.owned.send_if_modified(|was| {
            let changed = *was != owned;
            *was = std::mem::take(&mut owned);
            changed
        });
    }

    /// Announces that this process owns nothing yet, once its topics
    /// exist: a record of a previous run under the same instance id (a
    /// static member killed) would otherwise keep naming partitions, and
    /// whoever is given them would wait [`HANDOFF_WAIT`] for nothing.
    pub fn announce_nothing_yet(&self) {
        self.owned.send_modify(Vec::clear);
    }

    /// Those of `qs` another process's record still names, with its id.
    pub fn claimed_elsewhere(&self, qs: &[u32]) -> Vec<(u32, String)> {
        qs.iter()
            .filter_map(|q| self.directory.claimed_elsewhere(*q, &self.me).map(|who| (*q, who)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::forward::Member;

    #[test]
    fn announces_changes_and_sees_the_claims_of_others_only() {
        let (tx, mut rx) = watch::channel(Vec::new());
        let directory = Arc::new(Directory::default());
        let m = Membership::new(tx, directory.clone(), Arc::from("b"));
        m.announce(vec![3, 1]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), vec![1, 3]);
        m.announce(vec![1, 3]);
        assert!(!rx.has_changed().unwrap(), "the same set is not announced again");
        m.announce_nothing_yet();
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().is_empty());
        m.announce(vec![3, 1]);
        assert_eq!(*rx.borrow_and_update(), vec![1, 3]);
        for (who, partitions, at_ms) in [("a", vec![0, 1], 5), ("b", vec![1, 3], 6)] {
            directory.upsert(
                who,
                Some(Member {
                    instance: who.into(),
                    http: String::new(),
                    partitions,
                    at_ms,
                }),
            );
        }
        // b's newer record took 1 from a's; 0 is still a's; 3 is b's own.
        assert_eq!(m.claimed_elsewhere(&[0, 1, 3]), vec![(0, "a".to_string())]);
    }
}
