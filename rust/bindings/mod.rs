//! The Python extension module `scalargrad._core`. This folder is the only Rust
//! that knows about Python: the core (`arena`, `ops`, `backward`, `replay`,
//! `optim`) is plain Rust, and engine errors become Python exceptions here.
//!
//! - `gil`: the lock on the arena that every binding shares
//! - `convert`: Python numbers and arguments as engine inputs, and their messages
//! - `value`: the `Value` class
//! - `habits`: `int`, `round`, `bool` and `format` of a `Value`, as of its float
//! - `slots`: raw CPython slots for the hottest `Value` operators
//! - `handles`: `Value` handles as CPython objects, made, found and recycled
//! - `sweep`: long passes over the arena that let threads and Ctrl-C in
//! - `tape`: the `Tape` class
//! - `lanes`: the `LaneTape` class (batched lanes) and the thread count
//! - `params`: `ParamGroup` and bulk reads and writes
//! - `nary`: the `sum`, `dot` and `layer` builders
//! - `diagnostics`: `detect_anomaly` and arena statistics
//! - `grad_mode`: `no_grad()`, ops that record no graph

mod convert;
mod diagnostics;
mod gil;
mod grad_mode;
mod habits;
mod handles;
mod lanes;
mod nary;
mod params;
mod slots;
mod sweep;
mod tape;
mod value;

use crate::ops;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

// Every arena access relies on the GIL for mutual exclusion (see `gil::GilCell`).
#[cfg(Py_GIL_DISABLED)]
compile_error!("scalargrad._core needs the GIL; free-threaded Python is not supported");

#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<value::Value>()?;
    let tp = handles::recycle_handles(m.py());
    slots::install(m.py(), tp)?;
    m.add_class::<tape::Tape>()?;
    m.add_class::<params::ParamGroup>()?;
    m.add_class::<lanes::LaneTape>()?;
    m.add_function(wrap_pyfunction!(lanes::set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(lanes::get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(params::get_data, m)?)?;
    m.add_function(wrap_pyfunction!(params::get_grad, m)?)?;
    m.add_function(wrap_pyfunction!(params::_values_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(params::set_data, m)?)?;
    m.add_function(wrap_pyfunction!(nary::sum, m)?)?;
    m.add_function(wrap_pyfunction!(nary::dot, m)?)?;
    m.add_function(wrap_pyfunction!(nary::logsumexp, m)?)?;
    m.add_function(wrap_pyfunction!(nary::layer, m)?)?;
    m.add_function(wrap_pyfunction!(diagnostics::set_anomaly, m)?)?;
    m.add_function(wrap_pyfunction!(diagnostics::stats, m)?)?;
    m.add_function(wrap_pyfunction!(grad_mode::set_grad_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(value::leaf_copy, m)?)?;
    let kinds: Vec<&str> = ops::ALL.iter().map(|o| o.kind()).collect();
    m.add("OPS", PyTuple::new(m.py(), kinds)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
