//! The outputs already published after the last snapshot, read back at
//! start so that re-processing does not publish them twice.
//!
//! In: the snapshot's output end offsets. Out: [`Published`], the records
//! found after them on the output topics, each of which the pipeline skips
//! once when re-processing regenerates it. It keeps one count per record
//! identity (see [`Published`]); the records themselves are not kept.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Settings, Topics};
use crate::kafka::resume::{ResumeCheck, Resumed};

/// Output records published after the last snapshot, each to be skipped once
/// when re-processing regenerates it.
///
/// A record's identity: on `next-best-actions` its `action_id` (the contract's
/// "same action_id = same decision": re-processing may see the decision's
/// context slightly differently, e.g. a value tier computed over customers
/// interleaved differently, and must still not send it twice); on
/// `churn-risk` its One ID, trigger and evaluation time; on `erasures` the
/// forget command it records (`command`: one record per command, even when
/// re-processing from an older snapshot finds the profile a little
/// different); a `forget` notice on `identity-changes` its One ID (a profile
/// is forgotten once; the notice's `at` is the event time applied when the
/// command came, which re-processing can see earlier); elsewhere the topic,
/// key, payload and headers.
#[derive(Debug, Default)]
pub struct Published {
    records: HashMap<u64, u32>,
    actions_topic: String,
    churn_topic: String,
    erasures_topic: String,
    identity_topic: String,
}

impl Published {
    pub fn len(&self) -> usize {
        self.records.values().map(|n| *n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn new(topics: &Topics) -> Self {
        Published {
            records: HashMap::new(),
            actions_topic: topics.next_best_actions.clone(),
            churn_topic: topics.churn_risk.clone(),
            erasures_topic: topics.erasures.clone(),
            identity_topic: topics.identity_changes.clone(),
        }
    }

    /// The identity of a record (see the type's documentation).
    pub fn identity(&self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> u64 {
        let field = |v: &serde_json::Value, f: &str| v.get(f).map(ToString::to_string).unwrap_or_default();
        let by_field = [
            &self.actions_topic,
            &self.churn_topic,
            &self.erasures_topic,
            &self.identity_topic,
        ];
        if by_field.iter().any(|t| **t == topic) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                let id = if topic == self.actions_topic {
                    field(&v, "action_id")
                } else if topic == self.erasures_topic {
                    field(&v, "command")
                } else if topic == self.identity_topic {
                    if v.get("change").and_then(serde_json::Value::as_str) != Some("forget") {
                        return fingerprint(topic, key, payload, headers.iter().copied());
                    }
                    format!("forget {}", field(&v, "one_id"))
                } else {
                    format!(
                        "{} {} {}",
                        field(&v, "one_id"),
                        field(&v, "evaluated_at"),
                        field(&v, "trigger")
                    )
                };
                return fingerprint(topic, None, id.as_bytes(), std::iter::empty());
            }
        }
        fingerprint(topic, key, payload, headers.iter().copied())
    }

    /// Adds `other`'s records (another read-back).
    pub fn merge(&mut self, other: Published) {
        if self.actions_topic.is_empty() {
            self.actions_topic = other.actions_topic;
            self.churn_topic = other.churn_topic;
            self.erasures_topic = other.erasures_topic;
            self.identity_topic = other.identity_topic;
        }
        for (id, n) in other.records {
            *self.records.entry(id).or_insert(0) += n;
        }
    }

    pub fn add(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) {
        let id = self.identity(topic, key, payload, headers);
        *self.records.entry(id).or_insert(0) += 1;
    }

    /// True (and forgets one copy) when this record was already published.
    pub fn take(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> bool {
        let id = self.identity(topic, key, payload, headers);
        match self.records.get_mut(&id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.records.remove(&id);
                true
            }
            None => false,
        }
    }
}

/// A hash of an output record: topic, key, payload and header values.
pub fn fingerprint<'a>(
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    topic.hash(&mut h);
    key.hash(&mut h);
    payload.hash(&mut h);
    for (k, v) in headers {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// The end offset of each output partition still to read to.
pub type Ends = HashMap<(String, i32), i64>;

/// A consumer assigned to the output partitions at `since`, and the end
/// offset of each that has records past it.
fn assign_since(
    settings: &Settings,
    since: &[(String, i32, i64)],
    until: &Ends,
    timeout: Duration,
) -> anyhow::Result<(BaseConsumer, Ends, Duration)> {
    let mut config = crate::kafka::base_config(settings);
    crate::kafka::reader_defaults(&mut config);
    let quiet = quiet_after(config.get("fetch.wait.max.ms"));
    let consumer: BaseConsumer = config
        .set("group.id", format!("{}-reconcile", settings.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (topic, partition, from) in since {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*from))?;
        let end = until.get(&(topic.clone(), *partition)).map_or(high, |u| high.max(*u));
        if end > *from {
            ends.insert((topic.clone(), *partition), end);
        }
    }
    consumer.assign(&tpl)?;
    Ok((consumer, ends, quiet))
}

/// How long a read goes on past the end offsets while nothing arrives: three
/// fetch waits (`fetch.wait.max.ms`, librdkafka's 500 ms when unset, 10 ms by
/// [`crate::kafka::reader_defaults`]), at least 250 ms and at most 1.5 s.
/// The records a short end offset leaves out (tansu's) are on the broker
/// already: the next fetch brings them.
fn quiet_after(fetch_wait_ms: Option<&str>) -> Duration {
    let wait = fetch_wait_ms.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(500);
    Duration::from_millis(wait.saturating_mul(3).clamp(250, 1500))
}

/// Reads every record published to the output topics after `since` (a
/// snapshot's end offsets). Blocking: call it off the async workers.
/// `progress` hears how many records were read, at least every 250 ms.
pub fn read_published(
    settings: &Settings,
    since: &[(String, i32, i64)],
    progress: impl FnMut(u64),
) -> anyhow::Result<Published> {
    let mut published = Published::new(&settings.topics);
    read_since(settings, since, progress, |m| {
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|x| (x.key, x.value)).collect())
            .unwrap_or_default();
        published.add(m.topic(), m.key(), m.payload().unwrap_or_default(), &headers);
    })?;
    Ok(published)
}

/// Reads every record of the partitions `since` names, from the offsets it
/// gives to their ends and on until nothing more arrives for a while, and
/// hands each to `each`. Blocking: call it off the async workers.
pub fn read_since(
    settings: &Settings,
    since: &[(String, i32, i64)],
    progress: impl FnMut(u64),
    each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    read_since_until(settings, since, &Ends::new(), progress, each)
}

/// As [`read_since`], reading each partition `until` names at least to the
/// offset it gives (exclusive), whatever end offset the broker reports:
/// the ends a reader knows from what it wrote (a checkpoint marker's chain).
pub fn read_since_until(
    settings: &Settings,
    since: &[(String, i32, i64)],
    until: &Ends,
    mut progress: impl FnMut(u64),
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    if since.is_empty() {
        return Ok(());
    }
    let timeout = Duration::from_secs(30);
    let (consumer, mut ends, quiet_after) = assign_since(settings, since, until, timeout)?;
    let mut starting: HashMap<(String, i32), ResumeCheck> = since
        .iter()
        .map(|(t, p, from)| ((t.clone(), *p), ResumeCheck::new(*from)))
        .collect();
    // Read to the end offsets, then on until nothing arrives for a while: a
    // broker may report an end offset a record or two short (tansu 0.6 does
    // when the last batch held several), and a record missed here would be
    // published twice.
    let started = std::time::Instant::now();
    let mut last_message = started;
    let mut read = 0;
    loop {
        // Up to the end offsets it takes what it takes (a rebuild reads
        // every retained output); past them, records that keep coming are
        // another writer's, not ours.
        anyhow::ensure!(
            !ends.is_empty() || started.elapsed() < Duration::from_secs(300),
            "reading back published outputs did not finish within 300 s"
        );
        let quiet = last_message.elapsed() > quiet_after;
        if ends.is_empty() && quiet {
            break;
        }
        progress(read);
        let Some(m) = consumer.poll(quiet_after / 5) else {
            // Nothing more for long past where the end offsets said: done.
            if quiet && last_message.elapsed() > Duration::from_secs(10) {
                break;
            }
            continue;
        };
        let m = m?;
        read += 1;
        last_message = std::time::Instant::now();
        let k = (m.topic().to_string(), m.partition());
        if let Some(check) = starting.get_mut(&k) {
            match check.record(m.offset()) {
                Resumed::Skip => continue,
                Resumed::Rewind(back) => {
                    consumer.seek(m.topic(), m.partition(), Offset::Offset(back), timeout)?;
                    continue;
                }
                Resumed::Contiguous | Resumed::Missing => {
                    starting.remove(&k);
                }
            }
        }
        each(&m);
        if ends.get(&k).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_waits_three_fetch_waits_past_its_ends_within_bounds() {
        assert_eq!(quiet_after(Some("10")), Duration::from_millis(250));
        assert_eq!(quiet_after(Some("200")), Duration::from_millis(600));
        assert_eq!(quiet_after(None), Duration::from_millis(1500));
        assert_eq!(quiet_after(Some("60000")), Duration::from_millis(1500));
        assert_eq!(quiet_after(Some("soon")), Duration::from_millis(1500));
    }

    #[test]
    fn published_records_are_skipped_once_per_copy() {
        let topics = Topics {
            next_best_actions: "nba".into(),
            churn_risk: "churn".into(),
            erasures: "erasures".into(),
            identity_changes: "changes".into(),
            ..crate::config::Settings::defaults().unwrap().topics
        };
        let mut p = Published::new(&topics);
        p.add("t", Some(b"k"), b"v", &[]);
        p.add("t", Some(b"k"), b"v", &[]);
        assert!(p.take("t", Some(b"k"), b"v", &[]));
        assert!(p.take("t", Some(b"k"), b"v", &[]));
        assert!(!p.take("t", Some(b"k"), b"v", &[]));
        assert!(p.is_empty());
        p.add("dead", Some(b"k"), b"v", &[("dlq.offset", Some(&b"1"[..]))]);
        assert!(!p.take("dead", Some(b"k"), b"v", &[("dlq.offset", Some(&b"2"[..]))]));
        assert!(!p.take("t", Some(b"k"), b"w", &[]));
        // A decision is the same decision by its action id, whatever else changed.
        p.add("nba", Some(b"oj-1"), br#"{"action_id":"act-1","reason":"tier b"}"#, &[]);
        assert!(!p.take("nba", Some(b"oj-1"), br#"{"action_id":"act-2","reason":"tier b"}"#, &[]));
        assert!(p.take("nba", Some(b"oj-1"), br#"{"action_id":"act-1","reason":"tier c"}"#, &[]));
        p.add(
            "churn",
            None,
            br#"{"one_id":"oj-1","evaluated_at":"t","trigger":{"kind":"timer"},"band":"high"}"#,
            &[],
        );
        assert!(p.take(
            "churn",
            None,
            br#"{"one_id":"oj-1","evaluated_at":"t","trigger":{"kind":"timer"},"band":"medium"}"#,
            &[]
        ));
        // An erasure is the same erasure by the command it records.
        p.add(
            "erasures",
            Some(b"oj-1"),
            br#"{"one_id":"oj-1","suppressed":[1,2],"command":{"topic":"c","partition":0,"offset":4}}"#,
            &[],
        );
        assert!(!p.take(
            "erasures",
            Some(b"oj-1"),
            br#"{"one_id":"oj-1","suppressed":[1],"command":{"topic":"c","partition":0,"offset":5}}"#,
            &[]
        ));
        assert!(p.take(
            "erasures",
            Some(b"oj-1"),
            br#"{"one_id":"oj-1","suppressed":[1],"command":{"topic":"c","partition":0,"offset":4}}"#,
            &[]
        ));
        // A profile is forgotten once, whatever event time the notice carries; merges by content.
        p.add(
            "changes",
            Some(b"oj-1"),
            br#"{"change":"forget","one_id":"oj-1","at":"t1"}"#,
            &[],
        );
        assert!(!p.take(
            "changes",
            Some(b"oj-2"),
            br#"{"change":"forget","one_id":"oj-2","at":"t1"}"#,
            &[]
        ));
        assert!(p.take(
            "changes",
            Some(b"oj-1"),
            br#"{"change":"forget","one_id":"oj-1","at":"t0"}"#,
            &[]
        ));
        p.add(
            "changes",
            Some(b"oj-1"),
            br#"{"change":"merge","one_id":"oj-1","at":"t1"}"#,
            &[],
        );
        assert!(!p.take(
            "changes",
            Some(b"oj-1"),
            br#"{"change":"merge","one_id":"oj-1","at":"t0"}"#,
            &[]
        ));
    }
}
