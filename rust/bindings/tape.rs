//! The `Tape` class: a recorded graph re-run forward and backward from Python.

use super::convert::{number_arg, type_name};
use super::diagnostics::anomaly_on;
use super::gil::{gil_held, GilCell, ARENA};
use super::handles::handle_for;
use super::sweep::{forward_interruptibly, sweep_interruptibly, Pacer, Snapshot};
use super::value::{arena_error, Value};
use crate::arena::NodeId;
use crate::ops::{canon, Op};
use crate::replay;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyList};
use std::sync::OnceLock;
use std::time::Instant;

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
///
/// With `inputs` (leaves, in order), `run(values)` sets them and runs in one call:
///
/// >>> x = Value(0.0); y = (w * x - 1.0) ** 2
/// >>> tape = Tape(y, inputs=[x])
/// >>> tape.run([4.0])  # x.data = 4.0, then run()
/// 1.0
#[pyclass(frozen, name = "Tape", module = "scalargrad._core")]
pub struct Tape {
    // Immutable once recorded, so no lock: a long replay that lets other threads
    // run between chunks never holds anything they could wait on.
    inner: Option<replay::Tape>,
    /// The root's handle, made on first use, so `root` is the same object each time
    /// (a Value refers to no Python object, so this makes no cycle).
    root: OnceLock<Py<Value>>,
    /// The leaves `run(values)` sets, in order (held, so their ids stay theirs).
    inputs: Vec<Py<Value>>,
    input_ids: Vec<NodeId>,
    /// The working arrays of `run`, kept so a small tape's run allocates nothing.
    /// Only used with the GIL held (`run` never gives it up on this path).
    scratch: GilCell<replay::Scratch>,
}

/// A `Tape` keeps `run`'s working arrays between runs up to this many bytes.
const KEEP_SCRATCH_BYTES: usize = 1 << 20;

impl Drop for Tape {
    fn drop(&mut self) {
        if let Some(t) = self.inner.take() {
            // SAFETY: a Tape is dropped by its deallocator, with the GIL held.
            let py = unsafe { gil_held() };
            t.release(&mut ARENA.lock(py));
        }
    }
}

/// `Tape`'s `inputs`: distinct leaves, held.
fn leaf_inputs(xs: &Bound<'_, PyAny>) -> PyResult<Vec<Py<Value>>> {
    let mut out: Vec<Py<Value>> = Vec::new();
    for (k, v) in xs.try_iter()?.enumerate() {
        let v = v?;
        let v = v.cast_exact::<Value>().map_err(|_| {
            PyTypeError::new_err(format!(
                "Tape inputs: element {k} must be a rust Value, got {}",
                type_name(&v)
            ))
        })?;
        let id = v.get().id;
        let op = ARENA.lock(v.py()).op(id);
        if op != Op::Leaf {
            return Err(PyValueError::new_err(format!(
                "Tape: input {k} must be a leaf, got a node made by '{}'",
                op.kind()
            )));
        }
        if let Some(j) = out.iter().position(|u| u.get().id == id) {
            return Err(PyValueError::new_err(format!(
                "Tape: inputs {j} and {k} are the same Value"
            )));
        }
        out.push(v.clone().unbind());
    }
    Ok(out)
}

impl Tape {
    /// Sets the inputs' `data` from `values`, one number each; checks everything
    /// first, so an error changes nothing.
    fn set_inputs(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let ids = &self.input_ids;
        if ids.is_empty() {
            return Err(PyValueError::new_err(
                "Tape.run: values given, but the tape has no inputs: record it as \
                 Tape(root, inputs=[...]) to set them with run(values)",
            ));
        }
        // The usual case, a list of exact floats: checked, then read in place (no
        // Python code runs in between: type checks and float reads only).
        if let Ok(l) = values.cast_exact::<PyList>() {
            // SAFETY: every index is below the list's length.
            let item = |i| unsafe { l.get_item_unchecked(i) };
            if l.len() == ids.len()
                && (0..ids.len()).all(|i| item(i).is_exact_instance_of::<PyFloat>())
            {
                let mut ar = ARENA.lock(py);
                for (i, &id) in ids.iter().enumerate() {
                    // SAFETY: checked above: an exact float.
                    ar.data[id as usize] = unsafe { item(i).cast_unchecked::<PyFloat>() }.value();
                }
                return Ok(());
            }
        }
        let iter = values.try_iter().map_err(|_| {
            PyTypeError::new_err(format!(
                "Tape.run: values must be a sequence of numbers (one per input), got {}",
                type_name(values)
            ))
        })?;
        let mut xs = Vec::with_capacity(ids.len());
        for (i, x) in iter.enumerate() {
            xs.push(number_arg(
                "Tape.run",
                &format!("element {i} of values"),
                &x?,
            )?);
        }
        if xs.len() != ids.len() {
            return Err(PyValueError::new_err(format!(
                "Tape.run: expected {} numbers (one per input), got {}",
                ids.len(),
                xs.len()
            )));
        }
        let mut ar = ARENA.lock(py);
        for (&id, x) in ids.iter().zip(xs) {
            ar.data[id as usize] = x;
        }
        Ok(())
    }

    fn with<R>(&self, f: impl FnOnce(&replay::Tape) -> R) -> R {
        f(self
            .inner
            .as_ref()
            .expect("a Tape is recorded at construction"))
    }

    /// Seeds the root with 1.0 and adds into every recorded node's gradient
    /// (zeroing them first with `zero`); on an error (Ctrl-C, `detect_anomaly`)
    /// every gradient is as it was before.
    fn sweep(&self, py: Python<'_>, zero: bool) -> PyResult<()> {
        let check = anomaly_on();
        self.with(|t| {
            let mut pacer = Pacer::new(py, t.len(), Instant::now());
            let saved = Snapshot::take(py, t.order(), check || pacer.is_active())?;
            {
                let mut ar = ARENA.lock(py);
                if zero {
                    t.zero_grad(&mut ar);
                }
                ar.grad[t.root() as usize] = 1.0;
            }
            let swept = sweep_interruptibly(py, t.order(), check, &mut pacer);
            saved.restore_if_err(py, t.order(), &swept);
            swept
        })
    }
}

#[pymethods]
impl Tape {
    #[new]
    #[pyo3(signature = (root, inputs = None))]
    fn new(root: &Bound<'_, PyAny>, inputs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let root = root.cast_exact::<Value>().map_err(|_| {
            PyTypeError::new_err(format!(
                "Tape: root must be a rust Value, got {}",
                type_name(root)
            ))
        })?;
        let inputs = match inputs {
            Some(xs) => leaf_inputs(xs)?,
            None => Vec::new(),
        };
        let input_ids = inputs.iter().map(|v| v.get().id).collect();
        let tape =
            replay::Tape::record(&mut ARENA.lock(root.py()), root.get().id).map_err(arena_error)?;
        Ok(Tape {
            inner: Some(tape),
            root: OnceLock::from(root.clone().unbind()),
            inputs,
            input_ids,
            scratch: GilCell::new(replay::Scratch::default()),
        })
    }

    /// The leaves `run(values)` sets, in order (empty without `inputs`).
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inputs.iter().map(|v| v.clone_ref(py)))
    }

    /// The recorded root (the same object each time).
    #[getter]
    fn root(&self, py: Python<'_>) -> PyResult<Py<Value>> {
        if let Some(r) = self.root.get() {
            return Ok(r.clone_ref(py));
        }
        let id = self.with(|t| t.root());
        let r = handle_for(py, id)?;
        Ok(self.root.get_or_init(|| r).clone_ref(py))
    }

    fn __len__(&self) -> usize {
        self.with(|t| t.len())
    }

    /// Recomputes every node from the current leaf values.
    fn forward(&self, py: Python<'_>) -> PyResult<()> {
        let check = anomaly_on();
        self.with(|t| forward_interruptibly(py, t.order(), check))
    }

    /// Sets the gradient of every recorded node (parameters included) to 0.
    fn zero_grad(&self, py: Python<'_>) {
        self.with(|t| t.zero_grad(&mut ARENA.lock(py)))
    }

    /// Seeds the root with 1.0 and adds into every recorded node's gradient. An
    /// interrupted call leaves every gradient as it was.
    fn backward(&self, py: Python<'_>) -> PyResult<()> {
        self.sweep(py, false)
    }

    /// `forward()`, `zero_grad()`, `backward()`; returns the root's new value. An
    /// interrupted run leaves every gradient as it was (values are recomputed by
    /// the next run). `values` (one number per input, for a tape recorded with
    /// `inputs`) first sets the inputs' `data`, as `set_data(inputs, values)` does.
    #[pyo3(signature = (values = None))]
    fn run(&self, py: Python<'_>, values: Option<&Bound<'_, PyAny>>) -> PyResult<f64> {
        if let Some(values) = values {
            self.set_inputs(py, values)?;
        }
        if !anomaly_on() {
            // Tapes of up to a million nodes run compiled, in one go.
            let done = self.with(|t| {
                let mut ar = ARENA.lock(py);
                // Nothing in a compiled run gives up the GIL, so the cell is free.
                let mut kept = self.scratch.try_lock(py);
                let mut fresh = replay::Scratch::default();
                let scratch = kept.as_deref_mut().unwrap_or(&mut fresh);
                let done = t.run_compiled_with(&mut ar, scratch);
                if scratch.capacity_bytes() > KEEP_SCRATCH_BYTES {
                    *scratch = replay::Scratch::default();
                }
                let done = done.map_err(arena_error)?;
                Ok::<_, PyErr>(done.then(|| canon(ar.data[t.root() as usize])))
            })?;
            if let Some(value) = done {
                return Ok(value);
            }
        }
        self.forward(py)?;
        self.sweep(py, true)?;
        Ok(self.with(|t| canon(ARENA.lock(py).data[t.root() as usize])))
    }
}
