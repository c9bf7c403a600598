//! The `ParamGroup` class (optimizer steps over many parameters in one call) and
//! bulk reads and writes of many Values' `data` and `grad`.

use super::convert::{number_arg, type_name};
use super::gil::{gil_held, ARENA};
use super::value::Value;
use crate::arena::NodeId;
use crate::ops::canon;
use crate::optim;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyFloat, PyList};

/// Node ids of an iterable of rust Values (for the bulk operations below).
pub(super) fn ids_of(op: &str, values: &Bound<'_, PyAny>) -> PyResult<Vec<NodeId>> {
    if let Ok(list) = values.cast_exact::<PyList>() {
        // A list of rust Values (the usual case): read in place, no iterator.
        let mut ids = Vec::with_capacity(list.len());
        for v in list.iter() {
            match v.cast_exact::<Value>() {
                Ok(v) => ids.push(v.get().id),
                Err(_) => break,
            }
        }
        if ids.len() == list.len() {
            return Ok(ids);
        }
    }
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
        // SAFETY: a ParamGroup is dropped by its deallocator, or by PyO3 when its
        // constructor fails: CPython holds the GIL for both.
        let py = unsafe { gil_held() };
        let mut ar = ARENA.lock(py);
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
        let mut ar = ARENA.lock(values.py());
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
    fn zero_grad(&self, py: Python<'_>) {
        let mut ar = ARENA.lock(py);
        for &id in &self.ids {
            ar.grad[id as usize] = 0.0;
        }
    }

    /// One SGD step (see `scalargrad.optim.SGD`); the velocity lives here.
    fn sgd(&self, py: Python<'_>, lr: f64, momentum: f64, weight_decay: f64) {
        let mut state = self.state.lock();
        optim::sgd(
            &mut ARENA.lock(py),
            &self.ids,
            &mut state[0],
            lr,
            momentum,
            weight_decay,
        );
    }

    /// One Adam step number `t` (see `scalargrad.optim.Adam`); the moments live here.
    #[allow(clippy::too_many_arguments)]
    fn adam(&self, py: Python<'_>, lr: f64, b1: f64, b2: f64, eps: f64, weight_decay: f64, t: u64) {
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
        optim::adam(&mut ARENA.lock(py), &self.ids, m, v, step);
    }

    /// The optimizer state: `(velocity or first moments, second moments)`.
    fn state(&self) -> (Vec<f64>, Vec<f64>) {
        let state = self.state.lock();
        let out = |v: &[f64]| v.iter().map(|&x| canon(x)).collect();
        (out(&state[0]), out(&state[1]))
    }
}

/// The `data` of many Values in one call.
#[pyfunction]
pub(super) fn get_data(values: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let ids = ids_of("get_data", values)?;
    let ar = ARENA.lock(values.py());
    Ok(ids.iter().map(|&i| canon(ar.data[i as usize])).collect())
}

/// The `grad` of many Values in one call.
#[pyfunction]
pub(super) fn get_grad(values: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let ids = ids_of("get_grad", values)?;
    let ar = ARENA.lock(values.py());
    Ok(ids.iter().map(|&i| canon(ar.grad[i as usize])).collect())
}

/// The `data` (`grad` if `grad`) of many Values as the bytes of their float64s,
/// in a `bytearray` (`scalargrad.get_data` views it as a NumPy array: no list of
/// floats in between).
#[pyfunction]
pub(super) fn _values_buffer<'py>(
    values: &Bound<'py, PyAny>,
    grad: bool,
) -> PyResult<Bound<'py, PyByteArray>> {
    let op = if grad { "get_grad" } else { "get_data" };
    let ids = ids_of(op, values)?;
    let py = values.py();
    let ar = ARENA.lock(py);
    let field = if grad { &ar.grad } else { &ar.data };
    PyByteArray::new_with(py, ids.len() * 8, |buf| {
        for (out, &i) in buf.chunks_exact_mut(8).zip(&ids) {
            out.copy_from_slice(&canon(field[i as usize]).to_ne_bytes());
        }
        Ok(())
    })
}

/// `set_data` for a list of rust Values and a list of floats of the same length,
/// read in place with nothing allocated; false (having changed nothing) for
/// anything else, which the general path handles and reports.
fn set_data_lists(values: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> bool {
    let (Ok(values), Ok(data)) = (values.cast_exact::<PyList>(), data.cast_exact::<PyList>())
    else {
        return false;
    };
    let n = values.len();
    if data.len() != n {
        return false;
    }
    // Checks everything first. No Python code runs in between (type checks and
    // float reads only), so the lists are the same in the second loop.
    for i in 0..n {
        // SAFETY: i < n, the length of both lists.
        let (v, x) = unsafe { (values.get_item_unchecked(i), data.get_item_unchecked(i)) };
        if !v.is_exact_instance_of::<Value>() || !x.is_exact_instance_of::<PyFloat>() {
            return false;
        }
    }
    let mut ar = ARENA.lock(values.py());
    for i in 0..n {
        // SAFETY: as above.
        let (v, x) = unsafe { (values.get_item_unchecked(i), data.get_item_unchecked(i)) };
        // SAFETY: checked above: an exact Value and an exact float.
        let (v, x) = unsafe { (v.cast_unchecked::<Value>(), x.cast_unchecked::<PyFloat>()) };
        ar.data[v.get().id as usize] = x.value();
    }
    true
}

/// Sets the `data` of many Values in one call; checks everything first.
#[pyfunction]
pub(super) fn set_data(values: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    if set_data_lists(values, data) {
        return Ok(());
    }
    let ids = ids_of("set_data", values)?;
    let mut numbers = Vec::new();
    for (i, x) in data.try_iter()?.enumerate() {
        numbers.push(number_arg(
            "set_data",
            &format!("element {i} of data"),
            &x?,
        )?);
    }
    let data = numbers;
    if ids.len() != data.len() {
        return Err(PyValueError::new_err(format!(
            "set_data: {} values but {} numbers",
            ids.len(),
            data.len()
        )));
    }
    let mut ar = ARENA.lock(values.py());
    for (&i, &x) in ids.iter().zip(&data) {
        ar.data[i as usize] = x;
    }
    Ok(())
}
