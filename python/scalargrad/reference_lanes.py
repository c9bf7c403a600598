"""Batched lanes on the reference backend: the same steps as ``rust/lanes.rs``, in
plain Python, with the same float operations in the same order (so the same bits).

A recorded graph is numbered like the Rust one: *lane* slots (the inputs, then
every node that depends on one, operands first) hold one value per row; *shared*
slots (every other leaf, and nodes computed from those alone) hold one value. A
run goes through the rows in chunks of ``CHUNK``; within a chunk each
contribution to a shared node is reduced over the rows by ``_reduce``, and the
chunks' partial sums are added in order (``rust/lanes.rs`` explains the order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import scalargrad.reference as R
from scalargrad._convert import describe as _describe

CHUNK = 64  # rows per chunk, as in rust/lanes.rs


def _reduce(c: list[float]) -> float:
    """Row ``l`` into accumulator ``l % 8`` in row order, then a fixed tree."""
    a = [0.0] * 8
    for k, x in enumerate(c):
        a[k & 7] += x
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def _forward(op: R.Op, xs: list[float], c: tuple) -> float:
    """``op``'s forward from the reference's op table, on operand values ``xs``."""
    if op.arity == R.BINARY:
        return op.forward(xs[0], xs[1])
    if op.arity == R.UNARY:
        return op.forward(xs[0], c)
    return op.forward(xs)


def _contributions(op: R.Op, g: float, xs: list[float], out: float, c: tuple) -> list:
    """``op``'s derivative from the reference's op table, as ``(operand, contribution)``
    pairs in the order they are added (the order of the reference's sweep)."""
    if op.arity == R.BINARY:
        return list(enumerate(op.grad(g, xs[0], xs[1], out)))
    if op.arity == R.UNARY:
        return [(0, op.grad(g, xs[0], out, c))]
    return op.grad(g, xs, out)


class LaneTape:
    """``_core.LaneTape`` on the reference backend (``scalargrad.BatchTape`` wraps it)."""

    def __init__(self, root: Any, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        if not isinstance(root, R.Value):
            raise TypeError(f"LaneTape: root must be a reference Value, got {type(root).__name__}")
        slot: dict[int, tuple[bool, int]] = {}  # id(node) -> (is lane, slot)
        for k, v in enumerate(inputs):
            if not isinstance(v, R.Value):
                raise TypeError(
                    f"LaneTape inputs: element {k} must be a reference Value, got "
                    f"{type(v).__name__}"
                )
            if v._kind != "leaf":
                raise ValueError(
                    f"LaneTape: input {k} must be a leaf, got a node made by {v._kind!r}"
                )
            if id(v) in slot:
                raise ValueError(f"LaneTape: inputs {slot[id(v)][1]} and {k} are the same Value")
            slot[id(v)] = (True, k)
        order = R._order(root)
        order.reverse()  # operands first
        self._keep = order  # the graph lives as long as the tape
        self._shared_leaves: list[tuple[Any, int]] = []
        self._shared_code: list[tuple] = []
        self._code: list[tuple] = []
        n_lane, n_shared = len(inputs), 0
        for v in order:
            if id(v) in slot:
                continue
            if v._kind == "leaf":
                slot[id(v)] = (False, n_shared)
                self._shared_leaves.append((v, n_shared))
                n_shared += 1
                continue
            args = tuple(slot[id(p)] for p in v._prev)
            if any(lane for lane, _ in args):
                slot[id(v)] = (True, n_lane)
                self._code.append((v._row, n_lane, args, v._c))
                n_lane += 1
            else:
                slot[id(v)] = (False, n_shared)
                self._shared_code.append((v._row, n_shared, args, v._c))
                n_shared += 1
        self._root = slot[id(root)]
        outs = []
        for k, v in enumerate(outputs):
            if not isinstance(v, R.Value):
                raise TypeError(
                    f"LaneTape outputs: element {k} must be a reference Value, got "
                    f"{type(v).__name__}"
                )
            if id(v) not in slot:
                raise ValueError(f"LaneTape: output {k} is not part of the root's graph")
            outs.append(slot[id(v)])
        self._outputs = outs
        self.n_inputs, self.n_outputs = len(inputs), len(outs)
        self.lane_nodes, self._n_shared = n_lane, n_shared

    def __len__(self) -> int:
        return len(self._keep)

    def run(self, x: Any, seed: Optional[float], out: Any) -> float:
        ni, no = self.n_inputs, self.n_outputs
        flat = x.reshape(-1).tolist()
        rows = len(flat) // ni if ni else 0
        shared = self._shared_values()
        partials = []
        roots: list[float] = []
        values: list[float] = []
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            lanes = [flat[(start + r) * ni + j] for j in range(ni) for r in range(n)]
            vals = [lanes[j * n : (j + 1) * n] for j in range(ni)]
            self._forward(vals, shared, n)
            at = self._at(vals, shared, n)
            roots += at(self._root)
            cols = [at(s) for s in self._outputs]
            values += [c[r] for r in range(n) for c in cols]
            if seed is not None:
                partials.append(self._backward(vals, shared, n, seed))
        values = [R._canon(v) for v in values]
        if no:
            out.reshape(-1)[:] = values
        total = self._totals(shared, partials) if seed is not None else None
        if R._checking():
            _check(roots, values, no, total, self._shared_leaves)
        if total is not None:
            for node, s in self._shared_leaves:
                node._grad += total[s]
        return R._canon(R._sum(roots))

    # -- the steps of rust/lanes.rs --

    def _shared_values(self) -> list[float]:
        v = [0.0] * self._n_shared
        for node, s in self._shared_leaves:
            v[s] = node._data
        for op, o, args, c in self._shared_code:
            v[o] = _forward(op, [v[s] for _, s in args], c)
        return v

    @staticmethod
    def _at(vals: list, shared: list[float], n: int) -> Any:
        return lambda s: vals[s[1]] if s[0] else [shared[s[1]]] * n

    def _forward(self, vals: list, shared: list[float], n: int) -> None:
        at = self._at(vals, shared, n)
        for op, o, args, c in self._code:
            cols = [at(s) for s in args]
            assert len(vals) == o
            vals.append([_forward(op, list(row), c) for row in zip(*cols)] if cols else [0.0] * n)

    def _backward(self, vals: list, shared: list[float], n: int, seed: float) -> list[float]:
        at = self._at(vals, shared, n)
        grads = [[0.0] * n for _ in vals]
        partial = [0.0] * self._n_shared

        def send(s: tuple[bool, int], c: list[float]) -> None:
            if s[0]:
                g = grads[s[1]]
                for r in range(n):
                    g[r] += c[r]
            else:
                partial[s[1]] += _reduce(c)

        if self._root[0]:
            grads[self._root[1]] = [seed] * n
        else:
            send(self._root, [seed] * n)
        for op, o, args, c in reversed(self._code):
            g, out = grads[o], vals[o]
            cols = [at(s) for s in args]
            rows = [_contributions(op, g[r], [col[r] for col in cols], out[r], c) for r in range(n)]
            for j, (k, _) in enumerate(rows[0]):  # the same operands, in the same order, per row
                send(args[k], [row[j][1] for row in rows])
        return partial

    def _totals(self, shared: list[float], partials: list[list[float]]) -> list[float]:
        """Every shared node's gradient total: the chunks' partials, then the shared
        nodes' own backward."""
        total = [0.0] * self._n_shared
        for p in partials:
            for s in range(self._n_shared):
                total[s] += p[s]
        for op, o, args, c in reversed(self._shared_code):
            xs = [shared[s] for _, s in args]
            for k, gk in _contributions(op, total[o], xs, shared[o], c):
                total[args[k][1]] += gk
        return total


def _check(roots: list, values: list, no: int, total: Optional[list], leaves: list) -> None:
    """``detect_anomaly`` for a batched run: the first non-finite per-row root value,
    output or shared leaf's gradient total, with the Rust backend's messages."""
    for r, v in enumerate(roots):
        if not math.isfinite(v):
            raise FloatingPointError(
                f"detect_anomaly: BatchTape sample {r} gave root value {R._canon(v)!r}"
            )
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise FloatingPointError(
                f"detect_anomaly: BatchTape sample {i // no} gave output {i % no} = {v!r}"
            )
    for node, s in leaves if total is not None else ():
        if not math.isfinite(total[s]):
            raise FloatingPointError(
                f"detect_anomaly: BatchTape gave gradient total {R._canon(total[s])!r} "
                f"to shared leaf {_describe(node)}"
            )
