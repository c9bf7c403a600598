//! Property tests of the arena (`cargo test --release proptests`).
//!
//! 1. `arena_matches_model`: random sequences of creating leaves, binary, unary and
//!    n-ary ops and layers over random live nodes, duplicating and dropping handles,
//!    ops on stale ids and backward from random roots. After every step the arena
//!    must agree with a model: the live nodes are exactly those reachable from the
//!    held handles, each with the reference count the model predicts (handles plus
//!    uses as an operand), with the operands the model recorded. At the end every
//!    handle is dropped and the arena must be empty.
//!    `compiled_run_matches_node_by_node`: on those graphs, the backward order is
//!    micrograd's recursive `build_topo` reversed, and a compiled replay gives every
//!    node the bits a node-by-node replay gives.
//!    `batched_lanes_match_per_sample_replay`: on those graphs, with some leaves
//!    made per-sample inputs, batched lanes give each sample the bits a replay of
//!    that sample alone gives, and the shared leaves' gradients in the documented
//!    order of `lanes.rs`.
//! 2. `tree_backward_matches_recursive_reference`: on tree-shaped graphs (no node
//!    used twice) the iterative backward gives, bit for bit, what a recursive
//!    implementation of the op table of DESIGN.md section 4 gives.

use crate::arena::{Arena, ArenaError, NodeId, Operand};
use crate::backward;
use crate::ops::{self, Op};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const CASES: u32 = 256;

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -4.0..4.0f64,
        1 => any::<f64>(),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e308),
    ]
}

// ---- 1. the arena against a model of reachability and reference counts ------

#[derive(Clone, Debug)]
enum Arg {
    /// A held handle, by index (modulo the number of handles).
    H(usize),
    C(f64),
}

#[derive(Clone, Debug)]
enum Action {
    Leaf(f64),
    Binary(usize, Arg, Arg),
    Unary(usize, usize, f64, f64),
    Nary(bool, Vec<Arg>),
    Layer(usize, usize, Vec<Arg>, usize),
    Dup(usize),
    Drop(usize, bool),
    Backward(usize, bool),
    Stale(usize, usize),
}

const BINARY: [Op; 5] = [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Pow];
const UNARY: [Op; 10] = [
    Op::Neg,
    Op::PowConst,
    Op::RPowConst,
    Op::Exp,
    Op::Log,
    Op::Tanh,
    Op::Sigmoid,
    Op::Relu,
    Op::Abs,
    Op::Clamp,
];
const ACTS: [Op; 4] = [Op::Leaf, Op::Relu, Op::Tanh, Op::Sigmoid];

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![3 => any::<usize>().prop_map(Arg::H), 1 => float().prop_map(Arg::C)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => float().prop_map(Action::Leaf),
        4 => (0..BINARY.len(), arg(), arg()).prop_map(|(o, a, b)| Action::Binary(o, a, b)),
        3 => (0..UNARY.len(), any::<usize>(), float(), float())
            .prop_map(|(o, a, c0, c1)| Action::Unary(o, a, c0, c1)),
        2 => (any::<bool>(), prop::collection::vec(arg(), 0..8))
            .prop_map(|(d, xs)| Action::Nary(d, xs)),
        1 => (1..4usize, any::<usize>(), prop::collection::vec(arg(), 1..4), 0..ACTS.len())
            .prop_map(|(n, k, x, act)| Action::Layer(n, k, x, act)),
        2 => any::<usize>().prop_map(Action::Dup),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Action::Drop(i, r)),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, c)| Action::Backward(i, c)),
        1 => (0..4usize, any::<usize>()).prop_map(|(k, i)| Action::Stale(k, i)),
    ]
}

/// What the arena should hold: the operands of every live node, and the handles.
#[derive(Default)]
struct Model {
    graph: HashMap<NodeId, Vec<NodeId>>,
    handles: Vec<NodeId>,
    /// Ids known not to be live (freed, not yet reused).
    dead: Vec<NodeId>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<NodeId> {
        (!self.handles.is_empty()).then(|| self.handles[i % self.handles.len()])
    }

    fn operand(&self, a: &Arg) -> Operand {
        match *a {
            Arg::H(i) => match self.pick(i) {
                Some(id) => Operand::Node(id),
                None => Operand::Const(i as f64),
            },
            Arg::C(c) => Operand::Const(c),
        }
    }

    /// Adds a node the arena just made (and any new node under it) to the model.
    fn adopt(&mut self, ar: &Arena, id: NodeId) {
        let mut work = vec![id];
        while let Some(x) = work.pop() {
            if self.graph.contains_key(&x) {
                continue;
            }
            assert!(ar.is_live(x), "new node {x} is not live");
            self.dead.retain(|&d| d != x);
            let prev = ar.operands(x);
            work.extend(prev.iter().copied());
            self.graph.insert(x, prev);
        }
    }

    /// A new node's operands are the ones given (constants as new leaves holding them).
    fn check_operands(&self, ar: &Arena, id: NodeId, given: &[Operand]) {
        assert!(
            !self.graph.contains_key(&id),
            "node {id} was handed out twice"
        );
        let got = ar.operands(id);
        assert_eq!(got.len(), given.len());
        for (&g, x) in got.iter().zip(given) {
            match *x {
                Operand::Node(n) => assert_eq!(g, n, "operand changed"),
                Operand::Const(c) => {
                    assert!(
                        !self.graph.contains_key(&g),
                        "a constant reused a live node"
                    );
                    assert_eq!(ar.op(g), Op::Leaf);
                    assert!(same(ar.data[g as usize], c));
                }
            }
        }
    }

    fn hold(&mut self, ar: &mut Arena, id: NodeId) {
        ar.incref(id);
        self.handles.push(id);
    }

    /// Drops what is no longer reachable, then checks the arena against the model.
    fn check(&mut self, ar: &Arena) {
        let mut reach: HashSet<NodeId> = HashSet::new();
        let mut work: Vec<NodeId> = self.handles.clone();
        while let Some(x) = work.pop() {
            if reach.insert(x) {
                work.extend(self.graph[&x].iter().copied());
            }
        }
        let gone: Vec<NodeId> = self
            .graph
            .keys()
            .copied()
            .filter(|x| !reach.contains(x))
            .collect();
        for x in gone {
            self.graph.remove(&x);
            self.dead.push(x);
        }
        assert_eq!(ar.live(), self.graph.len(), "live() != reachable nodes");
        let mut rc: HashMap<NodeId, u32> = HashMap::new();
        for &h in &self.handles {
            *rc.entry(h).or_default() += 1;
        }
        for prev in self.graph.values() {
            for &p in prev {
                *rc.entry(p).or_default() += 1;
            }
        }
        for (&id, prev) in &self.graph {
            assert!(ar.is_live(id), "reachable node {id} was freed");
            assert_eq!(&ar.operands(id), prev, "operands of {id} changed");
            assert_eq!(ar.refcount(id), rc[&id], "reference count of node {id}");
        }
        for &d in &self.dead {
            assert!(!ar.is_live(d), "unreachable node {d} is still live");
        }
    }
}

fn apply(ar: &mut Arena, m: &mut Model, action: &Action) {
    match action {
        Action::Leaf(v) => {
            let id = ar.leaf(*v).unwrap();
            m.adopt(ar, id);
            m.hold(ar, id);
        }
        Action::Binary(o, a, b) => {
            let op = BINARY[*o];
            let (a, b) = (m.operand(a), m.operand(b));
            let want = ar.peek_binary(op, a, b);
            let id = ar.binary(op, a, b).unwrap();
            m.check_operands(ar, id, &[a, b]);
            assert!(same(ar.data[id as usize], want));
            m.adopt(ar, id);
            m.hold(ar, id);
        }
        Action::Unary(o, a, c0, c1) => {
            let Some(a) = m.pick(*a) else { return };
            let op = UNARY[*o];
            let c = [*c0, *c1];
            let want = ops::unary(op, ar.data[a as usize], c);
            let id = ar.unary(op, a, c).unwrap();
            m.check_operands(ar, id, &[Operand::Node(a)]);
            assert!(same(ar.data[id as usize], want));
            if op.has_consts() {
                let got = ar.consts(id);
                assert!(same(got[0], c[0]) && same(got[1], c[1]));
            }
            m.adopt(ar, id);
            m.hold(ar, id);
        }
        Action::Nary(is_dot, xs) => {
            let xs: Vec<Operand> = xs.iter().map(|x| m.operand(x)).collect();
            let id = if *is_dot {
                let (ws, vs) = ops::split_dot(&xs);
                let vs = &vs[..ws.len()];
                let want = ar.peek_dot(ws, vs);
                let id = ar.dot(ws, vs).unwrap();
                let all: Vec<Operand> = ws.iter().chain(vs).copied().collect();
                m.check_operands(ar, id, &all);
                assert!(same(ar.data[id as usize], want));
                id
            } else {
                let want = ar.peek_sum(&xs);
                let id = ar.sum(&xs).unwrap();
                m.check_operands(ar, id, &xs);
                assert!(same(ar.data[id as usize], want));
                id
            };
            m.adopt(ar, id);
            m.hold(ar, id);
        }
        Action::Layer(n, k, x, act) => {
            if m.handles.is_empty() {
                return;
            }
            let x: Vec<Operand> = x.iter().map(|a| m.operand(a)).collect();
            let ws: Vec<Vec<NodeId>> = (0..*n)
                .map(|j| {
                    (0..x.len())
                        .map(|i| m.pick(k + 7 * j + i).unwrap())
                        .collect()
                })
                .collect();
            let bs: Vec<NodeId> = (0..*n).map(|j| m.pick(k + 3 * j + 1).unwrap()).collect();
            let outs = ar.layer(&ws, &bs, &x, ACTS[*act]).unwrap();
            assert_eq!(outs.len(), *n);
            for o in outs {
                m.adopt(ar, o);
                m.handles.push(o); // `layer` gives each output one reference already
            }
        }
        Action::Dup(i) => {
            if let Some(id) = m.pick(*i) {
                m.hold(ar, id);
            }
        }
        Action::Drop(i, release) => {
            if m.handles.is_empty() {
                return;
            }
            let id = m.handles.swap_remove(i % m.handles.len());
            if *release {
                ar.release(id);
            } else {
                ar.decref(id);
            }
        }
        Action::Backward(i, check) => {
            if let Some(root) = m.pick(*i) {
                // Non-finite gradients are allowed; with `check` they are reported.
                let _ = backward::backward(ar, root, *check);
                assert_eq!(ar.grad[root as usize], 1.0);
            }
        }
        Action::Stale(kind, i) => {
            // An op naming a dead node fails cleanly and leaves nothing behind.
            let Some(&d) = (!m.dead.is_empty()).then(|| &m.dead[i % m.dead.len()]) else {
                return;
            };
            if ar.is_live(d) {
                return;
            }
            // Each op meets the stale id before it allocates anything: the arena
            // checks liveness only (no generation), so a constant leaf made first
            // could take the stale id's slot (see `stale_id_aba_after_constant`).
            let before = ar.live();
            let Some(live) = m.pick(*i) else { return };
            let stale = Operand::Node(d);
            let r = match kind {
                0 => ar.binary(Op::Add, stale, Operand::Const(2.0)),
                1 => ar.unary(Op::Exp, d, [0.0; 2]),
                2 => ar.sum(&[Operand::Node(live), Operand::Const(3.0), stale]),
                _ => ar
                    .layer(&[vec![d]], &[live], &[Operand::Node(live)], Op::Relu)
                    .map(|_| NONE_ID),
            };
            assert_eq!(r, Err(ArenaError::Stale(d)));
            assert_eq!(
                ar.live(),
                before,
                "a failed op on a stale node leaked nodes"
            );
        }
    }
}

const NONE_ID: NodeId = crate::arena::NONE;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arena_matches_model(actions in prop::collection::vec(action(), 1..120)) {
        let mut ar = Arena::new();
        let mut m = Model::default();
        for a in &actions {
            apply(&mut ar, &mut m, a);
            m.check(&ar);
        }
        for id in std::mem::take(&mut m.handles) {
            ar.release(id);
        }
        m.check(&ar);
        prop_assert_eq!(ar.live(), 0, "all nodes freed at the end");
    }
}

// ---- 1b. compiled replay against the node-by-node replay ----------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// On random graphs with shared nodes (built by the actions above), a compiled
    /// `run` gives every recorded node the value and gradient, bit for bit, that
    /// `zero_grad`, `forward` and `backward` node by node give, after the leaves
    /// are changed, whether it runs in place or on dense copies.
    #[test]
    fn compiled_run_matches_node_by_node(
        actions in prop::collection::vec(action(), 1..120),
        pick in any::<usize>(),
        new_leaves in prop::collection::vec(float(), 64),
        in_place in any::<bool>(),
    ) {
        let mut ar = Arena::new();
        let mut m = Model::default();
        for a in &actions {
            apply(&mut ar, &mut m, a);
            m.check(&ar);
        }
        if let Some(root) = m.pick(pick) {
            // The order is micrograd's recursive build_topo, reversed.
            fn topo(ar: &Arena, id: NodeId, seen: &mut HashSet<NodeId>, out: &mut Vec<NodeId>) {
                if seen.insert(id) {
                    for x in ar.operands(id) {
                        topo(ar, x, seen, out);
                    }
                    out.push(id);
                }
            }
            let mut want = Vec::new();
            topo(&ar, root, &mut HashSet::new(), &mut want);
            want.reverse();
            prop_assert_eq!(backward::order(&mut ar, root).unwrap(), want);
            // In place (the arena's arrays) or dense (contiguous copies).
            let limit = if in_place { usize::MAX } else { 0 };
            let tape = crate::replay::Tape::record_with(&mut ar, root, limit).unwrap();
            let leaves: Vec<NodeId> =
                tape.order().iter().copied().filter(|&id| ar.op(id) == Op::Leaf).collect();
            // A first run leaves its working arrays dirty for the second.
            let mut scratch = crate::replay::Scratch::default();
            prop_assert!(tape.run_compiled_with(&mut ar, &mut scratch).unwrap());
            for (&id, &v) in leaves.iter().zip(new_leaves.iter().cycle()) {
                ar.data[id as usize] = v;
            }
            let snapshot = |ar: &Arena| -> Vec<(f64, f64)> {
                tape.order().iter().map(|&id| (ar.data[id as usize], ar.grad[id as usize])).collect()
            };
            prop_assert!(tape.run_compiled_with(&mut ar, &mut scratch).unwrap());
            let compiled = snapshot(&ar);
            for &id in tape.order() {
                ar.data[id as usize] = if ar.op(id) == Op::Leaf { ar.data[id as usize] } else { 7.0 };
                ar.grad[id as usize] = 3.0;
            }
            tape.zero_grad(&mut ar);
            tape.forward(&mut ar);
            tape.backward(&mut ar, false).unwrap();
            for (k, (c, e)) in compiled.iter().zip(snapshot(&ar)).enumerate() {
                prop_assert!(same(c.0, e.0) && same(c.1, e.1), "node {}: {:?} vs {:?}", k, c, e);
            }
            tape.release(&mut ar);
        }
        for id in std::mem::take(&mut m.handles) {
            ar.release(id);
        }
        prop_assert_eq!(ar.live(), 0);
    }
}

// ---- 1c. batched lanes against per-sample replay -----------------------------

/// `lanes::reduce`'s documented order over one chunk: lane `l` into accumulator
/// `l % 8`, then `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))`.
fn reduce8(c: &[f64]) -> f64 {
    let mut a = [0.0f64; 8];
    for (l, &x) in c.iter().enumerate() {
        a[l % 8] += x;
    }
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Each node's total of the absolute values of the contributions a sweep from
/// `root` (seeded with `seed`) sends it, at the arena's current values: what any
/// order of adding those contributions can lose to rounding is a small multiple of
/// this (the per-sample gradient itself may be far smaller, when they cancel).
fn contribution_sizes(
    ar: &Arena,
    order: &[NodeId],
    root: NodeId,
    seed: f64,
) -> HashMap<NodeId, f64> {
    let mut size = HashMap::from([(root, seed.abs())]);
    for &id in order {
        let g = size.get(&id).copied().unwrap_or(0.0);
        let n = ar.n_operands(id);
        let vals: Vec<f64> = (0..n)
            .map(|k| ar.data[ar.operand(id, k) as usize])
            .collect();
        let out = ar.data[id as usize];
        let locals = match ar.op(id) {
            Op::Leaf | Op::Free => continue,
            op if op.is_binary() => {
                let (a, b) = ops::binary_grad(op, 1.0, vals[0], vals[1], out);
                vec![a, b]
            }
            op if op.is_nary() => {
                let slots: Vec<u32> = (0..n as u32).collect();
                let mut locals = vec![0.0; n];
                ops::nary_grad(op, 1.0, out, &slots, &vals, &mut locals);
                locals
            }
            op => vec![ops::unary_grad(op, 1.0, vals[0], out, ar.consts(id))],
        };
        for (k, local) in locals.into_iter().enumerate() {
            *size.entry(ar.operand(id, k)).or_insert(0.0) += (g * local).abs();
        }
    }
    size
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// On random graphs with shared nodes, some leaves made per-sample inputs: a
    /// batched run gives each sample the root value that replaying the graph for
    /// that sample alone gives, bit for bit, and each shared leaf used once the
    /// gradient its samples' contributions make when added in the documented order
    /// (on 1 and 2 threads alike); leaves used more than once, or through a node
    /// no input reaches (summed over the batch first), agree to rounding: within
    /// 1e-12 of the total size of the contributions they receive (which cancel
    /// within a sample's gradient at times, so its size is not the scale).
    #[test]
    fn batched_lanes_match_per_sample_replay(
        actions in prop::collection::vec(action(), 1..100),
        pick in any::<usize>(),
        which in any::<u64>(),
        rows in 1usize..150,
        xs in prop::collection::vec(float(), 64),
        threads in 1usize..3,
    ) {
        let mut ar = Arena::new();
        let mut m = Model::default();
        for a in &actions {
            apply(&mut ar, &mut m, a);
            m.check(&ar);
        }
        if let Some(root) = m.pick(pick) {
            let order = backward::order(&mut ar, root).unwrap();
            let leaves: Vec<NodeId> =
                order.iter().copied().filter(|&id| ar.op(id) == Op::Leaf).collect();
            let inputs: Vec<NodeId> = leaves
                .iter()
                .enumerate()
                .filter(|(k, _)| which >> (k % 64) & 1 == 1)
                .map(|(_, &id)| id)
                .collect();
            let shared: Vec<NodeId> =
                leaves.iter().copied().filter(|id| !inputs.contains(id)).collect();
            if !inputs.is_empty() {
                let x: Vec<f64> = (0..rows * inputs.len()).map(|i| xs[i % xs.len()]).collect();
                let seed = 1.0 / rows as f64;
                // Each sample alone, node by node.
                let tape = crate::replay::Tape::record(&mut ar, root).unwrap();
                let (mut roots, mut per_sample) = (Vec::new(), vec![Vec::new(); shared.len()]);
                let mut sizes = vec![0.0; shared.len()];
                for r in 0..rows {
                    for (j, &id) in inputs.iter().enumerate() {
                        ar.data[id as usize] = x[r * inputs.len() + j];
                    }
                    tape.forward(&mut ar);
                    tape.zero_grad(&mut ar);
                    ar.grad[root as usize] = seed;
                    backward::sweep(&mut ar, tape.order(), false).unwrap();
                    roots.push(ar.data[root as usize]);
                    let size = contribution_sizes(&ar, tape.order(), root, seed);
                    for (k, &id) in shared.iter().enumerate() {
                        per_sample[k].push(ar.grad[id as usize]);
                        sizes[k] += size.get(&id).copied().unwrap_or(0.0);
                    }
                }
                // Nodes that depend on an input (one value per sample), and how many
                // operand slots use each shared leaf, and whether all those are lane nodes.
                let mut lane: HashSet<NodeId> = inputs.iter().copied().collect();
                for &id in order.iter().rev() {
                    if (0..ar.n_operands(id)).any(|k| lane.contains(&ar.operand(id, k))) {
                        lane.insert(id);
                    }
                }
                let ar_ref = &ar;
                let uses: Vec<(usize, bool)> = shared.iter().map(|&leaf| {
                    let mut users = Vec::new();
                    for &id in &order {
                        for k in 0..ar_ref.n_operands(id) {
                            if ar_ref.operand(id, k) == leaf {
                                users.push(id);
                            }
                        }
                    }
                    (users.len(), users.iter().all(|u| lane.contains(u)))
                }).collect();
                let lanes = crate::lanes::LaneTape::record(&mut ar, root, &inputs, &[root]).unwrap();
                for &id in &shared {
                    ar.grad[id as usize] = 0.0;
                }
                let mut out = vec![0.0; rows];
                lanes.run(&mut ar, &x, rows, Some(seed), &mut out, threads, &mut || false).unwrap();
                for (r, (&got, &want)) in out.iter().zip(&roots).enumerate() {
                    prop_assert!(same(got, want), "sample {}: {} vs {}", r, got, want);
                }
                for (k, &id) in shared.iter().enumerate() {
                    let got = ar.grad[id as usize];
                    let mut want = 0.0;
                    for c in per_sample[k].chunks(crate::lanes::CHUNK) {
                        want += reduce8(c);
                    }
                    if uses[k] == (1, true) {
                        prop_assert!(same(0.0 + want, got), "leaf {}: {} vs {}", k, got, want);
                    } else if want.is_finite() && got.is_finite() && sizes[k].is_finite() {
                        // Summation order only: within rounding of the contributions' sizes.
                        let bound = 1e-12 * sizes[k] + 1e-300;
                        prop_assert!((got - want).abs() <= bound, "leaf {}: {} vs {} (bound {})", k, got, want, bound);
                    }
                }
                lanes.release(&mut ar);
                tape.release(&mut ar);
            }
        }
        for id in std::mem::take(&mut m.handles) {
            ar.release(id);
        }
        prop_assert_eq!(ar.live(), 0);
    }
}

// ---- 2. tree-shaped graphs against a recursive reference ---------------------

#[derive(Clone, Debug)]
enum Expr {
    Leaf(f64),
    Bin(usize, Box<Expr>, Box<Expr>),
    Un(usize, f64, f64, Box<Expr>),
    Sum(Vec<Expr>),
    Dot(Vec<(Expr, Expr)>),
}

fn expr() -> impl Strategy<Value = Expr> {
    float()
        .prop_map(Expr::Leaf)
        .prop_recursive(6, 64, 4, |inner| {
            prop_oneof![
                (0..BINARY.len(), inner.clone(), inner.clone()).prop_map(|(o, a, b)| Expr::Bin(
                    o,
                    Box::new(a),
                    Box::new(b)
                )),
                (0..UNARY.len(), float(), float(), inner.clone())
                    .prop_map(|(o, c0, c1, a)| Expr::Un(o, c0, c1, Box::new(a))),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::Sum),
                prop::collection::vec((inner.clone(), inner), 0..3).prop_map(Expr::Dot),
            ]
        })
}

/// Builds `e` in the arena; returns its id and pushes every node's id in pre-order.
fn build(ar: &mut Arena, e: &Expr, ids: &mut Vec<NodeId>) -> NodeId {
    let slot = ids.len();
    ids.push(0);
    let id = match e {
        Expr::Leaf(v) => ar.leaf(*v).unwrap(),
        Expr::Bin(o, a, b) => {
            let a = build(ar, a, ids);
            let b = build(ar, b, ids);
            ar.binary(BINARY[*o], Operand::Node(a), Operand::Node(b))
                .unwrap()
        }
        Expr::Un(o, c0, c1, a) => {
            let a = build(ar, a, ids);
            ar.unary(UNARY[*o], a, [*c0, *c1]).unwrap()
        }
        Expr::Sum(xs) => {
            let xs: Vec<Operand> = xs
                .iter()
                .map(|x| Operand::Node(build(ar, x, ids)))
                .collect();
            ar.sum(&xs).unwrap()
        }
        Expr::Dot(pairs) => {
            let mut ws = Vec::new();
            let mut xs = Vec::new();
            for (w, x) in pairs {
                ws.push(Operand::Node(build(ar, w, ids)));
                xs.push(Operand::Node(build(ar, x, ids)));
            }
            ar.dot(&ws, &xs).unwrap()
        }
    };
    ids[slot] = id;
    id
}

/// The forward value of `e`, straight from the op table.
fn eval(e: &Expr) -> f64 {
    match e {
        Expr::Leaf(v) => *v,
        Expr::Bin(o, a, b) => {
            let (a, b) = (eval(a), eval(b));
            match BINARY[*o] {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div => a / b,
                _ => a.powf(b),
            }
        }
        Expr::Un(o, c0, c1, a) => {
            let a = eval(a);
            match UNARY[*o] {
                Op::Neg => -a,
                Op::PowConst => a.powf(*c0),
                Op::RPowConst => c0.powf(a),
                Op::Exp => a.exp(),
                Op::Log => a.ln(),
                Op::Tanh => a.tanh(),
                Op::Sigmoid => 1.0 / (1.0 + (-a).exp()),
                Op::Relu => {
                    if a < 0.0 {
                        0.0
                    } else {
                        a
                    }
                }
                Op::Abs => a.abs(),
                _ => {
                    // Python's min(max(a, lo), hi).
                    let t = if *c0 > a { *c0 } else { a };
                    if *c1 < t {
                        *c1
                    } else {
                        t
                    }
                }
            }
        }
        Expr::Sum(xs) => {
            let mut it = xs.iter().map(eval);
            match it.next() {
                None => 0.0,
                Some(first) => it.fold(first, |s, x| s + x),
            }
        }
        Expr::Dot(pairs) => {
            let mut it = pairs.iter().map(|(w, x)| eval(w) * eval(x));
            match it.next() {
                None => 0.0,
                Some(first) => it.fold(first, |s, x| s + x),
            }
        }
    }
}

/// Recursive reverse mode over a tree: every node receives exactly one contribution,
/// added to a gradient that starts at 0.0 (the root's is seeded with 1.0). Pushes
/// `(value, grad)` of every node in pre-order.
fn reference(e: &Expr, g: f64, out: &mut Vec<(f64, f64)>) {
    let v = eval(e);
    out.push((v, g));
    let acc = |c: f64| 0.0 + c;
    match e {
        Expr::Leaf(_) => {}
        Expr::Bin(o, a, b) => {
            let (va, vb) = (eval(a), eval(b));
            let (ga, gb) = match BINARY[*o] {
                Op::Add => (g, g),
                Op::Sub => (g, -g),
                Op::Mul => (g * vb, g * va),
                Op::Div => (g / vb, -g * v / vb),
                _ => (g * (vb * va.powf(vb - 1.0)), g * (v * va.ln())),
            };
            reference(a, acc(ga), out);
            reference(b, acc(gb), out);
        }
        Expr::Un(o, c0, c1, a) => {
            let va = eval(a);
            let ga = match UNARY[*o] {
                Op::Neg => -g,
                Op::PowConst => g * (c0 * va.powf(c0 - 1.0)),
                Op::RPowConst => g * (v * c0.ln()),
                Op::Exp => g * v,
                Op::Log => g / va,
                Op::Tanh => g * (1.0 - v * v),
                Op::Sigmoid => g * (v * (1.0 - v)),
                Op::Relu => g * (if v > 0.0 { 1.0 } else { 0.0 }),
                Op::Abs => {
                    let s = if va > 0.0 {
                        1.0
                    } else if va < 0.0 {
                        -1.0
                    } else if va == 0.0 {
                        0.0
                    } else {
                        f64::NAN
                    };
                    g * s
                }
                _ => g * (if *c0 <= va && va <= *c1 { 1.0 } else { 0.0 }),
            };
            reference(a, acc(ga), out);
        }
        Expr::Sum(xs) => {
            for x in xs {
                reference(x, acc(g), out);
            }
        }
        Expr::Dot(pairs) => {
            for (w, x) in pairs {
                let (vw, vx) = (eval(w), eval(x));
                reference(w, acc(g * vx), out);
                reference(x, acc(g * vw), out);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn tree_backward_matches_recursive_reference(e in expr()) {
        let mut ar = Arena::new();
        let mut ids = Vec::new();
        let root = build(&mut ar, &e, &mut ids);
        ar.incref(root);
        let mut want = Vec::new();
        reference(&e, 1.0, &mut want);
        prop_assert_eq!(want.len(), ids.len());
        prop_assert_eq!(ar.live(), ids.len());
        backward::backward(&mut ar, root, false).unwrap();
        for (k, (&id, &(v, g))) in ids.iter().zip(&want).enumerate() {
            let (got_v, got_g) = (ar.data[id as usize], ar.grad[id as usize]);
            prop_assert!(same(got_v, v), "node {} value {} != {}", k, got_v, v);
            prop_assert!(same(got_g, g), "node {} grad {} != {}", k, got_g, g);
        }
        ar.release(root);
        prop_assert_eq!(ar.live(), 0);
    }
}

// ---- regressions: stale ids next to number operands ------------------------

/// A number operand becomes a leaf that may reuse a freed slot; a stale node
/// operand must be refused before that, or it would name the new leaf.
#[test]
fn stale_id_aba_after_constant() {
    let mut ar = Arena::new();
    let d = ar.leaf(5.0).unwrap();
    ar.incref(d);
    ar.decref(d); // d is freed and heads the free list
    let r = ar.binary(Op::Add, Operand::Const(2.0), Operand::Node(d));
    assert_eq!(
        r,
        Err(ArenaError::Stale(d)),
        "2.0 + <stale> built 2.0 + 2.0"
    );
}

/// `Arena::layer` refuses a stale input without leaking the inputs before it.
#[test]
fn layer_leaks_inputs_before_a_stale_input() {
    let mut ar = Arena::new();
    let w = ar.leaf(1.0).unwrap();
    ar.incref(w);
    let d1 = ar.leaf(0.0).unwrap();
    let d2 = ar.leaf(0.0).unwrap();
    ar.incref(d1);
    ar.incref(d2);
    ar.decref(d1);
    ar.decref(d2); // free list: d2, d1
    let r = ar.layer(
        &[vec![w, w]],
        &[w],
        &[Operand::Const(1.0), Operand::Node(d1)],
        Op::Relu,
    );
    assert_eq!(r, Err(ArenaError::Stale(d1)));
    assert_eq!(ar.live(), 1, "the constant input leaf leaked");
}
