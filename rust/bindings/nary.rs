//! The builders that make many nodes' worth of work one call: `sum`, `dot` and
//! `layer`.

use super::convert::{self, Arg};
use super::diagnostics::{anomaly_on, forward_anomaly, node_anomaly};
use super::gil::ARENA;
use super::handles::{register, wrap};
use super::value::{arena_error, Value};
use crate::arena::{reserve, Arena, ArenaError, NodeId, Operand};
use crate::ops::Op;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// The length of a list or tuple (0 for other iterables, whose length may be
/// unknown or costly to ask).
fn size_hint(items: &Bound<'_, PyAny>) -> usize {
    if let Ok(l) = items.cast::<PyList>() {
        l.len()
    } else if let Ok(t) = items.cast::<PyTuple>() {
        t.len()
    } else {
        0
    }
}

/// Collects the operands of an n-ary op from a Python iterable.
fn collect_args<'py>(
    op: &str,
    items: &Bound<'py, PyAny>,
) -> PyResult<(Vec<Operand>, Vec<Bound<'py, Value>>)> {
    let hint = size_hint(items);
    let (mut ops_, mut nodes) = (Vec::new(), Vec::new());
    grow(&mut ops_, hint)?;
    grow(&mut nodes, hint)?;
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        let arg = convert::element_arg(op, i, &item)?;
        grow(&mut ops_, 1)?;
        ops_.push(arg.operand());
        if let Arg::Node(v) = arg {
            grow(&mut nodes, 1)?;
            nodes.push(v.clone());
        }
    }
    Ok((ops_, nodes))
}

/// Room for `extra` more items in `v`, or a MemoryError.
fn grow<T>(v: &mut Vec<T>, extra: usize) -> PyResult<()> {
    reserve(v, extra).map_err(arena_error)
}

fn nary(
    py: Python<'_>,
    name: &str,
    nodes: &[Bound<'_, Value>],
    operands: &[Operand],
    build: impl FnOnce(&mut Arena) -> (f64, Result<NodeId, ArenaError>),
) -> PyResult<Py<Value>> {
    let id = {
        let mut ar = ARENA.lock(py);
        for v in nodes {
            register(&mut ar, v);
        }
        let (out, id) = build(&mut ar);
        if anomaly_on() && !out.is_finite() {
            let err = forward_anomaly(&ar, name, operands, out);
            if let Ok(id) = id {
                ar.incref(id);
                ar.decref(id);
            }
            return Err(err);
        }
        let id = id.map_err(arena_error)?;
        ar.incref(id);
        id
    };
    wrap(py, id)
}

/// `sum(values, start=None)`: one n-ary node `((x1 + x2) + x3) + ...`. With `start`,
/// it is the first operand (as in Python's `sum(values, start)`). Empty: 0.0.
#[pyfunction]
#[pyo3(signature = (values, start = None))]
pub(super) fn sum(
    py: Python<'_>,
    values: &Bound<'_, PyAny>,
    start: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<Value>> {
    let (mut operands, mut nodes) = match start {
        Some(s) => collect_args("sum", PyTuple::new(py, [s])?.as_any())?,
        None => (Vec::new(), Vec::new()),
    };
    let (more, more_nodes) = collect_args("sum", values)?;
    grow(&mut operands, more.len())?;
    grow(&mut nodes, more_nodes.len())?;
    operands.extend(more);
    nodes.extend(more_nodes);
    nary(py, "sum", &nodes, &operands, |ar| {
        let out = ar.peek_sum(&operands);
        (out, super::grad_mode::nary(ar, out, |ar| ar.sum(&operands)))
    })
}

/// `logsumexp(values)`: one n-ary node `m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))`,
/// `m` the largest value: `log(sum(exp(x)))` without overflow (softmax's normaliser).
#[pyfunction]
pub(super) fn logsumexp(py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<Py<Value>> {
    let (operands, nodes) = collect_args("logsumexp", values)?;
    nary(py, "logsumexp", &nodes, &operands, |ar| {
        let out = ar.peek_logsumexp(&operands);
        (
            out,
            super::grad_mode::nary(ar, out, |ar| ar.logsumexp(&operands)),
        )
    })
}

/// `dot(ws, xs)`: one n-ary node `((w1*x1 + w2*x2) + w3*x3) + ...`.
#[pyfunction]
pub(super) fn dot(
    py: Python<'_>,
    ws: &Bound<'_, PyAny>,
    xs: &Bound<'_, PyAny>,
) -> PyResult<Py<Value>> {
    let (w, mut nodes) = collect_args("dot", ws)?;
    let (x, xn) = collect_args("dot", xs)?;
    if w.len() != x.len() {
        return Err(PyValueError::new_err(format!(
            "dot: ws and xs differ in length ({} and {})",
            w.len(),
            x.len()
        )));
    }
    grow(&mut nodes, xn.len())?;
    nodes.extend(xn);
    let mut all: Vec<Operand> = Vec::new();
    grow(&mut all, w.len() + x.len())?;
    all.extend(w.iter().chain(&x));
    nary(py, "dot", &nodes, &all, |ar| {
        let out = ar.peek_dot(&w, &x);
        (out, super::grad_mode::nary(ar, out, |ar| ar.dot(&w, &x)))
    })
}

/// A dense layer in one call: `[act(dot(w, x) + b) for w, b in zip(ws, bs)]`, the
/// same nodes `Neuron` builds one by one (`activation`: "relu", "tanh", "sigmoid"
/// or "linear"). Numbers in `x` become leaves once, shared by all neurons.
#[pyfunction]
pub(super) fn layer<'py>(
    py: Python<'py>,
    ws: &Bound<'py, PyAny>,
    bs: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<Vec<Py<Value>>> {
    let act = match activation {
        "relu" => Op::Relu,
        "tanh" => Op::Tanh,
        "sigmoid" => Op::Sigmoid,
        "linear" => Op::Leaf,
        _ => {
            return Err(PyValueError::new_err(format!(
                "layer: unknown activation {activation:?}; expected relu, tanh, sigmoid or linear"
            )))
        }
    };
    let (xs, mut nodes) = collect_args("layer", x)?;
    let nin = xs.len();
    let nout = size_hint(ws);
    grow(&mut nodes, nout.saturating_mul(nin + 1))?;
    // All weights in one flat buffer, a row per neuron.
    let mut w_ids = Vec::new();
    grow(&mut w_ids, nout.saturating_mul(nin))?;
    let mut rows = 0;
    for row in ws.try_iter()? {
        let (got, all_values) = value_ids(&row?, &mut w_ids, &mut nodes)?;
        if got != nin || !all_values {
            return Err(PyValueError::new_err(format!(
                "layer: each weight row must hold {nin} Values (one per input), got {got}"
            )));
        }
        rows += 1;
    }
    let mut b_ids = Vec::new();
    grow(&mut b_ids, rows)?;
    let (got, all_values) = value_ids(bs, &mut b_ids, &mut nodes)?;
    if got != rows || !all_values {
        return Err(PyValueError::new_err(format!(
            "layer: need one bias Value per neuron ({rows}), got {got}"
        )));
    }
    let w_rows: Vec<&[NodeId]> = (0..rows).map(|k| &w_ids[k * nin..][..nin]).collect();
    let outs = {
        let mut ar = ARENA.lock(py);
        for v in &nodes {
            register(&mut ar, v);
        }
        let outs = ar.layer(&w_rows, &b_ids, &xs, act).map_err(arena_error)?;
        if anomaly_on() {
            if let Some(err) = layer_anomaly(&ar, &outs) {
                for &o in &outs {
                    ar.decref(o);
                }
                return Err(err);
            }
        }
        let mut outs = outs;
        super::grad_mode::detach_all(&mut ar, &mut outs).map_err(arena_error)?;
        outs
    };
    drop(nodes);
    outs.into_iter().map(|id| wrap(py, id)).collect()
}

/// Appends the ids of the rust Values in an iterable to `ids` (keeping the Values
/// in `held`); returns how many items there were and whether all were such Values.
fn value_ids<'py>(
    items: &Bound<'py, PyAny>,
    ids: &mut Vec<NodeId>,
    held: &mut Vec<Bound<'py, Value>>,
) -> PyResult<(usize, bool)> {
    let (mut n, mut all_values) = (0, true);
    for item in items.try_iter()? {
        n += 1;
        match item?.cast_into_exact::<Value>() {
            Ok(v) => {
                grow(ids, 1)?;
                grow(held, 1)?;
                ids.push(v.get().id);
                held.push(v);
            }
            Err(_) => all_values = false,
        }
    }
    Ok((n, all_values))
}

/// The first non-finite node a layer built, as `detect_anomaly` reports it.
fn layer_anomaly(ar: &Arena, outs: &[NodeId]) -> Option<PyErr> {
    for &out in outs {
        // the chain out <- add <- dot, innermost first
        let mut chain = vec![out];
        while let Some(&top) = chain.last() {
            match ar.op(top) {
                Op::Relu | Op::Tanh | Op::Sigmoid | Op::Add => chain.push(ar.operand(top, 0)),
                _ => break,
            }
        }
        for &id in chain.iter().rev() {
            if !ar.data[id as usize].is_finite() {
                return Some(node_anomaly(ar, id));
            }
        }
    }
    None
}
