//! The state readers share with the single writer: the identity graph and
//! the journeys, both keyed for lock-free reads.
//!
//! In: written only by the [`Processor`](crate::processor::Processor).
//! Out: read by the lookup API (see [`view`](crate::view)) and by metrics
//! ([`State::approx_bytes`]). Keeps every profile and every journey.

use std::sync::Arc;

use crate::hash::DashMap;
use crate::identity::{IdentityGraph, OneId};
use crate::ids::Namespaces;
use crate::journey::{CartLine, Journey, RecentAction};

/// State shared with readers (the lookup API): the identity graph and the
/// journeys, both keyed for lock-free reads.
pub struct State {
    pub identity: IdentityGraph,
    pub journeys: DashMap<OneId, Box<Journey>>,
}

impl State {
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        State {
            identity: IdentityGraph::new(namespaces),
            journeys: DashMap::default(),
        }
    }

    /// An estimate of the bytes the state holds: the sizes of its structures
    /// and strings plus a fixed per-entry overhead for the hash maps. It walks
    /// every entry, so call it at scrape time, not per event.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        const MAP_ENTRY: usize = 16;
        let identity = self.identity.approx_bytes();
        let journeys: usize = self
            .journeys
            .iter()
            .map(|j| {
                let cart: usize = j
                    .cart
                    .items
                    .keys()
                    .map(|sku| sku.len() + size_of::<CartLine>() + 48)
                    .sum();
                let actions: usize = j.last_action.keys().map(|a| a.len() + 48).sum();
                let recent: usize = j
                    .recent_actions
                    .iter()
                    .map(|r| size_of::<RecentAction>() + r.heap_bytes())
                    .sum();
                size_of::<Journey>()
                    + j.key().len()
                    + MAP_ENTRY
                    + cart
                    + actions
                    + recent
                    + j.history_bytes()
                    + j.churn_history_bytes()
            })
            .sum();
        identity + journeys
    }
}
