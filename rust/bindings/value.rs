//! The `Value` class: a small handle to a node in the arena, with micrograd's
//! operators, ops and attributes.

use super::convert::{self, Arg, Label};
use super::diagnostics::{anomaly_on, fmt_f64, forward_anomaly};
use super::gil::{gil_held, ARENA};
use super::habits;
use super::handles::{operand_handles, register, wrap};
use super::sweep;
use crate::arena::{ArenaError, NodeId, Operand};
use crate::ops::{canon, Op};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyFloat, PyInt, PyString, PyTuple};
use std::sync::atomic::AtomicBool;

/// A scalar node of the graph. A small handle to a node in the Rust arena.
///
/// >>> a = Value(2.0, label="a")
/// >>> b = a * a + 1.0
/// >>> b.backward()
/// >>> a.grad
/// 4.0
#[pyclass(frozen, name = "Value", module = "scalargrad._core")]
pub struct Value {
    pub(super) id: NodeId,
    /// Whether this object is the node's canonical handle, the one `_prev` hands
    /// out, so that the same node always comes back as the same Python object.
    pub(super) registered: AtomicBool,
}

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: a Value is dropped by its handle's deallocator, or by PyO3 when a
        // constructor fails: CPython holds the GIL for both.
        let py = unsafe { gil_held() };
        let mut ar = ARENA.lock(py);
        if *self.registered.get_mut() {
            ar.set_handle(self.id, 0);
        }
        ar.release(self.id);
    }
}

impl Value {
    /// A Value struct for node `id`, which holds one reference for it.
    pub(super) fn of(id: NodeId) -> Self {
        Value {
            id,
            registered: AtomicBool::new(false),
        }
    }

    fn parts(&self, py: Python<'_>) -> (f64, f64, String) {
        let ar = ARENA.lock(py);
        let i = self.id as usize;
        (
            canon(ar.data[i]),
            canon(ar.grad[i]),
            ar.label(self.id).to_string(),
        )
    }
}

/// A new leaf with the given data, grad and label (what copies and unpickling make).
#[pyfunction]
#[pyo3(name = "_leaf")]
pub(super) fn leaf_copy(py: Python<'_>, data: f64, grad: f64, label: &str) -> PyResult<Py<Value>> {
    let id = {
        let mut ar = ARENA.lock(py);
        let id = ar.leaf(data).map_err(arena_error)?;
        ar.incref(id);
        ar.grad[id as usize] = grad;
        if let Err(e) = ar.set_label(id, label) {
            ar.release(id);
            return Err(arena_error(e));
        }
        id
    };
    wrap(py, id)
}

pub(super) fn arena_error(e: ArenaError) -> PyErr {
    match e {
        ArenaError::Full => PyMemoryError::new_err("scalargrad: the arena is full (2**32 nodes)"),
        ArenaError::Memory => PyMemoryError::new_err(
            "scalargrad: out of memory (the graph is as it was before this call)",
        ),
        ArenaError::Stale(id) => {
            PyRuntimeError::new_err(format!("scalargrad: node {id} is not live"))
        }
    }
}

fn py_repr(py: Python<'_>, x: f64) -> String {
    PyFloat::new(py, x)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| x.to_string())
}

/// How `_op` shows a constant: integral values as integers (`**2`), as micrograd does.
fn fmt_const(py: Python<'_>, c: f64) -> String {
    if c.fract() == 0.0 && c.abs() < 1e15 {
        format!("{}", c as i64)
    } else {
        py_repr(py, c)
    }
}

fn not_implemented(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.NotImplemented())
}

/// Builds `x op y` for two operands that are Values or numbers (at least one a Value).
fn binary(py: Python<'_>, op: Op, x: &Arg<'_, '_>, y: &Arg<'_, '_>) -> PyResult<Py<PyAny>> {
    let (ox, oy) = (x.operand(), y.operand());
    let id = {
        let mut ar = ARENA.lock(py);
        for a in [x, y] {
            if let Arg::Node(v) = a {
                register(&mut ar, v);
            }
        }
        if anomaly_on() {
            let out = ar.peek_binary(op, ox, oy);
            if !out.is_finite() {
                return Err(forward_anomaly(&ar, op.symbol(), &[ox, oy], out));
            }
        }
        let id = super::grad_mode::binary(&mut ar, op, ox, oy).map_err(arena_error)?;
        ar.incref(id);
        id
    };
    Ok(wrap(py, id)?.into_any())
}

fn unary(slf: &Bound<'_, Value>, op: Op, c: [f64; 2]) -> PyResult<Py<Value>> {
    let a = slf.get().id;
    let id = {
        let mut ar = ARENA.lock(slf.py());
        register(&mut ar, slf);
        if anomaly_on() {
            let out = ar.peek_unary(op, a, c);
            if !out.is_finite() {
                return Err(forward_anomaly(&ar, op.kind(), &[Operand::Node(a)], out));
            }
        }
        let id = super::grad_mode::unary(&mut ar, op, a, c).map_err(arena_error)?;
        ar.incref(id);
        id
    };
    wrap(slf.py(), id)
}

/// `#[pymethods] impl Value`, with the eight binary operators (`x op y` and the
/// reflected `y op x` for `+ - * /`) made from one pattern. PyO3 reads only the
/// items written out in the block, so the macro wraps the whole block.
macro_rules! value_methods {
    (
        operators: [$($op:ident $sym:literal $name:ident $rname:ident),* $(,)?],
        $($methods:tt)*
    ) => {
        #[pymethods]
        impl Value {
            $(
                fn $name(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                    match convert::operator_arg($sym, other)? {
                        Arg::Other => not_implemented(slf.py()),
                        y => binary(slf.py(), Op::$op, &Arg::Node(slf), &y),
                    }
                }

                fn $rname(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                    match convert::operator_arg($sym, other)? {
                        Arg::Other => not_implemented(slf.py()),
                        x => binary(slf.py(), Op::$op, &x, &Arg::Node(slf)),
                    }
                }
            )*

            $($methods)*
        }
    };
}

value_methods! {
    operators: [
        Add "+" __add__ __radd__,
        Sub "-" __sub__ __rsub__,
        Mul "*" __mul__ __rmul__,
        Div "/" __truediv__ __rtruediv__,
    ],

    #[new]
    #[pyo3(signature = (data, label = Label::default()), text_signature = "(data, label='')")]
    fn new(py: Python<'_>, data: &Bound<'_, PyAny>, label: Label) -> PyResult<Self> {
        let x = convert::number_arg("Value()", "data", data)?;
        let mut ar = ARENA.lock(py);
        let id = ar.leaf(x).map_err(arena_error)?;
        ar.incref(id);
        if let Err(e) = ar.set_label(id, &label.0) {
            ar.release(id);
            return Err(arena_error(e));
        }
        Ok(Value::of(id))
    }

    #[classattr]
    fn _backend() -> &'static str {
        "rust"
    }

    /// The node's value.
    #[getter]
    pub(super) fn data(&self, py: Python<'_>) -> f64 {
        // Numbers leave the engine with one NaN (see `ops::canon`).
        canon(ARENA.lock(py).data[self.id as usize])
    }

    #[setter]
    fn set_data(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = convert::number_arg("data", "data", x)?;
        ARENA.lock(x.py()).data[self.id as usize] = v;
        Ok(())
    }

    /// d(root)/d(this node), accumulated by `backward()`.
    #[getter]
    fn grad(&self, py: Python<'_>) -> f64 {
        canon(ARENA.lock(py).grad[self.id as usize])
    }

    #[setter]
    fn set_grad(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = convert::number_arg("grad", "grad", x)?;
        ARENA.lock(x.py()).grad[self.id as usize] = v;
        Ok(())
    }

    #[getter]
    fn label(&self, py: Python<'_>) -> String {
        ARENA.lock(py).label(self.id).to_string()
    }

    #[setter]
    fn set_label(&self, py: Python<'_>, label: Label) -> PyResult<()> {
        ARENA
            .lock(py)
            .set_label(self.id, &label.0)
            .map_err(arena_error)
    }

    /// The op that made this node, as micrograd names it (`"+"`, `"*"`, `"**2"`, `"ReLU"`; `""` for leaves).
    #[getter]
    fn _op(&self, py: Python<'_>) -> String {
        let (op, c) = {
            let ar = ARENA.lock(py);
            (ar.op(self.id), ar.consts(self.id))
        };
        match op {
            Op::PowConst => format!("**{}", fmt_const(py, c[0])),
            Op::RPowConst => format!("{}**", fmt_const(py, c[0])),
            _ => op.symbol().to_string(),
        }
    }

    /// The op's kind name (`"add"`, `"pow_const"`, ...), as in `scalargrad.OPS`.
    #[getter]
    fn _kind(&self, py: Python<'_>) -> &'static str {
        ARENA.lock(py).op(self.id).kind()
    }

    /// The constants of `**c`, `c**` and `clamp` nodes; `()` for other ops.
    #[getter]
    fn _consts(&self, py: Python<'_>) -> Vec<f64> {
        let ar = ARENA.lock(py);
        match ar.op(self.id) {
            Op::PowConst | Op::RPowConst => vec![ar.consts(self.id)[0]],
            Op::Clamp => ar.consts(self.id).to_vec(),
            _ => Vec::new(),
        }
    }

    /// The operands, in order; the same node always comes back as the same object.
    #[getter]
    fn _prev<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, operand_handles(py, self.id)?)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (d, g, label) = self.parts(py);
        let (d, g) = (py_repr(py, d), py_repr(py, g));
        if label.is_empty() {
            format!("Value(data={d}, grad={g})")
        } else {
            let l = PyString::new(py, &label)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or(label);
            format!("Value(data={d}, grad={g}, label={l})")
        }
    }

    /// A copy is a new leaf with this node's data, grad and label, detached from
    /// the graph (the same for `copy.copy`, `copy.deepcopy` and pickling).
    fn __copy__(&self, py: Python<'_>) -> PyResult<Py<Value>> {
        let (data, grad, label) = self.parts(py);
        leaf_copy(py, data, grad, &label)
    }

    fn __deepcopy__(&self, py: Python<'_>, _memo: &Bound<'_, PyAny>) -> PyResult<Py<Value>> {
        self.__copy__(py)
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (f64, f64, String))> {
        let f = py.import("scalargrad._core")?.getattr("_leaf")?;
        Ok((f, self.parts(py)))
    }

    fn __float__(&self, py: Python<'_>) -> f64 {
        self.data(py)
    }

    /// `data` as a float, as PyTorch's `Tensor.item()`. A Value also formats,
    /// converts and tests as its float does (`bool` as a 0-d tensor: non-zero is true):
    ///
    /// >>> v = Value(2.71828)
    /// >>> v.item(), f"{v:.2f}", int(v), round(v), round(v, 1), bool(v), bool(Value(0.0))
    /// (2.71828, '2.72', 2, 3, 2.7, True, False)
    fn item(&self, py: Python<'_>) -> f64 {
        self.data(py)
    }

    /// `int(v)`: `int(v.data)` (NaN and infinities raise, as for a float).
    fn __int__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        habits::int(py, self.data(py))
    }

    /// `round(v)` is an int and `round(v, n)` a float, as for `v.data`.
    #[pyo3(signature = (ndigits = None))]
    fn __round__<'py>(
        &self,
        py: Python<'py>,
        ndigits: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        habits::round(py, self.data(py), ndigits)
    }

    /// `bool(v)`: `v.data != 0`, as for a float or a 0-d tensor (NaN is true).
    fn __bool__(&self, py: Python<'_>) -> bool {
        habits::truth(self.data(py))
    }

    /// `f"{v:.3f}"` formats `v.data`; an empty spec (`f"{v}"`) gives `str(v)`.
    fn __format__(slf: &Bound<'_, Self>, spec: &str) -> PyResult<String> {
        habits::format(slf.as_any(), slf.get().data(slf.py()), spec)
    }

    fn __hash__(&self) -> u64 {
        // By node, but scrambled: a raw slot number would equal small ints, and as
        // Values compare by data, `V(0.0)` and `0` would then be the same dict key.
        ((self.id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 2
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        if other.is_instance_of::<PyInt>() {
            // Exactly, as Python compares a float with an int (even one past 2**53 or
            // too large for a float).
            return Ok(PyFloat::new(py, self.data(py))
                .rich_compare(other, op)?
                .unbind());
        }
        let Some(y) = convert::compared(py, other)? else {
            return not_implemented(py);
        };
        let x = self.data(py);
        let r = match op {
            CompareOp::Lt => x < y,
            CompareOp::Le => x <= y,
            CompareOp::Gt => x > y,
            CompareOp::Ge => x >= y,
            CompareOp::Eq => x == y,
            CompareOp::Ne => x != y,
        };
        Ok(pyo3::types::PyBool::new(py, r)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __pow__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if modulo.is_some_and(|m| !m.is_none()) {
            return not_implemented(slf.py());
        }
        match convert::operator_arg("**", other)? {
            Arg::Other => not_implemented(slf.py()),
            Arg::Num(c) => Ok(unary(slf, Op::PowConst, [c, 0.0])?.into_any()),
            y => binary(slf.py(), Op::Pow, &Arg::Node(slf), &y),
        }
    }

    fn __rpow__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if modulo.is_some_and(|m| !m.is_none()) {
            return not_implemented(slf.py());
        }
        match convert::operator_arg("**", other)? {
            Arg::Num(c) => Ok(unary(slf, Op::RPowConst, [c, 0.0])?.into_any()),
            Arg::Node(x) => binary(slf.py(), Op::Pow, &Arg::Node(x), &Arg::Node(slf)),
            Arg::Other => not_implemented(slf.py()),
        }
    }

    fn __neg__(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Neg, [0.0; 2])
    }

    fn __pos__(slf: &Bound<'_, Self>) -> Py<Value> {
        slf.clone().unbind()
    }

    fn __abs__(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Abs, [0.0; 2])
    }

    /// `exp(x)`.
    fn exp(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Exp, [0.0; 2])
    }

    /// Natural logarithm; `log(0) = -inf`, `log(-1) = nan`.
    fn log(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Log, [0.0; 2])
    }

    /// Hyperbolic tangent.
    fn tanh(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Tanh, [0.0; 2])
    }

    /// `1 / (1 + exp(-x))`.
    fn sigmoid(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Sigmoid, [0.0; 2])
    }

    /// `max(x, 0)`; NaN stays NaN.
    fn relu(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Relu, [0.0; 2])
    }

    /// `|x|`, with gradient `sign(x)` (0 at 0).
    fn abs(slf: &Bound<'_, Self>) -> PyResult<Py<Value>> {
        unary(slf, Op::Abs, [0.0; 2])
    }

    /// `min(max(x, lo), hi)`; the gradient passes where `lo <= x <= hi`.
    fn clamp(
        slf: &Bound<'_, Self>,
        lo: &Bound<'_, PyAny>,
        hi: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Value>> {
        let lo = convert::number_arg("clamp", "lo", lo)?;
        let hi = convert::number_arg("clamp", "hi", hi)?;
        // Rejects NaN bounds as well as lo > hi.
        if lo.partial_cmp(&hi).is_none_or(|o| o.is_gt()) {
            return Err(PyValueError::new_err(format!(
                "clamp: need lo <= hi, got lo={} and hi={}",
                fmt_f64(lo),
                fmt_f64(hi)
            )));
        }
        unary(slf, Op::Clamp, [lo, hi])
    }

    /// Adds d(self)/d(node) into the `grad` of every node this one depends on,
    /// seeding `self.grad` with 1.0. Iterative: any depth works. Ctrl-C interrupts it.
    fn backward(slf: &Bound<'_, Self>) -> PyResult<()> {
        sweep::backward(slf.py(), slf.get().id)
    }
}
