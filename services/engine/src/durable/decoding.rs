//! Decoding what a restore read from the changelog, on every core.
//!
//! In: the records `changelog.rs` read, as they are: the identity log's
//! (offset, value) in order, the latest journey record per One ID and the
//! freeze cutoff of the globals. Out: the identity ops in their order
//! ([`decode_ops`]); the journeys (frozen when idle before the cutoff), the
//! One IDs gone and the timers per home, all at once ([`Latest::decode`]) or
//! sent as they are decoded while the caller goes on ([`Latest::decode_on`]:
//! a restore from the changelog replays the identity log meanwhile). Keeps
//! nothing.
//!
//! Why: decoded in the reading loop, on one core, these were the longest
//! parts of a restore from the changelog (session 25, 1M profiles: the
//! identity ops about 10 s, the journeys about 15 s, then the replay about
//! 20 s after them).

use std::collections::HashMap;
use std::sync::mpsc;

use anyhow::Context as _;
use onejourney_core::identity::{IdentityOp, OneId};
use onejourney_core::intern;
use onejourney_core::processor::Timer;
use onejourney_core::state::Stored;
use onejourney_core::EventTime;

use super::changelog::decode;
use super::journey_record::decode_journey;

/// The latest journey record per One ID, as read: a journey, or gone (a
/// tombstone, or timers alone), and its timers.
#[derive(Default)]
pub struct Latest {
    records: HashMap<OneId, Option<Vec<u8>>>,
    /// Journeys with no event since are frozen as they are decoded, as the
    /// engine's scan would right after the restore: 10M decoded journeys
    /// would not fit in memory at once.
    cutoff: Option<EventTime>,
}

/// The decoded records of [`Latest`].
#[derive(Default)]
pub struct Decoded {
    /// The latest journey per One ID (tombstoned ones left out).
    pub journeys: HashMap<OneId, Stored>,
    /// The One IDs whose latest record has no journey.
    pub gone: Vec<OneId>,
    /// The timers of each latest record that carries some (its home's).
    pub timers: Vec<(OneId, Vec<Timer>)>,
}

/// Where [`Latest::decode_on`] sends what it decodes; a closed receiver
/// takes nothing and stops nothing.
#[derive(Clone)]
pub struct Sinks {
    pub journeys: mpsc::Sender<(OneId, Stored)>,
    pub gone: mpsc::Sender<OneId>,
    pub timers: mpsc::Sender<(OneId, Vec<Timer>)>,
}

/// The receiving ends of [`Sinks`].
pub struct Received {
    pub journeys: mpsc::Receiver<(OneId, Stored)>,
    pub gone: mpsc::Receiver<OneId>,
    pub timers: mpsc::Receiver<(OneId, Vec<Timer>)>,
}

impl Sinks {
    pub fn new() -> (Sinks, Received) {
        let (journeys, journeys_rx) = mpsc::channel();
        let (gone, gone_rx) = mpsc::channel();
        let (timers, timers_rx) = mpsc::channel();
        let received = Received {
            journeys: journeys_rx,
            gone: gone_rx,
            timers: timers_rx,
        };
        (Sinks { journeys, gone, timers }, received)
    }
}

impl Latest {
    pub(super) fn new(records: HashMap<OneId, Option<Vec<u8>>>, cutoff: Option<EventTime>) -> Latest {
        Latest { records, cutoff }
    }

    /// How many One IDs have a record (a journey, or its tombstone).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no One ID has a record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record decoded, on the machine's cores.
    pub fn decode(self) -> anyhow::Result<Decoded> {
        self.decode_with(cores())
    }

    fn decode_with(self, threads: usize) -> anyhow::Result<Decoded> {
        let (sinks, received) = Sinks::new();
        std::thread::scope(|s| join(self.decode_on(s, sinks, threads)))?;
        Ok(Decoded {
            journeys: received.journeys.try_iter().collect(),
            gone: received.gone.try_iter().collect(),
            timers: received.timers.try_iter().collect(),
        })
    }

    /// Decodes the records on `threads` threads of `scope`, each with a
    /// share of them (and an interning scope of its own: a restore shares
    /// every text with the identity graph's afterwards,
    /// `Processor::restore_changelog`), into `sinks`. The caller goes on
    /// meanwhile (a restore replays the identity log) and reads the
    /// receivers; [`join`] the threads for their errors. Each record decodes
    /// on its own: at 1M profiles, decoding was the longest part of a
    /// restore from the changelog, on one core (session 25).
    pub fn decode_on<'s>(
        self,
        scope: &'s std::thread::Scope<'s, '_>,
        sinks: Sinks,
        threads: usize,
    ) -> Vec<std::thread::ScopedJoinHandle<'s, anyhow::Result<()>>> {
        let threads = threads.clamp(1, 16);
        let mut shares: Vec<Vec<(OneId, Option<Vec<u8>>)>> = (0..threads)
            .map(|_| Vec::with_capacity(self.records.len() / threads + 1))
            .collect();
        for (i, record) in self.records.into_iter().enumerate() {
            shares[i % threads].push(record);
        }
        let cutoff = self.cutoff;
        shares
            .into_iter()
            .map(|share| {
                let sinks = sinks.clone();
                scope.spawn(move || intern::scope(|| decode_share(share, cutoff, &sinks)))
            })
            .collect()
    }
}

/// The identity ops of `records` (offset, value), in their order, decoded
/// on `threads` threads, each a run of consecutive records (and an
/// interning scope of its own). Decoded in the reading loop, they held up
/// the read (session 25: 8.4M ops at 1M profiles, about 10 s on one core).
pub(super) fn decode_ops(records: Vec<(i64, Vec<u8>)>, topic: &str, threads: usize) -> anyhow::Result<Vec<IdentityOp>> {
    let run = records.len().div_ceil(threads.clamp(1, 16)).max(1);
    let decode_run = |run: &[(i64, Vec<u8>)]| {
        intern::scope(|| {
            let mut ops = Vec::new();
            for (offset, value) in run {
                let batch = decode::<Vec<IdentityOp>>(value, "identity log")
                    .with_context(|| format!("{topic}/0 offset {offset}"))?;
                ops.extend(batch);
            }
            anyhow::Ok(ops)
        })
    };
    let runs = std::thread::scope(|s| join(records.chunks(run).map(|r| s.spawn(move || decode_run(r))).collect()))?;
    Ok(runs.into_iter().flatten().collect())
}

/// The machine's cores (the decoding threads of a restore).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Waits for every decoding thread: their results in order, or the first
/// error; a panic is passed on.
pub fn join<T>(running: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>) -> anyhow::Result<Vec<T>> {
    let done: Vec<anyhow::Result<T>> = running
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect();
    done.into_iter().collect()
}

/// One thread's share of [`Latest::decode_on`].
fn decode_share(share: Vec<(OneId, Option<Vec<u8>>)>, cutoff: Option<EventTime>, sinks: &Sinks) -> anyhow::Result<()> {
    for (one_id, value) in share {
        let (journey, timers) = match value {
            Some(bytes) => decode_journey(&bytes).with_context(|| format!("the journey record of {one_id}"))?,
            None => (None, Vec::new()),
        };
        if !timers.is_empty() {
            sinks.timers.send((one_id.clone(), timers)).ok();
        }
        match journey {
            Some(j) => sinks.journeys.send((one_id, Stored::restored(j, cutoff))).ok(),
            None => sinks.gone.send(one_id).ok(),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use onejourney_core::journey::Journey;

    use super::super::changelog::{encode, RECORD_VERSION};
    use super::super::journey_record::{encode_journey, JOURNEY_RECORD_VERSION};
    use super::*;

    #[test]
    fn a_restore_freezes_the_journeys_idle_before_the_cutoff_as_it_decodes_them() {
        let at = |t| Journey {
            last_seen: Some(EventTime(t)),
            ..Journey::default()
        };
        let (idle, recent) = (at(1_000), at(9_000));
        let mut latest = HashMap::new();
        for (id, j) in [("idle", &idle), ("recent", &recent)] {
            latest.insert(
                OneId::from(id),
                encode_journey(Some(j), &[], &[], EventTime::MIN).expect("encodes"),
            );
        }
        latest.insert(OneId::from("gone"), None);
        let decode = |records: &HashMap<OneId, Option<Vec<u8>>>, cutoff, threads| {
            Latest {
                records: records.clone(),
                cutoff,
            }
            .decode_with(threads)
        };
        let out = decode(&latest, Some(EventTime(5_000)), 1).expect("decodes");
        let held = |out: &Decoded, id: &str| out.journeys.get(id).map(|s| (s.is_frozen(), s.journey()));
        assert_eq!(
            held(&out, "idle"),
            Some((true, Some(std::sync::Arc::new(idle.clone()))))
        );
        assert_eq!(
            held(&out, "recent"),
            Some((false, Some(std::sync::Arc::new(recent.clone()))))
        );
        assert_eq!(out.gone, vec![OneId::from("gone")]);
        // On several threads: the same journeys, timers and tombstones.
        let mut many = HashMap::new();
        for i in 0..50 {
            let timers = vec![(
                EventTime(i),
                onejourney_core::processor::TimerKind::Quiet,
                onejourney_core::ids::IdKey::new(onejourney_core::ids::Ns(3), &format!("c-{i}")),
            )];
            let j = (i % 5 != 0).then(|| at(i * 200));
            many.insert(
                OneId::from(format!("oj-{i}").as_str()),
                encode_journey(j.as_ref(), &timers, &[], EventTime::MIN).expect("encodes"),
            );
        }
        many.insert(OneId::from("tombstone"), None);
        let held_all = |threads| {
            let mut out = decode(&many, Some(EventTime(5_000)), threads).expect("decodes");
            let mut journeys: Vec<_> = out
                .journeys
                .iter()
                .map(|(id, s)| (id.to_string(), s.is_frozen(), s.journey()))
                .collect();
            journeys.sort_by(|a, b| a.0.cmp(&b.0));
            out.gone.sort();
            out.timers.sort();
            (journeys, out.gone, out.timers)
        };
        let one = held_all(1);
        assert_eq!((one.0.len(), one.1.len(), one.2.len()), (40, 11, 50));
        assert!(
            one.0.iter().any(|j| j.1) && one.0.iter().any(|j| !j.1),
            "some frozen, some live"
        );
        assert_eq!(held_all(3), one);
        // A record that does not decode fails the restore, on whichever thread.
        many.insert(OneId::from("damaged"), Some(vec![JOURNEY_RECORD_VERSION, 0xc1]));
        let e = decode(&many, None, 3).err().expect("a damaged record");
        assert!(format!("{e:#}").contains("the journey record of damaged"), "{e:#}");
        // Freezing off: every journey live.
        let out = decode(&latest, None, 2).expect("decodes");
        assert!(out.journeys.values().all(|s| !s.is_frozen()));
        assert_eq!(out.journeys.len(), 2);
    }

    #[test]
    fn identity_ops_decode_in_their_order_on_several_threads_and_a_damaged_record_names_its_offset() {
        let op = |i: i64| IdentityOp::Seen {
            one_id: OneId::from(format!("oj-{}", i % 7).as_str()),
            at: EventTime(i),
        };
        let records: Vec<(i64, Vec<u8>)> = (0..9)
            .map(|r| {
                (
                    100 + r,
                    encode(&(0..=r).map(|i| op(r * 10 + i)).collect::<Vec<_>>()).expect("encodes"),
                )
            })
            .collect();
        let one = decode_ops(records.clone(), "identity", 1).expect("decodes");
        assert_eq!(one.len(), (1..=9).sum::<usize>());
        assert_eq!(one[0], op(0));
        assert_eq!(one[one.len() - 1], op(88));
        for threads in [2, 4, 16] {
            assert_eq!(decode_ops(records.clone(), "identity", threads).expect("decodes"), one);
        }
        let mut damaged = records;
        damaged[6].1 = vec![RECORD_VERSION, 0xc1];
        let e = decode_ops(damaged, "identity", 3).expect_err("a damaged record");
        assert!(format!("{e:#}").contains("identity/0 offset 106"), "{e:#}");
    }
}
