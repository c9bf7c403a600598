"""scalargrad: a scalar-valued reverse-mode autograd engine.

micrograd's ``Value`` API, with the graph stored and differentiated in a Rust
arena. Two backends share one API:

- ``"rust"`` (the default): ``scalargrad._core``, nodes in a Rust arena.
- ``"reference"``: ``scalargrad.reference``, the same engine in pure Python.

``SCALARGRAD_BACKEND=reference`` in the environment makes ``scalargrad.Value``
(and everything built on it) the reference backend; ``scalargrad.backend_module``
gives either one explicitly, so a program can hold both.

>>> from scalargrad import Value
>>> a, b = Value(-4.0), Value(2.0)
>>> c = (a * b + b ** 3).relu()
>>> c.backward()
>>> c.data, a.grad, b.grad
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from scalargrad import _core, reference

__all__ = [
    "BACKENDS",
    "BatchTape",
    "History",
    "OPS",
    "Value",
    "__version__",
    "backend",
    "backend_module",
    "detect_anomaly",
    "evaluate",
    "fit",
    "get_data",
    "get_grad",
    "get_num_threads",
    "predict",
    "set_data",
    "set_num_threads",
    "softmax",
    "dot",
    "sum",
]

__version__: str = _core.__version__

#: The backends, by name.
BACKENDS = ("rust", "reference")

#: Every op kind of the op table (DESIGN.md section 4), in order.
OPS: tuple[str, ...] = tuple(_core.OPS)

_MODULES: dict[str, ModuleType] = {"rust": _core, "reference": reference}


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name`` (``"rust"`` or ``"reference"``): it has
    ``Value``, ``sum`` and ``dot``."""
    try:
        return _MODULES[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}"
        ) from None


def _backend_from_env() -> str:
    name = os.environ.get("SCALARGRAD_BACKEND", "").strip().lower() or "rust"
    if name not in _MODULES:
        raise ValueError(
            f"SCALARGRAD_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}"
        )
    return name


#: The backend ``scalargrad.Value`` is: ``"rust"`` unless ``SCALARGRAD_BACKEND`` says otherwise.
backend: str = _backend_from_env()

Value = _MODULES[backend].Value


def _module_of(items: Iterable[Any]) -> ModuleType:
    for x in items:
        name = getattr(type(x), "_backend", None)
        if name in _MODULES:
            return _MODULES[name]
    return _MODULES[backend]


def sum(values: Iterable[Any], start: Any = None) -> Any:  # noqa: A001 (mirrors builtins.sum)
    """One n-ary node ``((x1 + x2) + x3) + ...`` over Values and numbers, on the
    backend of the Values given. With ``start``, it is the first operand, as in
    Python's ``sum(values, start)``.

    >>> s = sum([Value(1.0), Value(2.0), 3.0])
    >>> s.data, s._op, len(s._prev)
    (6.0, 'sum', 3)
    """
    values = list(values)
    head = [] if start is None else [start]
    return _module_of(head + values).sum(values, start)


def dot(ws: Iterable[Any], xs: Iterable[Any]) -> Any:
    """One n-ary node ``((w1*x1 + w2*x2) + w3*x3) + ...``, on the backend of the
    Values given; its operands are ``w1..wn, x1..xn``.

    >>> dot([Value(1.0), Value(2.0)], [3.0, 4.0]).data
    11.0
    """
    ws, xs = list(ws), list(xs)
    return _module_of(ws + xs).dot(ws, xs)


def get_data(values: Iterable[Any]) -> Any:
    """The ``data`` of many Values as a NumPy array, in one call into the backend.

    >>> get_data([Value(1.0), Value(2.5)])
    array([1. , 2.5])
    """
    import numpy as np

    values = list(values)
    return np.array(_module_of(values).get_data(values), dtype=float)


def get_grad(values: Iterable[Any]) -> Any:
    """The ``grad`` of many Values as a NumPy array, in one call into the backend."""
    import numpy as np

    values = list(values)
    return np.array(_module_of(values).get_grad(values), dtype=float)


def set_data(values: Iterable[Any], data: Any) -> None:
    """Sets the ``data`` of many Values from an array or sequence of numbers (same
    length), in one call into the backend; nothing changes if the lengths differ."""
    values = list(values)
    data = data.tolist() if hasattr(data, "tolist") else [float(x) for x in data]
    _module_of(values).set_data(values, data)


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within this block, the first non-finite value an op produces, or the first
    non-finite gradient ``backward()`` produces, raises ``FloatingPointError``
    naming the op and its operands' labels and values. Both backends.

    >>> with detect_anomaly():
    ...     Value(0.0, label="x").log()
    Traceback (most recent call last):
    ...
    FloatingPointError: detect_anomaly: log produced -inf from operands (x=0.0)
    """
    previous = (_core.set_anomaly(True), reference.set_anomaly(True))
    try:
        yield
    finally:
        _core.set_anomaly(previous[0])
        reference.set_anomaly(previous[1])


def __getattr__(name: str) -> Any:
    # The training API loads on first use, so `import scalargrad` stays light.
    if name in ("fit", "predict", "evaluate", "History"):
        from scalargrad import train

        return getattr(train, name)
    if name in ("BatchTape", "set_num_threads", "get_num_threads"):
        from scalargrad import batch

        return getattr(batch, name)
    if name == "softmax":
        from scalargrad.losses import softmax

        return softmax
    raise AttributeError(f"module 'scalargrad' has no attribute {name!r}")
