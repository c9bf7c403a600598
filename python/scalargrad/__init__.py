"""scalargrad: a scalar-valued reverse-mode autograd engine.

micrograd's ``Value`` API, with the graph stored and differentiated in a Rust
arena. Two backends share one API:

- ``"rust"`` (the default): ``scalargrad._core``, nodes in a Rust arena.
- ``"reference"``: ``scalargrad.reference``, the same engine in pure Python.

``SCALARGRAD_BACKEND=reference`` in the environment makes ``scalargrad.Value`` and
``scalargrad.Tape`` (and everything built on them) the reference backend's;
``scalargrad.backend_module`` gives either one explicitly, so a program can hold both.

>>> from scalargrad import Value
>>> a, b = Value(-4.0), Value(2.0)
>>> c = (a * b + b ** 3).relu()
>>> c.backward()
>>> c.data, a.grad, b.grad
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from scalargrad import _core, reference  # noqa: F401 (the reference backend, scalargrad.reference)
from scalargrad._backend import (
    BACKENDS,
    backend,
    backend_module,
    dot,
    logsumexp,
    module_of,
    sum,
)
from scalargrad._grad_mode import both_backends, no_grad
from scalargrad.batch import BatchTape, get_num_threads, set_num_threads
from scalargrad.losses import softmax
from scalargrad.train import History, evaluate, fit, predict

if TYPE_CHECKING:
    # Statically, ``Value`` and ``Tape`` are the rust backend's (``_core.pyi``); the
    # reference backend's have the same API. At run time they are those of the
    # backend ``SCALARGRAD_BACKEND`` chose.
    from scalargrad._core import Tape, Value
else:
    from scalargrad._backend import Tape, Value

__all__ = [
    "BACKENDS",
    "BatchTape",
    "History",
    "OPS",
    "Tape",
    "Value",
    "__version__",
    "backend",
    "backend_module",
    "detect_anomaly",
    "dot",
    "evaluate",
    "fit",
    "get_data",
    "get_grad",
    "get_num_threads",
    "logsumexp",
    "no_grad",
    "predict",
    "set_data",
    "set_num_threads",
    "softmax",
    "sum",
]

__version__: str = _core.__version__

#: Every op kind of the op table (DESIGN.md section 4), in order.
OPS: tuple[str, ...] = tuple(_core.OPS)


def get_data(values: Iterable[Value]) -> Any:
    """The ``data`` of many Values as a NumPy array, in one call into the backend.

    >>> get_data([Value(1.0), Value(2.5)])
    array([1. , 2.5])
    """
    if type(values) is list and values and type(values[0]) is _RustValue:
        # A list of rust Values (the usual case): no copy, no backend search, and
        # the array views a new buffer of float64s instead of converting a list.
        frombuffer, float64 = _FROMBUFFER or _numpy_frombuffer()
        return frombuffer(_core._values_buffer(values, False), float64)
    import numpy as np

    values = list(values)
    return np.array(module_of(values).get_data(values), dtype=float)


def get_grad(values: Iterable[Value]) -> Any:
    """The ``grad`` of many Values as a NumPy array, in one call into the backend."""
    if type(values) is list and values and type(values[0]) is _RustValue:
        frombuffer, float64 = _FROMBUFFER or _numpy_frombuffer()  # as in get_data
        return frombuffer(_core._values_buffer(values, True), float64)
    import numpy as np

    values = list(values)
    return np.array(module_of(values).get_grad(values), dtype=float)


#: ``(numpy.frombuffer, numpy.float64)`` once NumPy is imported (on first use, so
#: importing scalargrad does not import NumPy).
_FROMBUFFER: tuple[Any, Any] | None = None


def _numpy_frombuffer() -> tuple[Any, Any]:
    global _FROMBUFFER
    import numpy as np

    _FROMBUFFER = (np.frombuffer, np.float64)
    return _FROMBUFFER


def set_data(values: Iterable[Value], data: Any) -> None:
    """Sets the ``data`` of many Values from an array or sequence of numbers (same
    length), in one call into the backend; nothing changes if the lengths differ or
    an element is not a number."""
    if type(values) is list and values and type(values[0]) is _RustValue:
        # A list of rust Values (the usual case): no copy, no backend search; the
        # backend checks every element and reads a list of floats in place.
        _core.set_data(values, data if type(data) is list else _numbers(data))
        return
    values = list(values)
    module_of(values).set_data(values, _numbers(data))


def _numbers(data: Any) -> list[Any]:
    """``data`` (an array or a sequence) as a list of its elements."""
    return data.tolist() if hasattr(data, "tolist") else list(data)


_RustValue = _core.Value


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within this block, the first non-finite value an op produces, or the first
    non-finite gradient ``backward()`` produces, raises ``FloatingPointError``
    naming the op and its operands' labels and values (for a ``BatchTape`` run: the
    row or the shared leaf). Both backends; per thread: other threads are not
    checked, and their blocks do not end this one.

    >>> with detect_anomaly():
    ...     Value(0.0, label="x").log()
    Traceback (most recent call last):
    ...
    FloatingPointError: detect_anomaly: log produced -inf from operands (x=0.0)
    """
    with both_backends("set_anomaly", True):
        yield
