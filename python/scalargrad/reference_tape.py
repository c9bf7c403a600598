"""``Tape`` on the reference backend: a recorded graph re-run forward and backward
through the op table of ``reference`` (its ``_order``, its sweep and each op's
forward), with the same results as the Rust backend's ``Tape``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from scalargrad import reference as R
from scalargrad._convert import forward_anomaly as _forward_anomaly

if TYPE_CHECKING:
    from scalargrad.reference import Value


def _value(v: Value) -> float:
    """The node's value from its operands' now, by its op's forward (``Tape.forward``)."""
    _, arity, forward, _ = v._row
    xs = v._prev
    if arity == R.BINARY:
        return forward(xs[0]._data, xs[1]._data)
    if arity == R.UNARY:
        return forward(xs[0]._data, v._c)
    return forward([x._data for x in xs])


class Tape:
    """A recorded graph that can be re-run: ``forward()`` recomputes every node from
    the current leaf values, ``backward()`` differentiates it again. Python control
    flow taken while the graph was built is frozen, as with ``torch.jit.trace``.
    The same API and results as the Rust backend's ``Tape``."""

    __slots__ = ("_order",)

    def __init__(self, root: Value) -> None:
        if not isinstance(root, R.Value):
            raise TypeError(f"Tape: root must be a reference Value, got {type(root).__name__}")
        self._order = R._order(root)

    @property
    def root(self) -> Value:
        return self._order[0]

    def __len__(self) -> int:
        return len(self._order)

    def forward(self) -> None:
        """Recomputes every node from the current leaf values."""
        check, leaf = R._checking(), R._LEAF
        for v in reversed(self._order):
            if v._row is not leaf:
                out = v._data = _value(v)
                if check and not math.isfinite(out):
                    _forward_anomaly(v._row.kind, v._prev, out)

    def zero_grad(self) -> None:
        """Sets the gradient of every recorded node (parameters included) to 0."""
        for v in self._order:
            v._grad = 0.0

    def backward(self) -> None:
        """Seeds the root with 1.0 and adds into every recorded node's gradient. An
        interrupted call leaves every gradient as it was."""
        R._sweep_or_restore(self._order, None)

    def __reduce__(self) -> tuple:
        raise TypeError("cannot pickle 'Tape' object: record a new Tape from the rebuilt graph")

    def run(self) -> float:
        """``forward()``, ``zero_grad()``, ``backward()``; returns the root's new value.
        An interrupted run leaves every gradient as it was (values are recomputed by
        the next run)."""
        self.forward()
        R._sweep_or_restore(self._order, self._order)
        return self.root.data
