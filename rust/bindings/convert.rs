//! Python arguments as the engine's inputs: every conversion of a Python number,
//! and every message that refuses one, in one place.
//!
//! One reading (`read`) sorts an object into a Value of this backend, a number, a
//! Value of the reference backend, or something else; each kind of parameter
//! (an operator's operand, a number parameter, an element of `sum`/`dot`, the
//! other side of a comparison) then says what it accepts.

use super::value::Value;
use crate::arena::Operand;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};

/// What a Python object is to the engine.
enum Read<'a, 'py> {
    Node(&'a Bound<'py, Value>),
    /// A float, an int that a float holds, or anything with `__float__` (NumPy
    /// scalars, 0-d arrays).
    Num(f64),
    /// A Value of the reference backend (any class with a `_backend` attribute).
    OtherBackend,
    /// Strings, sequences, None, and objects that do not convert to float.
    NotNumber,
    /// An object whose `__float__` (or `__index__`) raised: its error.
    Failed(PyErr),
}

/// Sorts `x`. An int too large for a float is a ValueError naming `op`, as
/// `float(10**400)` is; an object whose `__float__` raises is `Failed`.
#[inline]
fn read<'a, 'py>(op: &str, x: &'a Bound<'py, PyAny>) -> PyResult<Read<'a, 'py>> {
    if let Ok(v) = x.cast_exact::<Value>() {
        return Ok(Read::Node(v));
    }
    if let Ok(f) = x.cast_exact::<PyFloat>() {
        return Ok(Read::Num(f.value()));
    }
    if x.is_instance_of::<PyInt>() {
        return x
            .extract::<f64>()
            .map(Read::Num)
            .map_err(|_| too_large(op, x));
    }
    if other_backend(x) {
        return Ok(Read::OtherBackend);
    }
    if x.is_instance_of::<PyString>() {
        return Ok(Read::NotNumber);
    }
    match x.extract::<f64>() {
        Ok(v) => Ok(Read::Num(v)),
        // A type that claims to convert and fails: its own error, as `float(x)` gives.
        Err(e) if converts(x) => Ok(Read::Failed(e)),
        Err(_) => Ok(Read::NotNumber),
    }
}

/// Whether `x`'s type has `__float__` or `__index__` (what `float(x)` calls).
fn converts(x: &Bound<'_, PyAny>) -> bool {
    let t = x.get_type();
    t.hasattr("__float__").unwrap_or(false) || t.hasattr("__index__").unwrap_or(false)
}

/// The ValueError for an int too large for a float. A huge int is shown by its
/// size, not its digits (printing one beyond Python's digit limit fails).
pub(super) fn too_large(op: &str, x: &Bound<'_, PyAny>) -> PyErr {
    let bits = x
        .call_method0("bit_length")
        .and_then(|b| b.extract::<u64>())
        .unwrap_or(u64::MAX);
    let shown = if bits <= 128 {
        x.str().map(|s| s.to_string()).unwrap_or_default()
    } else {
        // `~10**k`, k = floor(log10 |x|), which `math.log10` gives for any int.
        let k = x
            .py()
            .import("math")
            .and_then(|m| m.getattr("log10")?.call1((x.abs()?,)))
            .and_then(|l| l.extract::<f64>())
            .unwrap_or((bits - 1) as f64 * std::f64::consts::LOG10_2);
        let sign = match x.lt(0i32) {
            Ok(true) => "-",
            _ => "",
        };
        format!("{sign}~10**{}", k.floor() as u64)
    };
    PyValueError::new_err(format!(
        "{op}: integer {shown} is too large to convert to float"
    ))
}

/// Whether `x` is a Value of the reference backend.
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

/// An operand of an op: a Value of this backend or a number.
pub(super) enum Arg<'a, 'py> {
    Node(&'a Bound<'py, Value>),
    Num(f64),
    /// Not something this op handles: the operator returns NotImplemented.
    Other,
}

impl Arg<'_, '_> {
    /// The operand as the arena takes it (never called on `Other`).
    pub(super) fn operand(&self) -> Operand {
        match self {
            Arg::Node(v) => Operand::Node(v.get().id),
            Arg::Num(c) => Operand::Const(*c),
            Arg::Other => unreachable!(),
        }
    }
}

/// The other operand of the operator `op` (`+`, `**`, ...).
pub(super) fn operator_arg<'a, 'py>(op: &str, x: &'a Bound<'py, PyAny>) -> PyResult<Arg<'a, 'py>> {
    match read(op, x)? {
        Read::Node(v) => Ok(Arg::Node(v)),
        Read::Num(c) => Ok(Arg::Num(c)),
        Read::OtherBackend => Err(mixed_backends(op)),
        // Builtin containers would otherwise meet Python's sequence-repeat fallback
        // ("can't multiply sequence by non-int"), which hides the op; say it plainly.
        // Other types get NotImplemented, so NumPy arrays and friends can take over.
        Read::NotNumber
            if x.is_none()
                || x.is_instance_of::<PyString>()
                || x.is_instance_of::<PyBytes>()
                || x.is_instance_of::<PyList>()
                || x.is_instance_of::<PyTuple>()
                || x.is_instance_of::<PyDict>()
                || x.is_instance_of::<PySet>() =>
        {
            Err(PyTypeError::new_err(format!(
                "unsupported operand type(s) for {op}: 'Value' and '{}'",
                type_name(x)
            )))
        }
        Read::NotNumber => Ok(Arg::Other),
        // NumPy arrays of many numbers refuse `float()`: NumPy takes over.
        Read::Failed(e) if refusal(x.py(), &e) => Ok(Arg::Other),
        Read::Failed(e) => Err(e),
    }
}

/// Whether `e` is how `float(x)` says no (TypeError or ValueError), as opposed to
/// some other failure of the user's code, which passes through.
fn refusal(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py)
}

/// The number parameter `what` of `op` (`Value(data)`, `clamp`'s bounds, ...).
pub(super) fn number_arg(op: &str, what: &str, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    match read(op, x)? {
        Read::Num(c) => Ok(c),
        Read::Node(_) | Read::OtherBackend => Err(PyTypeError::new_err(format!(
            "{op}: {what} must be a number, not a Value"
        ))),
        Read::NotNumber => Err(PyTypeError::new_err(format!(
            "{op}: {what} must be a number, got {}",
            type_name(x)
        ))),
        Read::Failed(e) => Err(e),
    }
}

/// Element `i` of the operands of the n-ary op `op`: a Value or a number.
pub(super) fn element_arg<'a, 'py>(
    op: &str,
    i: usize,
    x: &'a Bound<'py, PyAny>,
) -> PyResult<Arg<'a, 'py>> {
    match read(op, x)? {
        Read::Node(v) => Ok(Arg::Node(v)),
        Read::Num(c) => Ok(Arg::Num(c)),
        Read::OtherBackend => Err(mixed_backends(op)),
        Read::NotNumber => Err(PyTypeError::new_err(format!(
            "{op}: element {i} must be a Value or a number, got {}",
            type_name(x)
        ))),
        Read::Failed(e) => Err(e),
    }
}

/// The other side of a comparison with a Value (not an int, which compares
/// exactly): its value, or `None` for NotImplemented.
pub(super) fn compared(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    Ok(match read("compare", x)? {
        Read::Node(v) => Some(v.get().data(py)),
        Read::Num(y) => Some(y),
        Read::OtherBackend => Some(x.extract::<f64>()?),
        Read::NotNumber => None,
        Read::Failed(e) if refusal(py, &e) || e.is_instance_of::<PyOverflowError>(py) => None,
        Read::Failed(e) => return Err(e),
    })
}

/// A node's label from Python: a `str` that UTF-8 can hold. Converted before the
/// arena is borrowed (a failed conversion makes an exception object, which may run
/// the collector and free other Values), with a message that names `label` on
/// every Python version.
#[derive(Default)]
pub(super) struct Label(pub(super) String);

impl<'a, 'py> FromPyObject<'a, 'py> for Label {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s = obj.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("label must be a str, got {}", type_name(&obj)))
        })?;
        Ok(Label(s.to_cow()?.into_owned()))
    }
}

/// The name of `x`'s type, for messages.
pub(super) fn type_name(x: &Bound<'_, PyAny>) -> String {
    x.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}
