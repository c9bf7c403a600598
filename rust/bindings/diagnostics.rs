//! What the engine reports about itself: `detect_anomaly` (the switch and the
//! messages of the errors it raises) and the arena's statistics.

use super::gil::ARENA;
use crate::arena::{Arena, NodeId, Operand, BYTES_PER_NODE};
use crate::backward;
use pyo3::exceptions::PyFloatingPointError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// Whether ops and sweeps on this thread check for non-finite results
    /// (`detect_anomaly()` is per thread).
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// How many threads have checking on: while none has, the hot paths skip the
/// thread-local lookup (one load instead).
static ANOMALY_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Whether the calling thread checks for non-finite results.
#[inline(always)]
pub(super) fn anomaly_on() -> bool {
    ANOMALY_THREADS.load(Ordering::Relaxed) != 0 && anomaly_on_this_thread()
}

/// Out of line, so the thread-local's address (a call in a shared library) is not
/// computed on the hot paths ahead of the check above.
#[cold]
#[inline(never)]
fn anomaly_on_this_thread() -> bool {
    ANOMALY.with(Cell::get)
}

/// Turns anomaly checking on or off for the calling thread
/// (`scalargrad.detect_anomaly()` uses this); returns the previous setting.
#[pyfunction]
pub(super) fn set_anomaly(on: bool) -> bool {
    let was = ANOMALY.with(|a| a.replace(on));
    match (was, on) {
        (false, true) => {
            ANOMALY_THREADS.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            ANOMALY_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
    was
}

/// Arena statistics: live nodes, slots, reserved bytes and bytes per node.
#[pyfunction]
pub(super) fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let (live, slots, reserved) = {
        let ar = ARENA.lock(py);
        (ar.live(), ar.slots(), ar.reserved_bytes())
    };
    let d = PyDict::new(py);
    d.set_item("live_nodes", live)?;
    d.set_item("slots", slots)?;
    d.set_item("reserved_bytes", reserved)?;
    d.set_item("bytes_per_node", BYTES_PER_NODE)?;
    Ok(d)
}

/// A float as Python prints it in messages (`nan`, `inf`, `-inf`, `1.0`).
pub(super) fn fmt_f64(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// A node as messages show it: `label=value`, or the value.
pub(super) fn describe(ar: &Arena, id: NodeId) -> String {
    let label = ar.label(id);
    let data = fmt_f64(ar.data[id as usize]);
    if label.is_empty() {
        data
    } else {
        format!("{label}={data}")
    }
}

/// The error for an op `name` whose forward gave the non-finite `out`.
pub(super) fn forward_anomaly(ar: &Arena, name: &str, operands: &[Operand], out: f64) -> PyErr {
    let args: Vec<String> = operands
        .iter()
        .map(|x| match *x {
            Operand::Node(id) => describe(ar, id),
            Operand::Const(c) => fmt_f64(c),
        })
        .collect();
    PyFloatingPointError::new_err(format!(
        "detect_anomaly: {name} produced {} from operands ({})",
        fmt_f64(out),
        args.join(", ")
    ))
}

/// `forward_anomaly` for a node already built (or recomputed) as `id`.
pub(super) fn node_anomaly(ar: &Arena, id: NodeId) -> PyErr {
    let operands: Vec<Operand> = ar.operands(id).into_iter().map(Operand::Node).collect();
    forward_anomaly(ar, ar.op(id).kind(), &operands, ar.data[id as usize])
}

/// The error for the first non-finite gradient a sweep produced.
pub(super) fn backward_anomaly(ar: &Arena, a: &backward::Anomaly) -> PyErr {
    let op = ar.op(a.node);
    let operands: Vec<String> = ar
        .operands(a.node)
        .iter()
        .map(|&x| describe(ar, x))
        .collect();
    PyFloatingPointError::new_err(format!(
        "detect_anomaly: backward of {} gave gradient {} to operand {} (operands: {})",
        op.kind(),
        fmt_f64(a.grad),
        describe(ar, a.operand),
        operands.join(", ")
    ))
}
