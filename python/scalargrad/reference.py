"""The reference backend: the engine in pure Python.

The same nodes, ops and backward order as the Rust backend (``scalargrad._core``),
written to be read. The op table states every op once, its forward beside its
derivative, in the order and with the floating-point operations of DESIGN.md
section 4 and ``rust/ops.rs``, so both backends give the same bits. Nodes hold no
closures and form no reference cycles, so reference counting frees a graph as soon
as it is unreachable. Argument checks and messages live in ``scalargrad._convert``,
C's results where Python's ``math`` raises (``log(0)``) in ``scalargrad._ieee``.

>>> from scalargrad.reference import Value
>>> a = Value(2.0)
>>> b = a * a + 1.0
>>> b.backward()
>>> a.grad
4.0
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any, Callable, Optional

from scalargrad import _convert, _optable
from scalargrad._convert import const as _const
from scalargrad._convert import forward_anomaly as _forward_anomaly
from scalargrad._convert import number as _number
from scalargrad._ieee import div as _div  # noqa: F401 (the op table's formulas use these)
from scalargrad._ieee import exp as _exp  # noqa: F401
from scalargrad._ieee import log as _log  # noqa: F401
from scalargrad._ieee import pow as _pow  # noqa: F401
from scalargrad._ieee import sign as _sign  # noqa: F401
from scalargrad._optable import Op

__all__ = ["OPS", "Tape", "Value", "dot", "get_data", "get_grad", "layer"]
__all__ += ["set_anomaly", "set_data", "sum"]

_anomaly = False


def set_anomaly(on: bool) -> bool:
    """Turns anomaly checking on or off; returns the previous setting."""
    global _anomaly
    previous, _anomaly = _anomaly, bool(on)
    return previous


# ---- the op table ------------------------------------------------------------------
#
# One row per op, in the order of DESIGN.md section 4 and rust/ops.rs: its operands,
# its forward and, beside it, the contribution to each operand's gradient, first
# operand first (g is the output's gradient, out its value; c, lo, hi are constants).
# ``_optable.compile_rows`` writes each unary and binary row out as the functions
# ``op.make`` (Value's methods), ``op.replay`` (Tape) and ``op.backward`` (the
# sweep); ``print(op.source)`` shows them. The n-ary rows loop: see _sum and _dot.

# micrograd's ``_op`` where it is not the kind (``**c`` and ``c**`` add the constant).
_SYMBOL = {"leaf": "", "add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "relu": "ReLU"}

# fmt: off
_TABLE = [
    # kind          operands   forward: out =             contributions, first operand first
    Op("leaf",      ""),
    Op("add",       "a b",     "a + b",                   "g", "g"),
    Op("sub",       "a b",     "a - b",                   "g", "-g"),
    Op("mul",       "a b",     "a * b",                   "g * b", "g * a"),
    Op("div",       "a b",     "_div(a, b)",              "_div(g, b)", "_div(-g * out, b)"),
    Op("neg",       "a",       "-a",                      "-g"),
    Op("pow_const", "a c",     "_pow(a, c)",              "g * (c * _pow(a, c - 1.0))"),
    Op("rpow_const", "a c",    "_pow(c, a)",              "g * (out * _log(c))"),
    Op("pow",       "a b",     "_pow(a, b)",              "g * (b * _pow(a, b - 1.0))",
                                                          "g * (out * _log(a))"),
    Op("exp",       "a",       "_exp(a)",                 "g * out"),
    Op("log",       "a",       "_log(a)",                 "_div(g, a)"),
    Op("tanh",      "a",       "math.tanh(a)",            "g * (1.0 - out * out)"),
    Op("sigmoid",   "a",       "1.0 / (1.0 + _exp(-a))",  "g * (out * (1.0 - out))"),
    # `a < 0` is false for NaN and -0.0, which both pass through.
    Op("relu",      "a",       "0.0 if a < 0.0 else a",   "g * (1.0 if out > 0.0 else 0.0)"),
    Op("abs",       "a",       "math.fabs(a)",            "g * _sign(a)"),
    # min and max keep their first argument unless the other is strictly better,
    # so NaN stays NaN.
    Op("clamp",     "a lo hi", "min(max(a, lo), hi)",     "g * (1.0 if lo <= a <= hi else 0.0)"),
    Op("sum",       "...",     "((x1 + x2) + x3) + ...",  "g to each xi"),
    Op("dot",       "...",     "((w1*x1 + w2*x2) + w3*x3) + ...  (operands w1..wn, x1..xn)",
                                                          "g * xi to wi, g * wi to xi"),
]
(_LEAF, _ADD, _SUB, _MUL, _DIV, _NEG, _POW_CONST, _RPOW_CONST, _POW,
 _EXP, _LOG, _TANH, _SIGMOID, _RELU, _ABS, _CLAMP, _SUM, _DOT) = _TABLE
# fmt: on
_optable.compile_rows(_TABLE, _SYMBOL, globals())

#: Every op kind, in the order of the op table (the same tuple as ``_core.OPS``).
OPS = tuple(op.name for op in _TABLE)


def _sum(v: Value) -> float:
    xs = v._prev
    if not xs:
        return 0.0
    out = xs[0]._data
    for x in xs[1:]:
        out = out + x._data
    return out


def _sum_backward(v: Value) -> None:
    g = v._grad
    for x in v._prev:
        x._grad += g


def _dot(v: Value) -> float:
    wx = v._prev
    n = len(wx) // 2
    if n == 0:
        return 0.0
    out = wx[0]._data * wx[n]._data
    for i in range(1, n):
        out = out + wx[i]._data * wx[n + i]._data
    return out


def _dot_backward(v: Value) -> None:
    g = v._grad
    n = len(v._prev) // 2
    for w, x in zip(v._prev[:n], v._prev[n:]):
        w._grad += g * x._data
        x._grad += g * w._data


_SUM.replay, _SUM.backward = _sum, _sum_backward
_DOT.replay, _DOT.backward = _dot, _dot_backward


# ---- making nodes ------------------------------------------------------------------

_new = object.__new__


def _leaf(x: float) -> Value:
    v = _new(Value)
    v._data = x
    v._grad = 0.0
    v._label = ""
    v._prev = ()
    v._op_row = _LEAF
    v._c = ()
    return v


def _leaf_copy(data: float, grad: float, label: str) -> Value:
    v = Value(data, label)
    v._grad = grad
    return v


def _nary(op: Op, xs: tuple[Value, ...]) -> Value:
    """A sum or dot node (the unary and binary ops' ``make`` is written from the table)."""
    v = _new(Value)
    v._grad = 0.0
    v._label = ""
    v._prev = xs
    v._op_row = op
    v._c = ()
    out = v._data = op.replay(v)
    if _anomaly and not math.isfinite(out):
        _forward_anomaly(op.name, xs, out)
    return v


def _operand(symbol: str, x: Any) -> Optional[Value]:  # None: NotImplemented
    if isinstance(x, Value):
        return x
    c = _const(symbol, x)
    return None if c is None else _leaf(c)


def _operators(op: Op, name: str) -> tuple[Callable, Callable]:
    """``__name__`` and ``__rname__`` of a binary op; numbers become leaves, as in micrograd."""
    symbol, make = _SYMBOL[op.name], op.make

    def method(self: Value, other: Any) -> Value:
        o = _operand(symbol, other)
        return NotImplemented if o is None else make(self, o)

    def reflected(self: Value, other: Any) -> Value:
        o = _operand(symbol, other)
        return NotImplemented if o is None else make(o, self)

    method.__name__, reflected.__name__ = f"__{name}__", f"__r{name}__"
    return method, reflected


def _method(op: Op, name: str, doc: str) -> Callable[[Value], Value]:
    """A unary op as a method."""
    make = op.make

    def method(self: Value) -> Value:
        return make(self)

    method.__name__, method.__doc__ = name, doc
    return method


def _comparison(compare: Callable[[float, Any], bool]) -> Callable:
    """A comparison of data with a Value or a number (Values hash by identity)."""

    def method(self: Value, other: Any) -> Any:
        y = other._data if isinstance(other, Value) else _convert.compared(other)
        return NotImplemented if y is None else compare(self._data, y)

    method.__name__ = f"__{compare.__name__}__"
    return method


# ---- the Value class -----------------------------------------------------------


class Value:
    """A scalar node of the graph: a float, its gradient, the op that made it and
    its operands.

    ``Value(data, label="")``. ``data``, ``grad`` and ``label`` read and write;
    ``_op`` and ``_prev`` name the op and its operands as micrograd does.
    """

    __slots__ = ("_data", "_grad", "_label", "_prev", "_op_row", "_c")
    _backend = "reference"

    def __init__(self, data: Any, label: str = "") -> None:
        self._data = _number("Value()", "data", data)
        self._grad = 0.0
        self._label = _convert.label(label)
        self._prev: tuple[Value, ...] = ()
        self._op_row = _LEAF
        self._c: tuple[float, ...] = ()

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
        self._label = _convert.label(label)

    @property
    def _op(self) -> str:
        """The op that made this node, as micrograd names it (``"+"``, ``"**2"``, ``"ReLU"``)."""
        op = self._op_row
        if op is _POW_CONST:
            return "**" + _fmt_const(self._c[0])
        if op is _RPOW_CONST:
            return _fmt_const(self._c[0]) + "**"
        return _SYMBOL.get(op.name, op.name)

    @property
    def _kind(self) -> str:
        """The op's kind name (``"add"``, ``"pow_const"``, ...), as in ``OPS``."""
        return self._op_row.name

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
    __eq__ = _comparison(operator.eq)
    __ne__ = _comparison(operator.ne)
    __lt__ = _comparison(operator.lt)
    __le__ = _comparison(operator.le)
    __gt__ = _comparison(operator.gt)
    __ge__ = _comparison(operator.ge)

    __add__, __radd__ = _operators(_ADD, "add")
    __sub__, __rsub__ = _operators(_SUB, "sub")
    __mul__, __rmul__ = _operators(_MUL, "mul")
    __truediv__, __rtruediv__ = _operators(_DIV, "truediv")

    def __pow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        if isinstance(other, Value):
            return _POW.make(self, other)
        c = _const("**", other)
        return NotImplemented if c is None else _POW_CONST.make(self, c)

    def __rpow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        c = _const("**", other)
        return NotImplemented if c is None else _RPOW_CONST.make(self, c)

    def __pos__(self) -> Value:
        return self

    def __abs__(self) -> Value:
        return self.abs()

    __neg__ = _method(_NEG, "__neg__", "``-x``.")
    abs = _method(_ABS, "abs", "``|x|``, with gradient ``sign(x)`` (0 at 0).")
    exp = _method(_EXP, "exp", "``exp(x)``.")
    log = _method(_LOG, "log", "Natural logarithm; ``log(0) = -inf``, ``log(-1) = nan``.")
    tanh = _method(_TANH, "tanh", "Hyperbolic tangent.")
    sigmoid = _method(_SIGMOID, "sigmoid", "``1 / (1 + exp(-x))``.")
    relu = _method(_RELU, "relu", "``max(x, 0)``; NaN stays NaN.")

    def clamp(self, lo: Any, hi: Any) -> Value:
        """``min(max(x, lo), hi)``; the gradient passes where ``lo <= x <= hi``."""
        lo, hi = _convert.bounds(lo, hi)
        return _CLAMP.make(self, lo, hi)

    def backward(self) -> None:
        """Adds d(self)/d(node) into the ``grad`` of every node this one depends on,
        seeding ``self.grad`` with 1.0. Iterative: any depth works."""
        order = _order(self)
        self._grad = 1.0
        _sweep(order)


# ---- n-ary builders and bulk access ------------------------------------------------


def sum(values: Iterable[Any], start: Any = None) -> Value:  # noqa: A001 (mirrors builtins.sum)
    """One n-ary node ``((x1 + x2) + x3) + ...``; with ``start``, it is the first
    operand (as in Python's ``sum(values, start)``). Empty: 0.0."""
    first = _convert.operands("sum", [start] if start is not None else [], Value, _leaf)
    xs = tuple(first + _convert.operands("sum", values, Value, _leaf))
    return _nary(_SUM, xs)


def dot(ws: Iterable[Any], xs: Iterable[Any]) -> Value:
    """One n-ary node ``((w1*x1 + w2*x2) + w3*x3) + ...``; operands ``w1..wn, x1..xn``."""
    wx = _convert.dot_operands(ws, xs, Value, _leaf)
    return _nary(_DOT, wx)


def layer(
    ws: Iterable[Iterable[Value]], bs: Iterable[Value], x: Iterable[Any], activation: str
) -> list[Value]:
    """A dense layer in one call: ``[act(dot(w, x) + b) for w, b in zip(ws, bs)]``,
    the nodes ``Neuron`` builds one by one. Numbers in ``x`` become leaves once."""
    act = _convert.activation(activation)
    xs = _convert.operands("layer", x, Value, _leaf)
    rows = [list(w) for w in ws]
    biases = list(bs)
    _convert.layer_shapes(rows, biases, len(xs), Value)
    outs = []
    for w, b in zip(rows, biases):
        out = dot(w, xs) + b
        outs.append(getattr(out, act)() if act else out)
    return outs


def get_data(values: Iterable[Value]) -> list[float]:
    """The ``data`` of many Values."""
    return [v._data for v in _convert.nodes("get_data", values, Value)]


def get_grad(values: Iterable[Value]) -> list[float]:
    """The ``grad`` of many Values."""
    return [v._grad for v in _convert.nodes("get_grad", values, Value)]


def set_data(values: Iterable[Value], data: Iterable[float]) -> None:
    """Sets the ``data`` of many Values; checks everything first."""
    vs = _convert.nodes("set_data", values, Value)
    for v, x in zip(vs, _convert.floats("set_data", len(vs), data)):
        v._data = x


# ---- backward and replay: the one place where gradients are added ------------------


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
    """Adds every node's contributions into its operands' gradients, in ``order``."""
    check, leaf = _anomaly, _LEAF
    for v in order:
        op = v._op_row
        if op is not leaf:
            op.backward(v)
            if check:
                _convert.check_grads(v, op.name)


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
        check, leaf = _anomaly, _LEAF
        for v in reversed(self._order):
            op = v._op_row
            if op is not leaf:
                out = v._data = op.replay(v)
                if check and not math.isfinite(out):
                    _forward_anomaly(op.name, v._prev, out)

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


def _fmt_const(c: float) -> str:
    if math.isfinite(c) and c == int(c) and abs(c) < 1e15:
        return str(int(c))
    return repr(c)
