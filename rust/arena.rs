//! Node storage: a struct of arrays indexed by node id, with reference counts and
//! a free list threaded through freed slots.
//!
//! A node lives while something refers to it: a Python handle (counted once) or a
//! live node that has it as an operand. When its count drops to zero it is freed,
//! its operands are released in turn (with an explicit work list, never recursion),
//! and its slot is reused by the next node.

use crate::ops::{self, Op};
use rustc_hash::FxHashMap;

mod free;

pub type NodeId = u32;

/// No node (end of the free list, no handle).
pub const NONE: NodeId = u32::MAX;

/// An operand of a new node: an existing node, or a number to wrap as a leaf.
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    Node(NodeId),
    Const(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ArenaError {
    /// More nodes than `u32` ids.
    Full,
    /// A node id that is not live.
    Stale(NodeId),
    /// An allocation failed; nothing was changed.
    Memory,
}

/// Makes room for `extra` more items in `v`, or says it cannot.
#[inline]
pub fn reserve<T>(v: &mut Vec<T>, extra: usize) -> Result<(), ArenaError> {
    v.try_reserve(extra).map_err(|_| ArenaError::Memory)
}

/// Makes room for `total` items in all in `v`, or says it cannot.
#[inline]
fn reserve_total<T>(v: &mut Vec<T>, total: usize) -> Result<(), ArenaError> {
    let extra = total.saturating_sub(v.len());
    reserve(v, extra)
}

/// Per-node arrays. `a` and `b` are the operands of unary and binary ops. For
/// n-ary ops `a` indexes `edges` and `b` is the operand count; for ops with
/// constants `b` indexes `consts`. On a free slot `a` links the free list.
pub struct Arena {
    pub data: Vec<f64>,
    pub grad: Vec<f64>,
    pub(crate) op: Vec<Op>,
    pub(crate) a: Vec<u32>,
    pub(crate) b: Vec<u32>,
    rc: Vec<u32>,
    /// Visit stamps for graph walks (see `backward`), so a walk needs no set.
    pub(crate) mark: Vec<u32>,
    pub(crate) epoch: u32,
    /// An opaque token for the node's canonical Python handle (0 when none): kept
    /// with the node so `_prev` gives the same node back as the same object without a lookup.
    handle: Vec<usize>,
    /// The first free slot (`NONE` when there is none); each links the next in `a`.
    free_head: NodeId,
    live: usize,
    pub(crate) edges: Vec<Vec<NodeId>>,
    edges_free: Vec<u32>,
    pub(crate) consts: Vec<[f64; 2]>,
    consts_free: Vec<u32>,
    labels: FxHashMap<NodeId, Box<str>>,
    /// The work list of `free_from`, kept to avoid an allocation per freed node.
    work: Vec<NodeId>,
    /// The stack of graph walks (`backward::order`), kept for the same reason.
    pub(crate) walk: Vec<u64>,
    /// One bit per slot, set for the slots a large `free_from` frees while it runs
    /// and clear otherwise (see `relink_in_order`).
    free_bits: Vec<u64>,
}

/// Bytes the arena stores per node slot (the side tables of n-ary nodes, constants
/// and labels are extra and only for the nodes that have them).
pub const BYTES_PER_NODE: usize = std::mem::size_of::<f64>() * 2
    + std::mem::size_of::<Op>()
    + std::mem::size_of::<u32>() * 4
    + std::mem::size_of::<usize>();

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

impl Arena {
    /// An empty arena; `const` so the Python module can hold one in a static.
    pub const fn new() -> Self {
        Arena {
            data: Vec::new(),
            grad: Vec::new(),
            op: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            rc: Vec::new(),
            mark: Vec::new(),
            epoch: 0,
            handle: Vec::new(),
            free_head: NONE,
            live: 0,
            edges: Vec::new(),
            edges_free: Vec::new(),
            consts: Vec::new(),
            consts_free: Vec::new(),
            labels: FxHashMap::with_hasher(rustc_hash::FxBuildHasher),
            work: Vec::new(),
            walk: Vec::new(),
            free_bits: Vec::new(),
        }
    }

    /// Nodes currently alive.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Slots allocated (live and free).
    pub fn slots(&self) -> usize {
        self.data.len()
    }

    /// Bytes reserved by the per-node arrays.
    pub fn reserved_bytes(&self) -> usize {
        self.data.capacity() * 8
            + self.grad.capacity() * 8
            + self.op.capacity()
            + (self.a.capacity() + self.b.capacity() + self.rc.capacity() + self.mark.capacity())
                * 4
            + self.handle.capacity() * std::mem::size_of::<usize>()
            + self.free_bits.capacity() * 8
    }

    #[inline]
    pub fn is_live(&self, id: NodeId) -> bool {
        (id as usize) < self.op.len() && self.op[id as usize] != Op::Free
    }

    #[inline]
    pub fn op(&self, id: NodeId) -> Op {
        self.op[id as usize]
    }

    #[inline]
    pub fn refcount(&self, id: NodeId) -> u32 {
        self.rc[id as usize]
    }

    pub fn consts(&self, id: NodeId) -> [f64; 2] {
        if self.op(id).has_consts() {
            self.consts[self.b[id as usize] as usize]
        } else {
            [0.0; 2]
        }
    }

    // ---- operands ----------------------------------------------------------

    #[inline(always)]
    pub fn n_operands(&self, id: NodeId) -> usize {
        let op = self.op(id);
        if op.is_binary() {
            2
        } else if op.is_nary() {
            self.edges[self.a[id as usize] as usize].len()
        } else if matches!(op, Op::Leaf | Op::Free) {
            0
        } else {
            1
        }
    }

    /// The `k`-th operand of a node, in operand order.
    #[inline(always)]
    pub fn operand(&self, id: NodeId, k: usize) -> NodeId {
        let i = id as usize;
        let op = self.op[i];
        if op.is_nary() {
            self.edges[self.a[i] as usize][k]
        } else if k == 0 {
            self.a[i]
        } else {
            self.b[i]
        }
    }

    /// The operands of a node, in order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        (0..self.n_operands(id))
            .map(|k| self.operand(id, k))
            .collect()
    }

    // ---- labels and handles ------------------------------------------------

    pub fn label(&self, id: NodeId) -> &str {
        self.labels.get(&id).map_or("", |s| s)
    }

    pub fn set_label(&mut self, id: NodeId, label: &str) -> Result<(), ArenaError> {
        if label.is_empty() {
            self.labels.remove(&id);
        } else {
            let mut s = String::new();
            s.try_reserve_exact(label.len())
                .map_err(|_| ArenaError::Memory)?;
            s.push_str(label);
            self.labels.try_reserve(1).map_err(|_| ArenaError::Memory)?;
            self.labels.insert(id, s.into_boxed_str());
        }
        Ok(())
    }

    #[inline]
    pub fn handle(&self, id: NodeId) -> usize {
        self.handle[id as usize]
    }

    #[inline]
    pub fn set_handle(&mut self, id: NodeId, token: usize) {
        self.handle[id as usize] = token;
    }

    // ---- creation ----------------------------------------------------------

    /// Takes a slot from the free list or grows the arrays. The node starts with
    /// reference count 0; callers give it to an owner with `incref`.
    #[inline(always)]
    fn alloc(&mut self, op: Op, data: f64, a: u32, b: u32) -> Result<NodeId, ArenaError> {
        let id = self.free_head;
        if id == NONE {
            return self.grow(op, data, a, b);
        }
        let i = id as usize;
        self.free_head = self.a[i];
        self.live += 1;
        self.data[i] = data;
        self.grad[i] = 0.0;
        self.op[i] = op;
        self.a[i] = a;
        self.b[i] = b;
        self.rc[i] = 0;
        self.handle[i] = 0;
        Ok(id)
    }

    /// `alloc` with no free slot: a new one at the end.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, op: Op, data: f64, a: u32, b: u32) -> Result<NodeId, ArenaError> {
        let id = self.data.len();
        if id >= NONE as usize {
            return Err(ArenaError::Full);
        }
        // Any array full (one may lag the others after a failed reservation).
        if self.min_capacity() == id {
            self.reserve_slots()?;
        }
        self.live += 1;
        self.data.push(data);
        self.grad.push(0.0);
        self.op.push(op);
        self.a.push(a);
        self.b.push(b);
        self.rc.push(0);
        self.mark.push(0);
        self.handle.push(0);
        Ok(id as NodeId)
    }

    fn min_capacity(&self) -> usize {
        [
            self.data.capacity(),
            self.grad.capacity(),
            self.op.capacity(),
            self.a.capacity(),
            self.b.capacity(),
            self.rc.capacity(),
            self.mark.capacity(),
            self.handle.capacity(),
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }

    /// Room for more slots in every per-node array (doubling), all or nothing as
    /// far as lengths go: an array that grew before another failed only has spare
    /// capacity.
    #[cold]
    fn reserve_slots(&mut self) -> Result<(), ArenaError> {
        let len = self.data.len();
        reserve(&mut self.data, len.max(64))?;
        // The others to the same capacity, so `grow` pushes without allocating.
        let extra = self.data.capacity() - len;
        reserve(&mut self.grad, extra)?;
        reserve(&mut self.op, extra)?;
        reserve(&mut self.a, extra)?;
        reserve(&mut self.b, extra)?;
        reserve(&mut self.rc, extra)?;
        reserve(&mut self.mark, extra)?;
        reserve(&mut self.handle, extra)?;
        // `free_from` marks freed slots in these bits without allocating.
        let words = self.data.capacity().div_ceil(64);
        reserve_total(&mut self.free_bits, words)?;
        Ok(())
    }

    /// A new leaf holding `data`, with reference count 0.
    pub fn leaf(&mut self, data: f64) -> Result<NodeId, ArenaError> {
        self.alloc(Op::Leaf, data, NONE, NONE)
    }

    /// The node for an operand: a number becomes a new leaf. Callers refuse stale
    /// nodes first (`check_live`), before any number takes a slot: a new leaf may
    /// reuse a freed slot, which a stale id would then name.
    fn resolve(&mut self, x: Operand) -> Result<NodeId, ArenaError> {
        match x {
            Operand::Node(id) => Ok(id),
            Operand::Const(c) => self.leaf(c),
        }
    }

    fn value_of(&self, x: Operand) -> f64 {
        match x {
            // A stale id reads NaN here; building refuses it (`check_live`).
            Operand::Node(id) => self.data.get(id as usize).copied().unwrap_or(f64::NAN),
            Operand::Const(c) => c,
        }
    }

    /// The value a binary op would produce, without building it.
    pub fn peek_binary(&self, op: Op, a: Operand, b: Operand) -> f64 {
        ops::binary(op, self.value_of(a), self.value_of(b))
    }

    /// The value a unary op would produce, without building it.
    pub fn peek_unary(&self, op: Op, a: NodeId, c: [f64; 2]) -> f64 {
        ops::unary(op, self.data[a as usize], c)
    }

    /// Builds `a op b`; number operands become leaves, as in micrograd.
    #[inline(always)]
    pub fn binary(&mut self, op: Op, a: Operand, b: Operand) -> Result<NodeId, ArenaError> {
        match (a, b) {
            (Operand::Node(x), Operand::Node(y)) => self.binary_nodes(op, x, y),
            _ => self.binary_with_numbers(op, a, b),
        }
    }

    /// `binary` over two nodes.
    #[inline(always)]
    fn binary_nodes(&mut self, op: Op, x: NodeId, y: NodeId) -> Result<NodeId, ArenaError> {
        debug_assert!(op.is_binary());
        for id in [x, y] {
            if !self.is_live(id) {
                return Err(ArenaError::Stale(id));
            }
        }
        let out = ops::binary(op, self.data[x as usize], self.data[y as usize]);
        let id = self.alloc(op, out, x, y)?;
        self.rc[x as usize] += 1;
        self.rc[y as usize] += 1;
        Ok(id)
    }

    /// `binary` with a number operand or two: each becomes a leaf, then the node is
    /// built over the two nodes.
    #[inline(never)]
    fn binary_with_numbers(
        &mut self,
        op: Op,
        a: Operand,
        b: Operand,
    ) -> Result<NodeId, ArenaError> {
        self.check_live(&[a, b])?;
        let ia = self.resolve(a)?;
        let ib = match self.resolve(b) {
            Ok(ib) => ib,
            Err(e) => return Err(self.undo_leaves(e, &[(a, ia)])),
        };
        self.binary_nodes(op, ia, ib)
            .map_err(|e| self.undo_leaves(e, &[(a, ia), (b, ib)]))
    }

    /// After a failed build: frees the leaves that number operands became (they
    /// have no owner yet) and passes the error on.
    #[cold]
    #[inline(never)]
    fn undo_leaves(&mut self, e: ArenaError, made: &[(Operand, NodeId)]) -> ArenaError {
        for &(x, id) in made {
            if let Operand::Const(_) = x {
                self.incref(id);
                self.decref(id);
            }
        }
        e
    }

    /// Builds a unary op over node `a`, with constants `c` for the ops that have them.
    pub fn unary(&mut self, op: Op, a: NodeId, c: [f64; 2]) -> Result<NodeId, ArenaError> {
        debug_assert!(!op.is_binary() && !op.is_nary() && op != Op::Leaf);
        if !self.is_live(a) {
            return Err(ArenaError::Stale(a));
        }
        let out = self.peek_unary(op, a, c);
        let b = if op.has_consts() {
            match self.consts_free.pop() {
                Some(slot) => {
                    self.consts[slot as usize] = c;
                    slot
                }
                None => {
                    reserve(&mut self.consts, 1)?;
                    reserve_total(&mut self.consts_free, self.consts.len() + 1)?;
                    self.consts.push(c);
                    (self.consts.len() - 1) as u32
                }
            }
        } else {
            NONE
        };
        let id = match self.alloc(op, out, a, b) {
            Ok(id) => id,
            Err(e) => {
                if op.has_consts() {
                    self.consts_free.push(b); // room kept for every slot
                }
                return Err(e);
            }
        };
        self.rc[a as usize] += 1;
        Ok(id)
    }

    /// Builds `sum(xs)`: one node whatever the count.
    pub fn sum(&mut self, xs: &[Operand]) -> Result<NodeId, ArenaError> {
        let out = ops::sum(xs.iter().map(|&x| self.value_of(x)));
        self.nary(Op::Sum, xs, out)
    }

    /// Builds `logsumexp(xs)`: one node whatever the count.
    pub fn logsumexp(&mut self, xs: &[Operand]) -> Result<NodeId, ArenaError> {
        let out = self.peek_logsumexp(xs);
        self.nary(Op::LogSumExp, xs, out)
    }

    /// The value `logsumexp(xs)` would have, without building it.
    pub fn peek_logsumexp(&self, xs: &[Operand]) -> f64 {
        ops::logsumexp(xs.iter().map(|&x| self.value_of(x)))
    }

    /// Builds `dot(ws, xs)`; operands are stored as `w1..wn, x1..xn`.
    pub fn dot(&mut self, ws: &[Operand], xs: &[Operand]) -> Result<NodeId, ArenaError> {
        assert_eq!(ws.len(), xs.len(), "dot: operands of unequal length");
        let out = ops::dot(
            ws.iter()
                .zip(xs)
                .map(|(&w, &x)| (self.value_of(w), self.value_of(x))),
        );
        let mut all: Vec<Operand> = Vec::new();
        reserve(&mut all, ws.len() + xs.len())?;
        all.extend(ws.iter().chain(xs).copied());
        self.nary(Op::Dot, &all, out)
    }

    /// A dense layer in one call: for each neuron `k`, `act(dot(ws[k], x) + bs[k])`,
    /// the same three nodes a neuron builds (no activation node when `act` is
    /// `Op::Leaf`). Number inputs become leaves once, shared by all neurons. Returns
    /// the outputs, each holding one reference for its owner.
    pub fn layer<W: AsRef<[NodeId]>>(
        &mut self,
        ws: &[W],
        bs: &[NodeId],
        x: &[Operand],
        act: Op,
    ) -> Result<Vec<NodeId>, ArenaError> {
        // Every node is checked before numbers become leaves (which may reuse
        // freed slots), and the inputs taken so far are released on an error.
        self.check_live(x)?;
        let mut xs = Vec::new();
        reserve(&mut xs, x.len())?;
        for &v in x {
            match self.resolve(v) {
                Ok(id) => {
                    self.rc[id as usize] += 1; // held while the layer is built
                    xs.push(id);
                }
                Err(e) => {
                    self.release_nodes(&xs);
                    return Err(e);
                }
            }
        }
        let mut outs = Vec::new();
        if let Err(e) = reserve(&mut outs, ws.len()) {
            self.release_nodes(&xs);
            return Err(e);
        }
        let built = (|| {
            for (w, &b) in ws.iter().zip(bs) {
                let d = self.dot_nodes(w.as_ref(), &xs)?;
                let s = self.binary(Op::Add, Operand::Node(d), Operand::Node(b))?;
                let out = if act == Op::Leaf {
                    s
                } else {
                    self.unary(act, s, [0.0; 2])?
                };
                self.incref(out);
                outs.push(out);
            }
            Ok(())
        })();
        self.release_nodes(&xs);
        match built {
            Ok(()) => Ok(outs),
            Err(e) => {
                for &o in &outs {
                    self.decref(o);
                }
                Err(e)
            }
        }
    }

    /// The value `sum(xs)` would have, without building it.
    pub fn peek_sum(&self, xs: &[Operand]) -> f64 {
        ops::sum(xs.iter().map(|&x| self.value_of(x)))
    }

    /// The value `dot(ws, xs)` would have, without building it.
    pub fn peek_dot(&self, ws: &[Operand], xs: &[Operand]) -> f64 {
        ops::dot(
            ws.iter()
                .zip(xs)
                .map(|(&w, &x)| (self.value_of(w), self.value_of(x))),
        )
    }

    /// Refuses the first stale node among `xs`.
    fn check_live(&self, xs: &[Operand]) -> Result<(), ArenaError> {
        for &x in xs {
            if let Operand::Node(id) = x {
                if !self.is_live(id) {
                    return Err(ArenaError::Stale(id));
                }
            }
        }
        Ok(())
    }

    /// Drops the reference held on each of `ids`.
    fn release_nodes(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.decref(id);
        }
    }

    /// `dot(ws, xs)` over nodes, as `layer` builds it for each neuron: the same
    /// node `dot` builds, without going through operands.
    fn dot_nodes(&mut self, ws: &[NodeId], xs: &[NodeId]) -> Result<NodeId, ArenaError> {
        assert_eq!(ws.len(), xs.len(), "dot: operands of unequal length");
        if let Some(&id) = ws.iter().chain(xs).find(|&&id| !self.is_live(id)) {
            return Err(ArenaError::Stale(id));
        }
        let out = ops::dot(
            ws.iter()
                .zip(xs)
                .map(|(&w, &x)| (self.data[w as usize], self.data[x as usize])),
        );
        let slot = self.edge_slot()?;
        let mut ids = std::mem::take(&mut self.edges[slot as usize]);
        ids.clear();
        if let Err(e) = ids.try_reserve_exact(2 * ws.len()) {
            self.edges[slot as usize] = ids;
            self.edges_free.push(slot);
            let _ = e;
            return Err(ArenaError::Memory);
        }
        ids.extend_from_slice(ws);
        ids.extend_from_slice(xs);
        for &id in &ids {
            self.rc[id as usize] += 1;
        }
        let result = self.alloc(Op::Dot, out, slot, ids.len() as u32);
        self.keep_edges(slot, ids, result)
    }

    /// Puts the operand list `ids` (each holding a reference) in edge slot `slot`
    /// for the node `result`; if the node could not be made, releases them and the
    /// slot instead.
    fn keep_edges(
        &mut self,
        slot: u32,
        mut ids: Vec<NodeId>,
        result: Result<NodeId, ArenaError>,
    ) -> Result<NodeId, ArenaError> {
        if result.is_err() {
            for &id in &ids {
                self.decref(id);
            }
            ids.clear();
            self.edges_free.push(slot);
        }
        self.edges[slot as usize] = ids;
        result
    }

    /// A free slot of the n-ary edge table. The free list keeps room for every
    /// slot, so giving one back (`edges_free.push`) never allocates.
    fn edge_slot(&mut self) -> Result<u32, ArenaError> {
        if let Some(slot) = self.edges_free.pop() {
            return Ok(slot);
        }
        reserve(&mut self.edges, 1)?;
        reserve_total(&mut self.edges_free, self.edges.len() + 1)?;
        self.edges.push(Vec::new());
        Ok((self.edges.len() - 1) as u32)
    }

    fn nary(&mut self, op: Op, xs: &[Operand], out: f64) -> Result<NodeId, ArenaError> {
        self.check_live(xs)?;
        let slot = self.edge_slot()?;
        let mut ids = std::mem::take(&mut self.edges[slot as usize]);
        ids.clear();
        if ids.try_reserve_exact(xs.len()).is_err() {
            self.edges[slot as usize] = ids;
            self.edges_free.push(slot);
            return Err(ArenaError::Memory);
        }
        let mut built = Ok(());
        for &x in xs {
            match self.resolve(x) {
                Ok(id) => {
                    self.rc[id as usize] += 1;
                    ids.push(id);
                }
                Err(e) => {
                    built = Err(e);
                    break;
                }
            }
        }
        let n = ids.len() as u32;
        let result = built.and_then(|()| self.alloc(op, out, slot, n));
        self.keep_edges(slot, ids, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: f64) -> Operand {
        Operand::Const(x)
    }
    fn n(x: NodeId) -> Operand {
        Operand::Node(x)
    }

    #[test]
    fn nodes_free_when_unreferenced_and_slots_are_reused() {
        let mut ar = Arena::new();
        let a = ar.leaf(2.0).unwrap();
        ar.incref(a);
        let b = ar.binary(Op::Mul, n(a), c(3.0)).unwrap();
        ar.incref(b);
        assert_eq!(ar.data[b as usize], 6.0);
        assert_eq!(ar.live(), 3); // a, the constant leaf, b
        ar.decref(b);
        assert_eq!(ar.live(), 1);
        let d = ar.leaf(1.0).unwrap();
        assert!(d < 3, "a freed slot is reused");
        ar.incref(d);
        ar.decref(a);
        ar.decref(d);
        assert_eq!(ar.live(), 0);
    }

    #[test]
    fn deep_chain_frees_without_recursion() {
        let mut ar = Arena::new();
        let mut x = ar.leaf(0.0).unwrap();
        ar.incref(x);
        for _ in 0..2_000_000 {
            let y = ar.binary(Op::Add, n(x), n(x)).unwrap();
            ar.incref(y);
            ar.decref(x);
            x = y;
        }
        assert_eq!(ar.live(), 2_000_001);
        ar.release(x);
        assert_eq!(ar.live(), 0);
        assert_eq!(ar.slots(), 0, "an empty arena returns its memory");
    }

    #[test]
    fn nary_nodes_keep_their_operands_alive() {
        let mut ar = Arena::new();
        let xs: Vec<NodeId> = (0..5).map(|i| ar.leaf(i as f64).unwrap()).collect();
        let s = ar
            .sum(&xs.iter().map(|&x| n(x)).collect::<Vec<_>>())
            .unwrap();
        ar.incref(s);
        assert_eq!(ar.data[s as usize], 10.0);
        assert_eq!(ar.operands(s), xs);
        let d = ar.dot(&[n(xs[1]), c(2.0)], &[n(xs[2]), n(xs[3])]).unwrap();
        ar.incref(d);
        assert_eq!(ar.data[d as usize], 1.0 * 2.0 + 2.0 * 3.0);
        assert_eq!(ar.n_operands(d), 4);
        ar.decref(s);
        assert_eq!(ar.live(), 5); // d, its constant leaf and the three leaves it uses
        ar.decref(d);
        assert_eq!(ar.live(), 0);
    }

    #[test]
    fn layer_builds_what_neurons_build() {
        let mut ar = Arena::new();
        let leaf = |ar: &mut Arena, v: f64| {
            let id = ar.leaf(v).unwrap();
            ar.incref(id);
            id
        };
        let w = vec![
            vec![leaf(&mut ar, 0.5), leaf(&mut ar, -1.0)],
            vec![leaf(&mut ar, 2.0), leaf(&mut ar, 0.25)],
        ];
        let b = vec![leaf(&mut ar, 0.1), leaf(&mut ar, -3.0)];
        let base = ar.live();
        let outs = ar.layer(&w, &b, &[c(2.0), c(4.0)], Op::Relu).unwrap();
        assert_eq!(ar.data[outs[0] as usize], 0.0); // relu(1 - 4 + 0.1)
        assert_eq!(ar.data[outs[1] as usize], 2.0); // relu(4 + 1 - 3)
        assert_eq!(
            ar.live(),
            base + 2 + 2 * 3,
            "two shared input leaves, three nodes each"
        );
        let (s, _) = (ar.operand(outs[1], 0), ());
        assert_eq!(ar.op(s), Op::Add);
        assert_eq!(ar.op(ar.operand(s, 0)), Op::Dot);
        for o in outs {
            ar.decref(o);
        }
        assert_eq!(ar.live(), base);
    }

    #[test]
    fn stale_operands_are_errors_not_panics() {
        let mut ar = Arena::new();
        let a = ar.leaf(1.0).unwrap();
        ar.incref(a);
        let b = ar.leaf(1.0).unwrap();
        ar.incref(b);
        ar.decref(b);
        assert_eq!(ar.binary(Op::Add, n(a), n(b)), Err(ArenaError::Stale(b)));
        assert_eq!(ar.unary(Op::Exp, b, [0.0; 2]), Err(ArenaError::Stale(b)));
        assert_eq!(ar.sum(&[n(a), n(b)]), Err(ArenaError::Stale(b)));
        assert_eq!(ar.live(), 1, "a failed op leaves nothing behind");
    }

    #[test]
    fn large_frees_go_back_on_the_free_list_in_ascending_order() {
        let mut ar = Arena::new();
        let leaves: Vec<NodeId> = (0..8)
            .map(|i| {
                let id = ar.leaf(i as f64).unwrap();
                ar.incref(id);
                id
            })
            .collect();
        // A graph of 3 * 3000 + 1 nodes in slots freed one by one in a scrambled
        // order, as a long training run leaves them.
        let scratch: Vec<NodeId> = (0..9001)
            .map(|_| {
                let id = ar.leaf(0.0).unwrap();
                ar.incref(id);
                id
            })
            .collect();
        for k in 0..9001 {
            ar.decref(scratch[k * 7919 % 9001]);
        }
        let mut outs = Vec::new();
        for k in 0..3000u32 {
            let x = ar.leaf(k as f64).unwrap();
            let m = ar.binary(Op::Mul, n(x), n(leaves[0])).unwrap();
            let s = ar.binary(Op::Add, n(m), n(leaves[1])).unwrap();
            ar.incref(s);
            outs.push(s);
        }
        let total = ar
            .sum(&outs.iter().map(|&o| n(o)).collect::<Vec<_>>())
            .unwrap();
        ar.incref(total);
        for &o in &outs {
            ar.decref(o);
        }
        // Two slots free before, freed one at a time: the usual LIFO list.
        ar.decref(leaves[2]);
        ar.decref(leaves[5]);
        let (live, slots) = (ar.live(), ar.slots());
        ar.decref(total); // frees 9001 nodes in one go
        assert_eq!(ar.live(), live - 9001);
        // The batch comes back lowest slot first, then the slots free before it.
        let mut made: Vec<NodeId> = (0..9003).map(|_| ar.leaf(0.0).unwrap()).collect();
        assert_eq!(
            ar.slots(),
            slots,
            "every freed slot is reused before growing"
        );
        let (batch, rest) = made.split_at(9001);
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rest, &[leaves[5], leaves[2]]);
        made.sort_unstable();
        made.dedup();
        assert_eq!(made.len(), 9003, "no slot handed out twice");
        assert_eq!(
            ar.leaf(0.0).unwrap() as usize,
            slots,
            "then the arena grows"
        );
        assert!(ar.free_bits.iter().all(|&w| w == 0));
    }

    // The per-node budget of DESIGN.md section 3, checked at compile time.
    const _: () = assert!(BYTES_PER_NODE <= 48);
}
