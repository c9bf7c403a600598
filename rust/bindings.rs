//! The Python extension module `scalargrad._core`: the `Value` handle, argument
//! conversion and the mapping of engine errors to Python exceptions. The only file
//! that knows about Python.
//!
//! Locking discipline: all nodes live in one arena behind `ARENA`. Dropping a
//! `Value` takes the lock, and dropping or creating any Python object can run
//! arbitrary code (the collector, finalizers), so no Python object is created or
//! dropped while the lock is held. Every function below takes the lock in a
//! block that only touches Rust data.

use crate::arena::{Arena, ArenaError, NodeId, Operand, BYTES_PER_NODE};
use crate::backward;
use crate::ops::{self, Op};
use crate::optim;
use crate::replay;
use parking_lot::Mutex;
use pyo3::exceptions::{
    PyFloatingPointError, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

#[path = "slots.rs"]
mod slots;

mod lanes;

static ARENA: GilCell<Arena> = GilCell::new(Arena::new());

/// The arena's lock. Every access happens with the GIL held (all entry points are
/// Python calls or deallocations, and none releases the GIL), so the GIL already
/// serialises them and a mutex would only add two atomic read-modify-writes per
/// op. The `busy` flag turns the one remaining hazard, re-entry from code run
/// while the arena is borrowed, into a panic (a Python exception) instead of
/// aliased `&mut`. The module declares that it needs the GIL (`gil_used`), and
/// does not build for free-threaded Python at all.
struct GilCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: see above: only used with the GIL held, and `busy` forbids aliasing.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    const fn new(value: T) -> Self {
        GilCell {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    fn lock(&self) -> GilGuard<'_, T> {
        self.try_lock()
            .expect("scalargrad: the arena was re-entered while in use")
    }

    /// The guard, or `None` if the cell is in use (for paths that have a fallback).
    #[inline]
    fn try_lock(&self) -> Option<GilGuard<'_, T>> {
        // Plain load and store, not a read-modify-write: the GIL orders them.
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        self.busy.store(true, Ordering::Relaxed);
        Some(GilGuard { cell: self })
    }
}

struct GilGuard<'a, T> {
    cell: &'a GilCell<T>,
}

impl<T> Drop for GilGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.cell.busy.store(false, Ordering::Relaxed);
    }
}

impl<T> std::ops::Deref for GilGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `busy` makes this the only live guard.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> std::ops::DerefMut for GilGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: `busy` makes this the only live guard.
        unsafe { &mut *self.cell.value.get() }
    }
}
static ANOMALY: AtomicBool = AtomicBool::new(false);

/// The buffer of the last `backward()`'s order, reused by the next one.
struct SpareOrder(Vec<NodeId>);
static SPARE_ORDER: GilCell<SpareOrder> = GilCell::new(SpareOrder(Vec::new()));

/// Nodes processed between looks at the clock during a long sweep (see `Pacer`).
const SIGNAL_CHUNK: usize = 1 << 16;

/// Sweeps over fewer nodes than this never pause.
const PAUSE_MIN_NODES: usize = 1 << 20;

/// A scalar node of the graph. A small handle to a node in the Rust arena.
///
/// >>> a = Value(2.0, label="a")
/// >>> b = a * a + 1.0
/// >>> b.backward()
/// >>> a.grad
/// 4.0
#[pyclass(frozen, name = "Value", module = "scalargrad._core")]
pub struct Value {
    id: NodeId,
    /// Whether this object is the node's canonical handle, the one `_prev` hands
    /// out, so that the same node always comes back as the same Python object.
    registered: AtomicBool,
}

impl Drop for Value {
    fn drop(&mut self) {
        let mut ar = ARENA.lock();
        if *self.registered.get_mut() {
            ar.set_handle(self.id, 0);
        }
        ar.release(self.id);
    }
}

impl Value {
    fn parts(&self) -> (f64, f64, String) {
        let ar = ARENA.lock();
        let i = self.id as usize;
        (ar.data[i], ar.grad[i], ar.label(self.id).to_string())
    }
}

/// A new leaf with the given data, grad and label (what copies and unpickling make).
#[pyfunction]
#[pyo3(name = "_leaf")]
fn leaf_copy(py: Python<'_>, data: f64, grad: f64, label: &str) -> PyResult<Py<Value>> {
    let id = {
        let mut ar = ARENA.lock();
        let id = ar.leaf(data).map_err(arena_error)?;
        ar.incref(id);
        ar.grad[id as usize] = grad;
        ar.set_label(id, label);
        id
    };
    wrap(py, id)
}

/// Wraps a node that already holds one reference for its new handle.
fn wrap(py: Python<'_>, id: NodeId) -> PyResult<Py<Value>> {
    if slots::installed() {
        return slots::wrap_raw(py, id);
    }
    let v = Bound::new(
        py,
        Value {
            id,
            registered: AtomicBool::new(false),
        },
    )?;
    Ok(v.unbind())
}

/// Makes `v` its node's canonical handle if the node has none yet.
#[inline]
fn register(ar: &mut Arena, v: &Bound<'_, Value>) {
    let me = v.get();
    if !me.registered.load(Ordering::Relaxed) && ar.handle(me.id) == 0 {
        ar.set_handle(me.id, v.as_ptr() as usize);
        me.registered.store(true, Ordering::Relaxed);
    }
}

fn arena_error(e: ArenaError) -> PyErr {
    match e {
        ArenaError::Full => PyMemoryError::new_err("scalargrad: the arena is full (2**32 nodes)"),
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

fn fmt_f64(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// How `_op` shows a constant: integral values as integers (`**2`), as micrograd does.
fn fmt_const(py: Python<'_>, c: f64) -> String {
    if c.fract() == 0.0 && c.abs() < 1e15 {
        format!("{}", c as i64)
    } else {
        py_repr(py, c)
    }
}

fn describe(ar: &Arena, id: NodeId) -> String {
    let label = ar.label(id);
    let data = fmt_f64(ar.data[id as usize]);
    if label.is_empty() {
        data
    } else {
        format!("{label}={data}")
    }
}

fn forward_anomaly(ar: &Arena, name: &str, operands: &[Operand], out: f64) -> PyErr {
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

fn backward_anomaly(ar: &Arena, a: &backward::Anomaly) -> PyErr {
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

/// What a Python object means as an operand.
enum Arg<'a, 'py> {
    Node(&'a Bound<'py, Value>),
    Num(f64),
    /// Not something this op handles: return NotImplemented.
    Other,
}

/// A Value of the reference backend (any class with a `_backend` attribute).
fn other_backend(x: &Bound<'_, PyAny>) -> bool {
    // Numbers first: a failed `hasattr` costs an AttributeError.
    if x.is_instance_of::<PyFloat>() || x.is_instance_of::<PyInt>() {
        return false;
    }
    x.get_type().hasattr("_backend").unwrap_or(false)
}

fn mixed_backends(op: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{op}: cannot combine a rust Value with a reference Value; build both operands on one backend"
    ))
}

/// Reads a Python number: float, int, or anything with `__float__` (NumPy scalars,
/// 0-d arrays). Strings, sequences and Values of another backend are not numbers;
/// an int too large for a float is a ValueError naming `op`, as `float(10**400)` is.
fn number(op: &str, x: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    if let Ok(f) = x.cast_exact::<PyFloat>() {
        return Ok(Some(f.value()));
    }
    if x.is_instance_of::<PyInt>() {
        return int_number(op, x).map(Some);
    }
    if x.is_instance_of::<PyString>() || other_backend(x) {
        return Ok(None);
    }
    Ok(x.extract::<f64>().ok())
}

fn int_number(op: &str, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    x.extract::<f64>().map_err(|_| {
        PyValueError::new_err(format!(
            "{op}: integer {x} is too large to convert to float"
        ))
    })
}

fn arg<'a, 'py>(op: &str, x: &'a Bound<'py, PyAny>) -> PyResult<Arg<'a, 'py>> {
    if let Ok(v) = x.cast_exact::<Value>() {
        return Ok(Arg::Node(v));
    }
    if let Ok(f) = x.cast_exact::<PyFloat>() {
        return Ok(Arg::Num(f.value()));
    }
    if x.is_instance_of::<PyInt>() {
        return int_number(op, x).map(Arg::Num);
    }
    if other_backend(x) {
        return Err(mixed_backends(op));
    }
    if let Some(c) = number(op, x)? {
        return Ok(Arg::Num(c));
    }
    // Builtin containers would otherwise meet Python's sequence-repeat fallback
    // ("can't multiply sequence by non-int"), which hides the op; say it plainly.
    // Other types get NotImplemented, so NumPy arrays and friends can take over.
    if x.is_none()
        || x.is_instance_of::<PyString>()
        || x.is_instance_of::<PyBytes>()
        || x.is_instance_of::<PyList>()
        || x.is_instance_of::<PyTuple>()
        || x.is_instance_of::<PyDict>()
        || x.is_instance_of::<PySet>()
    {
        return Err(PyTypeError::new_err(format!(
            "unsupported operand type(s) for {op}: 'Value' and '{}'",
            type_name(x)
        )));
    }
    Ok(Arg::Other)
}

fn operand(a: &Arg<'_, '_>) -> Operand {
    match a {
        Arg::Node(v) => Operand::Node(v.get().id),
        Arg::Num(c) => Operand::Const(*c),
        Arg::Other => unreachable!(),
    }
}

fn not_implemented(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.NotImplemented())
}

/// Builds `x op y` for two operands that are Values or numbers (at least one a Value).
fn binary(py: Python<'_>, op: Op, x: &Arg<'_, '_>, y: &Arg<'_, '_>) -> PyResult<Py<PyAny>> {
    let (ox, oy) = (operand(x), operand(y));
    let id = {
        let mut ar = ARENA.lock();
        for a in [x, y] {
            if let Arg::Node(v) = a {
                register(&mut ar, v);
            }
        }
        if ANOMALY.load(Ordering::Relaxed) {
            let out = ar.peek_binary(op, ox, oy);
            if !out.is_finite() {
                return Err(forward_anomaly(&ar, op.symbol(), &[ox, oy], out));
            }
        }
        let id = ar.binary(op, ox, oy).map_err(arena_error)?;
        ar.incref(id);
        id
    };
    Ok(wrap(py, id)?.into_any())
}

fn unary(slf: &Bound<'_, Value>, op: Op, c: [f64; 2]) -> PyResult<Py<Value>> {
    let a = slf.get().id;
    let id = {
        let mut ar = ARENA.lock();
        register(&mut ar, slf);
        if ANOMALY.load(Ordering::Relaxed) {
            let out = ar.peek_unary(op, a, c);
            if !out.is_finite() {
                return Err(forward_anomaly(&ar, op.kind(), &[Operand::Node(a)], out));
            }
        }
        let id = ar.unary(op, a, c).map_err(arena_error)?;
        ar.incref(id);
        id
    };
    wrap(slf.py(), id)
}

/// A node's label from Python: a `str` that UTF-8 can hold. Converted before the
/// arena is borrowed (a failed conversion makes an exception object, which may run
/// the collector and free other Values), with a message that names `label` on
/// every Python version.
#[derive(Default)]
struct Label(String);

impl<'a, 'py> FromPyObject<'a, 'py> for Label {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s = obj.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("label must be a str, got {}", type_name(&obj)))
        })?;
        Ok(Label(s.to_cow()?.into_owned()))
    }
}

fn number_arg(op: &str, what: &str, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    if x.cast_exact::<Value>().is_ok() || other_backend(x) {
        return Err(PyTypeError::new_err(format!(
            "{op}: {what} must be a number, not a Value"
        )));
    }
    number(op, x)?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{op}: {what} must be a number, got {}",
            type_name(x)
        ))
    })
}

fn type_name(x: &Bound<'_, PyAny>) -> String {
    x.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[pymethods]
impl Value {
    #[new]
    #[pyo3(signature = (data, label = Label::default()), text_signature = "(data, label='')")]
    fn new(data: &Bound<'_, PyAny>, label: Label) -> PyResult<Self> {
        let x = number_arg("Value()", "data", data)?;
        let mut ar = ARENA.lock();
        let id = ar.leaf(x).map_err(arena_error)?;
        ar.incref(id);
        ar.set_label(id, &label.0);
        Ok(Value {
            id,
            registered: AtomicBool::new(false),
        })
    }

    #[classattr]
    fn _backend() -> &'static str {
        "rust"
    }

    /// The node's value.
    #[getter]
    fn data(&self) -> f64 {
        ARENA.lock().data[self.id as usize]
    }

    #[setter]
    fn set_data(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = number_arg("data", "data", x)?;
        ARENA.lock().data[self.id as usize] = x;
        Ok(())
    }

    /// d(root)/d(this node), accumulated by `backward()`.
    #[getter]
    fn grad(&self) -> f64 {
        ARENA.lock().grad[self.id as usize]
    }

    #[setter]
    fn set_grad(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = number_arg("grad", "grad", x)?;
        ARENA.lock().grad[self.id as usize] = x;
        Ok(())
    }

    #[getter]
    fn label(&self) -> String {
        ARENA.lock().label(self.id).to_string()
    }

    #[setter]
    fn set_label(&self, label: Label) {
        ARENA.lock().set_label(self.id, &label.0);
    }

    /// The op that made this node, as micrograd names it (`"+"`, `"*"`, `"**2"`, `"ReLU"`; `""` for leaves).
    #[getter]
    fn _op(&self, py: Python<'_>) -> String {
        let (op, c) = {
            let ar = ARENA.lock();
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
    fn _kind(&self) -> &'static str {
        ARENA.lock().op(self.id).kind()
    }

    /// The constants of `**c`, `c**` and `clamp` nodes; `()` for other ops.
    #[getter]
    fn _consts(&self) -> Vec<f64> {
        let ar = ARENA.lock();
        match ar.op(self.id) {
            Op::PowConst | Op::RPowConst => vec![ar.consts(self.id)[0]],
            Op::Clamp => ar.consts(self.id).to_vec(),
            _ => Vec::new(),
        }
    }

    /// The operands, in order; the same node always comes back as the same object.
    #[getter]
    fn _prev<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        // Borrow the canonical handles that exist and count a reference for
        // each handle still to be made, all under one lock.
        let mut found: Vec<(NodeId, usize)> = {
            let mut ar = ARENA.lock();
            let ids = ar.operands(self.id);
            ids.into_iter()
                .map(|k| {
                    let h = ar.handle(k);
                    if h != 0 {
                        // SAFETY: a registered handle is alive until its Drop clears
                        // the slot, which needs this lock; incref does not run code.
                        unsafe { ffi::Py_IncRef(h as *mut ffi::PyObject) };
                    } else {
                        ar.incref(k);
                    }
                    (k, h)
                })
                .collect()
        };
        let mut out: Vec<Py<PyAny>> = Vec::with_capacity(found.len());
        for (k, h) in found.drain(..) {
            if h != 0 {
                // SAFETY: we own the reference taken above.
                out.push(unsafe { Bound::from_owned_ptr(py, h as *mut ffi::PyObject).unbind() });
                continue;
            }
            let v = Bound::new(
                py,
                Value {
                    id: k,
                    registered: AtomicBool::new(false),
                },
            )?;
            let existing = {
                let mut ar = ARENA.lock();
                let h = ar.handle(k);
                if h == 0 {
                    register(&mut ar, &v);
                } else {
                    unsafe { ffi::Py_IncRef(h as *mut ffi::PyObject) };
                }
                h
            };
            if existing != 0 {
                // Made meanwhile (by the collector running code): use that one.
                drop(v);
                out.push(unsafe {
                    Bound::from_owned_ptr(py, existing as *mut ffi::PyObject).unbind()
                });
            } else {
                out.push(v.into_any().unbind());
            }
        }
        PyTuple::new(py, out)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (d, g, label) = {
            let ar = ARENA.lock();
            let i = self.id as usize;
            (ar.data[i], ar.grad[i], ar.label(self.id).to_string())
        };
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
        let (data, grad, label) = self.parts();
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
        Ok((f, self.parts()))
    }

    fn __float__(&self) -> f64 {
        self.data()
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
            return Ok(PyFloat::new(py, self.data())
                .rich_compare(other, op)?
                .unbind());
        }
        let y = if let Ok(v) = other.cast_exact::<Value>() {
            v.get().data()
        } else if let Ok(Some(y)) = number("compare", other) {
            y
        } else if other_backend(other) {
            other.extract::<f64>()?
        } else {
            return not_implemented(py);
        };
        let x = self.data();
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

    fn __add__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("+", other)? {
            Arg::Other => not_implemented(slf.py()),
            y => binary(slf.py(), Op::Add, &Arg::Node(slf), &y),
        }
    }

    fn __radd__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("+", other)? {
            Arg::Other => not_implemented(slf.py()),
            x => binary(slf.py(), Op::Add, &x, &Arg::Node(slf)),
        }
    }

    fn __sub__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("-", other)? {
            Arg::Other => not_implemented(slf.py()),
            y => binary(slf.py(), Op::Sub, &Arg::Node(slf), &y),
        }
    }

    fn __rsub__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("-", other)? {
            Arg::Other => not_implemented(slf.py()),
            x => binary(slf.py(), Op::Sub, &x, &Arg::Node(slf)),
        }
    }

    fn __mul__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("*", other)? {
            Arg::Other => not_implemented(slf.py()),
            y => binary(slf.py(), Op::Mul, &Arg::Node(slf), &y),
        }
    }

    fn __rmul__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("*", other)? {
            Arg::Other => not_implemented(slf.py()),
            x => binary(slf.py(), Op::Mul, &x, &Arg::Node(slf)),
        }
    }

    fn __truediv__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("/", other)? {
            Arg::Other => not_implemented(slf.py()),
            y => binary(slf.py(), Op::Div, &Arg::Node(slf), &y),
        }
    }

    fn __rtruediv__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match arg("/", other)? {
            Arg::Other => not_implemented(slf.py()),
            x => binary(slf.py(), Op::Div, &x, &Arg::Node(slf)),
        }
    }

    fn __pow__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if modulo.is_some_and(|m| !m.is_none()) {
            return not_implemented(slf.py());
        }
        match arg("**", other)? {
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
        match arg("**", other)? {
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
        let lo = number_arg("clamp", "lo", lo)?;
        let hi = number_arg("clamp", "hi", hi)?;
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
        let py = slf.py();
        let root = slf.get().id;
        let check = ANOMALY.load(Ordering::Relaxed);
        let started = Instant::now(); // ordering a huge graph counts towards a pause
        let mut order = std::mem::take(&mut SPARE_ORDER.lock().0);
        {
            let mut ar = ARENA.lock();
            backward::order_into(&mut ar, root, &mut order);
            ar.grad[root as usize] = 1.0;
        }
        // The root's handle keeps the whole graph alive, and nothing can change a
        // node's operands, so the order stays valid between chunks.
        sweep_interruptibly(py, &order, check, started)?;
        if order.capacity() <= 1 << 20 {
            SPARE_ORDER.lock().0 = order; // for the next backward()
        }
        Ok(())
    }
}

/// Backward over `order` in chunks, pausing between some of them (see `Pacer`).
fn sweep_interruptibly(
    py: Python<'_>,
    order: &[NodeId],
    check: bool,
    started: Instant,
) -> PyResult<()> {
    let mut pacer = Pacer::new(py, order.len(), started);
    for chunk in order.chunks(SIGNAL_CHUNK) {
        {
            let mut ar = ARENA.lock();
            backward::sweep(&mut ar, chunk, check).map_err(|a| backward_anomaly(&ar, &a))?;
        }
        pacer.tick(py)?;
    }
    Ok(())
}

/// When a long sweep pauses, with the arena not borrowed: it lets other threads
/// take the GIL (so a thread that sends a signal, or simply waits its turn, is not
/// stalled for the whole sweep), then answers Ctrl-C and other signals, whose
/// Python handlers may themselves use the engine.
///
/// A pause comes once at least twice CPython's switch interval has passed since
/// the last. A thread waiting for the GIL asks the holder to hand it over only when
/// a whole interval passes without the GIL being released; releasing it more often
/// than that wakes the waiter early every time, and it never gets its turn.
struct Pacer {
    next: Option<Instant>,
    every: Duration,
}

impl Pacer {
    fn new(py: Python<'_>, nodes: usize, started: Instant) -> Self {
        if nodes < PAUSE_MIN_NODES {
            return Pacer {
                next: None,
                every: Duration::ZERO,
            };
        }
        let interval = py
            .import("sys")
            .and_then(|sys| sys.call_method0("getswitchinterval"))
            .and_then(|i| i.extract::<f64>())
            .unwrap_or(0.005);
        let every = Duration::from_secs_f64((2.0 * interval).clamp(0.002, 0.05));
        Pacer {
            next: Some(started + every),
            every,
        }
    }

    #[inline]
    fn tick(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.next {
            Some(next) if Instant::now() >= next => {
                py.detach(|| {});
                py.check_signals()?;
                self.next = Some(Instant::now() + self.every);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A recorded graph that can be re-run: `forward()` recomputes every node from the
/// current leaf values (parameters updated in place, inputs set through `data`),
/// `backward()` differentiates it again, all in Rust. Python control flow taken
/// while the graph was built is frozen, as with `torch.jit.trace`.
///
/// >>> w = Value(2.0); loss = (w * 3.0 - 1.0) ** 2
/// >>> tape = Tape(loss)
/// >>> w.data = 0.5
/// >>> tape.run()       # forward, zero_grad, backward; returns the root's value
/// 0.25
/// >>> w.grad
/// 3.0
#[pyclass(frozen, name = "Tape", module = "scalargrad._core")]
pub struct Tape {
    // Immutable once recorded, so no lock: a long replay that lets other threads
    // run between chunks never holds anything they could wait on.
    inner: Option<replay::Tape>,
}

impl Drop for Tape {
    fn drop(&mut self) {
        if let Some(t) = self.inner.take() {
            t.release(&mut ARENA.lock());
        }
    }
}

impl Tape {
    fn with<R>(&self, f: impl FnOnce(&replay::Tape) -> R) -> R {
        f(self
            .inner
            .as_ref()
            .expect("a Tape is recorded at construction"))
    }
}

#[pymethods]
impl Tape {
    #[new]
    fn new(root: &Bound<'_, PyAny>) -> PyResult<Self> {
        let root = root.cast_exact::<Value>().map_err(|_| {
            PyTypeError::new_err(format!(
                "Tape: root must be a rust Value, got {}",
                type_name(root)
            ))
        })?;
        let tape = replay::Tape::record(&mut ARENA.lock(), root.get().id);
        Ok(Tape { inner: Some(tape) })
    }

    /// The recorded root.
    #[getter]
    fn root(&self, py: Python<'_>) -> PyResult<Py<Value>> {
        let id = self.with(|t| t.root());
        handle_for(py, id)
    }

    fn __len__(&self) -> usize {
        self.with(|t| t.len())
    }

    /// Recomputes every node from the current leaf values.
    fn forward(&self, py: Python<'_>) -> PyResult<()> {
        let check = ANOMALY.load(Ordering::Relaxed);
        self.with(|t| {
            let order = t.order();
            let mut pacer = Pacer::new(py, order.len(), Instant::now());
            for chunk in order.rchunks(SIGNAL_CHUNK) {
                {
                    let mut ar = ARENA.lock();
                    for &id in chunk.iter().rev() {
                        replay::recompute(&mut ar, id);
                        if check && !ar.data[id as usize].is_finite() {
                            let operands: Vec<Operand> =
                                ar.operands(id).into_iter().map(Operand::Node).collect();
                            let (name, out) = (ar.op(id).kind(), ar.data[id as usize]);
                            return Err(forward_anomaly(&ar, name, &operands, out));
                        }
                    }
                }
                pacer.tick(py)?;
            }
            Ok(())
        })
    }

    /// Sets the gradient of every recorded node (parameters included) to 0.
    fn zero_grad(&self) {
        self.with(|t| t.zero_grad(&mut ARENA.lock()))
    }

    /// Seeds the root with 1.0 and adds into every recorded node's gradient.
    fn backward(&self, py: Python<'_>) -> PyResult<()> {
        let check = ANOMALY.load(Ordering::Relaxed);
        self.with(|t| {
            ARENA.lock().grad[t.root() as usize] = 1.0;
            sweep_interruptibly(py, t.order(), check, Instant::now())
        })
    }

    /// `forward()`, `zero_grad()`, `backward()`; returns the root's new value.
    fn run(&self, py: Python<'_>) -> PyResult<f64> {
        if !ANOMALY.load(Ordering::Relaxed) {
            // Tapes of up to a million nodes run compiled, in one go.
            let done = self.with(|t| {
                let mut ar = ARENA.lock();
                t.run_compiled(&mut ar).then(|| ar.data[t.root() as usize])
            });
            if let Some(value) = done {
                return Ok(value);
            }
        }
        self.forward(py)?;
        self.zero_grad();
        self.backward(py)?;
        Ok(self.with(|t| ARENA.lock().data[t.root() as usize]))
    }
}

/// Node ids of an iterable of rust Values (for the bulk operations below).
fn ids_of(op: &str, values: &Bound<'_, PyAny>) -> PyResult<Vec<NodeId>> {
    let mut ids = Vec::new();
    for (i, v) in values.try_iter()?.enumerate() {
        let v = v?;
        let v = v.cast_exact::<Value>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{op}: element {i} must be a rust Value, got {}",
                type_name(&v)
            ))
        })?;
        ids.push(v.get().id);
    }
    Ok(ids)
}

/// The parameters of a model, held together so an optimizer step, zeroing the
/// gradients or reading and writing all values is one call into Rust. Keeps its
/// optimizer state (momentum, Adam moments) per parameter.
#[pyclass(frozen, name = "ParamGroup", module = "scalargrad._core")]
pub struct ParamGroup {
    ids: Vec<NodeId>,
    state: Mutex<[Vec<f64>; 2]>,
}

impl Drop for ParamGroup {
    fn drop(&mut self) {
        let mut ar = ARENA.lock();
        for &id in &self.ids {
            ar.decref(id);
        }
    }
}

#[pymethods]
impl ParamGroup {
    #[new]
    fn new(values: &Bound<'_, PyAny>) -> PyResult<Self> {
        let ids = ids_of("ParamGroup", values)?;
        let mut ar = ARENA.lock();
        for &id in &ids {
            ar.incref(id);
        }
        let n = ids.len();
        Ok(ParamGroup {
            ids,
            state: Mutex::new([vec![0.0; n], vec![0.0; n]]),
        })
    }

    fn __len__(&self) -> usize {
        self.ids.len()
    }

    /// Sets every parameter's gradient to 0.
    fn zero_grad(&self) {
        let mut ar = ARENA.lock();
        for &id in &self.ids {
            ar.grad[id as usize] = 0.0;
        }
    }

    /// One SGD step (see `scalargrad.optim.SGD`); the velocity lives here.
    fn sgd(&self, lr: f64, momentum: f64, weight_decay: f64) {
        let mut state = self.state.lock();
        optim::sgd(
            &mut ARENA.lock(),
            &self.ids,
            &mut state[0],
            lr,
            momentum,
            weight_decay,
        );
    }

    /// One Adam step number `t` (see `scalargrad.optim.Adam`); the moments live here.
    #[allow(clippy::too_many_arguments)]
    fn adam(&self, lr: f64, b1: f64, b2: f64, eps: f64, weight_decay: f64, t: u64) {
        let mut state = self.state.lock();
        let [m, v] = &mut *state;
        let step = optim::AdamStep {
            lr,
            b1,
            b2,
            eps,
            wd: weight_decay,
            t,
        };
        optim::adam(&mut ARENA.lock(), &self.ids, m, v, step);
    }

    /// The optimizer state: `(velocity or first moments, second moments)`.
    fn state(&self) -> (Vec<f64>, Vec<f64>) {
        let state = self.state.lock();
        (state[0].clone(), state[1].clone())
    }
}

/// The `data` of many Values in one call.
#[pyfunction]
fn get_data(values: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let ids = ids_of("get_data", values)?;
    let ar = ARENA.lock();
    Ok(ids.iter().map(|&i| ar.data[i as usize]).collect())
}

/// The `grad` of many Values in one call.
#[pyfunction]
fn get_grad(values: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let ids = ids_of("get_grad", values)?;
    let ar = ARENA.lock();
    Ok(ids.iter().map(|&i| ar.grad[i as usize]).collect())
}

/// Sets the `data` of many Values in one call; checks everything first.
#[pyfunction]
fn set_data(values: &Bound<'_, PyAny>, data: Vec<f64>) -> PyResult<()> {
    let ids = ids_of("set_data", values)?;
    if ids.len() != data.len() {
        return Err(PyValueError::new_err(format!(
            "set_data: {} values but {} numbers",
            ids.len(),
            data.len()
        )));
    }
    let mut ar = ARENA.lock();
    for (&i, &x) in ids.iter().zip(&data) {
        ar.data[i as usize] = x;
    }
    Ok(())
}

/// The canonical handle of a live node, made if it has none.
fn handle_for(py: Python<'_>, id: NodeId) -> PyResult<Py<Value>> {
    let existing = {
        let mut ar = ARENA.lock();
        let h = ar.handle(id);
        if h != 0 {
            // SAFETY: as in `_prev`: the handle is alive while its slot is set.
            unsafe { ffi::Py_IncRef(h as *mut ffi::PyObject) };
        } else {
            ar.incref(id);
        }
        h
    };
    if existing != 0 {
        // SAFETY: we own the reference taken above.
        let b = unsafe { Bound::from_owned_ptr(py, existing as *mut ffi::PyObject) };
        return Ok(b.cast_into::<Value>()?.unbind());
    }
    wrap(py, id)
}

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
    let mut ops_ = Vec::with_capacity(hint);
    let mut nodes = Vec::with_capacity(hint);
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        if let Ok(v) = item.cast_exact::<Value>() {
            ops_.push(Operand::Node(v.get().id));
            nodes.push(v.clone());
        } else if let Some(c) = number(op, &item)? {
            ops_.push(Operand::Const(c));
        } else if other_backend(&item) {
            return Err(mixed_backends(op));
        } else {
            return Err(PyTypeError::new_err(format!(
                "{op}: element {i} must be a Value or a number, got {}",
                type_name(&item)
            )));
        }
    }
    Ok((ops_, nodes))
}

fn nary(
    py: Python<'_>,
    name: &str,
    nodes: &[Bound<'_, Value>],
    operands: &[Operand],
    build: impl FnOnce(&mut Arena) -> (f64, Result<NodeId, ArenaError>),
) -> PyResult<Py<Value>> {
    let id = {
        let mut ar = ARENA.lock();
        for v in nodes {
            register(&mut ar, v);
        }
        let (out, id) = build(&mut ar);
        if ANOMALY.load(Ordering::Relaxed) && !out.is_finite() {
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
fn sum(
    py: Python<'_>,
    values: &Bound<'_, PyAny>,
    start: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<Value>> {
    let (mut operands, mut nodes) = match start {
        Some(s) => collect_args("sum", PyTuple::new(py, [s])?.as_any())?,
        None => (Vec::new(), Vec::new()),
    };
    let (more, more_nodes) = collect_args("sum", values)?;
    operands.extend(more);
    nodes.extend(more_nodes);
    nary(py, "sum", &nodes, &operands, |ar| {
        (ar.peek_sum(&operands), ar.sum(&operands))
    })
}

/// `dot(ws, xs)`: one n-ary node `((w1*x1 + w2*x2) + w3*x3) + ...`.
#[pyfunction]
fn dot(py: Python<'_>, ws: &Bound<'_, PyAny>, xs: &Bound<'_, PyAny>) -> PyResult<Py<Value>> {
    let (w, mut nodes) = collect_args("dot", ws)?;
    let (x, xn) = collect_args("dot", xs)?;
    if w.len() != x.len() {
        return Err(PyValueError::new_err(format!(
            "dot: ws and xs differ in length ({} and {})",
            w.len(),
            x.len()
        )));
    }
    nodes.extend(xn);
    let all: Vec<Operand> = w.iter().chain(&x).copied().collect();
    nary(py, "dot", &nodes, &all, |ar| {
        (ar.peek_dot(&w, &x), ar.dot(&w, &x))
    })
}

/// A dense layer in one call: `[act(dot(w, x) + b) for w, b in zip(ws, bs)]`, the
/// same nodes `Neuron` builds one by one (`activation`: "relu", "tanh", "sigmoid"
/// or "linear"). Numbers in `x` become leaves once, shared by all neurons.
#[pyfunction]
fn layer<'py>(
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
    nodes.reserve(nout * (nin + 1));
    // All weights in one flat buffer, a row per neuron.
    let mut w_ids = Vec::with_capacity(nout * nin);
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
    let mut b_ids = Vec::with_capacity(rows);
    let (got, all_values) = value_ids(bs, &mut b_ids, &mut nodes)?;
    if got != rows || !all_values {
        return Err(PyValueError::new_err(format!(
            "layer: need one bias Value per neuron ({rows}), got {got}"
        )));
    }
    let w_rows: Vec<&[NodeId]> = (0..rows).map(|k| &w_ids[k * nin..][..nin]).collect();
    let outs = {
        let mut ar = ARENA.lock();
        for v in &nodes {
            register(&mut ar, v);
        }
        let outs = ar.layer(&w_rows, &b_ids, &xs, act).map_err(arena_error)?;
        if ANOMALY.load(Ordering::Relaxed) {
            if let Some(err) = layer_anomaly(&ar, &outs) {
                for &o in &outs {
                    ar.decref(o);
                }
                return Err(err);
            }
        }
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
            let v = ar.data[id as usize];
            if !v.is_finite() {
                let operands: Vec<Operand> =
                    ar.operands(id).into_iter().map(Operand::Node).collect();
                return Some(forward_anomaly(ar, ar.op(id).kind(), &operands, v));
            }
        }
    }
    None
}

/// Turns anomaly checking on or off (`scalargrad.detect_anomaly()` uses this).
#[pyfunction]
fn set_anomaly(on: bool) -> bool {
    ANOMALY.swap(on, Ordering::Relaxed)
}

/// Arena statistics: live nodes, slots, reserved bytes and bytes per node.
#[pyfunction]
fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let (live, slots, reserved) = {
        let ar = ARENA.lock();
        (ar.live(), ar.slots(), ar.reserved_bytes())
    };
    let d = PyDict::new(py);
    d.set_item("live_nodes", live)?;
    d.set_item("slots", slots)?;
    d.set_item("reserved_bytes", reserved)?;
    d.set_item("bytes_per_node", BYTES_PER_NODE)?;
    Ok(d)
}

// ---- recycling Value handles ----------------------------------------------------
//
// Every op makes a Value handle and most are dropped soon after, so handles are
// recycled through a free list of their own, installed as the type's `tp_alloc` and
// `tp_free`. CPython calls both with the GIL held, so the list is a `GilCell` and
// costs no lock (PyO3's `freelist` option takes a mutex on every call). A handle is
// set up as `PyType_GenericAlloc` sets it up, but never tracked by the cyclic
// collector: a Value holds no Python references, so the collector has nothing to
// find in it, and keeping the handles out of its lists keeps collections cheap.

struct FreeHandles(Vec<*mut ffi::PyObject>);

// SAFETY: the pointers are only touched from tp_alloc and tp_free, with the GIL held.
unsafe impl Send for FreeHandles {}

static FREE_HANDLES: GilCell<FreeHandles> = GilCell::new(FreeHandles(Vec::new()));
static VALUE_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
const FREE_HANDLES_MAX: usize = 4096;

unsafe extern "C" fn value_alloc(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    if nitems == 0 && std::ptr::eq(subtype, VALUE_TYPE.load(Ordering::Relaxed)) {
        if let Some(obj) = FREE_HANDLES.lock().0.pop() {
            // SAFETY: `obj` is the memory of a deallocated Value, as tp_alloc made it
            // (GC header included); this sets its type (taking a reference to the
            // heap type, which tp_dealloc gave back) and a reference count of 1.
            unsafe { ffi::PyObject_Init(obj, subtype) };
            return obj;
        }
    }
    // SAFETY: the default tp_alloc of a GC heap type; untracking an object that
    // holds no references to other Python objects is always sound.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(subtype, nitems);
        if !obj.is_null() {
            ffi::PyObject_GC_UnTrack(obj.cast());
        }
        obj
    }
}

unsafe extern "C" fn value_free(obj: *mut std::ffi::c_void) {
    let obj = obj.cast::<ffi::PyObject>();
    // SAFETY: CPython hands tp_free a deallocated object of this type; PyO3's
    // tp_dealloc has already untracked it from the cyclic collector.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) != 0 {
            ffi::PyObject_GC_UnTrack(obj.cast());
        }
        if !keep_handle(obj) {
            ffi::PyObject_GC_Del(obj.cast());
        }
    }
}

/// Puts the memory of a dead, untracked handle on the free list; false when the
/// list is full (the caller frees it).
#[inline]
fn keep_handle(obj: *mut ffi::PyObject) -> bool {
    let mut free = FREE_HANDLES.lock();
    if free.0.len() < FREE_HANDLES_MAX {
        free.0.push(obj);
        return true;
    }
    false
}

/// Installs the free list on the `Value` type (once, at module initialisation);
/// returns the type.
fn recycle_handles(py: Python<'_>) -> *mut ffi::PyTypeObject {
    let tp = py.get_type::<Value>().as_type_ptr();
    FREE_HANDLES.lock().0.reserve_exact(FREE_HANDLES_MAX);
    VALUE_TYPE.store(tp, Ordering::Relaxed);
    // SAFETY: the type is ready and has no instances yet; tp_alloc and tp_free are
    // read on every allocation, not cached, and the two replacements keep the
    // defaults' contract (zeroed fields are not needed: PyO3 writes them all).
    unsafe {
        (*tp).tp_alloc = Some(value_alloc);
        (*tp).tp_free = Some(value_free);
    }
    tp
}

// Every arena access relies on the GIL for mutual exclusion (see `GilCell`).
#[cfg(Py_GIL_DISABLED)]
compile_error!("scalargrad._core needs the GIL; free-threaded Python is not supported");

#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Value>()?;
    let tp = recycle_handles(m.py());
    slots::install(m.py(), tp)?;
    m.add_class::<Tape>()?;
    m.add_class::<ParamGroup>()?;
    m.add_class::<lanes::LaneTape>()?;
    m.add_function(wrap_pyfunction!(lanes::set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(lanes::get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_data, m)?)?;
    m.add_function(wrap_pyfunction!(get_grad, m)?)?;
    m.add_function(wrap_pyfunction!(set_data, m)?)?;
    m.add_function(wrap_pyfunction!(sum, m)?)?;
    m.add_function(wrap_pyfunction!(dot, m)?)?;
    m.add_function(wrap_pyfunction!(layer, m)?)?;
    m.add_function(wrap_pyfunction!(set_anomaly, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(leaf_copy, m)?)?;
    let kinds: Vec<&str> = ops::ALL.iter().map(|o| o.kind()).collect();
    m.add("OPS", PyTuple::new(m.py(), kinds)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
