//! `Value` handles as CPython objects: making the handle of a node, finding its
//! canonical handle, and recycling the memory of dead handles.
//!
//! Every op makes a Value handle and most are dropped soon after, so handles are
//! recycled through a free list of their own, installed as the type's `tp_alloc` and
//! `tp_free`. CPython calls both with the GIL held, so the list is a `GilCell` and
//! costs no lock (PyO3's `freelist` option takes a mutex on every call). A handle is
//! set up as `PyType_GenericAlloc` sets it up, but never tracked by the cyclic
//! collector: a Value holds no Python references, so the collector has nothing to
//! find in it, and keeping the handles out of its lists keeps collections cheap.

use super::gil::{gil_held, GilCell, ARENA};
use super::slots;
use super::value::Value;
use crate::arena::{Arena, NodeId};
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Wraps a node that already holds one reference for its new handle.
pub(super) fn wrap(py: Python<'_>, id: NodeId) -> PyResult<Py<Value>> {
    if slots::installed() {
        return slots::wrap_raw(py, id);
    }
    Ok(Bound::new(py, Value::of(id))?.unbind())
}

/// Makes `v` its node's canonical handle if the node has none yet.
#[inline]
pub(super) fn register(ar: &mut Arena, v: &Bound<'_, Value>) {
    let me = v.get();
    if !me.registered.load(Ordering::Relaxed) && ar.handle(me.id) == 0 {
        ar.set_handle(me.id, v.as_ptr() as usize);
        me.registered.store(true, Ordering::Relaxed);
    }
}

/// The canonical handle of a live node, made if it has none.
pub(super) fn handle_for(py: Python<'_>, id: NodeId) -> PyResult<Py<Value>> {
    let existing = {
        let mut ar = ARENA.lock(py);
        let h = ar.handle(id);
        if h != 0 {
            // SAFETY: as in `operand_handles`: the handle is alive while its slot is set.
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

/// The canonical handles of node `id`'s operands, in order (`Value._prev`).
pub(super) fn operand_handles(py: Python<'_>, id: NodeId) -> PyResult<Vec<Py<PyAny>>> {
    // Borrow the canonical handles that exist and count a reference for
    // each handle still to be made, all under one lock.
    let mut found: Vec<(NodeId, usize)> = {
        let mut ar = ARENA.lock(py);
        let ids = ar.operands(id);
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
        let v = Bound::new(py, Value::of(k))?;
        let existing = {
            let mut ar = ARENA.lock(py);
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
            out.push(unsafe { Bound::from_owned_ptr(py, existing as *mut ffi::PyObject).unbind() });
        } else {
            out.push(v.into_any().unbind());
        }
    }
    Ok(out)
}

// ---- recycling handles -----------------------------------------------------------

struct FreeHandles(Vec<*mut ffi::PyObject>);

// SAFETY: the pointers are only touched from tp_alloc and tp_free, with the GIL held.
unsafe impl Send for FreeHandles {}

static FREE_HANDLES: GilCell<FreeHandles> = GilCell::new(FreeHandles(Vec::new()));
pub(super) static VALUE_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
const FREE_HANDLES_MAX: usize = 4096;

pub(super) unsafe extern "C" fn value_alloc(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_alloc with the GIL held.
    let py = unsafe { gil_held() };
    if nitems == 0 && std::ptr::eq(subtype, VALUE_TYPE.load(Ordering::Relaxed)) {
        if let Some(obj) = FREE_HANDLES.lock(py).0.pop() {
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
    // SAFETY: CPython hands tp_free a deallocated object of this type, with the GIL
    // held; PyO3's tp_dealloc has already untracked it from the cyclic collector.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) != 0 {
            ffi::PyObject_GC_UnTrack(obj.cast());
        }
        if !keep_handle(gil_held(), obj) {
            ffi::PyObject_GC_Del(obj.cast());
        }
    }
}

/// Puts the memory of a dead, untracked handle on the free list; false when the
/// list is full (the caller frees it).
#[inline]
pub(super) fn keep_handle(py: Python<'_>, obj: *mut ffi::PyObject) -> bool {
    let mut free = FREE_HANDLES.lock(py);
    if free.0.len() < FREE_HANDLES_MAX {
        free.0.push(obj);
        return true;
    }
    false
}

/// Installs the free list on the `Value` type (once, at module initialisation);
/// returns the type.
pub(super) fn recycle_handles(py: Python<'_>) -> *mut ffi::PyTypeObject {
    let tp = py.get_type::<Value>().as_type_ptr();
    FREE_HANDLES.lock(py).0.reserve_exact(FREE_HANDLES_MAX);
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
