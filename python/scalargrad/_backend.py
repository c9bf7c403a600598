"""The backends and the calls that dispatch to one.

Everything in the package that needs "the backend of these Values" asks here, so
the modules above (``nn``, ``losses``, ``optim``, ``train``) import this module and
never the package itself: ``scalargrad/__init__.py`` only re-exports.

>>> a, b = Value(-4.0), Value(2.0)
>>> sum([a, b, 1.0]).data
-1.0
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from scalargrad import _core, reference

if TYPE_CHECKING:
    from scalargrad._core import Tape, Value

#: The backends, by name.
BACKENDS = ("rust", "reference")

_MODULES: dict[str, ModuleType] = {"rust": _core, "reference": reference}


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name`` (``"rust"`` or ``"reference"``): it has
    ``Value``, ``Tape``, ``sum`` and ``dot``."""
    try:
        return _MODULES[name]
    except (KeyError, TypeError):
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

if not TYPE_CHECKING:
    Value = _MODULES[backend].Value
    Tape = _MODULES[backend].Tape


def module_of(items: Iterable[Any]) -> ModuleType:
    """The backend module of the first Value among ``items`` (the default backend's
    if there is none)."""
    for x in items:
        name = getattr(type(x), "_backend", None)
        if name in _MODULES:
            return _MODULES[name]
    return _MODULES[backend]


def param_group(params: list[Any]) -> Optional[Any]:
    """An object that zeroes and steps all of ``params`` in one call into their
    backend (``zero_grad()``, ``sgd(...)``, ``adam(...)``, ``state()``), or ``None``
    when the optimizer should loop in Python. A backend offers one by providing a
    ``ParamGroup`` class (the rust backend does; the reference backend is the loop
    itself); the parameters must all be that backend's own ``Value``."""
    if not params:
        return None
    module = module_of(params[:1])
    group = getattr(module, "ParamGroup", None)
    if group is None or not all(type(p) is module.Value for p in params):
        return None
    return group(params)


def sum(values: Iterable[Any], start: Any = None) -> Value:  # noqa: A001 (mirrors builtins.sum)
    """One n-ary node ``((x1 + x2) + x3) + ...`` over Values and numbers, on the
    backend of the Values given. With ``start``, it is the first operand, as in
    Python's ``sum(values, start)``.

    >>> s = sum([Value(1.0), Value(2.0), 3.0])
    >>> s.data, s._op, len(s._prev)
    (6.0, 'sum', 3)
    """
    values = list(values)
    head = [] if start is None else [start]
    return module_of(head + values).sum(values, start)  # type: ignore[no-any-return]


def logsumexp(values: Iterable[Any]) -> Value:
    """One n-ary node ``log(exp(x1) + exp(x2) + ...)``, computed stably as
    ``m + log(exp(x1 - m) + exp(x2 - m) + ...)`` with ``m`` the largest value; its
    gradient to each operand is that operand's softmax. Any NaN gives NaN; otherwise a
    ``+inf`` operand gives ``+inf``, and all ``-inf`` (or none) give ``-inf``.

    >>> round(logsumexp([Value(1.0), Value(2.0), 3.0]).data, 6)
    3.407606
    """
    values = list(values)
    return module_of(values).logsumexp(values)  # type: ignore[no-any-return]


def dot(ws: Iterable[Any], xs: Iterable[Any]) -> Value:
    """One n-ary node ``((w1*x1 + w2*x2) + w3*x3) + ...``, on the backend of the
    Values given; its operands are ``w1..wn, x1..xn``.

    >>> dot([Value(1.0), Value(2.0)], [3.0, 4.0]).data
    11.0
    """
    ws, xs = list(ws), list(xs)
    return module_of(ws + xs).dot(ws, xs)  # type: ignore[no-any-return]
