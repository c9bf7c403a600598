"""The reference backend: the engine in pure Python.

The Rust backend's nodes, ops and backward order, written to be read. Each op is
stated once, its forward beside its derivative (``_tanh``, ``_tanh_grad``), with the
float operations of DESIGN.md section 4, so both backends give the same bits; Value's
methods, the sweep, ``Tape`` and ``reference_lanes`` all call that one pair. Nodes
form no reference cycles: reference counting frees an unreachable graph. Argument
checks and messages are in ``_convert``, IEEE results where ``math`` raises in ``_ieee``.

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
from functools import reduce
from typing import Any, Callable, NamedTuple, Optional

from scalargrad import _convert
from scalargrad import _ieee as ieee
from scalargrad._convert import const as _const
from scalargrad._convert import forward_anomaly as _forward_anomaly
from scalargrad._convert import number as _number

__all__ = ["OPS", "Tape", "Value", "dot", "get_data", "get_grad", "layer"]
__all__ += ["logsumexp", "set_anomaly", "set_data", "set_grad_enabled", "sum"]

_anomaly = _convert.ThreadFlag()  # detect_anomaly(), per thread
_no_grad = _convert.ThreadFlag()  # no_grad(), per thread


def _checking() -> bool:
    """Whether this thread checks for non-finite results (``detect_anomaly``)."""
    return _anomaly.on()


def set_anomaly(on: bool) -> bool:
    """Turns anomaly checking on or off for the calling thread; returns the previous
    setting."""
    return _anomaly.set(on)


def set_grad_enabled(on: bool) -> bool:
    """Turns graph recording on or off for the calling thread (``no_grad()`` uses
    this); returns the previous setting. Off, every op's result is a new leaf."""
    return not _no_grad.set(not on)


# Numbers leave the engine with one NaN, Python's float("nan") (bits 0x7ff8000000000000):
# hardware NaNs differ in sign and payload, and whether a result is NaN never depends
# on them, so nodes keep whatever NaN arithmetic made and the readers apply this.
_NAN = float("nan")


def _canon(x: float) -> float:
    return x if x == x else _NAN


# ---- the ops: each forward beside its derivative -----------------------------------
#
# In the order of DESIGN.md section 4 and rust/ops.rs. One calling convention per
# arity (g is the output's gradient, out the output's value):
#   binary  _op(a, b) -> out        _op_grad(g, a, b, out) -> (to a, to b)
#   unary   _op(a, c) -> out        _op_grad(g, a, out, c) -> to a
#   n-ary   _op(xs) -> out          _op_grad(g, xs, out) -> [(k, to xs[k]), ...]
# c is the node's constants: (c,) for pow_const and rpow_const, (lo, hi) for clamp,
# () otherwise. An n-ary grad lists its contributions in the order they are added.


# fmt: off
def _add(a, b): return a + b
def _add_grad(g, a, b, out): return g, g
def _sub(a, b): return a - b
def _sub_grad(g, a, b, out): return g, -g
def _mul(a, b): return a * b
def _mul_grad(g, a, b, out): return g * b, g * a
def _div(a, b): return ieee.div(a, b)
def _div_grad(g, a, b, out): return ieee.div(g, b), ieee.div(-g * out, b)
def _neg(a, c): return -a
def _neg_grad(g, a, out, c): return -g
def _pow_const(a, c): return ieee.pow(a, c[0])
def _pow_const_grad(g, a, out, c): return g * (c[0] * ieee.pow(a, c[0] - 1.0))
def _rpow_const(a, c): return ieee.pow(c[0], a)
def _rpow_const_grad(g, a, out, c): return g * (out * ieee.log(c[0]))
def _pow(a, b): return ieee.pow(a, b)
def _pow_grad(g, a, b, out): return g * (b * ieee.pow(a, b - 1.0)), g * (out * ieee.log(a))
def _exp(a, c): return ieee.exp(a)
def _exp_grad(g, a, out, c): return g * out
def _log(a, c): return ieee.log(a)
def _log_grad(g, a, out, c): return ieee.div(g, a)
def _tanh(a, c): return math.tanh(a)
def _tanh_grad(g, a, out, c): return g * (1.0 - out * out)
def _sigmoid(a, c): return 1.0 / (1.0 + ieee.exp(-a))
def _sigmoid_grad(g, a, out, c): return g * (out * (1.0 - out))
def _relu(a, c): return 0.0 if a < 0.0 else a  # `a < 0` is false for NaN and -0.0: they pass
def _relu_grad(g, a, out, c): return g * (1.0 if out > 0.0 else 0.0)
def _abs(a, c): return math.fabs(a)
def _abs_grad(g, a, out, c): return g * ieee.sign(a)
def _clamp(a, c): return min(max(a, c[0]), c[1])  # min, max keep their first argument: NaN stays
def _clamp_grad(g, a, out, c): return g * (1.0 if c[0] <= a <= c[1] else 0.0)
def _sum(xs): return reduce(operator.add, xs) if xs else 0.0  # ((x1 + x2) + x3) + ...
def _sum_grad(g, xs, out): return [(k, g) for k in range(len(xs))]
def _dot(xs): return _sum(list(map(operator.mul, *_split(xs))))  # ((w1*x1 + w2*x2) + w3*x3) + ...
def _dot_grad(g, xs, out):  # to w1, to x1, to w2, to x2, ...
    n = len(xs) // 2
    return [kc for k in range(n) for kc in ((k, g * xs[n + k]), (n + k, g * xs[k]))]
def _split(xs): return xs[: len(xs) // 2], xs[len(xs) // 2 :]  # dot's operands: w1..wn, x1..xn
def _logsumexp(xs): return ieee.logsumexp(xs)  # m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))
def _logsumexp_grad(g, xs, out): return [(k, g * ieee.exp(x - out)) for k, x in enumerate(xs)]
# fmt: on

LEAF, UNARY, BINARY, NARY = 0, 1, 2, -1  # an op's arity picks its calling convention


class Op(NamedTuple):  # a row of the op table
    kind: str
    arity: int  # LEAF, UNARY, BINARY or NARY: the calling convention of the two functions
    forward: Any  # the functions above (None for a leaf)
    grad: Any


# fmt: off
#: The op table: kind -> its row, in the order of DESIGN.md section 4 (the one registry).
_TABLE = {op.kind: op for op in [
    Op("leaf",       LEAF,   None,        None),
    Op("add",        BINARY, _add,        _add_grad),
    Op("sub",        BINARY, _sub,        _sub_grad),
    Op("mul",        BINARY, _mul,        _mul_grad),
    Op("div",        BINARY, _div,        _div_grad),
    Op("neg",        UNARY,  _neg,        _neg_grad),
    Op("pow_const",  UNARY,  _pow_const,  _pow_const_grad),
    Op("rpow_const", UNARY,  _rpow_const, _rpow_const_grad),
    Op("pow",        BINARY, _pow,        _pow_grad),
    Op("exp",        UNARY,  _exp,        _exp_grad),
    Op("log",        UNARY,  _log,        _log_grad),
    Op("tanh",       UNARY,  _tanh,       _tanh_grad),
    Op("sigmoid",    UNARY,  _sigmoid,    _sigmoid_grad),
    Op("relu",       UNARY,  _relu,       _relu_grad),
    Op("abs",        UNARY,  _abs,        _abs_grad),
    Op("clamp",      UNARY,  _clamp,      _clamp_grad),
    Op("sum",        NARY,   _sum,        _sum_grad),
    Op("dot",        NARY,   _dot,        _dot_grad),
    Op("logsumexp",  NARY,   _logsumexp,  _logsumexp_grad),
]}
# fmt: on
_LEAF = _TABLE["leaf"]

#: Every op kind, in the order of the op table (the same tuple as ``_core.OPS``).
OPS = tuple(_TABLE)


# ---- making nodes: each op's forward gives the new node's value --------------------

_new = object.__new__


def _node(op: Op, prev: tuple[Value, ...], c: tuple[float, ...], out: float) -> Value:
    v = _new(Value)
    if _no_grad.count and _no_grad.on():
        op, prev, c = _LEAF, (), ()  # no_grad(): the value, and no graph
    v._data, v._grad, v._label, v._prev, v._row, v._c = out, 0.0, "", prev, op, c
    return v


def _leaf(x: float) -> Value:
    return _node(_LEAF, (), (), x)


def _leaf_copy(data: float, grad: float, label: str) -> Value:
    v = Value(data, label)
    v._grad = grad
    return v


def _binary(op: Op, a: Value, b: Value, symbol: str) -> Value:
    out = op.forward(a._data, b._data)
    if _anomaly.count and not math.isfinite(out) and _anomaly.on():
        _forward_anomaly(symbol, (a, b), out)
    return _node(op, (a, b), (), out)


def _unary(op: Op, a: Value, c: tuple[float, ...] = ()) -> Value:
    out = op.forward(a._data, c)
    if _anomaly.count and not math.isfinite(out) and _anomaly.on():
        _forward_anomaly(op.kind, (a,), out)
    return _node(op, (a,), c, out)


def _nary(op: Op, xs: tuple[Value, ...]) -> Value:
    out = op.forward([x._data for x in xs])
    if _anomaly.count and not math.isfinite(out) and _anomaly.on():
        _forward_anomaly(op.kind, xs, out)
    return _node(op, xs, (), out)


def _operators(kind: str, name: str) -> tuple[Callable, Callable]:
    """``__name__`` and ``__rname__`` of a binary op; numbers become leaves, as in micrograd."""
    op, symbol = _TABLE[kind], _convert.SYMBOL[kind]

    def method(self: Value, other: Any) -> Value:
        o = _convert.operand(symbol, other, Value, _leaf)
        return NotImplemented if o is None else _binary(op, self, o, symbol)

    def reflected(self: Value, other: Any) -> Value:
        o = _convert.operand(symbol, other, Value, _leaf)
        return NotImplemented if o is None else _binary(op, o, self, symbol)

    method.__name__, reflected.__name__ = f"__{name}__", f"__r{name}__"
    return method, reflected


def _method(kind: str, name: str, doc: str) -> Callable[[Value], Value]:
    """A unary op without constants as a method."""
    op = _TABLE[kind]

    def method(self: Value) -> Value:
        return _unary(op, self)

    method.__name__, method.__doc__ = name, doc
    return method


# ---- the Value class -----------------------------------------------------------


class Value:
    """A scalar node of the graph: a float, its gradient, the op that made it and
    its operands.

    ``Value(data, label="")``. ``data``, ``grad`` and ``label`` read and write;
    ``_op`` and ``_prev`` name the op and its operands as micrograd does.
    """

    __slots__ = ("_data", "_grad", "_label", "_prev", "_row", "_c")
    _backend = "reference"

    def __init__(self, data: Any, label: str = "") -> None:
        self._data = _number("Value()", "data", data)
        self._grad = 0.0
        self._label = _convert.label(label)
        self._prev: tuple[Value, ...] = ()
        self._row = _LEAF  # the op table's row of the op that made it
        self._c: tuple[float, ...] = ()

    @property
    def data(self) -> float:
        """The node's value."""
        x = self._data
        return x if x == x else _NAN

    @data.setter
    def data(self, x: Any) -> None:
        self._data = _number("data", "data", x)

    @property
    def grad(self) -> float:
        """d(root)/d(this node), accumulated by ``backward()``."""
        x = self._grad
        return x if x == x else _NAN

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
        return _convert.micrograd_op(self._row.kind, self._c)

    @property
    def _kind(self) -> str:
        """The op's kind name (``"add"``, ``"pow_const"``, ...), as in ``OPS``."""
        return self._row.kind

    @property
    def _consts(self) -> list[float]:
        return list(self._c)

    def __repr__(self) -> str:
        if self._label:
            return f"Value(data={self.data!r}, grad={self.grad!r}, label={self._label!r})"
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    def __float__(self) -> float:
        return self.data

    # A copy is a new leaf with this node's data, grad and label, detached from the
    # graph (the same for copy.copy, copy.deepcopy and pickling).
    def __copy__(self) -> Value:
        return _leaf_copy(self.data, self.grad, self._label)

    def __deepcopy__(self, memo: dict) -> Value:
        return self.__copy__()

    def __reduce__(self) -> tuple:
        return (_leaf_copy, (self.data, self.grad, self._label))

    # Identity for hashing (a Value is a dict key by node); comparisons by data.
    __hash__ = object.__hash__
    __eq__ = _convert.comparison(operator.eq)
    __ne__ = _convert.comparison(operator.ne)
    __lt__ = _convert.comparison(operator.lt)
    __le__ = _convert.comparison(operator.le)
    __gt__ = _convert.comparison(operator.gt)
    __ge__ = _convert.comparison(operator.ge)

    __add__, __radd__ = _operators("add", "add")
    __sub__, __rsub__ = _operators("sub", "sub")
    __mul__, __rmul__ = _operators("mul", "mul")
    __truediv__, __rtruediv__ = _operators("div", "truediv")

    def __pow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        if isinstance(other, Value):
            return _binary(_TABLE["pow"], self, other, "**")
        c = _const("**", other)
        return NotImplemented if c is None else _unary(_TABLE["pow_const"], self, (c,))

    def __rpow__(self, other: Any, modulo: Optional[Any] = None) -> Value:
        if modulo is not None:
            return NotImplemented
        c = _const("**", other)
        return NotImplemented if c is None else _unary(_TABLE["rpow_const"], self, (c,))

    def __pos__(self) -> Value:
        return self

    def __abs__(self) -> Value:
        return self.abs()

    # Python's number habits, as of the float ``data`` (as for PyTorch's 0-d tensors).
    item, __int__, __round__ = _convert.item, _convert.as_int, _convert.as_round
    __bool__, __format__ = _convert.as_bool, _convert.as_format

    __neg__ = _method("neg", "__neg__", "``-x``.")
    abs = _method("abs", "abs", "``|x|``, with gradient ``sign(x)`` (0 at 0).")
    exp = _method("exp", "exp", "``exp(x)``.")
    log = _method("log", "log", "Natural logarithm; ``log(0) = -inf``, ``log(-1) = nan``.")
    tanh = _method("tanh", "tanh", "Hyperbolic tangent.")
    sigmoid = _method("sigmoid", "sigmoid", "``1 / (1 + exp(-x))``.")
    relu = _method("relu", "relu", "``max(x, 0)``; NaN stays NaN.")

    def clamp(self, lo: Any, hi: Any) -> Value:
        """``min(max(x, lo), hi)``; the gradient passes where ``lo <= x <= hi``."""
        lo, hi = _convert.bounds(lo, hi)
        return _unary(_TABLE["clamp"], self, (lo, hi))

    def backward(self) -> None:
        """Adds d(self)/d(node) into the ``grad`` of every node this one depends on,
        seeding ``self.grad`` with 1.0. Iterative: any depth works. An error
        (Ctrl-C, ``detect_anomaly``) leaves every gradient as it was."""
        order = _order(self)
        _sweep_or_restore(order, None)


# ---- n-ary builders and bulk access ------------------------------------------------


def sum(values: Iterable[Any], start: Any = None) -> Value:  # noqa: A001 (mirrors builtins.sum)
    """One n-ary node ``((x1 + x2) + x3) + ...``; with ``start``, it is the first
    operand (as in Python's ``sum(values, start)``). Empty: 0.0."""
    first = _convert.operands("sum", [start] if start is not None else [], Value, _leaf)
    xs = tuple(first + _convert.operands("sum", values, Value, _leaf))
    return _nary(_TABLE["sum"], xs)


def dot(ws: Iterable[Any], xs: Iterable[Any]) -> Value:
    """One n-ary node ``((w1*x1 + w2*x2) + w3*x3) + ...``; operands ``w1..wn, x1..xn``."""
    wx = _convert.dot_operands(ws, xs, Value, _leaf)
    return _nary(_TABLE["dot"], wx)


def logsumexp(values: Iterable[Any]) -> Value:
    """One n-ary node ``m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))``, ``m`` the largest."""
    return _nary(_TABLE["logsumexp"], tuple(_convert.operands("logsumexp", values, Value, _leaf)))


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
    return [_canon(v._data) for v in _convert.nodes("get_data", values, Value)]


def get_grad(values: Iterable[Value]) -> list[float]:
    """The ``grad`` of many Values."""
    return [_canon(v._grad) for v in _convert.nodes("get_grad", values, Value)]


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
    """Adds every node's contributions into its operands' gradients, in ``order``:
    each node's derivative from the op table, called as its arity says."""
    check = _checking()
    for v in order:
        kind, arity, _, grad = v._row
        xs = v._prev
        if arity == BINARY:
            a, b = xs
            ga, gb = grad(v._grad, a._data, b._data, v._data)
            a._grad += ga
            b._grad += gb
        elif arity == UNARY:
            a = xs[0]
            a._grad += grad(v._grad, a._data, v._data, v._c)
        elif arity == NARY:
            for k, gk in grad(v._grad, [x._data for x in xs], v._data):
                xs[k]._grad += gk
        else:
            continue  # a leaf
        if check:
            _convert.check_grads(v, kind)


def _sweep_or_restore(order: list[Value], zero: Optional[list[Value]]) -> None:
    """Zeroes the gradients of ``zero`` (when given), seeds the root (``order[0]``)
    and sweeps; on any error, puts every gradient of ``order`` back as it was before."""
    saved = [v._grad for v in order]
    try:
        if zero is not None:
            for v in zero:
                v._grad = 0.0
        order[0]._grad = 1.0
        _sweep(order)
    except BaseException:
        for v, g in zip(order, saved):
            v._grad = g
        raise


# The replay of a recorded graph, ``Tape``, is in ``reference_tape``.
from scalargrad.reference_tape import Tape  # noqa: E402  (it reads this module's names)
