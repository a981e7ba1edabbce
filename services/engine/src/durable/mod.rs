//! Durable state: snapshots of the core with the input offsets they cover,
//! and the output records already published after the last snapshot.
//!
//! In: the core's state and the offsets the checkpoint hands over. Out: a
//! snapshot file ([`snapshot`]) and, at start, the records published since it
//! ([`published`]); without a snapshot, whether starting empty is safe and
//! where a rebuild starts ([`fresh`]); at every start, the suppression
//! entries of every erasure so far ([`erasures`]). What it keeps: nothing in
//! memory; the file and its previous generation on disk.
//!
//! After a crash the engine restores the snapshot and re-reads its inputs from
//! the offsets in the header. Processing is deterministic, so it regenerates
//! records that were already published after the snapshot: [`Published`]
//! reads those records back from the output topics (from the end offsets the
//! header recorded) and the pipeline skips each one once.

pub mod changelog;
mod checksum;
pub mod decoding;
pub mod erasures;
pub mod fresh;
pub mod journey_record;
pub mod partition;
pub mod published;
pub mod snapshot;

pub use published::{fingerprint, read_published, Published};
pub use snapshot::{path, prev_path, read, read_latest, remove_partial, write, Header, Loaded, SnapshotError};
