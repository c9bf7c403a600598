//! The lock on the arena that every binding shares, and the rule for using it.
//!
//! All nodes live in one arena behind `ARENA`. Dropping a `Value` takes the lock,
//! and dropping or creating any Python object can run arbitrary code (the
//! collector, finalizers), so no Python object is created or dropped while the lock
//! is held: every binding takes it in a block that only touches Rust data.

use crate::arena::Arena;
use pyo3::Python;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

pub(super) static ARENA: GilCell<Arena> = GilCell::new(Arena::new());

/// The arena's lock. Every access happens with the GIL held (all entry points are
/// Python calls or deallocations, and none releases the GIL), so the GIL already
/// serialises them and a mutex would only add two atomic read-modify-writes per
/// op. `lock` and `try_lock` take the `Python` token as proof that the GIL is held.
/// The `busy` flag turns the one remaining hazard, re-entry from code run while
/// the arena is borrowed, into a panic (a Python exception) instead of aliased
/// `&mut`. The module declares that it needs the GIL (`gil_used`), and does not
/// build for free-threaded Python at all.
pub(super) struct GilCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: see above: only used with the GIL held, and `busy` forbids aliasing.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(super) const fn new(value: T) -> Self {
        GilCell {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub(super) fn lock(&self, py: Python<'_>) -> GilGuard<'_, T> {
        self.try_lock(py)
            .expect("scalargrad: the arena was re-entered while in use")
    }

    /// The guard, or `None` if the cell is in use (for paths that have a fallback).
    #[inline]
    pub(super) fn try_lock(&self, _py: Python<'_>) -> Option<GilGuard<'_, T>> {
        // Plain load and store, not a read-modify-write: the GIL orders them.
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        self.busy.store(true, Ordering::Relaxed);
        Some(GilGuard { cell: self })
    }
}

pub(super) struct GilGuard<'a, T> {
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

/// The token for code that CPython calls with the GIL held but that receives no
/// token: a pyclass's `Drop` (run by its deallocator) and raw type slots.
///
/// # Safety
/// The GIL is held by the calling thread.
#[inline(always)]
pub(super) unsafe fn gil_held<'py>() -> Python<'py> {
    unsafe { Python::assume_attached() }
}
