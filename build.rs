//! With the Python bindings: the `cfg`s PyO3 sets for the interpreter being built
//! for (`Py_GIL_DISABLED` and friends), so `bindings/mod.rs` can refuse free-threaded
//! Python at compile time.

fn main() {
    #[cfg(feature = "python")]
    pyo3_build_config::use_pyo3_cfgs();
}
