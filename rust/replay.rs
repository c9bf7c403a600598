//! Replay: a recorded graph re-run forward and backward with no work per node
//! outside Rust. Python-level control flow taken while recording is frozen (as
//! with `torch.jit.trace`): a replay recomputes the same ops on new leaf values.

use crate::arena::{reserve, Arena, ArenaError, NodeId};
use crate::backward::{self, Anomaly};
use crate::ops::{self, Op};

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
        let order = backward::order(ar, root)?;
        let compiled = match order.len() <= COMPILE_LIMIT {
            true => Some(Compiled::new(ar, &order)?),
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

/// A tape renumbered densely, operands first: a run gathers the leaves' values,
/// computes forward and backward over contiguous arrays, and writes every node's
/// value and gradient back to the arena.
struct Compiled {
    /// Arena id of each slot, in forward order (the root last).
    ids: Vec<NodeId>,
    /// Slots of the leaves.
    leaves: Vec<u32>,
    /// The other nodes, in forward order.
    code: Vec<Instr>,
    args: Vec<u32>,
}

impl Compiled {
    fn new(ar: &Arena, order: &[NodeId]) -> Result<Compiled, ArenaError> {
        let mut ids: Vec<NodeId> = Vec::new();
        reserve(&mut ids, order.len())?;
        ids.extend(order.iter().rev());
        let mut slot = rustc_hash::FxHashMap::default();
        slot.try_reserve(ids.len())
            .map_err(|_| ArenaError::Memory)?;
        for (k, &id) in ids.iter().enumerate() {
            slot.insert(id, k as u32);
        }
        let (mut leaves, mut code, mut args) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &id) in ids.iter().enumerate() {
            let op = ar.op(id);
            reserve(&mut leaves, 1)?;
            reserve(&mut code, 1)?;
            reserve(&mut args, ar.n_operands(id))?;
            let (a, b) = match op {
                Op::Leaf | Op::Free => {
                    leaves.push(k as u32);
                    continue;
                }
                _ if op.is_nary() => {
                    let start = args.len() as u32;
                    args.extend((0..ar.n_operands(id)).map(|j| slot[&ar.operand(id, j)]));
                    (start, args.len() as u32)
                }
                _ if op.is_binary() => (slot[&ar.operand(id, 0)], slot[&ar.operand(id, 1)]),
                _ => (slot[&ar.operand(id, 0)], 0),
            };
            code.push(Instr {
                op,
                out: k as u32,
                a,
                b,
                c: ar.consts(id),
            });
        }
        Ok(Compiled {
            ids,
            leaves,
            code,
            args,
        })
    }

    fn run(&self, ar: &mut Arena, scratch: &mut Scratch) -> Result<(), ArenaError> {
        let n = self.ids.len();
        let zeros = |v: &mut Vec<f64>| -> Result<(), ArenaError> {
            v.clear();
            reserve(v, n)?;
            v.resize(n, 0.0);
            Ok(())
        };
        zeros(&mut scratch.data)?;
        zeros(&mut scratch.grad)?;
        let (data, grad) = (&mut scratch.data[..], &mut scratch.grad[..]);
        for &k in &self.leaves {
            data[k as usize] = ar.data[self.ids[k as usize] as usize];
        }
        for ins in &self.code {
            let (a, b) = (ins.a as usize, ins.b as usize);
            data[ins.out as usize] = match ins.op {
                Op::Sum => ops::nary(Op::Sum, &self.args[a..b], data),
                Op::Dot => ops::nary(Op::Dot, &self.args[a..b], data),
                Op::LogSumExp => ops::nary(Op::LogSumExp, &self.args[a..b], data),
                op if op.is_binary() => ops::binary(op, data[a], data[b]),
                op => ops::unary(op, data[a], ins.c),
            };
        }
        // Backward, as `backward::backprop` does it, node by node from the root.
        grad[n - 1] = 1.0;
        for ins in self.code.iter().rev() {
            let (a, b) = (ins.a as usize, ins.b as usize);
            let (g, out) = (grad[ins.out as usize], data[ins.out as usize]);
            match ins.op {
                op if op.is_nary() => ops::nary_grad(op, g, out, &self.args[a..b], data, grad),
                op if op.is_binary() => {
                    let (ga, gb) = ops::binary_grad(op, g, data[a], data[b], out);
                    grad[a] += ga;
                    grad[b] += gb;
                }
                op => grad[a] += ops::unary_grad(op, g, data[a], out, ins.c),
            }
        }
        for ((&id, &d), &g) in self.ids.iter().zip(data.iter()).zip(grad.iter()) {
            ar.data[id as usize] = d;
            ar.grad[id as usize] = g;
        }
        Ok(())
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
