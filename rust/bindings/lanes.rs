//! `LaneTape`: batched lanes (`crate::lanes`) for Python, and the thread count
//! a batched run may use.

use super::convert::type_name;
use super::diagnostics::{anomaly_on, describe, fmt_f64};
use super::gil::{gil_held, ARENA};
use super::params::ids_of;
use super::sweep::Pacer;
use super::value::Value;
use crate::lanes::{self, LaneError, RecordError};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyFloatingPointError, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Threads a batched run may use; 0 until set or first asked.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// The thread count: as set, else `SCALARGRAD_NUM_THREADS`, else every core.
fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::env::var("SCALARGRAD_NUM_THREADS")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets how many threads a batched run may use (results do not depend on it).
#[pyfunction]
pub fn set_num_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err(
            "set_num_threads: expected a thread count >= 1, got 0",
        ));
    }
    THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// How many threads a batched run may use.
#[pyfunction]
pub fn get_num_threads() -> usize {
    threads()
}

/// One sample's graph recorded once and run over batches (see
/// `scalargrad.BatchTape`, which wraps it with shape checks and NumPy arrays).
#[pyclass(frozen, name = "LaneTape", module = "scalargrad._core")]
pub struct LaneTape {
    inner: Option<lanes::LaneTape>,
}

impl Drop for LaneTape {
    fn drop(&mut self) {
        if let Some(t) = self.inner.take() {
            // SAFETY: a LaneTape is dropped by its deallocator, with the GIL held.
            let py = unsafe { gil_held() };
            t.release(&mut ARENA.lock(py));
        }
    }
}

impl LaneTape {
    fn tape(&self) -> &lanes::LaneTape {
        self.inner
            .as_ref()
            .expect("a LaneTape is recorded at construction")
    }
}

fn memory(_: LaneError) -> PyErr {
    PyMemoryError::new_err("LaneTape: out of memory for the batch")
}

/// A writable or read-only C-contiguous float64 buffer, or a TypeError naming `what`.
fn buffer(what: &str, x: &Bound<'_, PyAny>) -> PyResult<PyBuffer<f64>> {
    let b = PyBuffer::<f64>::get(x).map_err(|_| {
        PyTypeError::new_err(format!(
            "LaneTape.run: {what} must be a float64 array, got {}",
            type_name(x)
        ))
    })?;
    if !b.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "LaneTape.run: {what} must be C-contiguous"
        )));
    }
    Ok(b)
}

#[pymethods]
impl LaneTape {
    #[new]
    fn new(
        py: Python<'_>,
        root: &Bound<'_, PyAny>,
        inputs: &Bound<'_, PyAny>,
        outputs: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let root = root.cast_exact::<Value>().map_err(|_| {
            PyTypeError::new_err(format!(
                "LaneTape: root must be a rust Value, got {}",
                type_name(root)
            ))
        })?;
        let inputs = ids_of("LaneTape inputs", inputs)?;
        let outputs = ids_of("LaneTape outputs", outputs)?;
        let mut ar = ARENA.lock(py);
        let tape = lanes::LaneTape::record(&mut ar, root.get().id, &inputs, &outputs).map_err(
            |e| match e {
                RecordError::InputNotLeaf(k) => PyValueError::new_err(format!(
                    "LaneTape: input {k} must be a leaf, got a node made by '{}'",
                    ar.op(inputs[k]).kind()
                )),
                RecordError::DuplicateInput(j, k) => PyValueError::new_err(format!(
                    "LaneTape: inputs {j} and {k} are the same Value"
                )),
                RecordError::OutputUnreachable(k) => PyValueError::new_err(format!(
                    "LaneTape: output {k} is not part of the root's graph"
                )),
                RecordError::Memory => PyMemoryError::new_err("LaneTape: out of memory"),
            },
        )?;
        Ok(LaneTape { inner: Some(tape) })
    }

    #[getter]
    fn n_inputs(&self) -> usize {
        self.tape().n_inputs()
    }

    #[getter]
    fn n_outputs(&self) -> usize {
        self.tape().n_outputs()
    }

    /// Nodes that hold one value per sample.
    #[getter]
    fn lane_nodes(&self) -> usize {
        self.tape().lane_nodes()
    }

    fn __len__(&self) -> usize {
        self.tape().len()
    }

    /// Runs the samples of `x` (rows of `n_inputs` float64s, C order), writes
    /// their outputs into `out` and returns the sum of the root over them; with
    /// `seed`, sweeps back with each sample's root gradient `seed` and adds the
    /// parameters' gradients. Ctrl-C between chunks leaves every gradient as it was.
    #[pyo3(signature = (x, seed, out))]
    fn run(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        seed: Option<f64>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let t = self.tape();
        let (xb, ob) = (buffer("x", x)?, buffer("out", out)?);
        let ni = t.n_inputs();
        let rows = xb.item_count().checked_div(ni).unwrap_or(0);
        if rows * ni != xb.item_count() {
            return Err(PyValueError::new_err(format!(
                "LaneTape.run: x holds {} numbers, not a whole number of rows of {ni}",
                xb.item_count()
            )));
        }
        if ob.readonly() || ob.item_count() != rows * t.n_outputs() {
            return Err(PyValueError::new_err(format!(
                "LaneTape.run: out must be a writable array of {} numbers, got {}{}",
                rows * t.n_outputs(),
                ob.item_count(),
                if ob.readonly() { " read-only" } else { "" }
            )));
        }
        let xv = xb.to_vec(py)?;
        let shared = t.shared_values(&ARENA.lock(py)).map_err(memory)?;
        let mut outv = Vec::new();
        outv.try_reserve_exact(ob.item_count())
            .map_err(|_| memory(LaneError::Memory))?;
        outv.resize(ob.item_count(), 0.0);
        let mut raised = None;
        let mut pacer = Pacer::new(py, t.len().saturating_mul(rows), Instant::now());
        let mut interrupt = || match pacer.tick(py) {
            Ok(()) => false,
            Err(e) => {
                raised = Some(e);
                true
            }
        };
        let (sum, grads, roots) = match t.compute(
            &shared,
            &xv,
            rows,
            seed,
            &mut outv,
            threads(),
            &mut interrupt,
            lanes::PARALLEL_WORK,
        ) {
            Ok(r) => r,
            Err(LaneError::Interrupted) => {
                return Err(raised.expect("an interrupted run has the signal's exception"))
            }
            Err(e) => return Err(memory(e)),
        };
        if anomaly_on() {
            let no = t.n_outputs();
            let bad = |v: &f64| !v.is_finite();
            if let Some(r) = roots.iter().position(bad) {
                return Err(PyFloatingPointError::new_err(format!(
                    "detect_anomaly: BatchTape sample {r} gave root value {}",
                    fmt_f64(roots[r])
                )));
            }
            if let Some(i) = outv.iter().position(bad) {
                return Err(PyFloatingPointError::new_err(format!(
                    "detect_anomaly: BatchTape sample {} gave output {} = {}",
                    i / no,
                    i % no,
                    fmt_f64(outv[i])
                )));
            }
            if let Some((id, g)) = grads.as_ref().and_then(|g| t.first_non_finite_total(g)) {
                return Err(PyFloatingPointError::new_err(format!(
                    "detect_anomaly: BatchTape gave gradient total {} to shared leaf {}",
                    fmt_f64(g),
                    describe(&ARENA.lock(py), id)
                )));
            }
        }
        if let Some(g) = grads {
            t.add_grads(&mut ARENA.lock(py), &g);
        }
        ob.copy_from_slice(py, &outv)?;
        Ok(sum)
    }
}
