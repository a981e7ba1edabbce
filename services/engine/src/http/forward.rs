//! Lookups answered by the owner of the journey (scale-out,
//! `scaleout.route_journeys`, `docs/scaling.md` section 5), as Kafka
//! Streams' interactive queries are.
//!
//! In: a profile lookup whose One ID's state partition another process
//! owns, by the member directory ([`Directory`], which `kafka::members`
//! fills from the members topic). Out: that process's
//! answer as it gave it (status and body), or 503 naming it when it does
//! not answer. A request that was forwarded once is answered where it
//! lands, never forwarded again (two directories may disagree for a
//! moment during a rebalance). Keeps an HTTP client.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use onejourney_core::processor::state_partition;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One process's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub instance: String,
    /// Where its HTTP API answers (`host:port`).
    pub http: String,
    /// The state partitions (routed partitions) it owns.
    pub partitions: Vec<u32>,
    /// When it wrote this record (wall clock, ms): of two processes naming
    /// one partition (one has not written since it lost it), the newer wins.
    pub at_ms: u64,
}

/// Every process's latest record, shared with the HTTP API.
#[derive(Default)]
pub struct Directory {
    members: RwLock<BTreeMap<String, Member>>,
}

impl Directory {
    /// The process that owns state partition `q` now, by its newest record.
    pub fn owner_of(&self, q: u32) -> Option<Member> {
        self.newest_naming(q, |_| true)
    }

    /// Another process than `me` whose record still names state partition
    /// `q` (the newest such record): it has not written q's journeys for
    /// its next owner yet, or it stopped without saying so.
    pub fn claimed_elsewhere(&self, q: u32, me: &str) -> Option<String> {
        self.newest_naming(q, |m| *m.instance != *me).map(|m| m.instance)
    }

    /// The newest record that names `q`, among those `which` keeps.
    fn newest_naming(&self, q: u32, which: impl Fn(&Member) -> bool) -> Option<Member> {
        let members = self.members.read().ok()?;
        members
            .values()
            .filter(|m| which(m) && m.partitions.contains(&q))
            .max_by_key(|m| m.at_ms)
            .cloned()
    }

    /// A process's new record (`None`: its tombstone). A record naming a
    /// partition takes it from every older record that still names it (a
    /// process that crashed never says it gave a partition up), so that
    /// each partition is named by one record at most.
    pub(crate) fn upsert(&self, key: &str, record: Option<Member>) {
        if let Ok(mut members) = self.members.write() {
            match record {
                Some(m) => {
                    for (k, other) in members.iter_mut() {
                        if k != key && other.at_ms < m.at_ms {
                            other.partitions.retain(|q| !m.partitions.contains(q));
                        }
                    }
                    members.insert(key.to_string(), m)
                }
                None => members.remove(key),
            };
        }
    }

    /// How many processes have a record.
    pub fn len(&self) -> usize {
        self.members.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The header a forwarded lookup carries: the forwarding process's id.
pub const FORWARDED_BY: &str = "x-onejourney-forwarded-by";

/// How long the owner has to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Owners {
    /// `state.partitions`.
    pub partitions: u32,
    /// This process's id in the directory.
    pub me: Arc<str>,
    pub directory: Arc<Directory>,
    /// The state partitions this process owns and has restored (from the
    /// pipeline, `pipeline/handoff.rs`, before its own record is back from
    /// the members topic).
    pub own: tokio::sync::watch::Receiver<Vec<u32>>,
    pub client: reqwest::Client,
}

/// Where a profile's journey is answered from.
pub enum Owner {
    Here,
    There(Member),
    /// No process has said it owns the partition yet.
    Unknown(u32),
}

impl Owners {
    pub fn new(
        partitions: u32,
        me: Arc<str>,
        directory: Arc<Directory>,
        own: tokio::sync::watch::Receiver<Vec<u32>>,
    ) -> anyhow::Result<Owners> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("building the lookup forwarding client: {e}"))?;
        Ok(Owners {
            partitions,
            me,
            directory,
            own,
            client,
        })
    }

    /// Who answers for `one_id`; `headers`: the request's (a forwarded one
    /// is answered here).
    pub fn of(&self, one_id: &str, headers: &HeaderMap) -> Owner {
        if headers.contains_key(FORWARDED_BY) {
            return Owner::Here;
        }
        let q = state_partition(one_id, self.partitions);
        if self.own.borrow().contains(&q) {
            return Owner::Here;
        }
        match self.directory.owner_of(q) {
            Some(m) if *m.instance == *self.me => Owner::Here,
            Some(m) => Owner::There(m),
            None => Owner::Unknown(q),
        }
    }

    /// The owner's answer to the same lookup (`POST /v1/profiles/lookup`,
    /// the identifier in the body, the caller's bearer token passed on).
    pub async fn ask(&self, owner: &Member, namespace: &str, value: &str, headers: &HeaderMap) -> Response {
        let url = format!("http://{}/v1/profiles/lookup", owner.http);
        let mut req = self
            .client
            .post(&url)
            .header(FORWARDED_BY, &*self.me)
            .json(&json!({ "namespace": namespace, "value": value }));
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            req = req.header(header::AUTHORIZATION, auth.as_bytes());
        }
        let answer = match req.send().await {
            Ok(r) => {
                let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                r.bytes().await.map(|body| (status, body))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok((status, body)) => (
                status,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(e) => unavailable(&format!(
                "the journey of this profile is held by process {} ({}), which did not answer: {}",
                owner.instance,
                owner.http,
                e.without_url()
            )),
        }
    }
}

/// 503 with a reason.
pub fn unavailable(message: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> Owners {
        let directory = Arc::new(Directory::default());
        for (name, http, partitions) in [("a", "127.0.0.1:9", vec![0, 1]), ("b", "127.0.0.1:1", vec![2, 3])] {
            directory.upsert(
                name,
                Some(Member {
                    instance: name.into(),
                    http: http.into(),
                    partitions,
                    at_ms: 1,
                }),
            );
        }
        let (_, own) = tokio::sync::watch::channel(Vec::new());
        Owners::new(4, Arc::from("a"), directory, own).unwrap()
    }

    /// A One ID whose state partition is `q` of 4.
    fn one_id_in(q: u32) -> String {
        (0..)
            .map(|i| format!("oj-{i}"))
            .find(|o| state_partition(o, 4) == q)
            .unwrap()
    }

    #[test]
    fn a_lookup_goes_to_the_owner_of_its_partition_once() {
        let o = owners();
        let none = HeaderMap::new();
        assert!(matches!(o.of(&one_id_in(1), &none), Owner::Here));
        assert!(matches!(o.of(&one_id_in(2), &none), Owner::There(m) if m.instance == "b"));
        // Forwarded once: answered where it lands, whatever the directory says.
        let mut forwarded = HeaderMap::new();
        forwarded.insert(FORWARDED_BY, HeaderValue::from_static("b"));
        assert!(matches!(o.of(&one_id_in(2), &forwarded), Owner::Here));
        // Nobody has said it owns partition 3 any more.
        o.directory.upsert("b", None);
        assert!(matches!(o.of(&one_id_in(3), &none), Owner::Unknown(3)));
    }

    #[tokio::test]
    async fn an_owner_that_does_not_answer_is_named_in_a_503() {
        let o = owners();
        let Owner::There(b) = o.of(&one_id_in(2), &HeaderMap::new()) else {
            panic!("b owns partition 2");
        };
        let r = o.ask(&b, "customer_id", "C-1", &HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("process b (127.0.0.1:1)"), "{text}");
        assert!(!text.contains("C-1"), "the identifier in an error text: {text}");
    }

    fn member(instance: &str, partitions: &[u32], at_ms: u64) -> Member {
        Member {
            instance: instance.into(),
            http: format!("{instance}:9100"),
            partitions: partitions.to_vec(),
            at_ms,
        }
    }

    #[test]
    fn the_newest_record_naming_a_partition_owns_it() {
        let d = Directory::default();
        d.upsert("a", Some(member("a", &[0, 1], 10)));
        d.upsert("b", Some(member("b", &[2], 11)));
        assert_eq!(d.owner_of(1).map(|m| m.instance), Some("a".into()));
        // b took partition 1 over; a has not written since.
        d.upsert("b", Some(member("b", &[1, 2], 20)));
        assert_eq!(d.owner_of(1).map(|m| m.instance), Some("b".into()));
        assert_eq!(d.owner_of(0).map(|m| m.instance), Some("a".into()));
        // a stopped: its tombstone removes it.
        d.upsert("a", None);
        assert_eq!(d.owner_of(0), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_partition_is_claimed_elsewhere_until_its_owner_lets_it_go() {
        let d = Directory::default();
        d.upsert("a", Some(member("a", &[0, 1], 10)));
        d.upsert("b", Some(member("b", &[2], 11)));
        // b was given partition 1: a still names it (its journeys not yet
        // written for b); b's own record does not count.
        assert_eq!(d.claimed_elsewhere(1, "b"), Some("a".into()));
        assert_eq!(d.claimed_elsewhere(2, "b"), None);
        assert_eq!(d.claimed_elsewhere(3, "b"), None);
        // a wrote them and says so.
        d.upsert("a", Some(member("a", &[0], 12)));
        assert_eq!(d.claimed_elsewhere(1, "b"), None);
        // a crashed holding 0 and never said it let it go; c claimed 0
        // later: a's record no longer names it, for anyone.
        d.upsert("c", Some(member("c", &[0], 20)));
        assert_eq!(d.claimed_elsewhere(0, "b"), Some("c".into()));
        d.upsert("c", Some(member("c", &[], 21)));
        assert_eq!(d.claimed_elsewhere(0, "b"), None, "a's older claim went with c's");
        assert_eq!(d.owner_of(0), None);
        // An older record arriving late takes nothing from a newer one.
        d.upsert("b", Some(member("b", &[5], 30)));
        d.upsert("a", Some(member("a", &[5], 25)));
        assert_eq!(d.owner_of(5).map(|m| m.instance), Some("b".into()));
    }
}
