//! Scale-out: state partitions moving with the consumer group
//! (`scaleout.route_journeys`, `docs/scaling.md` section 4).
//!
//! In: the state partitions an assignment gave this process and those it
//! took away (`Route::moved`, from the Kafka edge's assignment events).
//! Out: for a partition taken away, its journeys, timers and dedupe keys
//! dropped (no tombstone: the new owner writes that changelog partition
//! now) and its buffered messages finished here without effect (the new
//! owner reads them again from the group's committed offset); for a
//! partition given, before any of its messages is processed: its journeys
//! changelog partition read to its end and installed (the latest record per
//! One ID, with the dedupe keys of the events in it), and the outputs
//! published since the partition's last marker read back, so that what the
//! new owner decides again is not published twice. `/readyz` says 503 while
//! a partition restores. It keeps nothing.

use std::time::Instant;

use anyhow::Context as _;
use tracing::{info, warn};

use onejourney_core::processor::GivenUp;
use rdkafka::producer::FutureRecord;

use super::changelog::{acknowledged, encode_records, Changed};
use super::emit::enqueue;
use super::handoff::HANDOFF_WAIT;
use super::ingest::Ingest;
use super::poll::Poll;
use super::record::Step;
use crate::durable::partition::{read_partitions, ReadPartition};
use crate::kafka::evidence::EvidenceReader;

/// An output partition and an offset in it.
type OutputEnd = (String, i32, i64);

/// How long a restore waits for the identity log to be folded to its end.
const FOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

impl Ingest {
    /// After an assignment took state partitions away: what they held
    /// goes (see the module's documentation).
    pub(super) fn drop_given_up(&mut self) {
        let Some(route) = self.route.as_mut() else { return };
        if route.lost.is_empty() {
            return;
        }
        let lost = std::mem::take(&mut route.lost);
        route.given_up.extend(&lost);
        let mut seqs = route.drop_waiting(&lost);
        let on_lost = |lane: u32| super::route::partition_of(lane).is_some_and(|q| lost.contains(&q));
        let (records, buffered) = self.processor.drop_unowned(on_lost);
        for (one_id, journey, _, _) in &records {
            tracing::debug!(process = self.process_id(), %one_id, events = journey.as_ref().map_or(0, |j| j.total_events()), "journey given up");
        }
        seqs.extend(buffered);
        info!(
            partitions = ?lost,
            journeys = records.len(),
            messages = seqs.len(),
            "state partitions given up: their journeys go to the new owner through the changelog"
        );
        self.metrics
            .evidence
            .partitions_moved
            .with_label_values(&["dropped"])
            .inc_by(lost.len() as u64);
        if let Some(route) = self.route.as_mut() {
            route.dropped.extend(seqs);
            route.handed_off.extend(records);
        }
    }

    /// Announces the state partitions owned, less `restoring` (see
    /// `handoff.rs`).
    fn announce_settled(&self, restoring: &[u32]) {
        let (Some(m), Some(o)) = (
            self.route.as_ref().and_then(super::route::Route::membership),
            self.processor.ownership(),
        ) else {
            return;
        };
        m.announce(o.owned.iter().copied().filter(|q| !restoring.contains(q)).collect());
    }

    /// Those of `qs` another process still names (see `handoff.rs`).
    fn claimed_elsewhere(&self, qs: &[u32]) -> Vec<(u32, String)> {
        self.route
            .as_ref()
            .and_then(super::route::Route::membership)
            .map(|m| m.claimed_elsewhere(qs))
            .unwrap_or_default()
    }

    /// The handovers installing restored partitions made.
    fn restored_handovers(&mut self) -> Vec<super::record::OutRecord> {
        let Some(offset) = self.route.as_ref().map(super::route::Route::folded_to) else {
            return Vec::new();
        };
        self.handover_records(offset)
    }

    /// The partitions to restore, those given up and the messages to
    /// finish, taken.
    fn take_moves(&mut self) -> Moves {
        let Some(route) = self.route.as_mut() else {
            return Moves::default();
        };
        let steps = std::mem::take(&mut route.dropped)
            .into_iter()
            .map(|seq| Step::Done {
                seq,
                records: Vec::new(),
            })
            .collect();
        Moves {
            gained: std::mem::take(&mut route.gained),
            lost: std::mem::take(&mut route.given_up),
            handed_off: std::mem::take(&mut route.handed_off),
            dropped: steps,
        }
    }
}

/// What the last assignments changed, for [`Poll::settle_moves`].
#[derive(Default)]
struct Moves {
    gained: Vec<u32>,
    lost: Vec<u32>,
    handed_off: Vec<GivenUp>,
    dropped: Vec<Step>,
}

impl Poll {
    /// Writes the journeys of partitions given up to their changelog
    /// partitions at once, acknowledged, for the new owner's restore (it
    /// reads on while records keep arriving): their changes since the last
    /// checkpoint may come from messages of partitions this process keeps
    /// and commits, which the new owner never reads.
    async fn hand_off(&mut self, records: Vec<GivenUp>) -> anyhow::Result<()> {
        let started = Instant::now();
        let topic = self.settings.topics.journeys_changelog.clone();
        let applied_to = self.ingest.processor().applied_to();
        let changed: Changed = records
            .into_iter()
            .map(|(one_id, journey, timers, keys)| (one_id, journey, timers, (keys, applied_to)))
            .collect();
        let encoded = encode_records(changed, self.settings.state.partitions)?;
        let mut futures = Vec::with_capacity(encoded.len());
        for (partition, one_id, value) in &encoded {
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).partition(*partition).key(one_id);
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            futures.push(enqueue(self.in_flight.producer(), rec).await?);
        }
        acknowledged(futures)
            .await
            .context("handing journeys to their new owner")?;
        info!(
            journeys = encoded.len(),
            seconds = started.elapsed().as_secs_f64(),
            "journeys of partitions given up written for their new owner"
        );
        Ok(())
    }

    /// Restores the state partitions the last assignments gave this
    /// process and finishes the messages of those they took away. Called
    /// after the edge's events are applied, before the next message.
    pub(super) async fn settle_moves(&mut self) -> anyhow::Result<()> {
        let Moves {
            mut gained,
            lost,
            handed_off,
            dropped,
        } = self.ingest.take_moves();
        let moved = !gained.is_empty() || !lost.is_empty();
        if !lost.is_empty() {
            // A flush still running took these journeys at its barrier, as
            // they were then, and would write them after the newer ones
            // handed off here: a later restore of the partition takes the
            // latest record per One ID and would bring back the older one,
            // without the events applied since (their offsets committed by
            // then). So the hand-off waits for it.
            self.checkpoint
                .wait_flush(self.ingest.processor_mut(), &mut self.partitions)
                .await?;
        }
        for q in lost {
            let q = i32::try_from(q).context("a state partition number")?;
            self.partitions.forget(&(self.settings.topics.routed.clone(), q));
        }
        if !handed_off.is_empty() {
            self.hand_off(handed_off).await?;
        }
        if !dropped.is_empty() {
            self.in_flight.apply(dropped).await?;
        }
        // The journeys of partitions given up are written: they leave this
        // process's record now, and the new owner's restore stops waiting.
        if moved {
            self.ingest.announce_settled(&gained);
        }
        if gained.is_empty() {
            return Ok(());
        }
        gained.sort_unstable();
        let started = Instant::now();
        self.health.set_restored(false);
        self.wait_for_previous_owners(&gained).await;
        let reads = self.read(&gained).await?;
        let folded = self.fold_to_end().await?;
        let (since, totals) = self.install(reads);
        // Journeys merged away while their partition was between owners.
        let handovers = self.ingest.restored_handovers();
        if !handovers.is_empty() {
            self.in_flight
                .apply(vec![Step::Attach {
                    seq: None,
                    records: handovers,
                }])
                .await?;
        }
        let published = self.read_back(since).await?;
        let read_back = published.len();
        self.in_flight.also_published(published);
        self.metrics
            .evidence
            .partitions_moved
            .with_label_values(&["restored"])
            .inc_by(gained.len() as u64);
        self.ingest.announce_settled(&[]);
        self.health.set_restored(true);
        info!(
            partitions = ?gained,
            records_read = totals.0,
            identity_log_folded_to = folded,
            journeys = totals.1,
            orphans = totals.2,
            outputs_read_back = read_back,
            seconds = started.elapsed().as_secs_f64(),
            "state partitions restored from the journeys changelog"
        );
        Ok(())
    }

    /// Waits until no other process's members record names one of
    /// `gained` (it wrote their journeys for this process and said so), or
    /// [`HANDOFF_WAIT`] passed (it stopped without saying so: its journeys
    /// since its last checkpoint come from re-reading the routed partition
    /// instead, and decisions made again may be published twice).
    async fn wait_for_previous_owners(&self, gained: &[u32]) {
        let started = Instant::now();
        let mut claimed = self.ingest.claimed_elsewhere(gained);
        if claimed.is_empty() {
            return;
        }
        info!(
            ?claimed,
            "waiting for the previous owners to write the journeys of these partitions"
        );
        while !claimed.is_empty() && started.elapsed() < HANDOFF_WAIT {
            self.health.beat();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            claimed = self.ingest.claimed_elsewhere(gained);
        }
        let seconds = started.elapsed().as_secs_f64();
        if claimed.is_empty() {
            info!(seconds, "the previous owners let the partitions go");
        } else {
            self.metrics
                .evidence
                .partitions_moved
                .with_label_values(&["not_let_go"])
                .inc_by(claimed.len() as u64);
            warn!(
                ?claimed,
                seconds,
                "the previous owners did not let these partitions go (stopped?): restoring what the changelog holds"
            );
        }
    }

    /// Installs the records read (see `Processor::install_partition`).
    /// Returns where each output partition's read-back starts (the
    /// earliest of the markers' ends) and the totals: records read,
    /// journeys installed, orphans.
    fn install(&mut self, reads: Vec<ReadPartition>) -> (Vec<OutputEnd>, (u64, usize, usize)) {
        let mut since: Vec<OutputEnd> = Vec::new();
        let mut totals = (0u64, 0usize, 0usize);
        for read in reads {
            for (topic, p, end) in read.marker.map(|m| m.outputs).unwrap_or_default() {
                match since.iter_mut().find(|(t, x, _)| *t == topic && *x == p) {
                    Some(s) => s.2 = s.2.min(end),
                    None => since.push((topic, p, end)),
                }
            }
            totals.0 += read.read;
            if tracing::enabled!(tracing::Level::DEBUG) {
                let graph = &self.ingest.processor().state().identity;
                let process = self.ingest.process_id();
                for (one_id, journey, _, keys) in &read.records {
                    let events = journey.as_ref().map_or(0, |j| j.total_events());
                    let live = graph.with_profile(one_id, |_| ()).is_some();
                    tracing::debug!(process, %one_id, events, keys = keys.len(), live, "journey record restored");
                }
            }
            let installed = self
                .ingest
                .processor_mut()
                .install_partition(read.records, read.applied_to);
            totals.1 += installed.journeys;
            totals.2 += installed.orphans;
            self.metrics
                .evidence
                .partition_records_restored
                .inc_by(installed.journeys as u64);
        }
        (since, totals)
    }

    /// Folds the identity log up to its end as it is now, before restored
    /// records are installed: a record names profiles as its writer's graph
    /// had them, and that writer had folded at most what the log held when
    /// this process read the record. Installed on a graph that is behind, a
    /// record of a profile created later would look merged away and be left
    /// out (a restarted process folds the whole log while its partitions
    /// are assigned: whole journeys and the early events of merged ones
    /// were lost so, measured). Returns the offset folded to; a log that
    /// cannot be read for [`FOLD_WAIT`] stops the engine (a restart resumes).
    async fn fold_to_end(&mut self) -> anyhow::Result<i64> {
        let Some(mut reader) = self.evidence.take() else {
            return Ok(0);
        };
        let folded = self.fold_reader_to_end(&mut reader).await;
        self.evidence = Some(reader);
        folded
    }

    async fn fold_reader_to_end(&mut self, reader: &mut EvidenceReader) -> anyhow::Result<i64> {
        let end = reader.end().await?;
        let deadline = Instant::now() + FOLD_WAIT;
        while reader.position() < end {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::time::timeout(left, reader.recv()).await.map_err(|_| {
                anyhow::anyhow!(
                    "the identity log was not read to offset {end} within {FOLD_WAIT:?} (at {}): \
                     restored state partitions cannot be installed on a graph that is behind",
                    reader.position()
                )
            })?;
            self.health.beat();
            if !self.evidence_record(r).await? {
                // The ack stage stopped; its error is reported.
                break;
            }
        }
        Ok(reader.position())
    }

    /// Reads journeys changelog partitions `qs`, off the async workers.
    async fn read(&self, qs: &[u32]) -> anyhow::Result<Vec<ReadPartition>> {
        let settings = self.settings.clone();
        let health = self.health.clone();
        let qs: Vec<i32> = qs.iter().filter_map(|q| i32::try_from(*q).ok()).collect();
        tokio::task::spawn_blocking(move || read_partitions(&settings, &qs, |_| health.beat()))
            .await
            .context("reading journeys changelog partitions: the task panicked")?
            .context("restoring state partitions from the journeys changelog")
    }

    /// The outputs published after `since`, read back off the async workers.
    async fn read_back(&self, since: Vec<(String, i32, i64)>) -> anyhow::Result<crate::durable::Published> {
        let settings = self.settings.clone();
        let health = self.health.clone();
        tokio::task::spawn_blocking(move || crate::durable::read_published(&settings, &since, |_| health.beat()))
            .await
            .context("reading back published outputs: the task panicked")?
            .context("reading back the outputs published after a state partition's last checkpoint")
    }
}
