//! The erasure records of earlier runs, read back at start.
//!
//! In: the erasure topic (`topics.erasures`), every partition from its first
//! retained record to its end. Out: [`Erasures`], every suppression entry
//! those records carry, which the pipeline installs in the identity graph
//! before it reads any input: a rebuild (or a restore from a snapshot older
//! than a forget) then ignores the forgotten identifiers from the first
//! event on, whatever order the inputs come in. It keeps nothing.
//!
//! A record that cannot be read is logged by where it is (never by its
//! content) and counted; the others still hold. Blocking: call it off the
//! async workers.

use rdkafka::message::Message;
use serde::Deserialize;
use tracing::error;

use super::{fresh, published};
use crate::config::Settings;

/// What the erasure topic holds.
#[derive(Debug, Default)]
pub struct Erasures {
    pub records: u64,
    /// Every suppression entry, in the order read (repeats possible).
    pub entries: Vec<[u8; 16]>,
    /// Records that are not erasure records (written by something else).
    pub unreadable: u64,
}

/// The fields of an erasure record a restart needs.
#[derive(Deserialize)]
struct Record {
    suppressed: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    entry: String,
}

/// The suppression entries of one record; `None` when it is not one.
pub fn entries_of(payload: &[u8]) -> Option<Vec<[u8; 16]>> {
    let r: Record = serde_json::from_slice(payload).ok()?;
    r.suppressed
        .iter()
        .map(|e| {
            let mut out = [0u8; 16];
            hex::decode_to_slice(&e.entry, &mut out).ok()?;
            Some(out)
        })
        .collect()
}

/// Reads the whole erasure topic. `progress` hears how many records were read.
pub fn read(settings: &Settings, progress: impl FnMut(u64)) -> anyhow::Result<Erasures> {
    let since = fresh::starts(settings, &[settings.topics.erasures.as_str()])?;
    let mut out = Erasures::default();
    published::read_since(settings, &since, progress, |m| {
        out.records += 1;
        match entries_of(m.payload().unwrap_or_default()) {
            Some(entries) => out.entries.extend(entries),
            None => {
                out.unreadable += 1;
                error!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "an erasure record could not be read: its suppression entries are not installed"
                );
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_from_the_records_suppressed_list() {
        let one = "00112233445566778899aabbccddeeff";
        let record =
            format!(r#"{{"one_id":"oj-1","suppressed":[{{"namespace":"customer_id","entry":"{one}"}}],"via":"http"}}"#);
        let entries = entries_of(record.as_bytes()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(hex::encode(entries[0]), one);
        assert_eq!(entries_of(b"not json"), None);
        assert_eq!(entries_of(br#"{"suppressed":[{"entry":"abc"}]}"#), None, "not 16 bytes");
        assert_eq!(entries_of(br#"{"one_id":"x"}"#), None);
    }
}
