//! The identity step of scale-out (stage 1, `docs/scaling.md` section 1):
//! evidence records folded from the identity log, whoever published them.
//!
//! In: [`EvidenceBody`]s in log order (the single partition's order, the same
//! on every process), each marked as this process's own or not. Out: a
//! [`Folded`]: what the fold did (for metrics) and, for an event record,
//! where the event belongs ([`Resolved`]), which the caller hands back with
//! the event to [`Processor::offer_resolved`] for its journey step. Keeps
//! nothing of its own: the graph is in the [`State`](crate::state::State),
//! journeys of profiles a record merged away move to their survivors here,
//! on every process (each moves the journeys it holds).
//!
//! Only the publisher announces: the `identity-changes` notices and the
//! erasure record a record causes are returned for its own records only, so
//! N processes folding one log publish each notice once.

use crate::evidence::{EventEvidence, EvidenceBody};
use crate::identity::OneId;
use crate::ids::IdKey;
use crate::output::{CommandRef, ErasureRequest, Output};
use crate::ChannelEvent;

use super::{Processed, Processor};

/// Where an event's evidence put it: the profile and the identifier that
/// anchors the event to it. The journey step follows the anchor (a later
/// record may have merged the profile away meanwhile).
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub one_id: OneId,
    pub anchor: IdKey,
}

/// What folding one record did.
#[derive(Debug, Default)]
pub struct Folded {
    /// Merges, refusals, shared devices...; outputs only for own records.
    pub processed: Processed,
    /// For an event record: where the event belongs. `None`: every
    /// identifier was forgotten, or none can link.
    pub resolved: Option<Resolved>,
}

impl Processor {
    /// Folds one record of the identity log (see [`Processor::fold_event`]
    /// and [`Processor::fold_forget`]); a forget is folded without announcing it.
    pub fn fold_evidence(&mut self, body: &EvidenceBody, own: bool) -> Folded {
        match body {
            EvidenceBody::Event(e) => self.fold_event(e, own),
            EvidenceBody::Forget { key } => {
                let mut outputs = self.fold_forget(key, None);
                if !own {
                    outputs.clear();
                }
                Folded {
                    processed: Processed {
                        outputs,
                        ..Processed::default()
                    },
                    resolved: None,
                }
            }
        }
    }

    /// Scale-out stage 1, before the round trip: the profile `ev` belongs to
    /// when stitching it would change nothing in the graph (its identifier
    /// set is already folded, `IdentityGraph::resolve_known`); its evidence
    /// is then not published, on no process. `None`: it goes through the
    /// identity log.
    pub fn resolve_known(&self, ev: &ChannelEvent) -> Option<Resolved> {
        let (one_id, anchor) = self.state.identity.resolve_known(ev)?;
        Some(Resolved { one_id, anchor })
    }

    /// The identity step of one event record: stitches its evidence into the
    /// graph and moves the journeys of the profiles it merged away. The
    /// merge notices are kept only when `own`.
    pub fn fold_event(&mut self, e: &EventEvidence, own: bool) -> Folded {
        // From now on journeys' moves are kept (see `current`).
        self.keep_moves = true;
        let ev = e.to_event();
        match self.identity_step(&ev) {
            Ok(Some((mut processed, one_id, anchor))) => {
                if !own {
                    processed.outputs.clear();
                }
                Folded {
                    processed,
                    resolved: Some(Resolved { one_id, anchor }),
                }
            }
            Ok(None) => Folded {
                processed: Processed {
                    channel: Some(e.channel),
                    forgotten: true,
                    ..Processed::default()
                },
                resolved: None,
            },
            // No identifier that can link: the publisher checked, so only a
            // record from a process with other identity rules lands here.
            Err(_) => Folded::default(),
        }
    }

    /// A forget record: erases the profile holding `key` from this
    /// process's graph and journeys. With the request (the publisher's own
    /// record), returns the `identity-changes` notice and the erasure record;
    /// without, nothing.
    pub fn fold_forget(&mut self, key: &IdKey, request: Option<ErasureRequest>) -> Vec<Output> {
        let announce = request.is_some();
        let request = request.unwrap_or_else(|| ErasureRequest {
            requested_by: None,
            via: "identity_log",
            requested_at: None,
            command: CommandRef {
                topic: String::new(),
                partition: 0,
                offset: 0,
            },
        });
        let outputs = self.forget(key, request);
        if announce {
            outputs
        } else {
            Vec::new()
        }
    }

    /// Where an event resolved to `r` belongs now ([`Processor::current`]):
    /// `None` when forgotten since or its journey was dropped.
    pub fn follow(&self, r: &Resolved) -> Option<Resolved> {
        self.current(r).map(|(one_id, anchor)| Resolved { one_id, anchor })
    }

    /// Where a resolved event belongs now: the profile it was resolved to,
    /// or, when a later record moved that profile's journey (a merge, a
    /// rebuild), where the journey went, as one process that applied the
    /// event at once would have moved it with the journey. The anchor
    /// returned is an identifier of that profile (timers follow it). `None`:
    /// forgotten since, or the journey was dropped.
    pub(super) fn current(&self, r: &Resolved) -> Option<(OneId, IdKey)> {
        let graph = &self.state.identity;
        let mut one_id = r.one_id.clone();
        // A chain of moves is short; the bound only guards against a cycle.
        for _ in 0..64 {
            if let Some(anchor) = graph.with_profile(&one_id, |p| {
                if p.ids().contains(&r.anchor) {
                    Some(r.anchor.clone())
                } else {
                    p.ids().first().cloned()
                }
            }) {
                return anchor.map(|a| (one_id, a));
            }
            match self.moves.get(&one_id) {
                Some(Some(to)) => one_id = to.clone(),
                Some(None) => return None,
                None => break,
            }
        }
        // Not moved by a record this process folded: the anchor's profile.
        graph.one_id_of(&r.anchor).map(|o| (o, r.anchor.clone()))
    }
}
