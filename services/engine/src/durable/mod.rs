//! Durable state: snapshots of the core with the input offsets they cover,
//! and the output records already published after the last snapshot.
//!
//! In: the core's state and the offsets the checkpoint hands over. Out: a
//! snapshot file ([`snapshot`]) and, at start, the records published since it
//! ([`published`]). What it keeps: nothing in memory; the file on disk.
//!
//! After a crash the engine restores the snapshot and re-reads its inputs from
//! the offsets in the header. Processing is deterministic, so it regenerates
//! records that were already published after the snapshot: [`Published`]
//! reads those records back from the output topics (from the end offsets the
//! header recorded) and the pipeline skips each one once.

pub mod published;
pub mod snapshot;

pub use published::{fingerprint, read_published, Published};
pub use snapshot::{path, read, write, Header, SnapshotError};
