//! Batched lanes (DESIGN.md section 3): one sample's graph, recorded once, run
//! over a whole batch.
//!
//! Every recorded node is either a *lane* node, which depends on a per-sample
//! input and so holds one value per sample, or a *shared* node, which does not
//! (parameters, constants, and anything computed from them alone) and holds one
//! value for the whole batch. A run splits the batch into chunks of [`CHUNK`]
//! samples; a chunk runs the lane nodes forward and backward with its samples'
//! values contiguous (node-major, a slot of `CHUNK` lanes per node), so a fused
//! `dot` is a broadcast multiply-add over lanes that the compiler vectorises.
//! Neurons (`dot`s of shared weights and lane inputs) run a layer at a time, in
//! register tiles over several neurons and many lanes (`dense`), with the same
//! float operations in the same order as one node at a time.
//!
//! Per-sample values, and the gradients of lane nodes, are those of running the
//! sample's graph alone: the same float operations in the same order. A shared
//! node's gradient is the sum of its lanes' contributions, added in this fixed
//! order, whatever the number of threads:
//!
//! 1. within a chunk, each contribution site (an operand slot of a lane node, in
//!    backward order) is reduced over the chunk's lanes by eight accumulators,
//!    lane `l` into accumulator `l % 8` in lane order, combined as
//!    `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))`, and added to the
//!    chunk's partial for that node (starting from 0.0);
//! 2. the chunks' partials are added in chunk order, starting from 0.0 (threads
//!    share this out by blocks of shared nodes, and may add the first chunks'
//!    while others still run the last ones: each node's still in that order);
//! 3. shared interior nodes then pass their totals to their operands as a
//!    scalar sweep would, and each shared leaf's `grad` gets its total added.
//!
//! The reference backend runs the same steps in Python, so both give the same bits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::arena::{Arena, NodeId};
use crate::backward;
use crate::ops::{self, Op};

mod dense;
mod pool;
mod simd;

/// Samples per chunk: a chunk is the unit of work of a thread, and of the
/// reduction order, so it is fixed (never derived from the thread count).
pub const CHUNK: usize = 64;

/// Operand count times samples above which a run uses threads: below it (about
/// 0.2 ms of work) handing work to another thread, and waiting for a core on a
/// busy machine, costs more than the thread saves.
pub const PARALLEL_WORK: usize = 1 << 20;

/// Accumulators of a chunk's reduction over lanes.
const ACC: usize = 8;

/// Shared slots a thread takes at a time when it adds up the chunks' partials.
const REDUCE_BLOCK: usize = 1024;

/// Where an operand's value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// A lane node's slot: one value per sample.
    Lane(u32),
    /// A shared node's slot: one value for the batch.
    Shared(u32),
}

/// One non-leaf node: its op, its output slot (lane or shared, by the program it
/// is in), its operands `srcs[lo..hi]` in operand order, and its constants.
struct Instr {
    op: Op,
    out: u32,
    lo: u32,
    hi: u32,
    c: [f64; 2],
    /// A lane `dot` whose weights are all shared and inputs all lanes (a neuron):
    /// run by the register-tiled kernels of `dense`, a layer at a time.
    dense: bool,
}

/// Why a batched run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneError {
    /// An allocation that grows with the batch failed.
    Memory,
    /// The caller's interrupt check asked to stop (nothing was written).
    Interrupted,
}

/// What `compute` returns: the sum of the root over the samples, with a seed
/// every shared node's gradient total, and each sample's root value.
pub type Computed = (f64, Option<Vec<f64>>, Vec<f64>);

/// A recorded per-sample graph, ready to run over batches.
pub struct LaneTape {
    /// Every recorded node, each holding one reference while the tape lives.
    ids: Vec<NodeId>,
    /// The arena node of each shared leaf, and its shared slot.
    shared_leaves: Vec<(NodeId, u32)>,
    n_shared: usize,
    /// Shared non-leaf nodes, operands first; every operand is shared, and their
    /// shared slots are `shared_args[lo..hi]`.
    shared_code: Vec<Instr>,
    shared_args: Vec<u32>,
    /// Lane slots: the inputs first (one per column), then `code`'s outputs.
    n_lane: usize,
    n_inputs: usize,
    /// Lane nodes, operands first.
    code: Vec<Instr>,
    srcs: Vec<Src>,
    root: Src,
    outputs: Vec<Src>,
    /// The dense `dot`s, gathered into layers, and how `chunk` runs each of `code`.
    groups: dense::Groups,
    /// Threads' scratch from earlier runs, by the part of the run the thread
    /// did (see `pool::run`), kept so a run does not fault in fresh pages for it,
    /// and finds it in the cache of the core that used it last.
    scratch: Mutex<Vec<Option<Scratch>>>,
    /// The chunks' partials of an earlier run, kept for the same reason.
    partials: Mutex<Vec<f64>>,
}

/// Why a graph cannot be recorded as lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Input `k` is not a leaf.
    InputNotLeaf(usize),
    /// Inputs `k` and `j` are the same node.
    DuplicateInput(usize, usize),
    /// Output `k` is not part of the root's graph.
    OutputUnreachable(usize),
    Memory,
}

impl LaneTape {
    /// Records the graph under `root`: `inputs` are the leaves that take a new
    /// value per sample (one column each); `outputs` are nodes under `root` whose
    /// per-sample values a run reports.
    pub fn record(
        ar: &mut Arena,
        root: NodeId,
        inputs: &[NodeId],
        outputs: &[NodeId],
    ) -> Result<LaneTape, RecordError> {
        let mut slot: rustc_hash::FxHashMap<NodeId, Src> = Default::default();
        let mem = |_| RecordError::Memory;
        slot.try_reserve(inputs.len()).map_err(mem)?;
        for (k, &id) in inputs.iter().enumerate() {
            if ar.op(id) != Op::Leaf {
                return Err(RecordError::InputNotLeaf(k));
            }
            if let Some(Src::Lane(j)) = slot.insert(id, Src::Lane(k as u32)) {
                return Err(RecordError::DuplicateInput(j as usize, k));
            }
        }
        // Operands first: the reverse of the canonical backward order.
        let mut ids = backward::order(ar, root).map_err(|_| RecordError::Memory)?;
        ids.reverse();
        slot.try_reserve(ids.len()).map_err(mem)?;
        let mut tape = LaneTape {
            ids: Vec::new(),
            shared_leaves: Vec::new(),
            n_shared: 0,
            shared_code: Vec::new(),
            shared_args: Vec::new(),
            n_lane: inputs.len(),
            n_inputs: inputs.len(),
            code: Vec::new(),
            srcs: Vec::new(),
            root: Src::Shared(0),
            outputs: Vec::new(),
            groups: Default::default(),
            scratch: Mutex::new(Vec::new()),
            partials: Mutex::new(Vec::new()),
        };
        for &id in &ids {
            if slot.contains_key(&id) {
                continue; // an input
            }
            let op = ar.op(id);
            let n_args = ar.n_operands(id);
            tape.shared_leaves.try_reserve(1).map_err(mem)?;
            tape.code.try_reserve(1).map_err(mem)?;
            tape.shared_code.try_reserve(1).map_err(mem)?;
            tape.srcs.try_reserve(n_args).map_err(mem)?;
            tape.shared_args.try_reserve(n_args).map_err(mem)?;
            if op == Op::Leaf {
                slot.insert(id, Src::Shared(tape.n_shared as u32));
                tape.shared_leaves.push((id, tape.n_shared as u32));
                tape.n_shared += 1;
                continue;
            }
            let lane = (0..n_args).any(|k| matches!(slot[&ar.operand(id, k)], Src::Lane(_)));
            let c = ar.consts(id);
            let out = if lane {
                // Operands as sources: lane slots or shared values.
                let lo = tape.srcs.len() as u32;
                tape.srcs
                    .extend((0..n_args).map(|k| slot[&ar.operand(id, k)]));
                let args = &tape.srcs[lo as usize..];
                let (ws, xs) = ops::split_dot(args);
                let dense = op == Op::Dot
                    && ws.iter().all(|s| matches!(s, Src::Shared(_)))
                    && xs.iter().all(|s| matches!(s, Src::Lane(_)));
                let hi = tape.srcs.len() as u32;
                tape.n_lane += 1;
                let out = tape.n_lane as u32 - 1;
                tape.code.push(Instr {
                    op,
                    out,
                    lo,
                    hi,
                    c,
                    dense,
                });
                Src::Lane(out)
            } else {
                // Every operand shared: operands as shared slots.
                let lo = tape.shared_args.len() as u32;
                tape.shared_args
                    .extend((0..n_args).map(|k| slot_of(slot[&ar.operand(id, k)])));
                let hi = tape.shared_args.len() as u32;
                tape.n_shared += 1;
                let out = tape.n_shared as u32 - 1;
                tape.shared_code.push(Instr {
                    op,
                    out,
                    lo,
                    hi,
                    c,
                    dense: false,
                });
                Src::Shared(out)
            };
            slot.insert(id, out);
        }
        tape.groups = dense::Groups::build(
            &tape.code,
            &tape.srcs,
            tape.n_lane,
            tape.n_shared,
            tape.n_inputs,
        );
        tape.root = slot[&root];
        tape.outputs.try_reserve(outputs.len()).map_err(mem)?;
        for (k, id) in outputs.iter().enumerate() {
            match slot.get(id) {
                Some(&s) => tape.outputs.push(s),
                None => return Err(RecordError::OutputUnreachable(k)),
            }
        }
        for &id in &ids {
            ar.incref(id);
        }
        tape.ids = ids;
        Ok(tape)
    }

    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    pub fn n_outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Recorded nodes (lane and shared, inputs included).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Nodes that hold one value per sample.
    pub fn lane_nodes(&self) -> usize {
        self.n_lane
    }

    /// Gives back the references the tape holds.
    pub fn release(self, ar: &mut Arena) {
        for &id in &self.ids {
            ar.decref(id);
        }
    }

    /// Runs `rows` samples: `x` holds them row by row (`n_inputs` numbers each);
    /// each sample's outputs go to `out` row by row (`n_outputs` each). With
    /// `seed`, each sample's root gradient is `seed` and the gradients are swept
    /// back, adding each shared leaf's total (in the order of the module
    /// comment) into its `grad`. Returns the sum of the root's values over the
    /// samples, in sample order. `interrupt` is asked between chunks on the
    /// calling thread; if it says stop, nothing has been written to the arena.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ar: &mut Arena,
        x: &[f64],
        rows: usize,
        seed: Option<f64>,
        out: &mut [f64],
        threads: usize,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<f64, LaneError> {
        self.run_with(ar, x, rows, seed, out, threads, interrupt, PARALLEL_WORK)
    }

    /// `run`, with threads used from `parallel_work` operands times samples.
    #[allow(clippy::too_many_arguments)]
    fn run_with(
        &self,
        ar: &mut Arena,
        x: &[f64],
        rows: usize,
        seed: Option<f64>,
        out: &mut [f64],
        threads: usize,
        interrupt: &mut dyn FnMut() -> bool,
        parallel_work: usize,
    ) -> Result<f64, LaneError> {
        let shared = self.shared_values(ar)?;
        let (sum, grads, _) = self.compute(
            &shared,
            x,
            rows,
            seed,
            out,
            threads,
            interrupt,
            parallel_work,
        )?;
        if let Some(grads) = grads {
            self.add_grads(ar, &grads);
        }
        Ok(sum)
    }

    /// `run` in three steps, so a caller can let go of the arena while the
    /// batch runs: `shared_values` reads the parameters, `compute` runs the
    /// samples (returning the root's sum, with a seed every shared node's
    /// gradient total, and each sample's root value), `add_grads` adds the
    /// totals into the shared leaves.
    #[allow(clippy::too_many_arguments)]
    pub fn compute(
        &self,
        shared: &[f64],
        x: &[f64],
        rows: usize,
        seed: Option<f64>,
        out: &mut [f64],
        threads: usize,
        interrupt: &mut dyn FnMut() -> bool,
        parallel_work: usize,
    ) -> Result<Computed, LaneError> {
        assert_eq!(x.len(), rows * self.n_inputs);
        assert_eq!(out.len(), rows * self.outputs.len());
        let chunks = rows.div_ceil(CHUNK);
        let backward = seed.is_some();
        let ns = if backward { self.n_shared } else { 0 };
        // Every chunk zeroes its partial before adding to it.
        let mut partials =
            std::mem::take(&mut *self.partials.lock().unwrap_or_else(|e| e.into_inner()));
        let result = grow(&mut partials, chunks * ns).and_then(|_| {
            let run = (x, rows, seed, threads, parallel_work);
            self.compute_in(shared, run, out, interrupt, &mut partials[..chunks * ns])
        });
        *self.partials.lock().unwrap_or_else(|e| e.into_inner()) = partials;
        result
    }

    /// `compute`, with the chunks' partials in `partials` (`n_shared` a chunk).
    ///
    /// The threads (the calling one among them) take chunks from a queue until
    /// none is left, then take blocks of shared slots from a second queue, adding
    /// to each the partials of the chunks done from the first one on (those of
    /// the last chunks, still running elsewhere, when they are done). So every
    /// slot's total is added in chunk order whatever thread does it.
    fn compute_in(
        &self,
        shared: &[f64],
        (x, rows, seed, threads, parallel_work): (&[f64], usize, Option<f64>, usize, usize),
        out: &mut [f64],
        interrupt: &mut dyn FnMut() -> bool,
        partials: &mut [f64],
    ) -> Result<Computed, LaneError> {
        let chunks = rows.div_ceil(CHUNK);
        let backward = seed.is_some();
        let (ni, no) = (self.n_inputs, self.outputs.len());
        let ns = if backward { self.n_shared } else { 0 };
        let mut roots = alloc(rows)?;
        let mut total = alloc(ns)?;
        let parts = Partials {
            ptr: partials.as_mut_ptr(),
            ns,
            _of: std::marker::PhantomData,
        };

        // The chunks' work, cut off one at a time for whichever thread asks.
        let tasks = Tasks {
            x,
            roots: &mut roots[..],
            out: &mut *out,
            parts,
            next: 0,
            ni,
            no,
            backward,
        };
        let work = self.srcs.len().max(1) * rows;
        let threads = if work >= parallel_work {
            threads.clamp(1, chunks.max(1))
        } else {
            1
        };
        let queue = Mutex::new(tasks);
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(ns.div_ceil(REDUCE_BLOCK))
            .map_err(|_| LaneError::Memory)?;
        // With no chunks, every block is done as it is (zeros).
        let to_do = if chunks > 0 { ns } else { 0 };
        blocks.extend(
            total[..to_do]
                .chunks_mut(REDUCE_BLOCK)
                .enumerate()
                .map(|(b, t)| Block {
                    lo: b * REDUCE_BLOCK,
                    total: t,
                    from: 0,
                }),
        );
        let blocks = Mutex::new(blocks);
        let done = Progress::new(chunks)?;
        let stop = AtomicBool::new(false);
        let failed = AtomicBool::new(false);
        // Sets `flag` and wakes whoever waits for the chunks.
        let raise = |flag: &AtomicBool| {
            flag.store(true, Ordering::Relaxed);
            done.wake();
        };
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        let worker = |part: usize, check: &mut dyn FnMut() -> bool| {
            let Ok(mut scratch) = Scratch::take(self, part, shared, backward) else {
                raise(&failed);
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                if check() {
                    raise(&stop);
                    break;
                }
                let Some(task) = next() else { break };
                let c = task.c;
                self.run_chunk(shared, seed, &mut scratch, task);
                done.finish(c);
            }
            scratch.give_back(self, part);
            if !backward {
                return;
            }
            // Step 2 of the module comment, a block of slots at a time: each
            // block adds the partials of the chunks done so far from the first
            // (while other threads finish the last ones), then of the rest.
            let halted = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
            let take = |upto: usize| {
                let mut q = blocks.lock().unwrap_or_else(|e| e.into_inner());
                match q.iter().position(|b| b.from < upto) {
                    Some(i) => Ok(q.swap_remove(i)),
                    None => Err(q.iter().map(|b| b.from).min()),
                }
            };
            while !halted() {
                let upto = done.prefix();
                match take(upto) {
                    Ok(mut b) => {
                        for c in b.from..upto {
                            // SAFETY: chunk `c` is done (`prefix` synchronises
                            // with the thread that did it), and nothing writes
                            // its partial any more.
                            let p = unsafe { parts.chunk_done(c) };
                            let p = &p[b.lo..b.lo + b.total.len()];
                            b.total.iter_mut().zip(p).for_each(|(t, &p)| *t += p);
                        }
                        b.from = upto;
                        if upto < chunks {
                            blocks.lock().unwrap_or_else(|e| e.into_inner()).push(b);
                        }
                    }
                    // Every block done, or in another thread's hands: it finishes them.
                    Err(None) => return,
                    Err(Some(from)) => {
                        if !done.wait_past(from, halted) {
                            return;
                        }
                    }
                }
            }
        };
        pool::run(threads, || worker(0, interrupt), &|k| {
            worker(k, &mut || false)
        });
        if failed.load(Ordering::Relaxed) {
            return Err(LaneError::Memory);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(LaneError::Interrupted);
        }
        // One NaN, whichever the hardware made (see `ops::canon`).
        out.iter_mut().for_each(|v| *v = ops::canon(*v));
        let grads = match backward {
            true => {
                self.shared_backward(shared, &mut total);
                Some(total)
            }
            false => None,
        };
        Ok((ops::canon(ops::sum(roots.iter().copied())), grads, roots))
    }

    /// The first shared leaf whose gradient total (from `compute`) is not finite.
    pub fn first_non_finite_total(&self, totals: &[f64]) -> Option<(NodeId, f64)> {
        self.shared_leaves
            .iter()
            .map(|&(id, s)| (id, totals[s as usize]))
            .find(|(_, g)| !g.is_finite())
    }

    /// Every shared node's value: leaves read from the arena, the rest computed.
    pub fn shared_values(&self, ar: &Arena) -> Result<Vec<f64>, LaneError> {
        let mut v = alloc(self.n_shared)?;
        for &(id, s) in &self.shared_leaves {
            v[s as usize] = ar.data[id as usize];
        }
        for ins in &self.shared_code {
            let args = &self.shared_args[ins.lo as usize..ins.hi as usize];
            let at = |k: usize| v[args[k] as usize];
            v[ins.out as usize] = match ins.op {
                op if op.is_nary() => ops::nary(op, args, &v),
                op if op.is_binary() => ops::binary(op, at(0), at(1)),
                op => ops::unary(op, at(0), ins.c),
            };
        }
        Ok(v)
    }

    /// Step 3 of the module comment, up to the leaves' totals: `total` holds
    /// the chunks' partials added up (step 2).
    fn shared_backward(&self, shared: &[f64], total: &mut [f64]) {
        for ins in self.shared_code.iter().rev() {
            let args = &self.shared_args[ins.lo as usize..ins.hi as usize];
            let (g, out) = (total[ins.out as usize], shared[ins.out as usize]);
            match ins.op {
                op if op.is_nary() => ops::nary_grad(op, g, out, args, shared, total),
                op if op.is_binary() => {
                    let (a, b) = (args[0] as usize, args[1] as usize);
                    let (ga, gb) = ops::binary_grad(op, g, shared[a], shared[b], out);
                    total[a] += ga;
                    total[b] += gb;
                }
                op => {
                    let a = args[0] as usize;
                    total[a] += ops::unary_grad(op, g, shared[a], out, ins.c);
                }
            }
        }
    }

    /// Adds each shared leaf's total (from `compute`) into its `grad`.
    pub fn add_grads(&self, ar: &mut Arena, totals: &[f64]) {
        for &(id, s) in &self.shared_leaves {
            ar.grad[id as usize] += totals[s as usize];
        }
    }

    /// One chunk forward (and backward with a seed).
    fn run_chunk(&self, shared: &[f64], seed: Option<f64>, sc: &mut Scratch, task: Task<'_>) {
        let n = task.roots.len();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && tests_allow(2) {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { self.chunk_avx512(shared, seed, sc, task, n) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") && tests_allow(1) {
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { self.chunk_avx2(shared, seed, sc, task, n) };
                return;
            }
        }
        self.chunk::<dense::Plain>(shared, seed, sc, task, n);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn chunk_avx512(
        &self,
        shared: &[f64],
        seed: Option<f64>,
        sc: &mut Scratch,
        task: Task<'_>,
        n: usize,
    ) {
        self.chunk::<dense::Zmm>(shared, seed, sc, task, n)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn chunk_avx2(
        &self,
        shared: &[f64],
        seed: Option<f64>,
        sc: &mut Scratch,
        task: Task<'_>,
        n: usize,
    ) {
        self.chunk::<dense::Ymm>(shared, seed, sc, task, n)
    }

    #[inline(always)]
    fn chunk<T: dense::Tiles>(
        &self,
        shared: &[f64],
        seed: Option<f64>,
        sc: &mut Scratch,
        task: Task<'_>,
        n: usize,
    ) {
        let ni = self.n_inputs;
        let vals = &mut sc.vals[..];
        for (l, row) in task.x.chunks_exact(ni.max(1)).enumerate().take(n) {
            for (j, &v) in row.iter().enumerate().take(ni) {
                vals[j * CHUNK + l] = v;
            }
        }
        for (ins, &plan) in self.code.iter().zip(&self.groups.plan) {
            let (lo, hi) = vals.split_at_mut(ins.out as usize * CHUNK);
            match plan {
                dense::Plan::Node => {}
                dense::Plan::Group(g) => {
                    self.groups.forward::<T>(g, &sc.packed, lo, hi, n);
                    continue;
                }
                dense::Plan::Member => continue,
            }
            let o = &mut hi[..n];
            let args = &self.srcs[ins.lo as usize..ins.hi as usize];
            let get = |s: Src| match s {
                Src::Lane(j) => In::L(&lo[j as usize * CHUNK..j as usize * CHUNK + n]),
                Src::Shared(j) => In::S(shared[j as usize]),
            };
            forward(ins, args, get, o);
        }
        let value = |s: Src, l: usize| match s {
            Src::Lane(j) => vals[j as usize * CHUNK + l],
            Src::Shared(j) => shared[j as usize],
        };
        for l in 0..n {
            task.roots[l] = value(self.root, l);
            for (k, &s) in self.outputs.iter().enumerate() {
                task.out[l * self.outputs.len() + k] = value(s, l);
            }
        }
        let (Some(seed), Some(partial)) = (seed, task.partial) else {
            return;
        };
        partial.iter_mut().for_each(|p| *p = 0.0);
        let Scratch {
            vals,
            grads,
            packed,
        } = sc;
        grads.iter_mut().for_each(|g| *g = 0.0);
        let vals = &vals[..];
        if let Src::Lane(r) = self.root {
            grads[r as usize * CHUNK..r as usize * CHUNK + n].fill(seed);
        } else {
            // A root that no input reaches: each sample sends it `seed`.
            let Src::Shared(r) = self.root else {
                unreachable!()
            };
            partial[r as usize] += reduce(n, |_| seed);
        }
        for (ins, &plan) in self.code.iter().zip(&self.groups.plan).rev() {
            let out = ins.out as usize * CHUNK;
            let (glo, ghi) = grads.split_at_mut(out);
            match plan {
                dense::Plan::Node => {}
                dense::Plan::Group(g) => {
                    self.groups
                        .backward::<T>(g, packed, vals, ghi, glo, partial, n);
                    continue;
                }
                dense::Plan::Member => continue,
            }
            let g = &ghi[..n];
            let args = &self.srcs[ins.lo as usize..ins.hi as usize];
            let ctx = Back {
                vals,
                shared,
                n,
                out: &vals[out..out + n],
                c: ins.c,
            };
            ctx.backward(ins.op, args, g, glo, partial);
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The widest kernels a test lets this thread's runs use (0 plain, 1 AVX2,
    /// 2 AVX-512), so each set is tested on a machine that has them all.
    static WIDEST: std::cell::Cell<u8> = const { std::cell::Cell::new(2) };
}

#[cfg(test)]
fn tests_allow(tier: u8) -> bool {
    WIDEST.get() >= tier
}

#[cfg(not(test))]
#[inline(always)]
fn tests_allow(_: u8) -> bool {
    true
}

/// Which chunks are done, and how many from the first are (the prefix whose
/// partials can be added up), for threads that wait for more.
struct Progress {
    done: Vec<AtomicBool>,
    prefix: AtomicUsize,
    lock: Mutex<()>,
    cv: std::sync::Condvar,
}

impl Progress {
    fn new(chunks: usize) -> Result<Progress, LaneError> {
        let mut done = Vec::new();
        done.try_reserve_exact(chunks)
            .map_err(|_| LaneError::Memory)?;
        done.resize_with(chunks, || AtomicBool::new(false));
        Ok(Progress {
            done,
            prefix: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: std::sync::Condvar::new(),
        })
    }

    /// Chunk `c` is done: its partial is written.
    fn finish(&self, c: usize) {
        self.done[c].store(true, Ordering::Release);
        let mut p = self.prefix.load(Ordering::Acquire);
        while p < self.done.len() && self.done[p].load(Ordering::Acquire) {
            // Whoever moves the prefix on has seen chunk `p` done.
            match self
                .prefix
                .compare_exchange(p, p + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => p += 1,
                Err(q) => p = q,
            }
        }
        self.wake();
    }

    /// How many chunks from the first are done.
    fn prefix(&self) -> usize {
        self.prefix.load(Ordering::Acquire)
    }

    /// Wakes the waiters, to look again.
    fn wake(&self) {
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }

    /// Waits until more than `from` chunks from the first are done (true), or
    /// `halted` says to give up (false).
    fn wait_past(&self, from: usize, halted: impl Fn() -> bool) -> bool {
        let ready = || self.prefix() > from;
        if pool::spin_until(|| ready() || halted()) {
            return !halted() || ready();
        }
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !ready() {
            if halted() {
                return false;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        true
    }
}

/// A block of the shared nodes' totals (`total[lo..]`) and the chunks whose
/// partials it holds (`0..from`).
struct Block<'a> {
    lo: usize,
    total: &'a mut [f64],
    from: usize,
}

/// One chunk's share of the run's inputs and outputs.
struct Task<'a> {
    /// Which chunk.
    c: usize,
    x: &'a [f64],
    roots: &'a mut [f64],
    out: &'a mut [f64],
    partial: Option<&'a mut [f64]>,
}

/// The chunks' tasks not yet handed out: what is left of the run's inputs and
/// outputs, cut off a chunk at a time.
struct Tasks<'a> {
    x: &'a [f64],
    roots: &'a mut [f64],
    out: &'a mut [f64],
    parts: Partials<'a>,
    /// The chunk the next task is.
    next: usize,
    ni: usize,
    no: usize,
    backward: bool,
}

impl<'a> Iterator for Tasks<'a> {
    type Item = Task<'a>;

    fn next(&mut self) -> Option<Task<'a>> {
        if self.roots.is_empty() {
            return None;
        }
        let n = CHUNK.min(self.roots.len());
        let (xa, xb) = self.x.split_at(n * self.ni);
        let (ra, rb) = std::mem::take(&mut self.roots).split_at_mut(n);
        let (oa, ob) = std::mem::take(&mut self.out).split_at_mut(n * self.no);
        (self.x, self.roots, self.out) = (xb, rb, ob);
        // SAFETY: each chunk is handed out once, and chunks' partials do not overlap.
        let partial = unsafe { self.parts.chunk(self.next) };
        self.next += 1;
        Some(Task {
            c: self.next - 1,
            x: xa,
            roots: ra,
            out: oa,
            partial: self.backward.then_some(partial),
        })
    }
}

/// The run's partials, `ns` a chunk: each chunk's written by the thread that
/// runs the chunk, then all of them read by the threads that add them up.
#[derive(Clone, Copy)]
struct Partials<'a> {
    ptr: *mut f64,
    ns: usize,
    _of: std::marker::PhantomData<&'a mut [f64]>,
}

// SAFETY: the pointer is to a slice borrowed for `'a`, written and read as the
// methods' contracts say.
unsafe impl Send for Partials<'_> {}
unsafe impl Sync for Partials<'_> {}

impl<'a> Partials<'a> {
    /// Chunk `c`'s partial.
    ///
    /// # Safety
    /// `c` is a chunk of the run, and no other reference to its partial is live.
    unsafe fn chunk(&self, c: usize) -> &'a mut [f64] {
        std::slice::from_raw_parts_mut(self.ptr.add(c * self.ns), self.ns)
    }

    /// Chunk `c`'s partial, once written.
    ///
    /// # Safety
    /// The chunk's writes happened before this call, and it is not written
    /// while the slice lives.
    unsafe fn chunk_done(&self, c: usize) -> &'a [f64] {
        std::slice::from_raw_parts(self.ptr.add(c * self.ns), self.ns)
    }
}

/// A thread's values and gradients of the lane nodes, `CHUNK` lanes a node, and
/// the dense groups' weights packed for the run.
struct Scratch {
    vals: Vec<f64>,
    grads: Vec<f64>,
    packed: dense::Packed,
}

impl Scratch {
    /// A scratch for part `part` of a run of `tape`: the one that part left, or
    /// a new one.
    fn take(
        tape: &LaneTape,
        part: usize,
        shared: &[f64],
        backward: bool,
    ) -> Result<Scratch, LaneError> {
        let old = {
            let mut kept = tape.scratch.lock().unwrap_or_else(|e| e.into_inner());
            kept.get_mut(part).and_then(Option::take)
        };
        let mut s = old.unwrap_or(Scratch {
            vals: Vec::new(),
            grads: Vec::new(),
            packed: Default::default(),
        });
        // Every value is written before it is read (gradients are zeroed per chunk).
        grow(&mut s.vals, tape.n_lane * CHUNK)?;
        grow(&mut s.grads, if backward { tape.n_lane * CHUNK } else { 0 })?;
        tape.groups.pack(shared, backward, &mut s.packed)?;
        Ok(s)
    }

    /// Leaves the scratch in `tape` for part `part` of the next run.
    fn give_back(self, tape: &LaneTape, part: usize) {
        let mut kept = tape.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let len = kept.len();
        if len <= part {
            if kept.try_reserve(part + 1 - len).is_err() {
                return;
            }
            kept.resize_with(part + 1, || None);
        }
        kept[part] = Some(self);
    }
}

/// Makes `v` at least `n` long, or `LaneError::Memory`.
fn grow(v: &mut Vec<f64>, n: usize) -> Result<(), LaneError> {
    if v.len() < n {
        v.try_reserve_exact(n - v.len())
            .map_err(|_| LaneError::Memory)?;
        v.resize(n, 0.0);
    }
    Ok(())
}

/// `n` zeros, or `LaneError::Memory`.
fn alloc(n: usize) -> Result<Vec<f64>, LaneError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| LaneError::Memory)?;
    v.resize(n, 0.0);
    Ok(v)
}

/// An operand's values over a chunk's lanes.
#[derive(Clone, Copy)]
enum In<'a> {
    L(&'a [f64]),
    S(f64),
}

/// `o[l] = f(a[l])` or `f(a[l], b[l])` over the lanes, a loop per operand kind.
#[inline(always)]
fn map1(o: &mut [f64], a: In<'_>, f: impl Fn(f64) -> f64) {
    match a {
        In::L(a) => o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a)),
        In::S(a) => o.fill(f(a)),
    }
}

#[inline(always)]
fn map2(o: &mut [f64], a: In<'_>, b: In<'_>, f: impl Fn(f64, f64) -> f64) {
    match (a, b) {
        (In::L(a), In::L(b)) => {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        }
        (In::L(a), In::S(b)) => o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, b)),
        (In::S(a), In::L(b)) => o.iter_mut().zip(b).for_each(|(o, &b)| *o = f(a, b)),
        (In::S(a), In::S(b)) => o.fill(f(a, b)),
    }
}

/// Calls `$m!(op)` with `op` a constant, for every op, so each arm's loop is
/// compiled for that one op's formula from `ops`.
macro_rules! each_op {
    ($op:expr, $m:ident) => {
        match $op {
            Op::Add => $m!(Op::Add),
            Op::Sub => $m!(Op::Sub),
            Op::Mul => $m!(Op::Mul),
            Op::Div => $m!(Op::Div),
            Op::Pow => $m!(Op::Pow),
            Op::Neg => $m!(Op::Neg),
            Op::PowConst => $m!(Op::PowConst),
            Op::RPowConst => $m!(Op::RPowConst),
            Op::Exp => $m!(Op::Exp),
            Op::Log => $m!(Op::Log),
            Op::Tanh => $m!(Op::Tanh),
            Op::Sigmoid => $m!(Op::Sigmoid),
            Op::Relu => $m!(Op::Relu),
            Op::Abs => $m!(Op::Abs),
            Op::Clamp => $m!(Op::Clamp),
            Op::Sum | Op::Dot | Op::LogSumExp | Op::Leaf | Op::Free => {
                unreachable!("not elementwise")
            }
        }
    };
}

/// One lane node forward over a chunk.
#[inline(always)]
fn forward<'a>(ins: &Instr, args: &[Src], get: impl Fn(Src) -> In<'a>, o: &mut [f64]) {
    match ins.op {
        Op::Sum => {
            if args.is_empty() {
                o.fill(0.0);
            }
            for (k, &s) in args.iter().enumerate() {
                match (k, get(s)) {
                    (0, a) => map1(o, a, |a| a),
                    (_, In::L(a)) => o.iter_mut().zip(a).for_each(|(o, &a)| *o += a),
                    (_, In::S(a)) => o.iter_mut().for_each(|o| *o += a),
                }
            }
        }
        Op::LogSumExp => {
            // Operand by operand for each lane (no buffer: nothing here can fail).
            let at = |v: In<'_>, l: usize| match v {
                In::L(v) => v[l],
                In::S(v) => v,
            };
            for (l, o) in o.iter_mut().enumerate() {
                *o = ops::logsumexp(args.iter().map(|&s| at(get(s), l)));
            }
        }
        Op::Dot => {
            let (ws, xs) = ops::split_dot(args);
            if ws.is_empty() {
                o.fill(0.0);
            }
            for (k, (&w, &x)) in ws.iter().zip(xs).enumerate() {
                let (w, x) = (get(w), get(x));
                if k == 0 {
                    map2(o, w, x, |w, x| w * x);
                    continue;
                }
                match (w, x) {
                    (In::S(w), In::L(x)) => o.iter_mut().zip(x).for_each(|(o, &x)| *o += w * x),
                    (In::L(w), In::S(x)) => o.iter_mut().zip(w).for_each(|(o, &w)| *o += w * x),
                    (In::L(w), In::L(x)) => {
                        for ((o, &w), &x) in o.iter_mut().zip(w).zip(x) {
                            *o += w * x;
                        }
                    }
                    (In::S(w), In::S(x)) => {
                        let p = w * x;
                        o.iter_mut().for_each(|o| *o += p);
                    }
                }
            }
        }
        op => {
            let c = ins.c;
            macro_rules! fwd {
                ($op:expr) => {
                    if $op.is_binary() {
                        map2(o, get(args[0]), get(args[1]), |a, b| ops::binary($op, a, b))
                    } else {
                        map1(o, get(args[0]), |a| ops::unary($op, a, c))
                    }
                };
            }
            each_op!(op, fwd)
        }
    }
}

fn slot(s: Src) -> usize {
    slot_of(s) as usize
}

fn slot_of(s: Src) -> u32 {
    let (Src::Lane(j) | Src::Shared(j)) = s;
    j
}

/// A chunk's reduction of `f(l)` over lanes `0..n` (step 1 of the module comment).
#[inline(always)]
fn reduce(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; ACC];
    let full = n / ACC * ACC;
    for base in (0..full).step_by(ACC) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a += f(base + j);
        }
    }
    for (j, a) in acc.iter_mut().enumerate().take(n - full) {
        *a += f(full + j);
    }
    combine(acc)
}

/// `reduce(n, |l| g[l] * x[l])` over whole slices, written for the vectoriser.
#[inline(always)]
fn reduce_prod(g: &[f64], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; ACC];
    let (gc, xc) = (g.chunks_exact(ACC), x.chunks_exact(ACC));
    let (gr, xr) = (gc.remainder(), xc.remainder());
    for (g8, x8) in gc.zip(xc) {
        for j in 0..ACC {
            acc[j] += g8[j] * x8[j];
        }
    }
    for j in 0..gr.len() {
        acc[j] += gr[j] * xr[j];
    }
    combine(acc)
}

/// `reduce(n, |l| t[l])` over a whole slice, written for the vectoriser.
#[inline(always)]
fn reduce_slice(t: &[f64]) -> f64 {
    let mut acc = [0.0f64; ACC];
    let tc = t.chunks_exact(ACC);
    let tr = tc.remainder();
    for t8 in tc {
        for j in 0..ACC {
            acc[j] += t8[j];
        }
    }
    for j in 0..tr.len() {
        acc[j] += tr[j];
    }
    combine(acc)
}

#[inline(always)]
fn combine(acc: [f64; ACC]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// What a lane node's backward reads.
struct Back<'a> {
    vals: &'a [f64],
    shared: &'a [f64],
    n: usize,
    /// The node's own values.
    out: &'a [f64],
    c: [f64; 2],
}

impl Back<'_> {
    fn lane(&self, j: u32) -> &[f64] {
        &self.vals[j as usize * CHUNK..j as usize * CHUNK + self.n]
    }

    /// Adds the contributions `t` (one per lane) to the operand `to`: into its
    /// lanes, or reduced into the chunk's partial of a shared node.
    #[inline(always)]
    fn put(&self, to: Src, t: &[f64], glo: &mut [f64], partial: &mut [f64]) {
        let t = &t[..self.n];
        match to {
            Src::Lane(j) => {
                let d = &mut glo[j as usize * CHUNK..j as usize * CHUNK + self.n];
                for (d, &t) in d.iter_mut().zip(t) {
                    *d += t;
                }
            }
            Src::Shared(j) => partial[j as usize] += reduce_slice(t),
        }
    }

    #[inline(always)]
    fn value(&self, s: Src) -> In<'_> {
        match s {
            Src::Lane(j) => In::L(self.lane(j)),
            Src::Shared(j) => In::S(self.shared[j as usize]),
        }
    }

    /// `t[l] = f(g[l], a[l], out[l])` over the lanes, one loop per kind of `a`.
    #[inline(always)]
    fn fill1(&self, t: &mut [f64], g: &[f64], a: In<'_>, f: impl Fn(f64, f64, f64) -> f64) {
        match a {
            In::L(a) => fill1(self.n, t, g, a, self.out, f),
            In::S(a) => fill1(self.n, t, g, a, self.out, f),
        }
    }

    #[inline(always)]
    fn backward(&self, op: Op, args: &[Src], g: &[f64], glo: &mut [f64], partial: &mut [f64]) {
        // The contributions of the operand slots being sent, one per lane.
        let (mut ta, mut tb) = ([0.0f64; CHUNK], [0.0f64; CHUNK]);
        match op {
            Op::Sum => {
                for &s in args {
                    self.put(s, g, glo, partial);
                }
            }
            Op::LogSumExp => {
                for &s in args {
                    let x = self.value(s);
                    self.fill1(&mut ta, g, x, ops::logsumexp_grad);
                    self.put(s, &ta, glo, partial);
                }
            }
            Op::Dot => {
                let (ws, xs) = ops::split_dot(args);
                for (&w, &x) in ws.iter().zip(xs) {
                    match (w, x, self.value(w), self.value(x)) {
                        // The hot case, a weight times an input: one pass over the
                        // lanes updates the input's gradient and reduces the weight's.
                        (Src::Shared(ws), Src::Lane(xs), In::S(wv), In::L(xv)) => {
                            let d = &mut glo[xs as usize * CHUNK..xs as usize * CHUNK + self.n];
                            partial[ws as usize] += reduce_prod(g, xv);
                            for (d, &g) in d.iter_mut().zip(g) {
                                *d += g * wv;
                            }
                        }
                        (_, _, wv, xv) => {
                            self.fill1(&mut ta, g, xv, |g, x, _| g * x);
                            self.put(w, &ta, glo, partial);
                            self.fill1(&mut tb, g, wv, |g, w, _| g * w);
                            self.put(x, &tb, glo, partial);
                        }
                    }
                }
            }
            op => {
                let (n, out, c) = (self.n, self.out, self.c);
                macro_rules! bwd {
                    ($op:expr) => {
                        if $op == Op::Add {
                            // Both contributions are `g` itself.
                            self.put(args[0], g, glo, partial);
                            self.put(args[1], g, glo, partial);
                        } else if $op.is_binary() {
                            let f = |g, a, b, o| ops::binary_grad($op, g, a, b, o);
                            let (a, b) = (self.value(args[0]), self.value(args[1]));
                            let (ta, tb) = (&mut ta, &mut tb);
                            match (a, b) {
                                (In::L(a), In::L(b)) => fill2(n, ta, tb, g, a, b, out, f),
                                (In::L(a), In::S(b)) => fill2(n, ta, tb, g, a, b, out, f),
                                (In::S(a), In::L(b)) => fill2(n, ta, tb, g, a, b, out, f),
                                (In::S(a), In::S(b)) => fill2(n, ta, tb, g, a, b, out, f),
                            }
                            self.put(args[0], ta, glo, partial);
                            self.put(args[1], tb, glo, partial);
                        } else {
                            let f = |g, a, o| ops::unary_grad($op, g, a, o, c);
                            match (args[0], self.value(args[0])) {
                                // A lane operand (always, as a lane node's only
                                // operand): its gradients updated in one pass.
                                (Src::Lane(j), In::L(a)) => {
                                    let d = &mut glo[j as usize * CHUNK..j as usize * CHUNK + n];
                                    add1(n, d, g, a, out, f);
                                }
                                (_, a) => {
                                    self.fill1(&mut ta, g, a, f);
                                    self.put(args[0], &ta, glo, partial);
                                }
                            }
                        }
                    };
                }
                each_op!(op, bwd)
            }
        }
    }
}

/// An operand's values over a chunk's lanes, as the loops of `fill1` and
/// `fill2` read them: a slice cut to the lanes, or one shared value.
trait Col: Copy {
    fn cut(self, n: usize) -> Self;
    fn at(self, l: usize) -> f64;
}

impl Col for &[f64] {
    #[inline(always)]
    fn cut(self, n: usize) -> Self {
        &self[..n]
    }
    #[inline(always)]
    fn at(self, l: usize) -> f64 {
        self[l]
    }
}

impl Col for f64 {
    #[inline(always)]
    fn cut(self, _: usize) -> Self {
        self
    }
    #[inline(always)]
    fn at(self, _: usize) -> f64 {
        self
    }
}

/// `t[l] = f(g[l], a[l], out[l])` for the lanes `0..n`, with every slice cut to
/// `n` first so the loop has no bounds checks and vectorises.
#[inline(always)]
fn fill1<A: Col>(
    n: usize,
    t: &mut [f64],
    g: &[f64],
    a: A,
    out: &[f64],
    f: impl Fn(f64, f64, f64) -> f64,
) {
    let (t, g, a, out) = (&mut t[..n], &g[..n], a.cut(n), &out[..n]);
    for l in 0..n {
        t[l] = f(g[l], a.at(l), out[l]);
    }
}

/// `d[l] += f(g[l], a[l], out[l])` for the lanes `0..n`.
#[inline(always)]
fn add1(
    n: usize,
    d: &mut [f64],
    g: &[f64],
    a: &[f64],
    out: &[f64],
    f: impl Fn(f64, f64, f64) -> f64,
) {
    let (d, g, a, out) = (&mut d[..n], &g[..n], &a[..n], &out[..n]);
    for l in 0..n {
        d[l] += f(g[l], a[l], out[l]);
    }
}

/// `(ta[l], tb[l]) = f(g[l], a[l], b[l], out[l])` for the lanes `0..n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill2<A: Col, B: Col>(
    n: usize,
    ta: &mut [f64],
    tb: &mut [f64],
    g: &[f64],
    a: A,
    b: B,
    out: &[f64],
    f: impl Fn(f64, f64, f64, f64) -> (f64, f64),
) {
    let (ta, tb, g, out) = (&mut ta[..n], &mut tb[..n], &g[..n], &out[..n]);
    let (a, b) = (a.cut(n), b.cut(n));
    for l in 0..n {
        (ta[l], tb[l]) = f(g[l], a.at(l), b.at(l), out[l]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Operand;

    /// A small MLP-like per-sample graph: inputs x0, x1, a target t; two hidden
    /// units `tanh(dot(w, x) + b)`, a linear output, and `(out - t)**2`.
    fn build(ar: &mut Arena) -> (NodeId, Vec<NodeId>, Vec<NodeId>, NodeId) {
        let x: Vec<NodeId> = (0..2).map(|_| ar.leaf(0.0).unwrap()).collect();
        let t = ar.leaf(0.0).unwrap();
        let params: Vec<NodeId> = [0.3, -0.7, 0.5, 0.9, 0.1, -0.2, 1.1, -0.4, 0.05]
            .iter()
            .map(|&v| ar.leaf(v).unwrap())
            .collect();
        let xs: Vec<Operand> = x.iter().map(|&i| Operand::Node(i)).collect();
        let mut h = Vec::new();
        for u in 0..2 {
            let ws = [
                Operand::Node(params[3 * u]),
                Operand::Node(params[3 * u + 1]),
            ];
            let d = ar.dot(&ws, &xs).unwrap();
            let s = ar
                .binary(Op::Add, Operand::Node(d), Operand::Node(params[3 * u + 2]))
                .unwrap();
            h.push(ar.unary(Op::Tanh, s, [0.0; 2]).unwrap());
        }
        let ws = [Operand::Node(params[6]), Operand::Node(params[7])];
        let hs: Vec<Operand> = h.iter().map(|&i| Operand::Node(i)).collect();
        let o = ar.dot(&ws, &hs).unwrap();
        let o = ar
            .binary(Op::Add, Operand::Node(o), Operand::Node(params[8]))
            .unwrap();
        let e = ar
            .binary(Op::Sub, Operand::Node(o), Operand::Node(t))
            .unwrap();
        let sq = ar.unary(Op::PowConst, e, [2.0, 0.0]).unwrap();
        let mut inputs = x;
        inputs.push(t);
        (sq, inputs, params, o)
    }

    fn data(rows: usize) -> Vec<f64> {
        (0..rows * 3)
            .map(|i| ((i * 7919) % 113) as f64 / 37.0 - 1.4)
            .collect()
    }

    /// Per-sample replay: each sample's graph alone, its contributions to each
    /// parameter reduced in the documented order.
    fn by_sample(
        ar: &mut Arena,
        root: NodeId,
        inputs: &[NodeId],
        params: &[NodeId],
        x: &[f64],
        rows: usize,
    ) -> (f64, Vec<f64>) {
        let order = backward::order(ar, root).unwrap();
        let mut per_sample = vec![Vec::new(); params.len()];
        let mut roots = Vec::new();
        for r in 0..rows {
            for (j, &i) in inputs.iter().enumerate() {
                ar.data[i as usize] = x[r * inputs.len() + j];
            }
            for &id in order.iter().rev() {
                if ar.op(id) != Op::Leaf {
                    let v = recompute(ar, id);
                    ar.data[id as usize] = v;
                }
            }
            for &id in &order {
                ar.grad[id as usize] = 0.0;
            }
            ar.grad[root as usize] = 1.0 / rows as f64;
            backward::sweep(ar, &order, false).unwrap();
            roots.push(ar.data[root as usize]);
            for (k, &p) in params.iter().enumerate() {
                per_sample[k].push(ar.grad[p as usize]);
            }
        }
        let grads = per_sample
            .iter()
            .map(|c| {
                let mut total = 0.0;
                for chunk in c.chunks(CHUNK) {
                    total += reduce(chunk.len(), |l| chunk[l]);
                }
                total
            })
            .collect();
        (ops::sum(roots.into_iter()), grads)
    }

    fn recompute(ar: &Arena, id: NodeId) -> f64 {
        let args: Vec<f64> = ar
            .operands(id)
            .iter()
            .map(|&i| ar.data[i as usize])
            .collect();
        match ar.op(id) {
            Op::Sum => ops::sum(args.into_iter()),
            Op::LogSumExp => ops::logsumexp(args.into_iter()),
            Op::Dot => {
                let (ws, xs) = ops::split_dot(&args);
                ops::dot(ws.iter().copied().zip(xs.iter().copied()))
            }
            op if op.is_binary() => ops::binary(op, args[0], args[1]),
            op => ops::unary(op, args[0], ar.consts(id)),
        }
    }

    #[test]
    fn lanes_match_samples_run_one_by_one() {
        for rows in [1, 7, 64, 65, 200] {
            let mut ar = Arena::new();
            let (root, inputs, params, out) = build(&mut ar);
            let tape = LaneTape::record(&mut ar, root, &inputs, &[out]).unwrap();
            let x = data(rows);
            let mut outs = vec![0.0; rows];
            for p in &params {
                ar.grad[*p as usize] = 0.0;
            }
            let seed = 1.0 / rows as f64;
            let total = tape
                .run(&mut ar, &x, rows, Some(seed), &mut outs, 1, &mut || false)
                .unwrap();
            let lane_grads: Vec<f64> = params.iter().map(|&p| ar.grad[p as usize]).collect();
            let (expect_total, expect_grads) = by_sample(&mut ar, root, &inputs, &params, &x, rows);
            assert_eq!(total.to_bits(), expect_total.to_bits(), "rows {rows}");
            for (a, b) in lane_grads.iter().zip(&expect_grads) {
                assert_eq!(a.to_bits(), b.to_bits(), "rows {rows}: {a} vs {b}");
            }
        }
    }

    /// Every elementwise op, with each kind of operands a lane node can have
    /// (lane and lane, lane and shared, shared and lane, one lane twice), and
    /// `sum`, `logsumexp` and non-dense `dot`s mixing lanes and shared values.
    /// Each parameter is used once, so per-sample replay gives its reduction.
    fn build_ops(ar: &mut Arena) -> (NodeId, Vec<NodeId>, Vec<NodeId>, NodeId) {
        let x: Vec<NodeId> = (0..3).map(|_| ar.leaf(0.0).unwrap()).collect();
        let mut p = Vec::new();
        let mut param = |ar: &mut Arena, v: f64| {
            let id = ar.leaf(v).unwrap();
            p.push(id);
            id
        };
        let n = |id: NodeId| Operand::Node(id);
        let p0 = param(ar, 0.6);
        let a = ar.binary(Op::Mul, n(x[0]), n(p0)).unwrap();
        let b = ar.binary(Op::Add, n(x[1]), n(x[2])).unwrap();
        let e = ar.unary(Op::Exp, a, [0.0; 2]).unwrap();
        let eb = ar.unary(Op::Exp, b, [0.0; 2]).unwrap();
        let mut terms = Vec::new();
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Pow] {
            terms.push(ar.binary(op, n(e), n(eb)).unwrap());
            let (p1, p2) = (param(ar, 1.3), param(ar, 0.7));
            terms.push(ar.binary(op, n(e), n(p1)).unwrap());
            terms.push(ar.binary(op, n(p2), n(e)).unwrap());
            terms.push(ar.binary(op, n(eb), n(eb)).unwrap());
        }
        let unary = [
            (Op::Neg, [0.0; 2]),
            (Op::PowConst, [3.0, 0.0]),
            (Op::RPowConst, [1.5, 0.0]),
            (Op::Exp, [0.0; 2]),
            (Op::Tanh, [0.0; 2]),
            (Op::Sigmoid, [0.0; 2]),
            (Op::Relu, [0.0; 2]),
            (Op::Abs, [0.0; 2]),
            (Op::Clamp, [-0.5, 0.5]),
        ];
        for (op, c) in unary {
            terms.push(ar.unary(op, b, c).unwrap());
        }
        terms.push(ar.unary(Op::Log, e, [0.0; 2]).unwrap());
        let ps = [0.2, -0.3, 1.1, -0.4].map(|v| param(ar, v));
        terms.push(ar.sum(&[n(b), n(ps[0]), n(e)]).unwrap());
        terms.push(ar.logsumexp(&[n(b), n(ps[1]), n(a)]).unwrap());
        terms.push(ar.dot(&[n(x[0]), n(ps[2])], &[n(x[1]), n(x[2])]).unwrap());
        terms.push(ar.dot(&[n(b)], &[n(ps[3])]).unwrap());
        let ts: Vec<Operand> = terms.iter().map(|&t| n(t)).collect();
        let root = ar.sum(&ts).unwrap();
        (root, x, p, b)
    }

    #[test]
    fn every_op_and_operand_kind_matches_samples_run_one_by_one() {
        for rows in [1, 7, 64, 65, 200] {
            let mut ar = Arena::new();
            let (root, inputs, params, out) = build_ops(&mut ar);
            let tape = LaneTape::record(&mut ar, root, &inputs, &[out]).unwrap();
            let x = data(rows);
            let mut outs = vec![0.0; rows];
            let seed = 1.0 / rows as f64;
            let total = tape
                .run(&mut ar, &x, rows, Some(seed), &mut outs, 1, &mut || false)
                .unwrap();
            let lane_grads: Vec<f64> = params.iter().map(|&p| ar.grad[p as usize]).collect();
            let (expect_total, expect_grads) = by_sample(&mut ar, root, &inputs, &params, &x, rows);
            assert!(expect_total.is_finite(), "rows {rows}");
            assert_eq!(total.to_bits(), expect_total.to_bits(), "rows {rows}");
            for (a, b) in lane_grads.iter().zip(&expect_grads) {
                assert!(b.is_finite() && *b != 0.0, "rows {rows}: {b}");
                assert_eq!(a.to_bits(), b.to_bits(), "rows {rows}: {a} vs {b}");
            }
            tape.release(&mut ar);
        }
    }

    /// Layers of odd widths through the dense kernels, with what may keep
    /// neurons apart: a layer's input read between its neurons, a later
    /// neuron's weight sent a gradient between neurons, a weight two neurons
    /// share, and a `dot` whose inputs repeat.
    fn build_deep(ar: &mut Arena) -> (NodeId, Vec<NodeId>, Vec<NodeId>, NodeId) {
        let inputs: Vec<NodeId> = (0..3).map(|_| ar.leaf(0.0).unwrap()).collect();
        let mut params = Vec::new();
        let mut k = 0;
        let mut param = |ar: &mut Arena, params: &mut Vec<NodeId>| {
            k += 1;
            let p = ar.leaf(((k * 37 % 23) as f64 - 11.0) / 13.0).unwrap();
            params.push(p);
            p
        };
        let mut x: Vec<NodeId> = inputs[..2].to_vec();
        for (layer, width) in [5usize, 9, 13].into_iter().enumerate() {
            let ws: Vec<Vec<NodeId>> = (0..width)
                .map(|_| (0..x.len()).map(|_| param(ar, &mut params)).collect())
                .collect();
            let mut h = Vec::new();
            for j in 0..width {
                let mut w: Vec<Operand> = ws[j].iter().map(|&p| Operand::Node(p)).collect();
                if layer == 1 && j == 4 {
                    w[1] = Operand::Node(ws[2][1]); // shared with neuron 2
                }
                let xs: Vec<Operand> = x.iter().map(|&i| Operand::Node(i)).collect();
                let d = ar.dot(&w, &xs).unwrap();
                let b = param(ar, &mut params);
                let mut a = ar
                    .binary(Op::Add, Operand::Node(d), Operand::Node(b))
                    .unwrap();
                if layer == 1 && j == 2 {
                    // Reads an input of the layer between its neurons.
                    a = ar
                        .binary(Op::Mul, Operand::Node(a), Operand::Node(x[0]))
                        .unwrap();
                }
                if layer == 2 && j == 1 {
                    // Sends a gradient to neuron 3's first weight.
                    a = ar
                        .binary(Op::Add, Operand::Node(a), Operand::Node(ws[3][0]))
                        .unwrap();
                }
                let op = if layer == 2 { Op::Relu } else { Op::Tanh };
                h.push(ar.unary(op, a, [0.0; 2]).unwrap());
            }
            x = h;
        }
        let (wa, wb, wc) = (
            param(ar, &mut params),
            param(ar, &mut params),
            param(ar, &mut params),
        );
        let rep = ar
            .dot(
                &[Operand::Node(wa), Operand::Node(wb), Operand::Node(wc)],
                &[
                    Operand::Node(x[0]),
                    Operand::Node(x[3]),
                    Operand::Node(x[0]),
                ],
            )
            .unwrap();
        let wo: Vec<Operand> = (0..x.len())
            .map(|_| Operand::Node(param(ar, &mut params)))
            .collect();
        let xs: Vec<Operand> = x.iter().map(|&i| Operand::Node(i)).collect();
        let o = ar.dot(&wo, &xs).unwrap();
        let o = ar
            .binary(Op::Add, Operand::Node(o), Operand::Node(rep))
            .unwrap();
        let e = ar
            .binary(Op::Sub, Operand::Node(o), Operand::Node(inputs[2]))
            .unwrap();
        let sq = ar.unary(Op::PowConst, e, [2.0, 0.0]).unwrap();
        (sq, inputs, params, o)
    }

    /// The run's total, outputs and parameter gradients.
    fn run_deep(
        tape: &LaneTape,
        ar: &mut Arena,
        params: &[NodeId],
        x: &[f64],
        threads: usize,
    ) -> (u64, Vec<u64>, Vec<u64>) {
        let rows = x.len() / 3;
        for &p in params {
            ar.grad[p as usize] = 0.0;
        }
        let mut outs = vec![0.0; rows];
        let seed = 1.0 / rows as f64;
        let total = tape
            .run_with(
                ar,
                x,
                rows,
                Some(seed),
                &mut outs,
                threads,
                &mut || false,
                0,
            )
            .unwrap();
        let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let grads: Vec<f64> = params.iter().map(|&p| ar.grad[p as usize]).collect();
        (total.to_bits(), bits(&outs), bits(&grads))
    }

    #[test]
    fn layers_match_the_per_node_code_and_samples_run_one_by_one() {
        for rows in [1, 5, 8, 13, 64, 100, 131] {
            let mut ar = Arena::new();
            let (root, inputs, params, out) = build_deep(&mut ar);
            let tape = LaneTape::record(&mut ar, root, &inputs, &[out]).unwrap();
            // Layers 1 and 2 split where their neurons must stay apart, then the
            // output and the `dot` with repeated inputs; weights in runs of slots
            // except where a weight is shared or first met elsewhere.
            let runs = [true, true, false, true, false, true, true];
            let sizes: Vec<_> = [5, 3, 6, 3, 10, 1, 1].into_iter().zip(runs).collect();
            assert_eq!(tape.groups.sizes(), sizes);
            let mut per_node = LaneTape::record(&mut ar, root, &inputs, &[out]).unwrap();
            per_node.groups = dense::Groups::per_node(per_node.code.len());
            let x = data(rows);
            let expect = run_deep(&per_node, &mut ar, &params, &x, 1);
            for threads in [1, 2] {
                assert_eq!(
                    run_deep(&tape, &mut ar, &params, &x, threads),
                    expect,
                    "rows {rows}"
                );
            }
            // Against each sample alone: the parameters with one contribution site
            // (a weight two neurons share, and one an `add` reads too, have two).
            let (total, grads) = by_sample(&mut ar, root, &inputs, &params, &x, rows);
            assert_eq!(expect.0, total.to_bits(), "rows {rows}");
            let two_sites = [15 + 2 * 5 + 1, 15 + 45 + 9 + 3 * 9];
            for (k, (&a, b)) in expect.2.iter().zip(&grads).enumerate() {
                if !two_sites.contains(&k) {
                    assert_eq!(
                        a,
                        b.to_bits(),
                        "rows {rows}, param {k}: {} vs {b}",
                        f64::from_bits(a)
                    );
                }
            }
            if rows > 64 {
                let live = grads.iter().filter(|g| **g != 0.0).count();
                assert!(live > params.len() * 2 / 3, "rows {rows}: {live} gradients");
            }
        }
    }

    /// Two tanh layers (widths 30 and 45) and a linear output: 1531 parameters,
    /// so the chunks' partials are added up in two blocks of slots (1024 and 507),
    /// which threads take in turns.
    fn build_wide(ar: &mut Arena) -> (NodeId, Vec<NodeId>, Vec<NodeId>) {
        let inputs: Vec<NodeId> = (0..3).map(|_| ar.leaf(0.0).unwrap()).collect();
        let mut params = Vec::new();
        let mut x: Vec<NodeId> = inputs[..2].to_vec();
        for width in [30usize, 45, 1] {
            let mut h = Vec::new();
            for j in 0..width {
                let mut w = Vec::new();
                for k in 0..x.len() {
                    let v = ((j * 31 + k * 17) % 29) as f64 / 29.0 - 0.5;
                    let p = ar.leaf(v / (x.len() as f64).sqrt()).unwrap();
                    params.push(p);
                    w.push(Operand::Node(p));
                }
                let xs: Vec<Operand> = x.iter().map(|&i| Operand::Node(i)).collect();
                let d = ar.dot(&w, &xs).unwrap();
                let b = ar.leaf(0.01 * j as f64).unwrap();
                params.push(b);
                let a = ar
                    .binary(Op::Add, Operand::Node(d), Operand::Node(b))
                    .unwrap();
                h.push(match width {
                    1 => a,
                    _ => ar.unary(Op::Tanh, a, [0.0; 2]).unwrap(),
                });
            }
            x = h;
        }
        let e = ar
            .binary(Op::Sub, Operand::Node(x[0]), Operand::Node(inputs[2]))
            .unwrap();
        let sq = ar.unary(Op::PowConst, e, [2.0, 0.0]).unwrap();
        (sq, inputs, params)
    }

    #[test]
    fn partials_added_up_in_blocks_give_the_same_bits_on_any_thread_count() {
        for rows in [129, 1000] {
            let mut ar = Arena::new();
            let (root, inputs, params) = build_wide(&mut ar);
            assert_eq!(params.len(), 1531);
            let tape = LaneTape::record(&mut ar, root, &inputs, &[root]).unwrap();
            assert!(tape.n_shared > REDUCE_BLOCK && !tape.n_shared.is_multiple_of(REDUCE_BLOCK));
            let x = data(rows);
            let results: Vec<_> = [1, 2, 3]
                .into_iter()
                .map(|threads| run_deep(&tape, &mut ar, &params, &x, threads))
                .collect();
            assert_eq!(results[0], results[1], "rows {rows}");
            assert_eq!(results[0], results[2], "rows {rows}");
            // Each parameter has one contribution site: the same bits as each
            // sample alone, reduced in the documented order.
            let (total, grads) = by_sample(&mut ar, root, &inputs, &params, &x, rows);
            assert_eq!(results[0].0, total.to_bits(), "rows {rows}");
            let want: Vec<u64> = grads.iter().map(|g| g.to_bits()).collect();
            assert_eq!(results[0].2, want, "rows {rows}");
            assert!(grads.iter().filter(|g| **g != 0.0).count() > 1500);
            tape.release(&mut ar);
        }
    }

    #[test]
    fn threads_give_the_same_bits() {
        let rows = 1000;
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let mut ar = Arena::new();
            let (root, inputs, params, out) = build(&mut ar);
            let tape = LaneTape::record(&mut ar, root, &inputs, &[out]).unwrap();
            let x = data(rows);
            let mut outs = vec![0.0; rows];
            // Force the threaded path whatever the work size.
            let total = tape
                .run_with(
                    &mut ar,
                    &x,
                    rows,
                    Some(0.5),
                    &mut outs,
                    threads,
                    &mut || false,
                    0,
                )
                .unwrap();
            let g: Vec<u64> = params
                .iter()
                .map(|&p| ar.grad[p as usize].to_bits())
                .collect();
            results.push((
                total.to_bits(),
                g,
                outs.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ));
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
    }

    #[test]
    fn an_interrupted_run_writes_nothing() {
        let mut ar = Arena::new();
        let (root, inputs, params, _) = build(&mut ar);
        let tape = LaneTape::record(&mut ar, root, &inputs, &[]).unwrap();
        for &p in &params {
            ar.grad[p as usize] = 0.25;
        }
        let x = data(300);
        let mut calls = 0;
        let r = tape.run(&mut ar, &x, 300, Some(1.0), &mut [], 1, &mut || {
            calls += 1;
            calls > 2
        });
        assert_eq!(r, Err(LaneError::Interrupted));
        assert!(params.iter().all(|&p| ar.grad[p as usize] == 0.25));
    }

    #[test]
    fn record_checks_its_inputs() {
        let mut ar = Arena::new();
        let (root, inputs, _, out) = build(&mut ar);
        assert_eq!(
            LaneTape::record(&mut ar, root, &[inputs[0], inputs[0]], &[]).err(),
            Some(RecordError::DuplicateInput(0, 1))
        );
        assert_eq!(
            LaneTape::record(&mut ar, root, &[out], &[]).err(),
            Some(RecordError::InputNotLeaf(0))
        );
        let stray = ar.leaf(1.0).unwrap();
        assert_eq!(
            LaneTape::record(&mut ar, root, &inputs, &[stray]).err(),
            Some(RecordError::OutputUnreachable(0))
        );
    }
}
