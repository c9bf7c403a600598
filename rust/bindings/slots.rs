//! Raw CPython slots for the hottest paths of a `Value`: `a + b`, `a - b`, `a * b`,
//! `a / b`, `-a`, and freeing a handle.
//!
//! A slot that PyO3 generates goes through its trampoline (panic guard, GIL count
//! in a thread-local, argument extraction, `__add__` then `__radd__`), and a handle
//! it makes or frees goes through its generic initializer and deallocator: about
//! 250 instructions an op on top of the engine's own work. The slots here cover
//! the common case directly: Values of this backend, exact floats and ints that fit
//! a float, anomaly checking off. Everything else (NumPy scalars, strings, the other
//! backend, huge ints, `detect_anomaly`, `no_grad`, errors) goes to the slot PyO3 made, so the
//! behaviour is that of `value.rs`, and so are the error messages.
//!
//! A handle is a PyO3 `Value` object: the slots write and read the `Value` struct
//! at the offset PyO3 put it, measured once on a real instance at start-up. If the
//! layout is not what is expected, the slots are not installed at all.

use super::diagnostics::anomaly_on;
use super::gil::{gil_held, ARENA};
use super::handles::{keep_handle, value_alloc, VALUE_TYPE};
use super::value::{leaf_copy, Value};
use crate::arena::{Arena, NodeId, Operand};
use crate::ops::Op;
use pyo3::ffi;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

/// What was there before: PyO3's slots, which the fast ones fall back to.
struct Originals {
    add: ffi::binaryfunc,
    sub: ffi::binaryfunc,
    mul: ffi::binaryfunc,
    div: ffi::binaryfunc,
    neg: ffi::unaryfunc,
    /// Where the `Value` struct sits inside its Python object.
    offset: usize,
}

static ORIGINALS: OnceLock<Originals> = OnceLock::new();

/// Whether the fast slots are in place (they are unless the layout was unexpected).
pub(super) fn installed() -> bool {
    ORIGINALS.get().is_some()
}

#[inline(always)]
fn originals() -> &'static Originals {
    // Installed before any slot can run (see `install`).
    ORIGINALS
        .get()
        .expect("scalargrad: slots used before install")
}

/// The `Value` inside a handle object.
///
/// # Safety
/// `obj` is an object of the `Value` type (alive, or being deallocated).
#[inline(always)]
unsafe fn contents<'a>(obj: *mut ffi::PyObject, offset: usize) -> &'a Value {
    unsafe { &*obj.cast::<u8>().add(offset).cast::<Value>() }
}

/// A fast-path operand: a node (with its handle object) or a number.
#[derive(Clone, Copy)]
enum Fast {
    Node(*mut ffi::PyObject, NodeId),
    Num(f64),
}

/// Reads `x` if it is a Value of this backend, an exact float, or an exact int that
/// a float holds; `None` sends the op to PyO3's slot.
///
/// # Safety
/// `x` is a live object and the GIL is held.
#[inline(always)]
unsafe fn fast(x: *mut ffi::PyObject, tp: *mut ffi::PyTypeObject, offset: usize) -> Option<Fast> {
    unsafe {
        if ffi::Py_TYPE(x) == tp {
            return Some(Fast::Node(x, contents(x, offset).id));
        }
        if ffi::PyFloat_CheckExact(x) != 0 {
            return Some(Fast::Num(ffi::PyFloat_AS_DOUBLE(x)));
        }
        if ffi::PyLong_CheckExact(x) != 0 {
            let v = ffi::PyLong_AsDouble(x);
            if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
                // Too large for a float: the general path says so, naming the op.
                ffi::PyErr_Clear();
                return None;
            }
            return Some(Fast::Num(v));
        }
        None
    }
}

/// Builds `x op y` if both are fast operands; `None` when the general path must.
///
/// # Safety
/// `x` and `y` are live objects and the GIL is held.
#[inline(always)]
unsafe fn fast_binary(
    x: *mut ffi::PyObject,
    y: *mut ffi::PyObject,
    op: Op,
    o: &Originals,
) -> Option<*mut ffi::PyObject> {
    if anomaly_on() {
        return None;
    }
    let tp = VALUE_TYPE.load(Ordering::Relaxed);
    if !super::grad_mode::enabled() {
        return None; // no_grad(): the general path makes a leaf
    }
    let (a, b) = unsafe { (fast(x, tp, o.offset)?, fast(y, tp, o.offset)?) };
    let operand = |f: Fast| match f {
        Fast::Node(_, id) => Operand::Node(id),
        Fast::Num(c) => Operand::Const(c),
    };
    let id = {
        // SAFETY: the caller holds the GIL.
        let mut ar = ARENA.try_lock(unsafe { gil_held() })?;
        for f in [a, b] {
            if let Fast::Node(obj, _) = f {
                register_raw(&mut ar, obj, o.offset);
            }
        }
        let id = ar.binary(op, operand(a), operand(b)).ok()?;
        ar.incref(id);
        id
    };
    Some(unsafe { new_handle(id, tp, o.offset) })
}

/// Makes the handle object `obj` its node's canonical handle if the node has none.
#[inline(always)]
fn register_raw(ar: &mut Arena, obj: *mut ffi::PyObject, offset: usize) {
    // SAFETY: `obj` is a live Value object (the caller checked its type).
    let me = unsafe { contents(obj, offset) };
    if !me.registered.load(Ordering::Relaxed) && ar.handle(me.id) == 0 {
        ar.set_handle(me.id, obj as usize);
        me.registered.store(true, Ordering::Relaxed);
    }
}

/// A new handle for node `id`, which already holds the handle's reference; null
/// with a Python error set (and the node released) if no memory is left.
///
/// # Safety
/// The GIL is held, the arena is not borrowed, `tp` is the `Value` type.
unsafe fn new_handle(id: NodeId, tp: *mut ffi::PyTypeObject, offset: usize) -> *mut ffi::PyObject {
    unsafe {
        let obj = value_alloc(tp, 0);
        if obj.is_null() {
            ARENA.lock(gil_held()).release(id);
            return obj;
        }
        // The `Value` is the whole of the object's contents for a frozen, `Send`
        // pyclass without dict or weakref slots; `install` checked the layout.
        obj.cast::<u8>()
            .add(offset)
            .cast::<Value>()
            .write(Value::of(id));
        obj
    }
}

/// A handle for node `id` (holding one reference for it), as PyO3 would make it.
pub(super) fn wrap_raw(py: Python<'_>, id: NodeId) -> PyResult<Py<Value>> {
    let o = originals();
    let tp = VALUE_TYPE.load(Ordering::Relaxed);
    // SAFETY: the GIL is held (`py`) and the arena is not borrowed by the caller.
    unsafe {
        let obj = new_handle(id, tp, o.offset);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?
            .cast_into_unchecked::<Value>()
            .unbind())
    }
}

/// Runs a fast path; a panic (a bug) becomes a Python exception, not an abort.
#[inline(always)]
fn guarded(
    f: impl FnOnce() -> Option<*mut ffi::PyObject>,
    fallback: impl FnOnce() -> *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Some(obj)) => obj,
        Ok(None) => fallback(),
        Err(_) => {
            // SAFETY: the GIL is held in every slot.
            unsafe {
                ffi::PyErr_SetString(
                    ffi::PyExc_RuntimeError,
                    c"scalargrad: internal error in a Value operator".as_ptr(),
                );
            }
            std::ptr::null_mut()
        }
    }
}

macro_rules! binary_slot {
    ($name:ident, $op:expr, $orig:ident) => {
        unsafe extern "C" fn $name(
            x: *mut ffi::PyObject,
            y: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            let o = originals();
            // SAFETY: CPython calls number slots with the GIL held and live operands.
            guarded(
                || unsafe { fast_binary(x, y, $op, o) },
                || unsafe { (o.$orig)(x, y) },
            )
        }
    };
}

binary_slot!(nb_add, Op::Add, add);
binary_slot!(nb_sub, Op::Sub, sub);
binary_slot!(nb_mul, Op::Mul, mul);
binary_slot!(nb_div, Op::Div, div);

unsafe extern "C" fn nb_neg(x: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let o = originals();
    let fast_neg = || {
        if anomaly_on() {
            return None;
        }
        let tp = VALUE_TYPE.load(Ordering::Relaxed);
        if !super::grad_mode::enabled() {
            return None;
        }
        // SAFETY: CPython calls nb_negative with the GIL held on a Value.
        let id = {
            let mut ar = ARENA.try_lock(unsafe { gil_held() })?;
            register_raw(&mut ar, x, o.offset);
            let a = unsafe { contents(x, o.offset) }.id;
            let id = ar.unary(Op::Neg, a, [0.0; 2]).ok()?;
            ar.incref(id);
            id
        };
        Some(unsafe { new_handle(id, tp, o.offset) })
    };
    // SAFETY: as above.
    guarded(fast_neg, || unsafe { (o.neg)(x) })
}

/// Frees a handle: the `Value`'s drop releases its node, and the memory goes back
/// to the free list of handles (`keep_handle`) or to CPython.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    let o = originals();
    // SAFETY: CPython deallocates with the GIL held; `obj` is a Value whose
    // contents were written (by PyO3 or `new_handle`) and are dropped once, here.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
        std::ptr::drop_in_place(obj.cast::<u8>().add(o.offset).cast::<Value>());
    }));
    if dropped.is_err() {
        // A bug (the arena was in use): the node may still name this object as its
        // handle, so the object is leaked with its node rather than reused. Any
        // exception being raised (this may run while one unwinds) is kept.
        // SAFETY: the GIL is held.
        unsafe {
            let raised = take_raised();
            ffi::PyErr_SetString(
                ffi::PyExc_RuntimeError,
                c"scalargrad: a Value was freed while the arena was in use; its node is leaked"
                    .as_ptr(),
            );
            ffi::PyErr_WriteUnraisable(std::ptr::null_mut());
            restore_raised(raised);
        }
        return;
    }
    // SAFETY: the object is dead: its memory goes back to the free list of handles
    // (it was never tracked by the collector: `value_alloc`), or to CPython.
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        if !keep_handle(gil_held(), obj) {
            ffi::PyObject_GC_Del(obj.cast());
        }
        // Instances of a heap type hold a reference to it.
        ffi::Py_DECREF(tp.cast());
    }
}

/// The exception being raised, if any, taken out of the thread state (raw, unlike
/// `PyErr::take`, which would resume a Rust panic carried by a `PanicException`).
///
/// # Safety
/// The GIL is held; the result goes back with `restore_raised`.
#[cfg(Py_3_12)]
unsafe fn take_raised() -> *mut ffi::PyObject {
    unsafe { ffi::PyErr_GetRaisedException() }
}

#[cfg(Py_3_12)]
unsafe fn restore_raised(raised: *mut ffi::PyObject) {
    unsafe { ffi::PyErr_SetRaisedException(raised) }
}

#[cfg(not(Py_3_12))]
type Raised = [*mut ffi::PyObject; 3];

#[cfg(not(Py_3_12))]
unsafe fn take_raised() -> Raised {
    let mut e = [std::ptr::null_mut(); 3];
    unsafe { ffi::PyErr_Fetch(&mut e[0], &mut e[1], &mut e[2]) };
    e
}

#[cfg(not(Py_3_12))]
unsafe fn restore_raised([t, v, tb]: Raised) {
    unsafe { ffi::PyErr_Restore(t, v, tb) }
}

/// Installs the slots on the `Value` type (once, at module initialisation, before
/// any instance exists but the probe).
pub(super) fn install(py: Python<'_>, tp: *mut ffi::PyTypeObject) -> PyResult<()> {
    // Where PyO3 puts the struct: measured on a real instance.
    let probe = leaf_copy(py, 0.0, 0.0, "")?.into_bound(py);
    let offset = (probe.get() as *const Value as usize) - (probe.as_ptr() as usize);
    drop(probe);
    // SAFETY: `tp` is the ready `Value` type; slots are read on every use, not
    // cached, and each replacement keeps its slot's contract.
    unsafe {
        let basic = (*tp).tp_basicsize as usize;
        let num = (*tp).tp_as_number;
        // The `Value` must be all there is after the object header: with more (a
        // borrow flag, a dict or weakref slot) PyO3 has state the slots do not keep.
        if offset + std::mem::size_of::<Value>() != basic || num.is_null() {
            return Ok(()); // an unexpected layout: keep PyO3's slots
        }
        let (Some(add), Some(sub), Some(mul), Some(div), Some(neg), Some(_)) = (
            (*num).nb_add,
            (*num).nb_subtract,
            (*num).nb_multiply,
            (*num).nb_true_divide,
            (*num).nb_negative,
            (*tp).tp_dealloc,
        ) else {
            return Ok(());
        };
        let o = Originals {
            add,
            sub,
            mul,
            div,
            neg,
            offset,
        };
        if ORIGINALS.set(o).is_err() {
            return Ok(()); // already installed (a second module initialisation)
        }
        (*num).nb_add = Some(nb_add);
        (*num).nb_subtract = Some(nb_sub);
        (*num).nb_multiply = Some(nb_mul);
        (*num).nb_true_divide = Some(nb_div);
        (*num).nb_negative = Some(nb_neg);
        (*tp).tp_dealloc = Some(dealloc);
    }
    Ok(())
}
