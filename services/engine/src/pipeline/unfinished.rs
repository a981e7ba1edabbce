//! Unfinished: per input partition, the offsets of the messages taken whose
//! processing is not finished, so a checkpoint reads where its input offsets
//! must stop without walking the messages held.
//!
//! In: a message's (topic, partition, offset) when it is taken
//! ([`Unfinished::taken`]) and again when it is finished
//! ([`Unfinished::finished`]). Out: per partition, the first unfinished
//! offset ([`Unfinished::first`]). It keeps one ordered set of offsets per
//! partition (with a count: a partition read again after a rewind may hold
//! the same offset twice), O(log n) a message; a checkpoint's read is
//! O(partitions), where a walk over the held messages was O(messages) (held
//! behind the oldest one waiting for the watermark, 146k of them in the
//! bench's state-only run).

use std::collections::BTreeMap;
use std::sync::Arc;

use onejourney_core::hash::HashMap;

#[derive(Default)]
pub struct Unfinished {
    topics: HashMap<Arc<str>, HashMap<i32, BTreeMap<i64, u32>>>,
    /// How many messages are unfinished.
    count: usize,
}

impl Unfinished {
    /// A message was taken; returns the topic's shared name (one allocation a
    /// topic, not one a message).
    pub fn taken(&mut self, topic: &str, partition: i32, offset: i64) -> Arc<str> {
        let name = match self.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.topics.insert(name.clone(), HashMap::default());
                name
            }
        };
        if let Some(partitions) = self.topics.get_mut(topic) {
            *partitions.entry(partition).or_default().entry(offset).or_insert(0) += 1;
            self.count += 1;
        }
        name
    }

    /// A message taken earlier is finished.
    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(offsets) = self.topics.get_mut(topic).and_then(|p| p.get_mut(&partition)) else {
            return;
        };
        if let Some(n) = offsets.get_mut(&offset) {
            *n -= 1;
            self.count -= 1;
            if *n == 0 {
                offsets.remove(&offset);
            }
        }
    }

    /// Per partition with an unfinished message, the first one's offset.
    pub fn first(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.topics.iter().flat_map(|(topic, partitions)| {
            partitions
                .iter()
                .filter_map(move |(p, offsets)| offsets.first_key_value().map(|(o, _)| (&**topic, *p, *o)))
        })
    }

    /// How many messages are unfinished.
    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn firsts(u: &Unfinished) -> BTreeMap<(String, i32), i64> {
        u.first().map(|(t, p, o)| ((t.to_string(), p), o)).collect()
    }

    #[test]
    fn the_first_unfinished_offset_moves_on_as_messages_finish_in_any_order() {
        let mut u = Unfinished::default();
        for o in 10..14 {
            u.taken("web", 0, o);
        }
        u.taken("pos", 1, 3);
        u.finished("web", 0, 11);
        u.finished("web", 0, 12);
        assert_eq!(firsts(&u)[&("web".to_string(), 0)], 10);
        u.finished("web", 0, 10);
        assert_eq!(firsts(&u)[&("web".to_string(), 0)], 13, "11 and 12 finished before 10");
        u.finished("pos", 1, 3);
        u.finished("web", 0, 13);
        assert!(firsts(&u).is_empty(), "nothing unfinished: {:?}", firsts(&u));
        assert_eq!(u.count(), 0);
    }

    #[test]
    fn an_offset_taken_twice_after_a_rewind_stays_until_both_finish() {
        let mut u = Unfinished::default();
        u.taken("web", 0, 5);
        u.taken("web", 0, 6);
        u.taken("web", 0, 5);
        u.finished("web", 0, 5);
        assert_eq!(firsts(&u)[&("web".to_string(), 0)], 5);
        u.finished("web", 0, 5);
        assert_eq!(firsts(&u)[&("web".to_string(), 0)], 6);
    }

    #[test]
    fn one_name_a_topic_is_shared_by_its_messages() {
        let mut u = Unfinished::default();
        let a = u.taken("web", 0, 1);
        let b = u.taken("web", 3, 9);
        assert!(Arc::ptr_eq(&a, &b));
    }

    proptest! {
        /// Whatever order messages are taken and finished in, the first
        /// unfinished offset per partition is the one a walk over the held
        /// messages finds (what the checkpoint computed before).
        #[test]
        fn it_agrees_with_a_walk_over_the_held_messages(
            taken in prop::collection::vec((0usize..2, 0i32..3, 0i64..40), 1..120),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..120),
        ) {
            let topics = ["web", "pos"];
            let mut u = Unfinished::default();
            let mut held: Vec<(&str, i32, i64)> = Vec::new();
            for (t, p, o) in &taken {
                u.taken(topics[*t], *p, *o);
                held.push((topics[*t], *p, *o));
            }
            for i in order {
                if held.is_empty() {
                    break;
                }
                let (t, p, o) = held.remove(i.index(held.len()));
                u.finished(t, p, o);
                let mut walk: BTreeMap<(String, i32), i64> = BTreeMap::new();
                for (t, p, o) in &held {
                    let e = walk.entry((t.to_string(), *p)).or_insert(*o);
                    *e = (*e).min(*o);
                }
                prop_assert_eq!(firsts(&u), walk);
                prop_assert_eq!(u.count(), held.len());
            }
        }
    }
}
