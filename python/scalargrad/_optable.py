"""The rows of the reference backend's op table, and how they become code.

A row (``Op``) holds an op's formulas as the table in ``reference.py`` states them.
``compile`` writes each unary and binary row out as three plain functions, which
run in the engine module's namespace (they use its ``Value``, ``_new``,
``_anomaly``, ``_forward_anomaly`` and the IEEE helpers its formulas name):

- ``make(a, [b,] *consts)``: a new node from operand nodes (``Value``'s methods);
- ``replay(v)``: the node's value again from its operands' (``Tape.forward``);
- ``backward(v)``: adds the node's contributions into its operands' gradients.

Writing the formulas into the functions' bodies costs no call per formula, so the
table is as fast as ops written out by hand. ``print(op.source)`` shows them, and
tracebacks show their lines. For ``mul`` (``"a * b"``; ``"g * b", "g * a"``),
``backward`` is::

    def backward(v):
        (node_a, node_b) = v._prev
        g = v._grad
        a = node_a._data
        b = node_b._data
        node_a._grad += g * b
        node_b._grad += g * a
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Iterable
from typing import Any, Callable

NARY = -1  # the arity of ops with any number of operands (sum, dot)


class Op:
    """A row of the op table: ``Op(name, operands, forward, *contributions)``.

    ``operands`` names the operand values and then the constants (``"a b"``,
    ``"a lo hi"``; ``"..."`` for n-ary ops, whose functions are written by hand);
    ``forward`` is the expression for ``out``; ``contributions`` hold one
    expression per operand, in terms of the operands, the constants, ``g`` (the
    output's gradient) and ``out``."""

    __slots__ = (
        ("name", "operands", "arity", "forward", "grads", "source")
        + ("make", "replay", "backward")  # written by compile_rows
    )

    def __init__(self, name: str, operands: str, forward: str = "", *grads: str) -> None:
        self.name, self.operands, self.forward, self.grads = name, operands.split(), forward, grads
        self.arity = NARY if operands == "..." else len(grads)
        self.source = ""
        self.make: Callable[..., Any]
        self.replay: Callable[[Any], float]
        self.backward: Callable[[Any], None]

    def __repr__(self) -> str:
        return f"<op {self.name}>"


def compile_rows(table: Iterable[Op], symbols: dict[str, str], namespace: dict[str, Any]) -> None:
    """Writes ``make``, ``replay`` and ``backward`` for every unary and binary row of
    ``table``, as functions of ``namespace``; ``symbols`` names binary ops in
    anomaly messages (``"+"``), as micrograd's ``_op`` does."""
    for op in table:
        if op.arity not in (1, 2):
            continue
        op.source = _source(op, symbols.get(op.name, op.name) if op.arity == 2 else op.name)
        # Written inside a function of ``op``, so that ``make`` reads its row from a
        # closure; linecache lets tracebacks show the lines.
        filename = f"<op {op.name}>"
        source = "def functions(op):" + op.source.replace("\n", "\n    ")
        source += "return make, replay, backward\n"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        scope: dict[str, Any] = {}
        exec(compile(source, filename, "exec"), namespace, scope)
        op.make, op.replay, op.backward = scope["functions"](op)


def _source(op: Op, label: str) -> str:
    names, consts = op.operands[: op.arity], op.operands[op.arity :]
    nodes = [f"node_{x}" for x in names]
    prev = "(" + ", ".join(nodes) + ("," if len(nodes) == 1 else "") + ")"
    c = "(" + ", ".join(consts) + ("," if len(consts) == 1 else "") + ")"

    def reads(*formulas: str, make: bool = False) -> str:  # what the formulas use, read once
        used = set(re.findall(r"\w+", " ".join(formulas)))
        lines = [] if make else [f"{k} = v._c[{i}]" for i, k in enumerate(consts) if k in used]
        lines += ["out = v._data"] if "out" in used else []
        lines += [f"{x} = node_{x}._data" for x in names if x in used]
        return "".join(f"\n    {line}" for line in lines)

    adds = "".join(f"\n    {n}._grad += {d}" for n, d in zip(nodes, op.grads))
    return f"""
def make({", ".join(nodes + consts)}):{reads(op.forward, make=True)}
    out = {op.forward}
    if _anomaly and not math.isfinite(out):
        _forward_anomaly({label!r}, {prev}, out)
    v = _new(Value)
    v._data = out
    v._grad = 0.0
    v._label = ""
    v._prev = {prev}
    v._op_row = op
    v._c = {c}
    return v

def replay(v):
    {prev} = v._prev{reads(op.forward)}
    return {op.forward}

def backward(v):
    {prev} = v._prev
    g = v._grad{reads(*op.grads)}{adds}
"""
