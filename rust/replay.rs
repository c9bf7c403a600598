//! Replay: a recorded graph re-run forward and backward with no work per node
//! outside Rust. Python-level control flow taken while recording is frozen (as
//! with `torch.jit.trace`): a replay recomputes the same ops on new leaf values.

use crate::arena::{Arena, NodeId};
use crate::backward::{self, Anomaly};
use crate::ops::{self, Op};

/// The nodes reachable from a root, in processing order (root first), each held
/// by one reference so the graph outlives the handles that built it.
pub struct Tape {
    order: Vec<NodeId>,
}

impl Tape {
    /// Records the graph under `root` (which must be live).
    pub fn record(ar: &mut Arena, root: NodeId) -> Tape {
        let order = backward::order(ar, root);
        for &id in &order {
            ar.incref(id);
        }
        Tape { order }
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

/// One row of the op table, forward, from the operands' current values.
pub fn recompute(ar: &mut Arena, id: NodeId) {
    let i = id as usize;
    let op = ar.op[i];
    let out = match op {
        Op::Leaf | Op::Free => return,
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => {
            ops::binary(op, ar.data[ar.a[i] as usize], ar.data[ar.b[i] as usize])
        }
        Op::Sum => {
            let ids = &ar.edges[ar.a[i] as usize];
            ops::sum(ids.iter().map(|&x| ar.data[x as usize]))
        }
        Op::Dot => {
            let ids = &ar.edges[ar.a[i] as usize];
            let (ws, xs) = ids.split_at(ids.len() / 2);
            ops::dot(
                ws.iter()
                    .zip(xs)
                    .map(|(&w, &x)| (ar.data[w as usize], ar.data[x as usize])),
            )
        }
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
        let tape = Tape::record(&mut ar, loss);
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
