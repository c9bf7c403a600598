"""Argument conversion, validation and error messages for the reference backend.

Every function here turns what a user passed into what the engine computes with
(a float, a label, a list of nodes), or raises the error the Rust backend raises
for the same input, word for word; ``detect_anomaly``'s messages are here too.
The engine (``reference.py``) keeps only its one-line type checks.

A node is recognised by its class's ``_backend`` attribute (both backends' Value
classes have one), so this module needs no import of either engine; where a
function must tell the reference's own nodes apart, the caller passes its class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any, Callable, Optional

# Builtin containers would otherwise meet Python's sequence-repeat fallback
# ("can't multiply sequence by non-int"), which hides the op; they get a plain error.
_CONTAINERS = (str, bytes, list, tuple, dict, set, frozenset)


def label(x: Any) -> str:
    """A node's label: a str that encodes as UTF-8."""
    if not isinstance(x, str):
        raise TypeError(f"label must be a str, got {type(x).__name__}")
    if not x.isascii():
        x.encode("utf-8")  # as the rust backend, which stores labels as UTF-8
    return x


def number(op: str, what: str, x: Any) -> float:
    """A Python number as float: float, int or anything with ``__float__`` (whose own
    error, if it raises one, passes through, as ``float(x)`` lets it)."""
    if type(x) is float:
        return x
    if getattr(type(x), "_backend", None) is not None:
        raise TypeError(f"{op}: {what} must be a number, not a Value")
    if isinstance(x, int):
        return _int(op, x)
    if not _converts(x):
        raise TypeError(f"{op}: {what} must be a number, got {type(x).__name__}")
    return float(x)


def _converts(x: Any) -> bool:
    """Whether ``float(x)`` is meant to work: ``x``'s type has ``__float__`` or ``__index__``
    (strings and bytes, which ``float`` parses, are not numbers here)."""
    tx = type(x)
    return not isinstance(x, (str, bytes)) and (
        hasattr(tx, "__float__") or hasattr(tx, "__index__")
    )


def _int(op: str, x: int) -> float:
    """An int as float; too large is a ValueError naming ``op``."""
    try:
        return float(x)
    except OverflowError:
        raise ValueError(f"{op}: integer {int_text(x)} is too large to convert to float") from None


def int_text(x: int) -> str:
    """An int for a message: its digits, or ``~10**k`` for a huge one (printing an int
    beyond Python's digit limit fails), the same on both backends."""
    if x.bit_length() <= 128:
        return str(x)
    return f"{'-' if x < 0 else ''}~10**{math.floor(math.log10(abs(x)))}"


def const(op: str, x: Any) -> Optional[float]:
    """A number operand of ``op`` (``"+"``, ``"**"``, ...) as float; None if ``x`` is
    not a number, so that the operator returns NotImplemented and NumPy arrays and
    friends can take over."""
    tx = type(x)
    if tx is float:
        return x
    if tx is int or isinstance(x, int):
        return _int(op, x)
    if getattr(tx, "_backend", None) is not None:
        raise TypeError(
            f"{op}: cannot combine a reference Value with a rust Value; "
            "build both operands on one backend"
        )
    if x is None or isinstance(x, _CONTAINERS):
        raise TypeError(f"unsupported operand type(s) for {op}: 'Value' and '{tx.__name__}'")
    if not _converts(x):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None  # NumPy arrays of many numbers: NumPy takes over


def compared(x: Any) -> Any:
    """What a Value's data is compared with (not a Value: the caller reads its data);
    None when ``x`` is no number, so that the comparison returns NotImplemented."""
    if isinstance(x, int):
        return x  # compared exactly, as Python compares a float with an int
    if isinstance(x, (str, bytes)):
        return None
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def comparison(compare: Callable[[float, Any], bool]) -> Callable:
    """A comparison method of a node class: data with another node's data or a number."""

    def method(self: Any, other: Any) -> Any:
        y = other._data if isinstance(other, type(self)) else compared(other)
        return NotImplemented if y is None else compare(self._data, y)

    method.__name__ = f"__{compare.__name__}__"
    return method


def operand(symbol: str, x: Any, node: type, leaf: Callable[[float], Any]) -> Any:
    """The other operand of a binary operator ``symbol``: a ``node`` as it is, a number
    as a new leaf made by ``leaf``; None (NotImplemented) for anything else."""
    if isinstance(x, node):
        return x
    c = const(symbol, x)
    return None if c is None else leaf(c)


def operands(op: str, items: Iterable[Any], node: type, leaf: Callable[[float], Any]) -> list:
    """The operands of an n-ary op: nodes of class ``node`` as they are, numbers
    as new leaves made by ``leaf``."""
    out = []
    for i, x in enumerate(items):
        if isinstance(x, node):
            out.append(x)
            continue
        if getattr(type(x), "_backend", None) is not None:
            const(op, x)  # raises the mixed-backends error
        if not isinstance(x, (float, int)) and not _converts(x):
            raise TypeError(
                f"{op}: element {i} must be a Value or a number, got {type(x).__name__}"
            )
        out.append(leaf(number(op, f"element {i}", x)))
    return out


def dot_operands(ws: Iterable[Any], xs: Iterable[Any], node: type, leaf: Callable) -> tuple:
    """``dot``'s operands ``w1..wn, x1..xn``, as ``operands`` makes them."""
    w = operands("dot", ws, node, leaf)
    x = operands("dot", xs, node, leaf)
    if len(w) != len(x):
        raise ValueError(f"dot: ws and xs differ in length ({len(w)} and {len(x)})")
    return tuple(w) + tuple(x)


def floats(op: str, n: int, data: Iterable[Any]) -> list[float]:
    """``n`` numbers as floats (``set_data``'s data, one per Value)."""
    xs = [number(op, f"element {i} of data", x) for i, x in enumerate(data)]
    if n != len(xs):
        raise ValueError(f"{op}: {n} values but {len(xs)} numbers")
    return xs


def nodes(op: str, items: Iterable[Any], node: type) -> list:
    """A list of nodes of class ``node`` (for the bulk getters and setters)."""
    out = list(items)
    for i, v in enumerate(out):
        if not isinstance(v, node):
            raise TypeError(f"{op}: element {i} must be a reference Value, got {type(v).__name__}")
    return out


def bounds(lo: Any, hi: Any) -> tuple[float, float]:
    """``clamp``'s bounds as floats, ``lo <= hi``."""
    lo = number("clamp", "lo", lo)
    hi = number("clamp", "hi", hi)
    if not lo <= hi:
        raise ValueError(f"clamp: need lo <= hi, got lo={lo!r} and hi={hi!r}")
    return lo, hi


_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "linear": None}


def activation(name: Any) -> Optional[str]:
    """``layer``'s activation: the name of the Value method to apply, or None for linear."""
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"layer: unknown activation {name!r}; expected relu, tanh, sigmoid or linear"
        )
    return _ACTIVATIONS[name]


def layer_shapes(rows: list[list[Any]], biases: list[Any], n_inputs: int, node: type) -> None:
    """Checks ``layer``'s parameters: one weight row of ``n_inputs`` nodes and one
    bias node per neuron."""
    for w in rows:
        if len(w) != n_inputs or not all(isinstance(v, node) for v in w):
            raise ValueError(
                f"layer: each weight row must hold {n_inputs} Values (one per input), got {len(w)}"
            )
    if len(biases) != len(rows) or not all(isinstance(b, node) for b in biases):
        raise ValueError(f"layer: need one bias Value per neuron ({len(rows)}), got {len(biases)}")


# ---- how messages and micrograd's ``_op`` name an op ---------------------------------

#: An op's name where it is not its kind.
SYMBOL = {"leaf": "", "add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "relu": "ReLU"}


def micrograd_op(kind: str, c: tuple[float, ...]) -> str:
    """micrograd's ``_op`` for a node of ``kind`` with constants ``c`` (``"**2"``, ``"ReLU"``):
    ``SYMBOL``'s name, the constant added for ``**c`` and ``c**``."""
    if kind == "pow_const":
        return "**" + _fmt_const(c[0])
    if kind == "rpow_const":
        return _fmt_const(c[0]) + "**"
    return SYMBOL.get(kind, kind)


def _fmt_const(c: float) -> str:
    if math.isfinite(c) and c == int(c) and abs(c) < 1e15:
        return str(int(c))
    return repr(c)


# ---- detect_anomaly's messages, the same as the Rust backend's ----------------------


def describe(v: Any) -> str:
    """A node as messages show it: ``label=value``, or the value."""
    return f"{v._label}={v.data!r}" if v._label else repr(v.data)


def forward_anomaly(name: str, operands: Iterable[Any], out: float) -> None:
    """Raises for a non-finite output ``out`` of op ``name``."""
    args = ", ".join(describe(v) for v in operands)
    raise FloatingPointError(f"detect_anomaly: {name} produced {out!r} from operands ({args})")


def check_grads(v: Any, name: str) -> None:
    """Raises if the backward of node ``v`` (op ``name``) left a gradient non-finite."""
    for x in v._prev:
        if not math.isfinite(x._grad):
            args = ", ".join(describe(p) for p in v._prev)
            raise FloatingPointError(
                f"detect_anomaly: backward of {name} gave gradient {x._grad!r} "
                f"to operand {describe(x)} (operands: {args})"
            )


# ---- a Value's number habits, as of its float ``data`` ------------------------------


def item(v: Any) -> float:
    """``data`` as a float, as PyTorch's ``Tensor.item()``. A Value also formats,
    converts and tests as its float does (``bool`` as a 0-d tensor: non-zero is true):

    >>> from scalargrad.reference import Value
    >>> v = Value(2.71828)
    >>> v.item(), f"{v:.2f}", int(v), round(v), round(v, 1), bool(v), bool(Value(0.0))
    (2.71828, '2.72', 2, 3, 2.7, True, False)
    """
    return v.data  # type: ignore[no-any-return]


def as_int(v: Any) -> int:
    return int(v.data)  # NaN and infinities raise, as for a float


def as_round(v: Any, ndigits: Optional[Any] = None) -> Any:
    try:
        return round(v.data, ndigits)
    except TypeError:
        raise TypeError(
            f"round: ndigits must be an integer or None, got {type(ndigits).__name__}"
        ) from None


def as_bool(v: Any) -> bool:
    return v.data != 0.0  # NaN is true, as for a float


def as_format(v: Any, spec: str) -> str:
    if not spec:
        return str(v)
    try:
        return format(v.data, spec)
    except ValueError as e:
        raise ValueError(f"format(Value, {spec!r}): {e}") from None


class ThreadFlag:
    """A switch each thread sets for itself (``detect_anomaly``, ``no_grad``), with a
    count of the threads that have it on, so a hot path tests one number first."""

    def __init__(self) -> None:
        self.here = threading.local()
        self.count = 0
        self._lock = threading.Lock()

    def on(self) -> bool:
        return self.count > 0 and getattr(self.here, "on", False)

    def set(self, on: bool) -> bool:
        """Sets the calling thread's switch; returns its previous setting."""
        previous, self.here.on = getattr(self.here, "on", False), bool(on)
        with self._lock:
            self.count += int(bool(on)) - int(previous)
        return previous
