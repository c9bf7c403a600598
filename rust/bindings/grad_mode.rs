//! Grad mode: whether ops record the graph (`scalargrad.no_grad()` turns it off).
//!
//! Off, an op computes its value as usual and returns a new leaf holding it, with
//! no operands: nothing is recorded, so nothing can be differentiated through it,
//! and a model's intermediate nodes are freed as soon as the result is made. The
//! setting is per thread, as in PyTorch.

use crate::arena::{Arena, ArenaError, NodeId, Operand};
use crate::ops::Op;
use pyo3::prelude::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// Whether ops on this thread record the graph off (`no_grad()`).
    static OFF: Cell<bool> = const { Cell::new(false) };
}

/// How many threads are in `no_grad()`: while none is, the op entry points skip
/// the thread-local lookup (one load instead).
static OFF_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Whether ops on the calling thread record the graph.
#[inline(always)]
pub(super) fn enabled() -> bool {
    OFF_THREADS.load(Ordering::Relaxed) == 0 || !off_here()
}

/// Out of line, so the thread-local's address (a call in a shared library) is not
/// computed on the hot paths ahead of the check above.
#[cold]
#[inline(never)]
fn off_here() -> bool {
    OFF.with(Cell::get)
}

/// Turns recording on or off for the calling thread (`scalargrad.no_grad()` uses
/// this); returns the previous setting.
#[pyfunction]
pub(super) fn set_grad_enabled(on: bool) -> bool {
    let was_off = OFF.with(|o| o.replace(!on));
    match (was_off, on) {
        (false, false) => {
            OFF_THREADS.fetch_add(1, Ordering::Relaxed);
        }
        (true, true) => {
            OFF_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
    !was_off
}

/// `a op b` as `Arena::binary` builds it, or, with grad off, a leaf of its value.
#[inline(always)]
pub(super) fn binary(ar: &mut Arena, op: Op, a: Operand, b: Operand) -> Result<NodeId, ArenaError> {
    if enabled() {
        ar.binary(op, a, b)
    } else {
        leaf(ar, ar.peek_binary(op, a, b))
    }
}

/// `op(a)` as `Arena::unary` builds it, or, with grad off, a leaf of its value.
#[inline(always)]
pub(super) fn unary(ar: &mut Arena, op: Op, a: NodeId, c: [f64; 2]) -> Result<NodeId, ArenaError> {
    if enabled() {
        ar.unary(op, a, c)
    } else {
        leaf(ar, ar.peek_unary(op, a, c))
    }
}

/// An n-ary node as `build` makes it, or, with grad off, a leaf holding `out`
/// (the value `build` would give it).
#[inline(always)]
pub(super) fn nary(
    ar: &mut Arena,
    out: f64,
    build: impl FnOnce(&mut Arena) -> Result<NodeId, ArenaError>,
) -> Result<NodeId, ArenaError> {
    if enabled() {
        build(ar)
    } else {
        leaf(ar, out)
    }
}

/// With grad off, replaces each of `outs` (each holding one reference, as
/// `Arena::layer` returns them) by a leaf of its value, which then holds it: the
/// nodes built on the way are freed. With grad on, leaves `outs` as they are.
pub(super) fn detach_all(ar: &mut Arena, outs: &mut [NodeId]) -> Result<(), ArenaError> {
    if enabled() {
        return Ok(());
    }
    for k in 0..outs.len() {
        let id = match leaf(ar, ar.data[outs[k] as usize]) {
            Ok(id) => id,
            Err(e) => {
                // Nothing is handed out: each of `outs` (a leaf made so far or a
                // built output) holds one reference, given back here.
                for &o in outs.iter() {
                    ar.decref(o);
                }
                return Err(e);
            }
        };
        ar.incref(id);
        ar.decref(outs[k]);
        outs[k] = id;
    }
    Ok(())
}

/// A new leaf holding `x`, outside the graph (reference count 0, as `Arena::leaf`).
#[cold]
fn leaf(ar: &mut Arena, x: f64) -> Result<NodeId, ArenaError> {
    ar.leaf(x)
}
