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

from collections.abc import Sequence
from typing import Any, Optional

import scalargrad.reference as R

CHUNK = 64  # rows per chunk, as in rust/lanes.rs


def _reduce(c: list[float]) -> float:
    """Row ``l`` into accumulator ``l % 8`` in row order, then a fixed tree."""
    a = [0.0] * 8
    for k, x in enumerate(c):
        a[k & 7] += x
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def _first_sum(xs: list[float]) -> float:
    """``((x1 + x2) + x3) + ...``, 0.0 when empty (the op table's sum)."""
    if not xs:
        return 0.0
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


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
                self._code.append((v._kind, n_lane, args, v._c))
                n_lane += 1
            else:
                slot[id(v)] = (False, n_shared)
                self._shared_code.append((v._kind, n_shared, args, v._c))
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
        if no:
            out.reshape(-1)[:] = values
        if seed is not None:
            self._add_grads(shared, partials)
        return _first_sum(roots)

    # -- the steps of rust/lanes.rs --

    def _shared_values(self) -> list[float]:
        v = [0.0] * self._n_shared
        for node, s in self._shared_leaves:
            v[s] = node._data
        for kind, o, args, c in self._shared_code:
            v[o] = _FORWARD[kind]([v[s] for _, s in args], c)
        return v

    @staticmethod
    def _at(vals: list, shared: list[float], n: int) -> Any:
        return lambda s: vals[s[1]] if s[0] else [shared[s[1]]] * n

    def _forward(self, vals: list, shared: list[float], n: int) -> None:
        at = self._at(vals, shared, n)
        for kind, o, args, c in self._code:
            cols = [at(s) for s in args]
            assert len(vals) == o
            vals.append([_FORWARD[kind](list(row), c) for row in zip(*cols)] if cols else [0.0] * n)

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
        for kind, o, args, c in reversed(self._code):
            g, out = grads[o], vals[o]
            cols = [at(s) for s in args]
            if kind == "sum":
                for s in args:
                    send(s, g)
            elif kind == "dot":
                m = len(args) // 2
                for k in range(m):
                    w, x = cols[k], cols[m + k]
                    send(args[k], [g[r] * x[r] for r in range(n)])
                    send(args[m + k], [g[r] * w[r] for r in range(n)])
            else:
                contrib = [
                    _BACKWARD[kind](g[r], [col[r] for col in cols], out[r], c) for r in range(n)
                ]
                for k, s in enumerate(args):
                    send(s, [cr[k] for cr in contrib])
        return partial

    def _add_grads(self, shared: list[float], partials: list[list[float]]) -> None:
        total = [0.0] * self._n_shared
        for p in partials:
            for s in range(self._n_shared):
                total[s] += p[s]
        for kind, o, args, c in reversed(self._shared_code):
            g, out = total[o], shared[o]
            xs = [shared[s] for _, s in args]
            if kind == "sum":
                for _, s in args:
                    total[s] += g
            elif kind == "dot":
                m = len(args) // 2
                for k in range(m):
                    w, x = args[k][1], args[m + k][1]
                    total[w] += g * shared[x]
                    total[x] += g * shared[w]
            else:
                for (_, s), gs in zip(args, _BACKWARD[kind](g, xs, out, c)):
                    total[s] += gs
        for node, s in self._shared_leaves:
            node._grad += total[s]


def _dot(xs: list[float], c: tuple) -> float:
    m = len(xs) // 2
    if m == 0:
        return 0.0
    out = xs[0] * xs[m]
    for k in range(1, m):
        out = out + xs[k] * xs[m + k]
    return out


_FORWARD = {
    "add": lambda a, c: a[0] + a[1],
    "sub": lambda a, c: a[0] - a[1],
    "mul": lambda a, c: a[0] * a[1],
    "div": lambda a, c: R._div(a[0], a[1]),
    "neg": lambda a, c: -a[0],
    "pow_const": lambda a, c: R._pow(a[0], c[0]),
    "rpow_const": lambda a, c: R._pow(c[0], a[0]),
    "pow": lambda a, c: R._pow(a[0], a[1]),
    "exp": lambda a, c: R._exp(a[0]),
    "log": lambda a, c: R._log(a[0]),
    "tanh": lambda a, c: R.math.tanh(a[0]),
    "sigmoid": lambda a, c: 1.0 / (1.0 + R._exp(-a[0])),
    "relu": lambda a, c: R._relu(a[0]),
    "abs": lambda a, c: R.math.fabs(a[0]),
    "clamp": lambda a, c: min(max(a[0], c[0]), c[1]),
    "sum": lambda a, c: _first_sum(a),
    "dot": _dot,
}

_BACKWARD = {
    "add": lambda g, a, out, c: (g, g),
    "sub": lambda g, a, out, c: (g, -g),
    "mul": lambda g, a, out, c: (g * a[1], g * a[0]),
    "div": lambda g, a, out, c: (R._div(g, a[1]), R._div(-g * out, a[1])),
    "neg": lambda g, a, out, c: (-g,),
    "pow_const": lambda g, a, out, c: (g * (c[0] * R._pow(a[0], c[0] - 1.0)),),
    "rpow_const": lambda g, a, out, c: (g * (out * R._log(c[0])),),
    "pow": lambda g, a, out, c: (
        g * (a[1] * R._pow(a[0], a[1] - 1.0)),
        g * (out * R._log(a[0])),
    ),
    "exp": lambda g, a, out, c: (g * out,),
    "log": lambda g, a, out, c: (R._div(g, a[0]),),
    "tanh": lambda g, a, out, c: (g * (1.0 - out * out),),
    "sigmoid": lambda g, a, out, c: (g * (out * (1.0 - out)),),
    "relu": lambda g, a, out, c: (g * (1.0 if out > 0.0 else 0.0),),
    "abs": lambda g, a, out, c: (g * R._sign(a[0]),),
    "clamp": lambda g, a, out, c: (g * (1.0 if c[0] <= a[0] <= c[1] else 0.0),),
}
