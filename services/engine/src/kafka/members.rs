//! The member directory (scale-out, `docs/scaling.md` section 5): which
//! process owns which state partition and where its HTTP port is, so that a
//! profile lookup on any process is answered by the owner of the journey,
//! as Kafka Streams' interactive queries are.
//!
//! In: this process's owned routed partitions once each assignment is
//! settled (a `watch` channel from the pipeline, `pipeline/handoff.rs`);
//! the records of `topics.members` (1 partition, compacted), every
//! process's. Out: one record per change of this process's ownership (key =
//! its instance id; value = JSON `{instance, http, partitions, at_ms}`), a
//! tombstone when it stops, and the directory the HTTP lookups and the
//! hand-off wait read (`http::forward::Directory`). Keeps the latest record
//! of every process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::whole_topic_reader;
use crate::config::Settings;
use crate::http::forward::{Directory, Member};

/// Reads `topics.members` from its start into `directory` until cancelled.
pub async fn follow(s: &Settings, directory: Arc<Directory>, cancel: CancellationToken) -> anyhow::Result<()> {
    let consumer = whole_topic_reader(s, "members", &s.topics.members)?;
    // The pipeline creates the topic: until then reads fail; say so once
    // every 30 s at most.
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    warn!(error = %e, topic = %s.topics.members, "reading the members topic; retrying");
                    warned = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        match m.payload().map(serde_json::from_slice::<Member>) {
            None => directory.upsert(key, None),
            Some(Ok(member)) => directory.upsert(key, Some(member)),
            Some(Err(e)) => warn!(error = %e, "a members record that is not a member; ignored"),
        }
    }
}

/// Publishes this process's record whenever its owned partitions change
/// (the first after its first assignment, when the pipeline has created
/// the topic), and a tombstone when cancelled.
pub async fn announce(
    producer: FutureProducer,
    topic: String,
    instance: String,
    http: String,
    mut owned: watch::Receiver<Vec<u32>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        changed = owned.changed() => if changed.is_err() { return Ok(()) },
    }
    loop {
        let partitions = owned.borrow_and_update().clone();
        let member = Member {
            instance: instance.clone(),
            http: http.clone(),
            partitions,
            at_ms: crate::clock::unix_ms(),
        };
        let payload = serde_json::to_vec(&member).context("encoding the members record")?;
        // Until it is published, the others cannot forward lookups here:
        // retried every second (a newer assignment replaces it).
        loop {
            let record = FutureRecord::to(&topic).key(&instance).payload(&payload);
            match producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => break,
                Err((e, _)) => warn!(error = %e, "publishing this process's members record failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if owned.has_changed().unwrap_or(false) {
                break;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = owned.changed() => if changed.is_err() { break },
        }
    }
    let tombstone: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key(&instance);
    if let Err((e, _)) = producer.send(tombstone, Duration::from_secs(5)).await {
        warn!(error = %e, "removing this process's members record failed");
    }
    Ok(())
}
