//! Reverse-mode sweep: the canonical order of DESIGN.md section 3 and the
//! accumulation of every op's contributions, without recursion.

use crate::arena::{reserve, Arena, ArenaError, NodeId};
use crate::ops::{self, Op};

/// The first non-finite gradient met with checking on (`detect_anomaly`).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The node whose backward produced it.
    pub node: NodeId,
    /// The operand that received it.
    pub operand: NodeId,
    pub grad: f64,
}

/// Nodes reachable from `root` in processing order: the reverse of the post-order
/// of an iterative depth-first walk that visits operands in operand order (the
/// order micrograd's recursive `build_topo` gives, reversed). Root first.
pub fn order(ar: &mut Arena, root: NodeId) -> Result<Vec<NodeId>, ArenaError> {
    let mut out = Vec::new();
    order_into(ar, root, &mut out)?;
    Ok(out)
}

/// `order` into `post` (cleared first), so a caller can reuse its buffer.
pub fn order_into(ar: &mut Arena, root: NodeId, post: &mut Vec<NodeId>) -> Result<(), ArenaError> {
    let mut walk = Walk::start(ar, root, post);
    let done = walk.run(ar, post, usize::MAX);
    walk.finish(ar);
    done.map(|_| ())
}

/// A walk of `order` in progress, so a caller can do it a few nodes at a time
/// (and let go of the arena in between: see `Walk::is_current`).
pub struct Walk {
    stack: Vec<u64>,
    cur: Option<u64>,
    epoch: u32,
}

/// A stack entry: a node to emit once its operands are done (else one to visit).
const EMIT: u64 = 1 << 32;

impl Walk {
    /// Starts the walk from `root`; `post` is cleared.
    pub fn start(ar: &mut Arena, root: NodeId, post: &mut Vec<NodeId>) -> Walk {
        ar.epoch = ar.epoch.wrapping_add(1);
        if ar.epoch == 0 {
            ar.mark.iter_mut().for_each(|m| *m = 0);
            ar.epoch = 1;
        }
        post.clear();
        let mut stack = std::mem::take(&mut ar.walk);
        stack.clear();
        Walk {
            stack,
            cur: Some(root as u64),
            epoch: ar.epoch,
        }
    }

    /// Whether no other walk began since this one did (another walk reuses the
    /// visit marks, so this one must then start over).
    pub fn is_current(&self, ar: &Arena) -> bool {
        ar.epoch == self.epoch
    }

    /// Walks on until `budget` more nodes are emitted; true when the walk is done
    /// (`post` then holds the order). On `Err` (out of memory) the walk is over
    /// and the arena unchanged but for visit marks.
    pub fn run(
        &mut self,
        ar: &mut Arena,
        post: &mut Vec<NodeId>,
        budget: usize,
    ) -> Result<bool, ArenaError> {
        // A stack of nodes to visit and, flagged, nodes to emit once their operands
        // are done. Operands are pushed last-first, so the first is walked first
        // (straight away, without a trip through the stack); a node is marked when
        // visited, and a copy still on the stack from another parent is then
        // skipped, as the recursive walk skips a visited operand.
        let epoch = self.epoch;
        let stack = &mut self.stack;
        let Some(mut cur) = self.cur else {
            return Ok(true);
        };
        // On `Err` the walk is abandoned, so the marks it left do not matter.
        let stop = post.len().saturating_add(budget);
        loop {
            let id = cur as NodeId;
            let i = id as usize;
            let emit = if cur & EMIT != 0 {
                true
            } else if ar.mark[i] != epoch {
                ar.mark[i] = epoch;
                let op = ar.op[i];
                if matches!(op, Op::Leaf | Op::Free) {
                    true
                } else {
                    let Arena {
                        mark, edges, a, b, ..
                    } = &*ar;
                    let n = if op.is_nary() {
                        edges[a[i] as usize].len()
                    } else {
                        1
                    };
                    if stack.capacity() - stack.len() <= n {
                        reserve(stack, (n + 1).max(stack.len()))?;
                    }
                    stack.push(cur | EMIT);
                    let mut visit = |x: NodeId| {
                        if mark[x as usize] != epoch {
                            stack.push(x as u64);
                        }
                    };
                    let first = if op.is_nary() {
                        let ids = &edges[a[i] as usize];
                        ids.iter().skip(1).rev().for_each(|&x| visit(x));
                        ids.first().copied()
                    } else {
                        if op.is_binary() {
                            visit(b[i]);
                        }
                        Some(a[i])
                    };
                    if let Some(x) = first.filter(|&x| mark[x as usize] != epoch) {
                        cur = x as u64;
                        continue;
                    }
                    false
                }
            } else {
                false
            };
            if emit {
                if post.len() == post.capacity() {
                    reserve(post, post.len().max(1024))?;
                }
                post.push(id);
            }
            match stack.pop() {
                Some(next) => cur = next,
                None => {
                    self.cur = None;
                    post.reverse();
                    return Ok(true);
                }
            }
            if post.len() >= stop {
                self.cur = Some(cur);
                return Ok(false);
            }
        }
    }

    /// Gives the walk's buffer back to the arena for the next walk.
    pub fn finish(mut self, ar: &mut Arena) {
        if self.stack.capacity() <= 1 << 20 {
            self.stack.clear();
            ar.walk = std::mem::take(&mut self.stack); // unless it is huge
        }
    }
}

/// Adds every node's contributions to its operands' gradients, in `order`.
/// With `check`, stops at the first non-finite gradient it produces.
pub fn sweep(ar: &mut Arena, order: &[NodeId], check: bool) -> Result<(), Anomaly> {
    if check {
        for &id in order {
            backprop(ar, id);
            check_node(ar, id)?;
        }
    } else {
        for &id in order {
            backprop(ar, id);
        }
    }
    Ok(())
}

/// Seeds `root` with 1.0 (as micrograd does) and sweeps the whole graph.
pub fn backward(ar: &mut Arena, root: NodeId, check: bool) -> Result<(), Anomaly> {
    let order = order(ar, root).expect("memory for the order");
    ar.grad[root as usize] = 1.0;
    sweep(ar, &order, check)
}

fn check_node(ar: &Arena, id: NodeId) -> Result<(), Anomaly> {
    for k in 0..ar.n_operands(id) {
        let x = ar.operand(id, k);
        let g = ar.grad[x as usize];
        if !g.is_finite() {
            return Err(Anomaly {
                node: id,
                operand: x,
                grad: g,
            });
        }
    }
    Ok(())
}

/// One row of the op table, backward: the contributions of node `id` to its operands.
#[inline(always)]
pub fn backprop(ar: &mut Arena, id: NodeId) {
    let i = id as usize;
    let op = ar.op[i];
    let g = ar.grad[i];
    let out = ar.data[i];
    match op {
        Op::Leaf | Op::Free => {}
        // One arm per op, so each row of the table is straight-line code.
        Op::Add => backprop_binary(ar, i, Op::Add, g, out),
        Op::Sub => backprop_binary(ar, i, Op::Sub, g, out),
        Op::Mul => backprop_binary(ar, i, Op::Mul, g, out),
        Op::Div => backprop_binary(ar, i, Op::Div, g, out),
        Op::Pow => backprop_binary(ar, i, Op::Pow, g, out),
        Op::Sum => backprop_nary(ar, i, Op::Sum, g, out),
        Op::Dot => backprop_nary(ar, i, Op::Dot, g, out),
        Op::LogSumExp => backprop_nary(ar, i, Op::LogSumExp, g, out),
        _ => {
            let a = ar.a[i] as usize;
            let c = if op.has_consts() {
                ar.consts[ar.b[i] as usize]
            } else {
                [0.0; 2]
            };
            ar.grad[a] += ops::unary_grad(op, g, ar.data[a], out, c);
        }
    }
}

#[inline(always)]
fn backprop_nary(ar: &mut Arena, i: usize, op: Op, g: f64, out: f64) {
    let Arena {
        edges, grad, data, ..
    } = ar;
    ops::nary_grad(op, g, out, &edges[ar.a[i] as usize], data, grad);
}

#[inline(always)]
fn backprop_binary(ar: &mut Arena, i: usize, op: Op, g: f64, out: f64) {
    let (a, b) = (ar.a[i] as usize, ar.b[i] as usize);
    let (ga, gb) = ops::binary_grad(op, g, ar.data[a], ar.data[b], out);
    ar.grad[a] += ga;
    ar.grad[b] += gb;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Operand::{Const, Node};

    #[test]
    fn micrograd_readme_example() {
        // micrograd's first README expression; its published results are
        // g = 24.7041, dg/da = 138.8338, dg/db = 645.5773.
        let mut ar = Arena::new();
        let keep = |ar: &mut Arena, id: NodeId| {
            ar.incref(id);
            id
        };
        let a = ar.leaf(-4.0).unwrap();
        let a = keep(&mut ar, a);
        let b = ar.leaf(2.0).unwrap();
        let b = keep(&mut ar, b);
        let mut c = ar.binary(Op::Add, Node(a), Node(b)).unwrap();
        ar.incref(c);
        let ab = ar.binary(Op::Mul, Node(a), Node(b)).unwrap();
        let b3 = ar.unary(Op::PowConst, b, [3.0, 0.0]).unwrap();
        let d = ar.binary(Op::Add, Node(ab), Node(b3)).unwrap();
        ar.incref(d);
        let mut d = d;
        let step = |ar: &mut Arena, x: NodeId, new: NodeId| {
            ar.incref(new);
            ar.decref(x);
            new
        };
        // c += c + 1
        let t = ar.binary(Op::Add, Node(c), Const(1.0)).unwrap();
        let t = ar.binary(Op::Add, Node(c), Node(t)).unwrap();
        c = step(&mut ar, c, t);
        // c += 1 + c + (-a)
        let t1 = ar.binary(Op::Add, Const(1.0), Node(c)).unwrap();
        let na = ar.unary(Op::Neg, a, [0.0; 2]).unwrap();
        let t2 = ar.binary(Op::Add, Node(t1), Node(na)).unwrap();
        let t = ar.binary(Op::Add, Node(c), Node(t2)).unwrap();
        c = step(&mut ar, c, t);
        // d += d * 2 + (b + a).relu()
        let d2 = ar.binary(Op::Mul, Node(d), Const(2.0)).unwrap();
        let ba = ar.binary(Op::Add, Node(b), Node(a)).unwrap();
        let r = ar.unary(Op::Relu, ba, [0.0; 2]).unwrap();
        let s = ar.binary(Op::Add, Node(d2), Node(r)).unwrap();
        let t = ar.binary(Op::Add, Node(d), Node(s)).unwrap();
        d = step(&mut ar, d, t);
        // d += 3 * d + (b - a).relu()
        let d3 = ar.binary(Op::Mul, Const(3.0), Node(d)).unwrap();
        let bma = ar.binary(Op::Sub, Node(b), Node(a)).unwrap();
        let r = ar.unary(Op::Relu, bma, [0.0; 2]).unwrap();
        let s = ar.binary(Op::Add, Node(d3), Node(r)).unwrap();
        let t = ar.binary(Op::Add, Node(d), Node(s)).unwrap();
        d = step(&mut ar, d, t);
        // e = c - d; f = e**2; g = f / 2.0; g += 10.0 / f
        let e = ar.binary(Op::Sub, Node(c), Node(d)).unwrap();
        let f = ar.unary(Op::PowConst, e, [2.0, 0.0]).unwrap();
        let g = ar.binary(Op::Div, Node(f), Const(2.0)).unwrap();
        let h = ar.binary(Op::Div, Const(10.0), Node(f)).unwrap();
        let g = ar.binary(Op::Add, Node(g), Node(h)).unwrap();
        ar.incref(g);
        backward(&mut ar, g, false).unwrap();
        assert!((ar.data[g as usize] - 24.7041).abs() < 1e-4);
        assert!((ar.grad[a as usize] - 138.8338).abs() < 1e-4);
        assert!((ar.grad[b as usize] - 645.5773).abs() < 1e-4);
    }

    #[test]
    fn order_is_reverse_postorder_in_operand_order() {
        let mut ar = Arena::new();
        let x = ar.leaf(1.0).unwrap();
        let y = ar.leaf(2.0).unwrap();
        let xy = ar.binary(Op::Mul, Node(x), Node(y)).unwrap();
        let root = ar.binary(Op::Add, Node(xy), Node(x)).unwrap();
        ar.incref(root);
        // post-order: x, y, xy, root -> reversed
        assert_eq!(order(&mut ar, root).unwrap(), vec![root, xy, y, x]);
    }

    #[test]
    fn a_walk_in_small_steps_gives_the_same_order() {
        let mut ar = Arena::new();
        let x = ar.leaf(1.0).unwrap();
        let mut y = ar.binary(Op::Mul, Node(x), Node(x)).unwrap();
        for k in 0..50 {
            let s = ar.sum(&[Node(y), Node(x), Const(k as f64)]).unwrap();
            y = ar.binary(Op::Add, Node(s), Node(y)).unwrap();
        }
        ar.incref(y);
        let whole = order(&mut ar, y).unwrap();
        for budget in [1, 2, 7] {
            let mut post = Vec::new();
            let mut walk = Walk::start(&mut ar, y, &mut post);
            let mut steps = 0;
            while !walk.run(&mut ar, &mut post, budget).unwrap() {
                assert!(walk.is_current(&ar));
                steps += 1;
            }
            walk.finish(&mut ar);
            assert_eq!(post, whole, "budget {budget}");
            assert!(steps > whole.len() / budget / 2);
        }
    }

    #[test]
    fn reused_nodes_accumulate() {
        let mut ar = Arena::new();
        let x = ar.leaf(3.0).unwrap();
        let sq = ar.binary(Op::Mul, Node(x), Node(x)).unwrap();
        ar.incref(sq);
        backward(&mut ar, sq, false).unwrap();
        assert_eq!(ar.grad[x as usize], 6.0);
        backward(&mut ar, sq, false).unwrap();
        assert_eq!(
            ar.grad[x as usize], 12.0,
            "gradients accumulate across calls"
        );
    }

    #[test]
    fn dot_and_sum_gradients() {
        let mut ar = Arena::new();
        let w: Vec<_> = [1.0, 2.0, 3.0].map(|v| ar.leaf(v).unwrap()).to_vec();
        let x: Vec<_> = [4.0, 5.0, 6.0].map(|v| ar.leaf(v).unwrap()).to_vec();
        let d = ar
            .dot(
                &w.iter().map(|&i| Node(i)).collect::<Vec<_>>(),
                &x.iter().map(|&i| Node(i)).collect::<Vec<_>>(),
            )
            .unwrap();
        let s = ar.sum(&[Node(d), Node(w[0])]).unwrap();
        ar.incref(s);
        backward(&mut ar, s, false).unwrap();
        assert_eq!(ar.data[s as usize], 32.0 + 1.0);
        assert_eq!(ar.grad[w[0] as usize], 4.0 + 1.0);
        assert_eq!(ar.grad[x[2] as usize], 3.0);
    }

    #[test]
    fn anomaly_reports_first_non_finite_gradient() {
        let mut ar = Arena::new();
        let x = ar.leaf(0.0).unwrap();
        let l = ar.unary(Op::Log, x, [0.0; 2]).unwrap();
        ar.incref(l);
        let err = backward(&mut ar, l, true).unwrap_err();
        assert_eq!((err.node, err.operand), (l, x));
        assert_eq!(err.grad, f64::INFINITY);
    }

    #[test]
    fn million_deep_chain_backward() {
        let mut ar = Arena::new();
        let x = ar.leaf(0.5).unwrap();
        ar.incref(x);
        let mut y = x;
        for _ in 0..1_000_000 {
            let t = ar.unary(Op::Tanh, y, [0.0; 2]).unwrap();
            ar.incref(t);
            if y != x {
                ar.decref(y);
            }
            y = t;
        }
        backward(&mut ar, y, false).unwrap();
        assert!(ar.grad[x as usize] > 0.0);
        ar.decref(y);
        assert_eq!(ar.live(), 1);
    }
}
