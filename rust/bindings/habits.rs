//! Python's number habits on a `Value`: `int(v)`, `round(v)`, `bool(v)` and
//! `format(v, spec)`, each what the float `v.data` gives (as PyTorch's 0-d tensors
//! do), with the reference backend's messages.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyString};

/// `int(x)`: NaN raises ValueError and an infinity OverflowError, as for a float.
pub(super) fn int<'py>(py: Python<'py>, x: f64) -> PyResult<Bound<'py, PyAny>> {
    PyFloat::new(py, x).call_method0("__int__")
}

/// `round(x)` (an int) or `round(x, ndigits)` (a float).
pub(super) fn round<'py>(
    py: Python<'py>,
    x: f64,
    ndigits: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let x = PyFloat::new(py, x);
    let Some(n) = ndigits.filter(|n| !n.is_none()) else {
        return x.call_method0("__round__");
    };
    x.call_method1("__round__", (n,)).map_err(|e| {
        if e.is_instance_of::<PyTypeError>(py) {
            let got = n.get_type().name().map(|t| t.to_string());
            PyTypeError::new_err(format!(
                "round: ndigits must be an integer or None, got {}",
                got.unwrap_or_default()
            ))
        } else {
            e
        }
    })
}

/// `bool(x)`: true unless zero (NaN is true).
#[inline]
pub(super) fn truth(x: f64) -> bool {
    x != 0.0
}

/// `format(v, spec)`: the float `x` (`v.data`) formatted by `spec`; an empty spec
/// keeps `str(v)`, as `object.__format__` gives it.
pub(super) fn format(v: &Bound<'_, PyAny>, x: f64, spec: &str) -> PyResult<String> {
    let py = v.py();
    if spec.is_empty() {
        return Ok(v.str()?.to_string());
    }
    match PyFloat::new(py, x).call_method1("__format__", (spec,)) {
        Ok(s) => s.extract(),
        Err(e) if e.is_instance_of::<PyValueError>(py) => {
            let spec = PyString::new(py, spec).repr()?;
            Err(PyValueError::new_err(format!(
                "format(Value, {spec}): {}",
                e.value(py)
            )))
        }
        Err(e) => Err(e),
    }
}
