//! Replay: a recorded graph re-run forward and backward with no work per node
//! outside Rust. Python-level control flow taken while recording is frozen (as
//! with `torch.jit.trace`): a replay recomputes the same ops on new leaf values.

use crate::arena::{reserve, Arena, ArenaError, NodeId};
use crate::backward::{self, Anomaly};
use crate::ops::{self, Op};
use crate::per_op;

/// The nodes reachable from a root, in processing order (root first), each held
/// by one reference so the graph outlives the handles that built it.
pub struct Tape {
    order: Vec<NodeId>,
    compiled: Option<Compiled>,
}

/// Tapes up to this many nodes are also compiled for `run` (about 40 bytes a node).
pub const COMPILE_LIMIT: usize = 1 << 20;

impl Tape {
    /// Records the graph under `root` (which must be live); `Err` (out of
    /// memory) leaves the arena as it was.
    pub fn record(ar: &mut Arena, root: NodeId) -> Result<Tape, ArenaError> {
        Tape::record_with(ar, root, IN_PLACE_LIMIT)
    }

    /// `record`, running in place up to `in_place_limit` nodes (tests use 0 to
    /// take the dense path on small graphs).
    pub(crate) fn record_with(
        ar: &mut Arena,
        root: NodeId,
        in_place_limit: usize,
    ) -> Result<Tape, ArenaError> {
        let order = backward::order(ar, root)?;
        let compiled = match order.len() <= COMPILE_LIMIT {
            true => Some(Compiled::new(ar, &order, order.len() <= in_place_limit)?),
            false => None,
        };
        for &id in &order {
            ar.incref(id);
        }
        Ok(Tape { order, compiled })
    }

    /// `zero_grad`, `forward` and `backward` in one pass over the compiled tape:
    /// the same float operations in the same order, so the same bits. Returns
    /// false (and does nothing) for a tape too large to have been compiled, and
    /// `Err` (having done nothing) when out of memory.
    pub fn run_compiled(&self, ar: &mut Arena) -> Result<bool, ArenaError> {
        self.run_compiled_with(ar, &mut Scratch::default())
    }

    /// `run_compiled` with its working arrays in `scratch`, which keeps them for
    /// the next run (a small tape's run then allocates nothing).
    pub fn run_compiled_with(
        &self,
        ar: &mut Arena,
        scratch: &mut Scratch,
    ) -> Result<bool, ArenaError> {
        match &self.compiled {
            Some(c) => {
                c.run(ar, scratch)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The recorded nodes in processing order (root first).
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    pub fn root(&self) -> NodeId {
        self.order[0]
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Recomputes every non-leaf node from its operands, operands first.
    pub fn forward(&self, ar: &mut Arena) {
        for &id in self.order.iter().rev() {
            recompute(ar, id);
        }
    }

    /// Sets every recorded node's gradient to 0.
    pub fn zero_grad(&self, ar: &mut Arena) {
        for &id in &self.order {
            ar.grad[id as usize] = 0.0;
        }
    }

    /// Seeds the root with 1.0 and sweeps, as `backward()` does.
    pub fn backward(&self, ar: &mut Arena, check: bool) -> Result<(), Anomaly> {
        ar.grad[self.root() as usize] = 1.0;
        backward::sweep(ar, &self.order, check)
    }

    /// Gives back the references the tape holds.
    pub fn release(self, ar: &mut Arena) {
        for &id in &self.order {
            ar.decref(id);
        }
    }
}

/// The working arrays of a compiled run (one value and one gradient per slot),
/// kept between runs by whoever owns the tape.
#[derive(Default)]
pub struct Scratch {
    data: Vec<f64>,
    grad: Vec<f64>,
}

impl Scratch {
    /// Bytes held.
    pub fn capacity_bytes(&self) -> usize {
        (self.data.capacity() + self.grad.capacity()) * std::mem::size_of::<f64>()
    }
}

/// One node of a compiled tape: its op, its slot, and its operands' slots (for an
/// n-ary op, `a` and `b` delimit its operands in `Compiled::args`).
struct Instr {
    op: Op,
    out: u32,
    a: u32,
    b: u32,
    c: [f64; 2],
}

/// Tapes up to this many nodes run in place, on the arena's own arrays (their
/// nodes fit in cache wherever they are); larger ones are renumbered densely.
const IN_PLACE_LIMIT: usize = 1 << 12;

/// A tape as straight-line code, operands first, over *slots*. A small tape's
/// slots are its nodes' arena ids, and a run computes in the arena's arrays in
/// place. A large tape is renumbered densely: a run gathers the leaves' values
/// into contiguous arrays, computes forward and backward there, and writes every
/// node's value and gradient back to the arena. Both do the same float
/// operations in the same order.
struct Compiled {
    /// Arena id of each node, in forward order (the root last).
    ids: Vec<NodeId>,
    /// Slots are arena ids (in place), else positions in `ids` (dense).
    in_place: bool,
    /// Slots of the leaves (dense only).
    leaves: Vec<u32>,
    /// The other nodes, in forward order.
    code: Vec<Instr>,
    args: Vec<u32>,
    /// One more than the largest slot.
    extent: usize,
}

impl Compiled {
    fn new(ar: &Arena, order: &[NodeId], in_place: bool) -> Result<Compiled, ArenaError> {
        let mut ids: Vec<NodeId> = Vec::new();
        reserve(&mut ids, order.len())?;
        ids.extend(order.iter().rev());
        // One more than the largest recorded id.
        let end = ids.iter().max().map_or(0, |&m| m as usize + 1);
        // Dense: each node's slot, by arena id.
        let mut slot: Vec<u32> = Vec::new();
        if !in_place {
            reserve(&mut slot, end)?;
            slot.resize(end, u32::MAX);
            for (k, &id) in ids.iter().enumerate() {
                slot[id as usize] = k as u32;
            }
        }
        let slot_of = |id: NodeId| if in_place { id } else { slot[id as usize] };
        let (mut leaves, mut code, mut args) = (Vec::new(), Vec::new(), Vec::new());
        reserve(&mut code, ids.len())?;
        if !in_place {
            reserve(&mut leaves, ids.len())?;
        }
        for &id in &ids {
            let op = ar.op(id);
            if op.is_nary() {
                reserve(&mut args, ar.n_operands(id))?;
            }
            let (a, b) = match op {
                Op::Leaf | Op::Free => {
                    if !in_place {
                        leaves.push(slot_of(id));
                    }
                    continue;
                }
                _ if op.is_nary() => {
                    let start = args.len() as u32;
                    let operands = &ar.edges[ar.a[id as usize] as usize];
                    args.extend(operands.iter().map(|&x| slot_of(x)));
                    (start, args.len() as u32)
                }
                _ if op.is_binary() => (slot_of(ar.operand(id, 0)), slot_of(ar.operand(id, 1))),
                _ => {
                    let a = slot_of(ar.operand(id, 0));
                    (a, a)
                }
            };
            code.push(Instr {
                op,
                out: slot_of(id),
                a,
                b,
                c: ar.consts(id),
            });
        }
        let extent = if in_place { end } else { ids.len() };
        Ok(Compiled {
            ids,
            in_place,
            leaves,
            code,
            args,
            extent,
        })
    }

    fn run(&self, ar: &mut Arena, scratch: &mut Scratch) -> Result<(), ArenaError> {
        if self.in_place {
            // The tape holds its nodes, and the arena's arrays never shrink.
            assert!(self.extent <= ar.data.len() && self.extent <= ar.grad.len());
            for &id in &self.ids {
                ar.grad[id as usize] = 0.0;
            }
            let root = *self.ids.last().expect("a tape has a root");
            // SAFETY: every slot is an arena id below `extent` (checked above).
            unsafe { self.sweep(&mut ar.data, &mut ar.grad, root) };
            return Ok(());
        }
        let n = self.ids.len();
        // Every value slot is written before it is read (the leaves first, then
        // each node after its operands), so only the gradients start from zero.
        for v in [&mut scratch.data, &mut scratch.grad] {
            if v.len() != n {
                v.clear();
                reserve(v, n)?;
                v.resize(n, 0.0);
            }
        }
        let (data, grad) = (&mut scratch.data[..], &mut scratch.grad[..]);
        grad.fill(0.0);
        for &k in &self.leaves {
            data[k as usize] = ar.data[self.ids[k as usize] as usize];
        }
        // SAFETY: every slot is below `n`, the length of `data` and `grad`.
        unsafe { self.sweep(data, grad, n as u32 - 1) };
        for ((&id, &d), &g) in self.ids.iter().zip(data.iter()).zip(grad.iter()) {
            ar.data[id as usize] = d;
            ar.grad[id as usize] = g;
        }
        Ok(())
    }

    /// Forward over `code`, then backward from `root` (whose gradient is set to
    /// 1.0), as `backward::backprop` does it, node by node.
    ///
    /// # Safety
    /// Every slot of `code` (`out`, `a`, `b`; an n-ary op's `a..b` indexes
    /// `args`, read with bounds checks) is less than the length of `data` and of
    /// `grad`, and so is `root`.
    unsafe fn sweep(&self, data: &mut [f64], grad: &mut [f64], root: u32) {
        let (n, m) = (data.len(), grad.len());
        let (dp, gp) = (data.as_mut_ptr(), grad.as_mut_ptr());
        // SAFETY (each read and write through `dp` and `gp`): the caller's promise.
        let d = |i: u32| unsafe { *dp.add(i as usize) };
        let all = || unsafe { std::slice::from_raw_parts(dp, n) };
        for ins in &self.code {
            let (a, b) = (ins.a, ins.b);
            let v = per_op!(ins.op, |op| {
                binary => ops::binary(op, d(a), d(b)),
                unary => ops::unary(op, d(a), ins.c),
                nary => ops::nary(op, &self.args[a as usize..b as usize], all()),
            });
            unsafe { *dp.add(ins.out as usize) = v };
        }
        let add = |i: u32, x: f64| unsafe { *gp.add(i as usize) += x };
        unsafe { *gp.add(root as usize) = 1.0 };
        for ins in self.code.iter().rev() {
            let (a, b) = (ins.a, ins.b);
            let (g, out) = (unsafe { *gp.add(ins.out as usize) }, d(ins.out));
            per_op!(ins.op, |op| {
                binary => {
                    let (ga, gb) = ops::binary_grad(op, g, d(a), d(b), out);
                    add(a, ga);
                    add(b, gb);
                },
                unary => add(a, ops::unary_grad(op, g, d(a), out, ins.c)),
                nary => {
                    let grad = unsafe { std::slice::from_raw_parts_mut(gp, m) };
                    ops::nary_grad(op, g, out, &self.args[a as usize..b as usize], all(), grad)
                },
            });
        }
    }
}

/// One row of the op table, forward, from the operands' current values.
pub fn recompute(ar: &mut Arena, id: NodeId) {
    let i = id as usize;
    let op = ar.op[i];
    let out = match op {
        Op::Leaf | Op::Free => return,
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => {
            ops::binary(op, ar.data[ar.a[i] as usize], ar.data[ar.b[i] as usize])
        }
        _ if op.is_nary() => ops::nary(op, &ar.edges[ar.a[i] as usize], &ar.data),
        _ => ops::unary(op, ar.data[ar.a[i] as usize], ar.consts(id)),
    };
    ar.data[i] = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Operand::{Const, Node};

    /// `loss = sum(relu(dot(w, x) + b) ** 2)` over two samples, built eagerly.
    fn build(ar: &mut Arena, w: &[NodeId], b: NodeId) -> NodeId {
        let mut terms = Vec::new();
        for x in [[0.5, -1.0], [2.0, 0.25]] {
            let d = ar
                .dot(&[Node(w[0]), Node(w[1])], &[Const(x[0]), Const(x[1])])
                .unwrap();
            let s = ar.binary(Op::Add, Node(d), Node(b)).unwrap();
            let r = ar.unary(Op::Relu, s, [0.0; 2]).unwrap();
            terms.push(Node(ar.unary(Op::PowConst, r, [2.0, 0.0]).unwrap()));
        }
        let loss = ar.sum(&terms).unwrap();
        ar.incref(loss);
        loss
    }

    #[test]
    fn replay_matches_a_fresh_eager_graph_bit_for_bit() {
        let mut ar = Arena::new();
        let w: Vec<NodeId> = [0.3, -0.7]
            .iter()
            .map(|&v| {
                let id = ar.leaf(v).unwrap();
                ar.incref(id);
                id
            })
            .collect();
        let b = ar.leaf(0.1).unwrap();
        ar.incref(b);
        let loss = build(&mut ar, &w, b);
        let tape = Tape::record(&mut ar, loss).unwrap();
        ar.decref(loss); // the tape keeps the graph alive
        for step in 0..5 {
            // change the parameters, replay, and compare with a freshly built graph
            for &p in w.iter().chain([&b]) {
                ar.data[p as usize] += 0.05 * (step as f64 + 1.0);
                ar.grad[p as usize] = 0.0;
            }
            tape.zero_grad(&mut ar);
            tape.forward(&mut ar);
            tape.backward(&mut ar, false).unwrap();
            let replayed: Vec<u64> = w
                .iter()
                .chain([&b])
                .map(|&p| ar.grad[p as usize].to_bits())
                .collect();
            let value = ar.data[tape.root() as usize];
            for &p in w.iter().chain([&b]) {
                ar.grad[p as usize] = 0.0;
            }
            let fresh = build(&mut ar, &w, b);
            backward::backward(&mut ar, fresh, false).unwrap();
            assert_eq!(value.to_bits(), ar.data[fresh as usize].to_bits());
            let eager: Vec<u64> = w
                .iter()
                .chain([&b])
                .map(|&p| ar.grad[p as usize].to_bits())
                .collect();
            assert_eq!(replayed, eager, "step {step}");
            ar.decref(fresh);
        }
        let n = ar.live();
        tape.release(&mut ar);
        assert!(ar.live() < n);
        assert_eq!(ar.live(), 3, "only the parameters remain");
    }
}
