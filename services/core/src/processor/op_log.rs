//! The identity ops applied since the last checkpoint took them, in order.
//!
//! In: each stitch's and each forget's [`IdentityOp`]s, as the writer
//! applies them. Out: the same ops in the same order, once, to the
//! checkpoint that writes them to the identity log
//! ([`super::Processor::take_identity_ops`]). Keeps them in blocks of
//! [`BLOCK`] ops, each allocated once at its full size.
//!
//! Why blocks and not one `Vec`: between two checkpoints the log holds
//! about three ops an event (a million or more at the bench's rates). A
//! `Vec` that grows by doubling copies everything it holds at each growth
//! and touches a fresh allocation twice its size: session 26's profile of
//! the core at 1M profiles had 8.7% of the single writer's time in that
//! copy and its page faults, 5.2% with blocks (the first write to fresh
//! pages is left). A block is never moved once allocated.

use crate::identity::IdentityOp;

/// Ops a block holds.
pub const BLOCK: usize = 4096;

/// The ops, in order, in blocks of [`BLOCK`] (the last one partly full).
#[derive(Debug, Default)]
pub struct OpLog {
    blocks: Vec<Vec<IdentityOp>>,
    len: usize,
}

impl OpLog {
    pub fn push(&mut self, op: IdentityOp) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < BLOCK => b.push(op),
            _ => {
                let mut b = Vec::with_capacity(BLOCK);
                b.push(op);
                self.blocks.push(b);
            }
        }
        self.len += 1;
    }

    /// Moves every op of `ops` to the end of the log, in order.
    pub fn append(&mut self, ops: &mut Vec<IdentityOp>) {
        for op in ops.drain(..) {
            self.push(op);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes the blocks hold (each allocated at its full size; the
    /// ops' texts and identifier lists are the graph's, shared).
    pub fn approx_bytes(&self) -> usize {
        self.blocks.len() * (BLOCK * std::mem::size_of::<IdentityOp>() + std::mem::size_of::<Vec<IdentityOp>>())
    }

    /// Every op, in order.
    pub fn iter(&self) -> impl Iterator<Item = &IdentityOp> {
        self.blocks.iter().flatten()
    }
}

impl IntoIterator for OpLog {
    type Item = IdentityOp;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<IdentityOp>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.blocks.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(i: u32) -> IdentityOp {
        IdentityOp::Refold { component: i }
    }

    #[test]
    fn ops_come_out_in_the_order_they_went_in_across_blocks() {
        let n = 2 * BLOCK + 7;
        let mut log = OpLog::default();
        let mut batch: Vec<IdentityOp> = (0..3).map(op).collect();
        log.append(&mut batch);
        assert!(batch.is_empty(), "append moves the ops");
        for i in 3..n as u32 {
            log.push(op(i));
        }
        assert_eq!(log.len(), n);
        assert_eq!(log.blocks.len(), 3);
        assert!(
            log.blocks.iter().all(|b| b.capacity() == BLOCK),
            "each block allocated once"
        );
        let expected: Vec<IdentityOp> = (0..n as u32).map(op).collect();
        assert_eq!(log.iter().cloned().collect::<Vec<_>>(), expected);
        assert_eq!(log.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn an_empty_log_holds_no_block() {
        let log = OpLog::default();
        assert!(log.is_empty());
        assert_eq!(log.iter().count(), 0);
        assert!(log.blocks.is_empty());
        assert_eq!(log.approx_bytes(), 0);
    }
}
