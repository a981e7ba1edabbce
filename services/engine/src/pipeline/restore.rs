//! Restore: the state and offsets of the last snapshot, at start.
//!
//! In: the snapshot file of this consumer group. Out: the core's state loaded
//! into the processor, the snapshot's [`Header`] (where each input partition
//! resumes, where each output partition ended) and the records published
//! after it ([`Published`]), read back so that re-processing does not publish
//! them twice. It keeps nothing.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::Processor;
use tracing::info;

use crate::config::Settings;
use crate::durable::{self, Header, Published};

/// Loads the last snapshot into `processor` and reads back what was published
/// after it. No snapshot: empty state, nothing to skip.
pub async fn restore(settings: &Arc<Settings>, processor: &mut Processor) -> anyhow::Result<(Header, Published)> {
    let path = durable::path(settings);
    let started = Instant::now();
    let read_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || durable::read(&read_path))
        .await
        .context("the snapshot reader panicked")??;
    let Some((header, core)) = loaded else {
        info!(path = %path.display(), "no state snapshot: starting with empty state");
        return Ok((Header::default(), Published::default()));
    };
    let profiles = core.profiles();
    processor
        .restore(core, 0)
        .with_context(|| format!("restoring {}", path.display()))?;
    let read_at = started.elapsed();
    let s = settings.clone();
    let since = header.outputs.clone();
    let published = tokio::task::spawn_blocking(move || durable::read_published(&s, &since))
        .await
        .context("reading back published outputs panicked")?
        .context("reading back the outputs published after the snapshot")?;
    info!(
        path = %path.display(),
        profiles,
        read_seconds = read_at.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        published_after_snapshot = published.len(),
        "state restored"
    );
    Ok((header, published))
}
