"""The reference backend: the engine in pure Python.

The same nodes, ops and backward order as the Rust backend (``scalargrad._core``),
written to be read. Every op follows the op table of DESIGN.md section 4 in the
same order of floating-point operations as ``rust/ops.rs``, so the two backends
give the same bits. Nodes hold no closures and form no reference cycles, so
Python's reference counting frees a graph as soon as it is unreachable.

Where plain Python would raise (``1 / 0``, ``math.log(0)``, ``math.exp(1000)``) or
return a complex number (``(-8) ** (1/3)``), the helpers below return the IEEE-754
result that C's libm (and so the Rust backend) gives.

>>> from scalargrad.reference import Value
>>> a = Value(2.0)
>>> b = a * a + 1.0
>>> b.backward()
>>> a.grad
4.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Callable, Optional

__all__ = [
    "OPS",
    "Tape",
    "Value",
    "dot",
    "get_data",
    "layer",
    "get_grad",
    "set_anomaly",
    "set_data",
    "sum",
]

#: Every op kind, in the order of the op table (the same tuple as ``_core.OPS``).
OPS = (
    "leaf",
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow_const",
    "rpow_const",
    "pow",
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "relu",
    "abs",
    "clamp",
    "sum",
    "dot",
)

_SYMBOL = {
    "leaf": "",
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "pow": "**",
    "relu": "ReLU",
}

_anomaly = False
_INF = math.inf
_NAN = math.nan
_builtin_sum = sum


def set_anomaly(on: bool) -> bool:
    """Turns anomaly checking on or off; returns the previous setting."""
    global _anomaly
    previous, _anomaly = _anomaly, bool(on)
    return previous


# ---- IEEE-754 arithmetic where Python raises ---------------------------------


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return _NAN
        return math.copysign(_INF, a) * math.copysign(1.0, b)


def _odd_integer(b: float) -> bool:
    return math.isfinite(b) and abs(math.fmod(b, 2.0)) == 1.0


def _pow(a: float, b: float) -> float:
    """C's ``pow``: ``math.pow`` with its exceptions turned into IEEE results."""
    try:
        return math.pow(a, b)
    except OverflowError:
        return -_INF if a < 0.0 and _odd_integer(b) else _INF
    except ValueError:
        if a == 0.0:  # a pole: 0 ** negative
            return -_INF if math.copysign(1.0, a) < 0.0 and _odd_integer(b) else _INF
        return _NAN  # negative ** non-integer


def _exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return _INF


def _log(a: float) -> float:
    try:
        return math.log(a)
    except ValueError:
        return -_INF if a == 0.0 else _NAN


def _sign(a: float) -> float:
    if a > 0.0:
        return 1.0
    if a < 0.0:
        return -1.0
    if a == 0.0:
        return 0.0
    return _NAN


def _fmt(x: float) -> str:
    return repr(x)


def _fmt_const(c: float) -> str:
    if math.isfinite(c) and c == int(c) and abs(c) < 1e15:
        return str(int(c))
    return repr(c)


# ---- the Value class -----------------------------------------------------------


class Value:
    """A scalar node of the graph: a float, its gradient, the op that made it and
    its operands.

    ``Value(data, label="")``. ``data``, ``grad`` and ``label`` read and write;
    ``_op`` and ``_prev`` name the op and its operands as micrograd does.
    """

    __slots__ = ("_data", "_grad", "_label", "_prev", "_kind", "_c")
    _backend = "reference"

    def __init__(self, data: Any, label: str = "") -> None:
        self._data = _number("Value()", "data", data)
        self._grad = 0.0
        self._label = _check_label(label)
        self._prev: tuple[Value, ...] = ()
        self._kind = "leaf"
        self._c: tuple[float, ...] = ()

    # -- attributes --

    @property
    def data(self) -> float:
        """The node's value."""
        return self._data

    @data.setter
    def data(self, x: Any) -> None:
        self._data = _number("data", "data", x)

    @property
    def grad(self) -> float:
        """d(root)/d(this node), accumulated by ``backward()``."""
        return self._grad

    @grad.setter
    def grad(self, x: Any) -> None:
        self._grad = _number("grad", "grad", x)

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, label: str) -> None:
        self._label = _check_label(label)

    @property
    def _op(self) -> str:
        """The op that made this node, as micrograd names it (``"+"``, ``"**2"``, ``"ReLU"``)."""
        k = self._kind
        if k == "pow_const":
            return "**" + _fmt_const(self._c[0])
        if k == "rpow_const":
            return _fmt_const(self._c[0]) + "**"
        return _SYMBOL.get(k, k)

    @property
    def _consts(self) -> list[float]:
        return list(self._c)

    def __repr__(self) -> str:
        if self._label:
            return f"Value(data={self._data!r}, grad={self._grad!r}, label={self._label!r})"
        return f"Value(data={self._data!r}, grad={self._grad!r})"

    def __float__(self) -> float:
        return self._data

    # A copy is a new leaf with this node's data, grad and label, detached from the
    # graph (the same for copy.copy, copy.deepcopy and pickling).
    def __copy__(self) -> Value:
        return _leaf_copy(self._data, self._grad, self._label)

    def __deepcopy__(self, memo: dict) -> Value:
        return self.__copy__()

    def __reduce__(self) -> tuple:
        return (_leaf_copy, (self._data, self._grad, self._label))

    # Identity for hashing (a Value is a dict key by node); comparisons by data.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data == y

    def __ne__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data != y

    def __lt__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data < y

    def __le__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data <= y

    def __gt__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data > y

    def __ge__(self, other: object) -> Any:
        y = _compare_operand(other)
        return NotImplemented if y is None else self._data >= y

    # -- binary ops: numbers become leaves, as in micrograd --

    def __add__(self, other: Any) -> Value:
        o = _operand("+", other)
        if o is None:
            return NotImplemented
        return _binary("add", self, o, self._data + o._data)

    def __radd__(self, other: Any) -> Value:
        o = _operand("+", other)
        if o is None:
            return NotImplemented
        return _binary("add", o, self, o._data + self._data)

    def __sub__(self, other: Any) -> Value:
        o = _operand("-", other)
        if o is None:
            return NotImplemented
        return _binary("sub", self, o, self._data - o._data)

    def __rsub__(self, other: Any) -> Value:
        o = _operand("-", other)
        if o is None:
            return NotImplemented
        return _binary("sub", o, self, o._data - self._data)

    def __mul__(self, other: Any) -> Value:
        o = _operand("*", other)
        if o is None:
            return NotImplemented
        return _binary("mul", self, o, self._data * o._data)

    def __rmul__(self, other: Any) -> Value:
        o = _operand("*", other)
        if o is None:
            return NotImplemented
        return _binary("mul", o, self, o._data * self._data)

    def __truediv__(self, other: Any) -> Value:
        o = _operand("/", other)
        if o is None:
            return NotImplemented
        return _binary("div", self, o, _div(self._data, o._data))

    def __rtruediv__(self, other: Any) -> Value:
        o = _operand("/", other)
        if o is None:
            return NotImplemented
        return _binary("div", o, self, _div(o._data, self._data))

    def __pow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        if isinstance(other, Value):
            return _binary("pow", self, other, _pow(self._data, other._data))
        c = _const("**", other)
        if c is None:
            return NotImplemented
        return _unary("pow_const", self, _pow(self._data, c), (c,))

    def __rpow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        c = _const("**", other)
        if c is None:
            return NotImplemented
        return _unary("rpow_const", self, _pow(c, self._data), (c,))

    # -- unary ops --

    def __neg__(self) -> Value:
        return _unary("neg", self, -self._data)

    def __pos__(self) -> Value:
        return self

    def __abs__(self) -> Value:
        return self.abs()

    def exp(self) -> Value:
        """``exp(x)``."""
        return _unary("exp", self, _exp(self._data))

    def log(self) -> Value:
        """Natural logarithm; ``log(0) = -inf``, ``log(-1) = nan``."""
        return _unary("log", self, _log(self._data))

    def tanh(self) -> Value:
        """Hyperbolic tangent."""
        return _unary("tanh", self, math.tanh(self._data))

    def sigmoid(self) -> Value:
        """``1 / (1 + exp(-x))``."""
        return _unary("sigmoid", self, 1.0 / (1.0 + _exp(-self._data)))

    def relu(self) -> Value:
        """``max(x, 0)``; NaN stays NaN."""
        a = self._data
        return _unary("relu", self, 0.0 if a < 0.0 else a)

    def abs(self) -> Value:
        """``|x|``, with gradient ``sign(x)`` (0 at 0)."""
        return _unary("abs", self, math.fabs(self._data))

    def clamp(self, lo: Any, hi: Any) -> Value:
        """``min(max(x, lo), hi)``; the gradient passes where ``lo <= x <= hi``."""
        lo = _number("clamp", "lo", lo)
        hi = _number("clamp", "hi", hi)
        if not lo <= hi:
            raise ValueError(f"clamp: need lo <= hi, got lo={_fmt(lo)} and hi={_fmt(hi)}")
        return _unary("clamp", self, min(max(self._data, lo), hi), (lo, hi))

    # -- backward --

    def backward(self) -> None:
        """Adds d(self)/d(node) into the ``grad`` of every node this one depends on,
        seeding ``self.grad`` with 1.0. Iterative: any depth works."""
        order = _order(self)
        self._grad = 1.0
        _sweep(order)


# ---- construction helpers ----------------------------------------------------------

_new = object.__new__


def _node(kind: str, prev: tuple, data: float, c: tuple = ()) -> Value:
    v = _new(Value)
    v._data = data
    v._grad = 0.0
    v._label = ""
    v._prev = prev
    v._kind = kind
    v._c = c
    return v


def _leaf_copy(data: float, grad: float, label: str) -> Value:
    v = Value(data, label)
    v._grad = grad
    return v


def _leaf(x: float) -> Value:
    return _node("leaf", (), x)


def _binary(kind: str, a: Value, b: Value, out: float) -> Value:
    if _anomaly and not math.isfinite(out):
        _forward_anomaly(_SYMBOL[kind], (a, b), out)
    return _node(kind, (a, b), out)


def _unary(kind: str, a: Value, out: float, c: tuple = ()) -> Value:
    if _anomaly and not math.isfinite(out):
        _forward_anomaly(kind, (a,), out)
    return _node(kind, (a,), out, c)


def _check_label(label: Any) -> str:
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    if not label.isascii():
        label.encode("utf-8")  # as the rust backend, which stores labels as UTF-8
    return label


def _number(op: str, what: str, x: Any) -> float:
    """A Python number as float: float, int or anything with ``__float__``."""
    if type(x) is float:
        return x
    if isinstance(x, Value) or getattr(type(x), "_backend", None) is not None:
        raise TypeError(f"{op}: {what} must be a number, not a Value")
    if not isinstance(x, (str, bytes)):
        try:
            return float(x)
        except OverflowError:
            raise ValueError(f"{op}: integer {x} is too large to convert to float") from None
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{op}: {what} must be a number, got {type(x).__name__}")


def _const(op: str, x: Any) -> Optional[float]:
    """A number operand of ``op`` as float; None if ``x`` is not a number."""
    tx = type(x)
    if tx is float:
        return x
    if tx is int or isinstance(x, int):
        try:
            return float(x)
        except OverflowError:
            raise ValueError(f"{op}: integer {x} is too large to convert to float") from None
    if getattr(tx, "_backend", None) is not None:
        raise TypeError(
            f"{op}: cannot combine a reference Value with a rust Value; "
            "build both operands on one backend"
        )
    if x is None or isinstance(x, _CONTAINERS):
        # Builtin containers would otherwise meet Python's sequence-repeat fallback
        # ("can't multiply sequence by non-int"), which hides the op; say it plainly.
        # Other types get NotImplemented, so NumPy arrays and friends can take over.
        raise TypeError(f"unsupported operand type(s) for {op}: 'Value' and '{tx.__name__}'")
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


_CONTAINERS = (str, bytes, list, tuple, dict, set, frozenset)


def _operand(op: str, x: Any) -> Optional[Value]:
    """A Value operand, a number wrapped as a leaf, or None (NotImplemented)."""
    if isinstance(x, Value):
        return x
    c = _const(op, x)
    return None if c is None else _leaf(c)


def _compare_operand(x: Any) -> Any:
    if isinstance(x, Value):
        return x._data
    if isinstance(x, int):
        return x  # compared exactly, as Python compares a float with an int
    if isinstance(x, (str, bytes)):
        return None
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def _collect(op: str, items: Iterable[Any]) -> list[Value]:
    out = []
    for i, x in enumerate(items):
        if isinstance(x, Value):
            out.append(x)
            continue
        if getattr(type(x), "_backend", None) is not None:
            _const(op, x)  # raises the mixed-backends error
        try:
            out.append(_leaf(_number(op, f"element {i}", x)))
        except TypeError:
            raise TypeError(
                f"{op}: element {i} must be a Value or a number, got {type(x).__name__}"
            ) from None
    return out


def sum(values: Iterable[Any], start: Any = None) -> Value:  # noqa: A001 (mirrors builtins.sum)
    """One n-ary node ``((x1 + x2) + x3) + ...``; with ``start``, it is the first
    operand (as in Python's ``sum(values, start)``). Empty: 0.0."""
    xs = _collect("sum", ([start] if start is not None else []))
    xs += _collect("sum", values)
    out = 0.0
    if xs:
        out = xs[0]._data
        for x in xs[1:]:
            out = out + x._data
    if _anomaly and not math.isfinite(out):
        _forward_anomaly("sum", xs, out)
    return _node("sum", tuple(xs), out)


def dot(ws: Iterable[Any], xs: Iterable[Any]) -> Value:
    """One n-ary node ``((w1*x1 + w2*x2) + w3*x3) + ...``; operands ``w1..wn, x1..xn``."""
    w = _collect("dot", ws)
    x = _collect("dot", xs)
    if len(w) != len(x):
        raise ValueError(f"dot: ws and xs differ in length ({len(w)} and {len(x)})")
    out = 0.0
    if w:
        out = w[0]._data * x[0]._data
        for i in range(1, len(w)):
            out = out + w[i]._data * x[i]._data
    if _anomaly and not math.isfinite(out):
        _forward_anomaly("dot", w + x, out)
    return _node("dot", tuple(w) + tuple(x), out)


_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "linear": None}


def layer(
    ws: Iterable[Iterable[Value]], bs: Iterable[Value], x: Iterable[Any], activation: str
) -> list[Value]:
    """A dense layer in one call: ``[act(dot(w, x) + b) for w, b in zip(ws, bs)]``,
    the nodes ``Neuron`` builds one by one. Numbers in ``x`` become leaves once."""
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"layer: unknown activation {activation!r}; expected relu, tanh, sigmoid or linear"
        )
    xs = _collect("layer", x)
    rows = [list(w) for w in ws]
    biases = list(bs)
    for w in rows:
        if len(w) != len(xs) or not all(isinstance(v, Value) for v in w):
            raise ValueError(
                f"layer: each weight row must hold {len(xs)} Values (one per input), got {len(w)}"
            )
    if len(biases) != len(rows) or not all(isinstance(b, Value) for b in biases):
        raise ValueError(f"layer: need one bias Value per neuron ({len(rows)}), got {len(biases)}")
    act = _ACTIVATIONS[activation]
    outs = []
    for w, b in zip(rows, biases):
        out = dot(w, xs) + b
        outs.append(getattr(out, act)() if act else out)
    return outs


def get_data(values: Iterable[Value]) -> list[float]:
    """The ``data`` of many Values."""
    return [v._data for v in _values("get_data", values)]


def get_grad(values: Iterable[Value]) -> list[float]:
    """The ``grad`` of many Values."""
    return [v._grad for v in _values("get_grad", values)]


def set_data(values: Iterable[Value], data: Iterable[float]) -> None:
    """Sets the ``data`` of many Values; checks everything first."""
    vs = _values("set_data", values)
    xs = [float(x) for x in data]
    if len(vs) != len(xs):
        raise ValueError(f"set_data: {len(vs)} values but {len(xs)} numbers")
    for v, x in zip(vs, xs):
        v._data = x


def _values(op: str, values: Iterable[Any]) -> list[Value]:
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, Value):
            raise TypeError(f"{op}: element {i} must be a reference Value, got {type(v).__name__}")
    return out


# ---- backward: one function per row of the op table ----------------------------


def _order(root: Value) -> list[Value]:
    """The reverse of the post-order of an iterative depth-first walk from ``root``
    that visits operands in operand order (micrograd's ``build_topo``, reversed,
    without recursion)."""
    seen = {id(root)}
    post = []
    stack = [(root, iter(root._prev))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append((child, iter(child._prev)))
                break
        else:
            stack.pop()
            post.append(node)
    post.reverse()
    return post


def _sweep(order: list[Value]) -> None:
    check = _anomaly
    for v in order:
        k = v._kind
        if k != "leaf":
            _BACKWARD[k](v)
            if check:
                _check_grads(v)


def _bw_add(v: Value) -> None:
    a, b = v._prev
    g = v._grad
    a._grad += g
    b._grad += g


def _bw_sub(v: Value) -> None:
    a, b = v._prev
    g = v._grad
    a._grad += g
    b._grad += -g


def _bw_mul(v: Value) -> None:
    a, b = v._prev
    g = v._grad
    a._grad += g * b._data
    b._grad += g * a._data


def _bw_div(v: Value) -> None:
    a, b = v._prev
    g = v._grad
    a._grad += _div(g, b._data)
    b._grad += _div(-g * v._data, b._data)


def _bw_neg(v: Value) -> None:
    v._prev[0]._grad += -v._grad


def _bw_pow_const(v: Value) -> None:
    (a,) = v._prev
    c = v._c[0]
    a._grad += v._grad * (c * _pow(a._data, c - 1.0))


def _bw_rpow_const(v: Value) -> None:
    v._prev[0]._grad += v._grad * (v._data * _log(v._c[0]))


def _bw_pow(v: Value) -> None:
    a, b = v._prev
    g = v._grad
    x, y = a._data, b._data
    a._grad += g * (y * _pow(x, y - 1.0))
    b._grad += g * (v._data * _log(x))


def _bw_exp(v: Value) -> None:
    v._prev[0]._grad += v._grad * v._data


def _bw_log(v: Value) -> None:
    (a,) = v._prev
    a._grad += _div(v._grad, a._data)


def _bw_tanh(v: Value) -> None:
    out = v._data
    v._prev[0]._grad += v._grad * (1.0 - out * out)


def _bw_sigmoid(v: Value) -> None:
    out = v._data
    v._prev[0]._grad += v._grad * (out * (1.0 - out))


def _bw_relu(v: Value) -> None:
    v._prev[0]._grad += v._grad * (1.0 if v._data > 0.0 else 0.0)


def _bw_abs(v: Value) -> None:
    (a,) = v._prev
    a._grad += v._grad * _sign(a._data)


def _bw_clamp(v: Value) -> None:
    (a,) = v._prev
    lo, hi = v._c
    a._grad += v._grad * (1.0 if lo <= a._data <= hi else 0.0)


def _bw_sum(v: Value) -> None:
    g = v._grad
    for x in v._prev:
        x._grad += g


def _bw_dot(v: Value) -> None:
    g = v._grad
    prev = v._prev
    n = len(prev) // 2
    for i in range(n):
        w, x = prev[i], prev[n + i]
        w._grad += g * x._data
        x._grad += g * w._data


_BACKWARD: dict[str, Callable[[Value], None]] = {
    "add": _bw_add,
    "sub": _bw_sub,
    "mul": _bw_mul,
    "div": _bw_div,
    "neg": _bw_neg,
    "pow_const": _bw_pow_const,
    "rpow_const": _bw_rpow_const,
    "pow": _bw_pow,
    "exp": _bw_exp,
    "log": _bw_log,
    "tanh": _bw_tanh,
    "sigmoid": _bw_sigmoid,
    "relu": _bw_relu,
    "abs": _bw_abs,
    "clamp": _bw_clamp,
    "sum": _bw_sum,
    "dot": _bw_dot,
}


# ---- replay: forward of every row of the op table, from the operands' values ----


def _fw_sum(v: Value) -> float:
    prev = v._prev
    if not prev:
        return 0.0
    out = prev[0]._data
    for x in prev[1:]:
        out = out + x._data
    return out


def _fw_dot(v: Value) -> float:
    prev = v._prev
    n = len(prev) // 2
    if n == 0:
        return 0.0
    out = prev[0]._data * prev[n]._data
    for i in range(1, n):
        out = out + prev[i]._data * prev[n + i]._data
    return out


def _relu(a: float) -> float:
    return 0.0 if a < 0.0 else a


_FORWARD: dict[str, Callable[[Value], float]] = {
    "add": lambda v: v._prev[0]._data + v._prev[1]._data,
    "sub": lambda v: v._prev[0]._data - v._prev[1]._data,
    "mul": lambda v: v._prev[0]._data * v._prev[1]._data,
    "div": lambda v: _div(v._prev[0]._data, v._prev[1]._data),
    "neg": lambda v: -v._prev[0]._data,
    "pow_const": lambda v: _pow(v._prev[0]._data, v._c[0]),
    "rpow_const": lambda v: _pow(v._c[0], v._prev[0]._data),
    "pow": lambda v: _pow(v._prev[0]._data, v._prev[1]._data),
    "exp": lambda v: _exp(v._prev[0]._data),
    "log": lambda v: _log(v._prev[0]._data),
    "tanh": lambda v: math.tanh(v._prev[0]._data),
    "sigmoid": lambda v: 1.0 / (1.0 + _exp(-v._prev[0]._data)),
    "relu": lambda v: _relu(v._prev[0]._data),
    "abs": lambda v: math.fabs(v._prev[0]._data),
    "clamp": lambda v: min(max(v._prev[0]._data, v._c[0]), v._c[1]),
    "sum": _fw_sum,
    "dot": _fw_dot,
}


class Tape:
    """A recorded graph that can be re-run: ``forward()`` recomputes every node from
    the current leaf values, ``backward()`` differentiates it again. Python control
    flow taken while the graph was built is frozen, as with ``torch.jit.trace``.
    The same API and results as the Rust backend's ``Tape``."""

    __slots__ = ("_order",)

    def __init__(self, root: Value) -> None:
        if not isinstance(root, Value):
            raise TypeError(f"Tape: root must be a reference Value, got {type(root).__name__}")
        self._order = _order(root)

    @property
    def root(self) -> Value:
        return self._order[0]

    def __len__(self) -> int:
        return len(self._order)

    def forward(self) -> None:
        """Recomputes every node from the current leaf values."""
        check = _anomaly
        for v in reversed(self._order):
            k = v._kind
            if k != "leaf":
                out = v._data = _FORWARD[k](v)
                if check and not math.isfinite(out):
                    _forward_anomaly(k, v._prev, out)

    def zero_grad(self) -> None:
        """Sets the gradient of every recorded node (parameters included) to 0."""
        for v in self._order:
            v._grad = 0.0

    def backward(self) -> None:
        """Seeds the root with 1.0 and adds into every recorded node's gradient."""
        self._order[0]._grad = 1.0
        _sweep(self._order)

    def __reduce__(self) -> tuple:
        raise TypeError("cannot pickle 'Tape' object: record a new Tape from the rebuilt graph")

    def run(self) -> float:
        """``forward()``, ``zero_grad()``, ``backward()``; returns the root's new value."""
        self.forward()
        self.zero_grad()
        self.backward()
        return self._order[0]._data


# ---- anomaly messages ------------------------------------------------------------


def _describe(v: Value) -> str:
    return f"{v._label}={_fmt(v._data)}" if v._label else _fmt(v._data)


def _forward_anomaly(name: str, operands: Iterable[Value], out: float) -> None:
    args = ", ".join(_describe(v) for v in operands)
    raise FloatingPointError(f"detect_anomaly: {name} produced {_fmt(out)} from operands ({args})")


def _check_grads(v: Value) -> None:
    for x in v._prev:
        if not math.isfinite(x._grad):
            args = ", ".join(_describe(p) for p in v._prev)
            raise FloatingPointError(
                f"detect_anomaly: backward of {v._kind} gave gradient {_fmt(x._grad)} "
                f"to operand {_describe(x)} (operands: {args})"
            )


del _builtin_sum
