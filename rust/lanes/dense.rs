//! The dense kernels of batched lanes: `dot` nodes whose weights are all shared
//! and inputs all lanes (neurons), run a layer at a time.
//!
//! At record time, consecutive dense `dot`s (in the tape's forward order) that
//! take the same input list are gathered into a [`Group`] (an MLP layer's
//! neurons), with their input offsets and weight slots in flat arrays. A run
//! packs the groups' weights once per thread, and a chunk runs each group where its first
//! member stands, forward and backward, with register tiles that cover several
//! neurons and many lanes, so each load of an input feeds several neurons.
//!
//! Every float operation is the one the per-node code does, in the same order:
//!
//! - forward, for each member and lane, `((w1*x1 + w2*x2) + w3*x3) + ...`;
//! - backward, each input's gradient lane receives `g_j * w_jk` from member `j`
//!   (and operand `k`) in the per-node order: members last to first, operands
//!   in order within a member; each weight's contribution is reduced over the
//!   chunk's lanes as the module comment of `lanes.rs` says (lane `l` into
//!   accumulator `l % 8`, lanes ascending, then the fixed tree), and added to the
//!   chunk's partial in the per-node order (members last to first, operands in
//!   order; in any order when no two of the group's weights share a slot).
//!
//! Moving a member's work to where the group's first member stands changes no
//! order, because a member only joins when no instruction between the group's
//! first member and it reads one of the group's inputs or sends a gradient to one
//! of its weights; inputs that repeat in the list keep the group to one member.
//! No multiply-add is fused: bit-identity with the reference needs separate
//! multiplies and adds.

use super::simd::{Oct, V8};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::{Instr, Src, ACC, CHUNK};
use crate::ops;

/// How `chunk` runs one instruction of the lane code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// On its own, by the per-node code.
    Node,
    /// The first member of group `g`: runs the whole group.
    Group(u32),
    /// A later member of a group: run with the group's first member.
    Member,
}

/// Dense `dot`s sharing one input list, run together.
#[derive(Debug)]
pub(super) struct Group {
    /// The first member's output slot: every member's output is at or above it,
    /// every input below it.
    lead: u32,
    /// Members' outputs as offsets from `lead * CHUNK`: `Groups::outs[o..o + g]`.
    o: u32,
    g: u32,
    /// Inputs as offsets of their lane slots (`slot * CHUNK`): `Groups::xs[x..x + m]`.
    x: u32,
    m: u32,
    /// Weights' shared slots, member by member: `Groups::ws[w..w + g * m]`, and
    /// the same place in the packed weights.
    w: u32,
    /// The inputs are all distinct (else the group has one member).
    distinct: bool,
    /// Some input is not a column of the batch (else nobody reads their gradients).
    need_gx: bool,
    /// Each member's weights are consecutive shared slots, and no slot is two
    /// weights of the group: the partials then take the gradients in any order.
    runs: bool,
}

/// The dense groups of a lane tape.
#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: Vec<Group>,
    /// For each instruction of the lane code.
    pub plan: Vec<Plan>,
    outs: Vec<u32>,
    xs: Vec<u32>,
    ws: Vec<u32>,
    /// The most weights of one group (sizes `Packed::res`).
    max_weights: usize,
}

impl Groups {
    /// Groups the dense `dot`s of `code` (operands first); `n_inputs` lane slots
    /// are the batch's columns.
    pub fn build(
        code: &[Instr],
        srcs: &[Src],
        n_lane: usize,
        n_shared: usize,
        n_inputs: usize,
    ) -> Groups {
        let mut gs = Groups::default();
        // Stamps: `1 + group` on the open group's inputs, and on the shared nodes
        // that instructions between its members send gradients to.
        let mut x_mark = vec![0u32; n_lane];
        let mut w_mark = vec![0u32; n_shared];
        let mut open: Option<usize> = None; // the open group's first member
        for (i, ins) in code.iter().enumerate() {
            let args = &srcs[ins.lo as usize..ins.hi as usize];
            if !ins.dense {
                gs.plan.push(Plan::Node);
                if open.is_some() {
                    let stamp = gs.groups.len() as u32;
                    for &a in args {
                        match a {
                            Src::Lane(j) if x_mark[j as usize] == stamp => open = None,
                            Src::Shared(j) => w_mark[j as usize] = stamp,
                            _ => {}
                        }
                    }
                }
                continue;
            }
            let (ws, xs) = ops::split_dot(args);
            let stamp = gs.groups.len() as u32;
            let joins = open.is_some_and(|lead| {
                let la = &srcs[code[lead].lo as usize..code[lead].hi as usize];
                gs.groups.last().is_some_and(|g| g.distinct)
                    && ops::split_dot(la).1 == xs
                    && ws.iter().all(|&w| w_mark[slot(w)] != stamp)
            });
            if joins {
                let g = gs.groups.last_mut().expect("an open group");
                gs.outs.push((ins.out - g.lead) * CHUNK as u32);
                gs.ws.extend(ws.iter().map(|&w| slot(w) as u32));
                g.g += 1;
                gs.max_weights = gs.max_weights.max((g.g * g.m) as usize);
                gs.plan.push(Plan::Member);
                continue;
            }
            // A new group, led by this dot.
            let stamp = stamp + 1;
            let mut distinct = true;
            for &x in xs {
                let j = slot(x);
                distinct &= x_mark[j] != stamp;
                x_mark[j] = stamp;
            }
            let group = Group {
                lead: ins.out,
                o: gs.outs.len() as u32,
                g: 1,
                x: gs.xs.len() as u32,
                m: xs.len() as u32,
                w: gs.ws.len() as u32,
                distinct,
                need_gx: xs.iter().any(|&x| slot(x) >= n_inputs),
                runs: false,
            };
            gs.outs.push(0);
            gs.xs.extend(xs.iter().map(|&x| (slot(x) * CHUNK) as u32));
            gs.ws.extend(ws.iter().map(|&w| slot(w) as u32));
            gs.max_weights = gs.max_weights.max(ws.len());
            gs.plan.push(Plan::Group(gs.groups.len() as u32));
            gs.groups.push(group);
            open = Some(i);
        }
        let mut seen = vec![false; n_shared];
        for gr in &mut gs.groups {
            let (g, m, w) = (gr.g as usize, gr.m as usize, gr.w as usize);
            let ws = &gs.ws[w..w + g * m];
            gr.runs = ws
                .chunks_exact(m)
                .all(|r| r.iter().zip(r[0]..).all(|(&s, t)| s == t))
                && ws
                    .iter()
                    .all(|&s| !std::mem::replace(&mut seen[s as usize], true));
            ws.iter().for_each(|&s| seen[s as usize] = false);
        }
        gs
    }

    /// No groups: every instruction by the per-node code.
    #[cfg(test)]
    pub fn per_node(n: usize) -> Groups {
        Groups {
            plan: vec![Plan::Node; n],
            ..Default::default()
        }
    }

    /// Each group's number of members, and whether its weights are runs, in
    /// code order.
    #[cfg(test)]
    pub fn sizes(&self) -> Vec<(usize, bool)> {
        self.groups.iter().map(|g| (g.g as usize, g.runs)).collect()
    }

    /// Packs the weights for the kernels into `into`, with room for a group's
    /// weight gradients.
    pub fn pack(
        &self,
        shared: &[f64],
        backward: bool,
        into: &mut Packed,
    ) -> Result<(), super::LaneError> {
        let n = self.ws.len();
        super::grow(&mut into.by_input, n)?;
        if backward {
            super::grow(&mut into.by_member, n)?;
            super::grow(&mut into.res, self.max_weights)?;
        }
        // In tiles of 8 members by 8 inputs: row by row, `by_input`'s writes a
        // layer apart (often a multiple of 1 KiB) would share a few cache sets.
        const T: usize = 8;
        for gr in &self.groups {
            let (g, m, w) = (gr.g as usize, gr.m as usize, gr.w as usize);
            for j0 in (0..g).step_by(T) {
                for k0 in (0..m).step_by(T) {
                    for j in j0..(j0 + T).min(g) {
                        for k in k0..(k0 + T).min(m) {
                            let v = shared[self.ws[w + j * m + k] as usize];
                            into.by_input[w + k * g + j] = v;
                            if backward {
                                into.by_member[w + j * m + k] = v;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Group `gi`'s forward over lanes `0..n`: `lo` holds the lane slots below
    /// its first member's output, `hi` the rest.
    #[inline(always)]
    pub fn forward<T: Tiles>(&self, gi: u32, pk: &Packed, lo: &[f64], hi: &mut [f64], n: usize) {
        let gr = &self.groups[gi as usize];
        let (g, m, w) = (gr.g as usize, gr.m as usize, gr.w as usize);
        let k = Kern {
            outs: &self.outs[gr.o as usize..gr.o as usize + g],
            xs: &self.xs[gr.x as usize..gr.x as usize + m],
            w: &pk.by_input[w..w + g * m],
        };
        T::forward(&k, lo, hi, n);
    }

    /// Group `gi`'s backward over lanes `0..n`: `ghi` holds the gradients from
    /// its first member's output up, `glo` those below (its inputs').
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn backward<T: Tiles>(
        &self,
        gi: u32,
        pk: &mut Packed,
        vals: &[f64],
        ghi: &[f64],
        glo: &mut [f64],
        partial: &mut [f64],
        n: usize,
    ) {
        let gr = &self.groups[gi as usize];
        let (g, m, w) = (gr.g as usize, gr.m as usize, gr.w as usize);
        let k = Kern {
            outs: &self.outs[gr.o as usize..gr.o as usize + g],
            xs: &self.xs[gr.x as usize..gr.x as usize + m],
            w: &pk.by_member[w..w + g * m],
        };
        if gr.need_gx {
            T::grad_inputs(&k, ghi, glo, n, gr.distinct);
        }
        let res = &mut pk.res[..g * m];
        T::grad_weights(&k, vals, ghi, res, n);
        let slots = &self.ws[w..w + g * m];
        if gr.runs {
            // Every slot once: a member's run of partials at a time.
            for (s, r) in slots.chunks_exact(m).zip(res.chunks_exact(m)) {
                let p = &mut partial[s[0] as usize..][..m];
                p.iter_mut().zip(r).for_each(|(p, &r)| *p += r);
            }
            return;
        }
        // Into the partials in the per-node order: members last to first.
        for (s, r) in slots.chunks_exact(m).zip(res.chunks_exact(m)).rev() {
            for (&s, &r) in s.iter().zip(r) {
                partial[s as usize] += r;
            }
        }
    }
}

fn slot(s: Src) -> usize {
    super::slot(s)
}

/// A group's weights packed for a run: member by member (for the backward) and
/// input by input (for the forward); `res` holds a group's weight gradients
/// over one chunk before they go to the partials.
#[derive(Default)]
pub(super) struct Packed {
    by_member: Vec<f64>,
    by_input: Vec<f64>,
    res: Vec<f64>,
}

/// One group as the kernels see it.
pub(super) struct Kern<'a> {
    /// Members' output offsets (from the first member's output slot).
    outs: &'a [u32],
    /// Inputs' lane offsets.
    xs: &'a [u32],
    /// Weights: by input (`w[k * g + j]`) in the forward, by member
    /// (`w[j * m + k]`) in the backward.
    w: &'a [f64],
}

/// The register tiles of the dense kernels for one instruction set.
pub(super) trait Tiles {
    fn forward(k: &Kern, lo: &[f64], hi: &mut [f64], n: usize);
    fn grad_inputs(k: &Kern, ghi: &[f64], glo: &mut [f64], n: usize, distinct: bool);
    fn grad_weights(k: &Kern, vals: &[f64], ghi: &[f64], res: &mut [f64], n: usize);
}

/// AVX-512: 32 registers of 8 lanes.
pub(super) struct Zmm;
/// AVX2: 16 registers of 4 lanes.
pub(super) struct Ymm;
/// Anything else.
pub(super) struct Plain;

macro_rules! tiles {
    ($t:ty, $v:ty, fwd: $fj:literal x $fv:literal, gx: $gk:literal x $gv:literal, gw: $wj:literal x $wk:literal) => {
        impl Tiles for $t {
            #[inline(always)]
            fn forward(k: &Kern, lo: &[f64], hi: &mut [f64], n: usize) {
                forward::<$v, $fj, $fv>(k, lo, hi, n)
            }
            #[inline(always)]
            fn grad_inputs(k: &Kern, ghi: &[f64], glo: &mut [f64], n: usize, distinct: bool) {
                if distinct {
                    grad_inputs::<$v, $gk, $gv>(k, ghi, glo, n)
                } else {
                    grad_inputs::<$v, 1, $gv>(k, ghi, glo, n)
                }
            }
            #[inline(always)]
            fn grad_weights(k: &Kern, vals: &[f64], ghi: &[f64], res: &mut [f64], n: usize) {
                grad_weights::<$v, $wj, $wk>(k, vals, ghi, res, n)
            }
        }
    };
}

// Tiles: members (or inputs) times vectors of 8 lanes, sized to the registers.
tiles!(Zmm, Z, fwd: 6 x 4, gx: 6 x 4, gw: 3 x 8);
tiles!(Ymm, Y, fwd: 2 x 2, gx: 2 x 2, gw: 1 x 4);
tiles!(Plain, Oct, fwd: 2 x 1, gx: 2 x 1, gw: 1 x 2);

/// The forward: lanes `8 * V` at a time (then 8, then one by one), and within
/// them members `J` at a time (then one), so a tile of the inputs stays in the
/// first-level cache while every member reads it.
#[inline(always)]
fn forward<S: V8, const J: usize, const V: usize>(k: &Kern, lo: &[f64], hi: &mut [f64], n: usize) {
    let g = k.outs.len();
    let (full, full8) = (n / (8 * V) * (8 * V), n / 8 * 8);
    let gj = g / J * J;
    for base in (0..full).step_by(8 * V) {
        for j0 in (0..gj).step_by(J) {
            forward_tile::<S, J, V>(k, lo, hi, j0, base);
        }
        for j0 in gj..g {
            forward_tile::<S, 1, V>(k, lo, hi, j0, base);
        }
    }
    for base in (full..full8).step_by(8) {
        for j0 in (0..gj).step_by(J) {
            forward_tile::<S, J, 1>(k, lo, hi, j0, base);
        }
        for j0 in gj..g {
            forward_tile::<S, 1, 1>(k, lo, hi, j0, base);
        }
    }
    for l in full8.max(full)..n {
        for j in 0..g {
            forward_lane(k, lo, hi, j, l);
        }
    }
}

/// Members `j0..j0 + J`, lanes `base..base + 8 * V`: `o = ((w1*x1 + w2*x2) + ...)`.
#[inline(always)]
fn forward_tile<S: V8, const J: usize, const V: usize>(
    k: &Kern,
    lo: &[f64],
    hi: &mut [f64],
    j0: usize,
    base: usize,
) {
    let g = k.outs.len();
    let x = |xo: u32| -> &[f64] { &lo[xo as usize + base..][..8 * V] };
    let w = |i: usize| -> &[f64] { &k.w[i * g + j0..][..J] };
    let (x0, w0) = (x(k.xs[0]), w(0));
    let mut acc: [[S; V]; J] = std::array::from_fn(|j| {
        let wj = S::splat(w0[j]);
        std::array::from_fn(|v| wj.mul(S::load(&x0[8 * v..])))
    });
    for (i, &xo) in k.xs.iter().enumerate().skip(1) {
        let (xi, wi) = (x(xo), w(i));
        let xv: [S; V] = std::array::from_fn(|v| S::load(&xi[8 * v..]));
        for (acc, &wij) in acc.iter_mut().zip(wi) {
            let wij = S::splat(wij);
            for (a, &xv) in acc.iter_mut().zip(&xv) {
                *a = a.add(wij.mul(xv));
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let o = &mut hi[k.outs[j0 + j] as usize + base..][..8 * V];
        for (v, a) in acc.iter().enumerate() {
            a.store(&mut o[8 * v..]);
        }
    }
}

/// One member, one lane.
#[inline(always)]
fn forward_lane(k: &Kern, lo: &[f64], hi: &mut [f64], j: usize, l: usize) {
    let g = k.outs.len();
    let mut a = k.w[j] * lo[k.xs[0] as usize + l];
    for (i, &xo) in k.xs.iter().enumerate().skip(1) {
        a += k.w[i * g + j] * lo[xo as usize + l];
    }
    hi[k.outs[j] as usize + l] = a;
}

/// The inputs' gradients: lanes `8 * V` at a time (then 8, then one by one),
/// and within them inputs `K` at a time (then one), so a tile of the members'
/// gradients stays in the first-level cache; `K` is 1 when inputs repeat, so
/// each lane of an input gets its terms in the per-node order.
#[inline(always)]
fn grad_inputs<S: V8, const K: usize, const V: usize>(
    k: &Kern,
    ghi: &[f64],
    glo: &mut [f64],
    n: usize,
) {
    let m = k.xs.len();
    let (full, full8) = (n / (8 * V) * (8 * V), n / 8 * 8);
    let mk = m / K * K;
    for base in (0..full).step_by(8 * V) {
        for k0 in (0..mk).step_by(K) {
            grad_inputs_tile::<S, K, V>(k, ghi, glo, k0, base);
        }
        for k0 in mk..m {
            grad_inputs_tile::<S, 1, V>(k, ghi, glo, k0, base);
        }
    }
    for base in (full..full8).step_by(8) {
        for k0 in (0..mk).step_by(K) {
            grad_inputs_tile::<S, K, 1>(k, ghi, glo, k0, base);
        }
        for k0 in mk..m {
            grad_inputs_tile::<S, 1, 1>(k, ghi, glo, k0, base);
        }
    }
    for l in full8.max(full)..n {
        for (i, &xo) in k.xs.iter().enumerate() {
            let xo = xo as usize + l;
            for (j, &oj) in k.outs.iter().enumerate().rev() {
                glo[xo] += ghi[oj as usize + l] * k.w[j * m + i];
            }
        }
    }
}

/// Inputs `k0..k0 + K`, lanes `base..base + 8 * V`: `gx += g_j * w_jk`, members
/// last to first.
#[inline(always)]
fn grad_inputs_tile<S: V8, const K: usize, const V: usize>(
    k: &Kern,
    ghi: &[f64],
    glo: &mut [f64],
    k0: usize,
    base: usize,
) {
    let m = k.xs.len();
    let xo: [usize; K] = std::array::from_fn(|i| k.xs[k0 + i] as usize + base);
    let mut acc: [[S; V]; K] = std::array::from_fn(|i| {
        let x = &glo[xo[i]..][..8 * V];
        std::array::from_fn(|v| S::load(&x[8 * v..]))
    });
    for (j, &oj) in k.outs.iter().enumerate().rev() {
        let gj = &ghi[oj as usize + base..][..8 * V];
        let gv: [S; V] = std::array::from_fn(|v| S::load(&gj[8 * v..]));
        let wj = &k.w[j * m + k0..][..K];
        for (acc, &wji) in acc.iter_mut().zip(wj) {
            let wji = S::splat(wji);
            for (a, &g) in acc.iter_mut().zip(&gv) {
                *a = a.add(g.mul(wji));
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let x = &mut glo[xo[i]..][..8 * V];
        for (v, a) in acc.iter().enumerate() {
            a.store(&mut x[8 * v..]);
        }
    }
}

/// The weights' gradients over the chunk's lanes, into `res` (member by
/// member): inputs `K` at a time (then one), and within them members `J` at a
/// time (then one), so the inputs' rows stay in the first-level cache.
#[inline(always)]
fn grad_weights<S: V8, const J: usize, const K: usize>(
    k: &Kern,
    vals: &[f64],
    ghi: &[f64],
    res: &mut [f64],
    n: usize,
) {
    let (g, m) = (k.outs.len(), k.xs.len());
    let (gj, mk) = (g / J * J, m / K * K);
    for k0 in (0..mk).step_by(K) {
        for j0 in (0..gj).step_by(J) {
            grad_weights_tile::<S, J, K>(k, vals, ghi, res, n, j0, k0);
        }
        for j0 in gj..g {
            grad_weights_tile::<S, 1, K>(k, vals, ghi, res, n, j0, k0);
        }
    }
    for k0 in mk..m {
        for j0 in (0..gj).step_by(J) {
            grad_weights_tile::<S, J, 1>(k, vals, ghi, res, n, j0, k0);
        }
        for j0 in gj..g {
            grad_weights_tile::<S, 1, 1>(k, vals, ghi, res, n, j0, k0);
        }
    }
}

/// Members `j0..j0 + J` times inputs `k0..k0 + K`: each weight's `g * x` over the
/// lanes, lane `l` into accumulator `l % 8` (a vector's lane), then the tree.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_weights_tile<S: V8, const J: usize, const K: usize>(
    k: &Kern,
    vals: &[f64],
    ghi: &[f64],
    res: &mut [f64],
    n: usize,
    j0: usize,
    k0: usize,
) {
    let m = k.xs.len();
    let full = n / ACC * ACC;
    let gs: [&[f64]; J] = std::array::from_fn(|j| &ghi[k.outs[j0 + j] as usize..][..n]);
    let xs: [&[f64]; K] = std::array::from_fn(|i| &vals[k.xs[k0 + i] as usize..][..n]);
    // Whole vectors, all `full / 8` long, so the loop indexes them unchecked.
    fn octs(s: &[f64], n: usize) -> &[[f64; ACC]] {
        &s.as_chunks::<ACC>().0[..n]
    }
    let g8: [_; J] = gs.map(|s| octs(s, full / ACC));
    let x8: [_; K] = xs.map(|s| octs(s, full / ACC));
    let mut acc = [[S::splat(0.0); K]; J];
    for t in 0..full / ACC {
        let x: [S; K] = std::array::from_fn(|i| S::load(&x8[i][t]));
        for (acc, g) in acc.iter_mut().zip(&g8) {
            let g = S::load(&g[t]);
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = a.add(g.mul(x));
            }
        }
    }
    if n > full {
        // The last lanes, padded with zeros: adding `0 * 0` leaves an
        // accumulator's bits as they are (a sum that starts at +0.0 is never -0.0).
        let pad = |s: &[f64]| {
            let mut o = [0.0; ACC];
            o[..n - full].copy_from_slice(&s[full..n]);
            S::load(&o)
        };
        let x: [S; K] = std::array::from_fn(|i| pad(xs[i]));
        for (acc, g) in acc.iter_mut().zip(&gs) {
            let g = pad(g);
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = a.add(g.mul(x));
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let r = &mut res[(j0 + j) * m + k0..][..K];
        if K == 8 {
            let mut o = [0.0; 8];
            S::combine8(std::array::from_fn(|i| acc[i % K])).store(&mut o);
            r.copy_from_slice(&o[..K]);
        } else {
            for (r, a) in r.iter_mut().zip(acc) {
                let mut o = [0.0; ACC];
                a.store(&mut o);
                *r = super::combine(o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_combine8<S: V8>() {
        let acc: [Oct; 8] = std::array::from_fn(|i| {
            std::array::from_fn(|a| ((i * 8 + a) as f64 * 0.37).sin() * 1e3f64.powi(a as i32 % 3))
        });
        let mut r = [0.0; 8];
        S::combine8(std::array::from_fn(|i| S::load(&acc[i]))).store(&mut r);
        for i in 0..8 {
            assert_eq!(r[i].to_bits(), super::super::combine(acc[i]).to_bits());
        }
    }

    #[test]
    fn combine8_is_combine_of_each() {
        check_combine8::<Oct>();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            check_combine8::<Z>();
        }
    }
}
