//! scalargrad: a scalar reverse-mode autograd engine.
//!
//! The core (`arena`, `ops`, `backward`) is plain Rust with no Python in it, tested
//! by `cargo test`. The Python extension module `scalargrad._core` lives in
//! `bindings` and is compiled only with the `python` feature (maturin turns it on).

pub mod arena;
pub mod backward;
pub mod lanes;
pub mod ops;
pub mod optim;
pub mod replay;

#[cfg(test)]
mod proptests;

#[cfg(feature = "python")]
mod bindings;
