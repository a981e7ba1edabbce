//! What a journey holds in memory, for the state's memory estimate.
//!
//! In: a [`Journey`]. Out: the bytes it owns on the heap beyond its own box
//! ([`Journey::heap_bytes`]): the rarely used parts it allocated, its
//! lists, the strings it keeps, and an allocator overhead per allocation.
//! Keeps nothing.
//!
//! Invariant: the estimate depends on what the journey holds, not on how it
//! was built (a list's length, not its capacity), so a journey restored
//! from a snapshot or the changelog counts the same as the one written.

use std::mem::size_of;

use super::cold::{Cold, Empty};
use super::{CartLine, Contribution, Journey, RecentAction};

/// What the allocator adds to each allocation (glibc: a 16-byte header and
/// rounding), as an average.
pub const ALLOC_OVERHEAD: usize = 16;
/// A B-tree map's share of a node per entry, beyond the key and the value.
const MAP_ENTRY: usize = 24;

/// The bytes of a list's elements, with an allocation's overhead (none
/// when empty). A [`List`](super::List) holds exactly its elements; the
/// one `VecDeque` left (recent actions) is bounded at ten.
fn list<T>(v: &[T]) -> usize {
    elements::<T>(v.len())
}

/// The bytes of `n` elements of `T` in one allocation, with its overhead.
fn elements<T>(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n * size_of::<T>() + ALLOC_OVERHEAD
    }
}

/// The bytes of a string, with its overhead (none when empty).
fn text(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len + ALLOC_OVERHEAD
    }
}

/// The bytes of a cold part's box, with its overhead (none when unallocated).
fn part<T: Empty>(c: &Cold<T>) -> usize {
    match c.boxed_bytes() {
        0 => 0,
        n => n + ALLOC_OVERHEAD,
    }
}

impl Journey {
    /// The heap bytes this journey owns beyond its own box.
    pub fn heap_bytes(&self) -> usize {
        let cart: usize = self
            .cart
            .items
            .iter()
            .map(|(sku, l)| {
                text(sku.len()) + size_of::<CartLine>() + MAP_ENTRY + l.category.as_ref().map_or(0, |c| text(c.len()))
            })
            .sum();
        let ignored: usize = self.ignored.keys().map(|a| text(a.len()) + 4 + MAP_ENTRY).sum();
        let last_action: usize = self.last_action.keys().map(|a| text(a.len()) + 8 + MAP_ENTRY).sum();
        let actions: usize = self.recent_actions.iter().map(|r| r.heap_bytes()).sum();
        let viewed = self.last_product_view.as_ref().map_or(0, |v| text(v.sku.len()));
        let parts = part(&self.cart)
            + part(&self.call)
            + part(&self.complaint_times)
            + part(&self.unresolved_times)
            + part(&self.last_product_view)
            + part(&self.contacts)
            + part(&self.ignored)
            + part(&self.last_action)
            + part(&self.recent_actions)
            + part(&self.consent)
            + part(&self.local_clock)
            + part(&self.responses)
            + part(&self.clv)
            + part(&self.last_checkout_start)
            + part(&self.last_complaint)
            + part(&self.last_sentiment)
            + part(&self.last_service_issue);
        let lists = list(&self.visits)
            + list(&self.complaint_times)
            + list(&self.unresolved_times)
            + list(&self.contacts)
            + list(&self.responses)
            + elements::<RecentAction>(self.recent_actions.len());
        parts + lists + cart + ignored + last_action + actions + viewed + self.churn_bytes() + self.history_bytes()
    }

    /// The churn state's factors and history, and the examples waiting for
    /// their label.
    fn churn_bytes(&self) -> usize {
        let factors = match self.churn.factors.heap_bytes() {
            0 => 0,
            n => n + ALLOC_OVERHEAD,
        };
        factors + self.churn_history_bytes() + list(&self.churn_examples.pending)
    }

    /// An estimate of the bytes the churn history holds.
    pub fn churn_history_bytes(&self) -> usize {
        let h = &self.churn.history;
        list(h)
            + h.iter()
                .map(|p| match p.contributions.len() {
                    0 => 0,
                    n => n * size_of::<Contribution>() + ALLOC_OVERHEAD,
                })
                .sum::<usize>()
    }
}
