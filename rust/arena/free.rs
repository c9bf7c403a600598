//! Reference counts and freeing: a node whose count drops to zero is freed, its
//! operands released in turn with an explicit work list (never recursion), and
//! large batches of freed slots go back on the free list in slot order.

use super::{Arena, NodeId, NONE};
use crate::ops::Op;

impl Arena {
    // ---- reference counts and freeing --------------------------------------

    #[inline]
    pub fn incref(&mut self, id: NodeId) {
        self.rc[id as usize] += 1;
    }

    /// Drops one reference; frees the node, and whatever only it kept alive, at zero.
    #[inline]
    pub fn decref(&mut self, id: NodeId) {
        let rc = &mut self.rc[id as usize];
        *rc -= 1;
        if *rc == 0 {
            self.free_from(id);
        }
    }

    /// Frees a node whose count reached zero and, iteratively, every operand whose
    /// count that brings to zero: a 10-million-deep chain frees without recursion.
    #[inline(never)]
    pub(super) fn free_from(&mut self, root: NodeId) {
        let mut work = std::mem::take(&mut self.work);
        // Nodes waiting to be freed when `work` cannot grow, linked through their
        // `handle` (unused: a node with a handle has a reference).
        let mut overflow = NONE;
        let old_head = self.free_head;
        let mut freed = 0usize;
        // Put in order only batches that pay for the pass over the bits.
        let relink_at = RELINK_MIN.max(self.data.len() / 64);
        let mut id = root;
        loop {
            let i = id as usize;
            let op = self.op[i];
            match op {
                Op::Leaf => {}
                op if op.is_nary() => {
                    let slot = self.a[i] as usize;
                    let ids = std::mem::take(&mut self.edges[slot]);
                    for &k in &ids {
                        drop_edge(&mut self.rc, &mut self.handle, &mut overflow, k, &mut work);
                    }
                    // Keep the buffer for the next n-ary node unless it is large.
                    if ids.capacity() <= 4096 {
                        self.edges[slot] = ids;
                        self.edges[slot].clear();
                    }
                    self.edges_free.push(slot as u32);
                }
                _ => {
                    drop_edge(
                        &mut self.rc,
                        &mut self.handle,
                        &mut overflow,
                        self.a[i],
                        &mut work,
                    );
                    if op.is_binary() {
                        drop_edge(
                            &mut self.rc,
                            &mut self.handle,
                            &mut overflow,
                            self.b[i],
                            &mut work,
                        );
                    } else if op.has_consts() {
                        self.consts_free.push(self.b[i]);
                    }
                }
            }
            if !self.labels.is_empty() {
                self.labels.remove(&id);
            }
            self.op[i] = Op::Free;
            self.a[i] = self.free_head;
            self.free_head = id;
            freed += 1;
            if freed == relink_at {
                // Large enough to be worth putting in order: note the slots freed so
                // far, and every further one as it goes.
                self.mark_freed(old_head);
            } else if freed > relink_at {
                self.free_bits[i >> 6] |= 1 << (i & 63);
            }
            match work.pop() {
                Some(next) => id = next,
                None if overflow != NONE => {
                    id = overflow;
                    overflow = self.handle[id as usize] as NodeId;
                    self.handle[id as usize] = 0;
                }
                None => break,
            }
        }
        self.live -= freed;
        if freed >= relink_at {
            self.relink_in_order(old_head);
        }
        if work.capacity() <= 1 << 16 {
            self.work = work; // keep a small buffer; a huge one goes back to the allocator
        }
    }

    /// Sets the bit of every slot on the free list before `stop` (those freed so
    /// far by the running `free_from`).
    #[cold]
    fn mark_freed(&mut self, stop: NodeId) {
        self.free_bits.resize(self.data.len().div_ceil(64), 0);
        let mut id = self.free_head;
        while id != stop {
            let i = id as usize;
            self.free_bits[i >> 6] |= 1 << (i & 63);
            id = self.a[i];
        }
    }

    /// Puts the slots a large `free_from` freed (their bits set) back on the free
    /// list in ascending order, ahead of the slots that were free before (`rest`),
    /// and clears the bits. The next graph is then built in consecutive slots, the
    /// order in which it is later walked, swept and freed, whatever order this one
    /// was freed in; otherwise each training step would scatter the next a little
    /// more. Costs a pass over one bit per slot, so only for batches of at least
    /// `RELINK_MIN` slots and a 64th of all slots.
    #[cold]
    fn relink_in_order(&mut self, rest: NodeId) {
        let mut head = rest;
        for w in (0..self.free_bits.len()).rev() {
            let mut bits = std::mem::take(&mut self.free_bits[w]);
            while bits != 0 {
                let top = 63 - bits.leading_zeros();
                bits &= !(1 << top);
                let id = (w as u32) << 6 | top;
                self.a[id as usize] = head;
                head = id;
            }
        }
        self.free_head = head;
    }

    /// `decref` for an owner going away (a Python handle): when that empties the
    /// arena after a large graph, the memory goes back to the system instead of
    /// staying on the free list.
    #[inline]
    pub fn release(&mut self, id: NodeId) {
        self.decref(id);
        if self.live == 0 && self.slots() > 1 << 16 {
            self.reset();
        }
    }

    /// Gives the memory of an empty arena back.
    #[cold]
    fn reset(&mut self) {
        *self = Arena {
            epoch: self.epoch,
            ..Arena::default()
        };
    }
}

/// Freed slots in one `free_from` from which they are put back in order (a few,
/// under test, so the model-based proptests free through both paths).
const RELINK_MIN: usize = if cfg!(test) { 8 } else { 4096 };

/// Drops the reference an operand edge holds on `x`, queueing `x` to be freed when
/// that was its last: on `work`, or, when `work` cannot grow, on the `overflow`
/// list linked through `handle`, so that freeing never fails for want of memory.
#[inline(always)]
fn drop_edge(
    rc: &mut [u32],
    handle: &mut [usize],
    overflow: &mut NodeId,
    x: NodeId,
    work: &mut Vec<NodeId>,
) {
    let r = &mut rc[x as usize];
    *r -= 1;
    if *r == 0 {
        if work.len() == work.capacity() && work.try_reserve(work.len().max(64)).is_err() {
            handle[x as usize] = *overflow as usize;
            *overflow = x;
            return;
        }
        work.push(x);
    }
}
