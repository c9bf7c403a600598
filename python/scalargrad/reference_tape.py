"""``Tape`` on the reference backend: a recorded graph re-run forward and backward
through the op table of ``reference`` (its ``_order``, its sweep and each op's
forward), with the same results as the Rust backend's ``Tape``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from scalargrad import reference as R
from scalargrad._convert import forward_anomaly as _forward_anomaly
from scalargrad._convert import number as _number

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
    The same API and results as the Rust backend's ``Tape``.

    ``inputs``: leaves that ``run(values)`` sets, in order, before running."""

    __slots__ = ("_order", "_inputs")

    def __init__(self, root: Value, inputs: Optional[Iterable[Value]] = None) -> None:
        if not isinstance(root, R.Value):
            raise TypeError(f"Tape: root must be a reference Value, got {type(root).__name__}")
        self._inputs = _leaves(inputs or [])
        self._order = R._order(root)

    @property
    def inputs(self) -> list[Value]:
        """The leaves ``run(values)`` sets, in order (empty without ``inputs``)."""
        return list(self._inputs)

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

    def _set_inputs(self, values: Iterable[Any]) -> None:
        inputs = self._inputs
        if not inputs:
            raise ValueError(
                "Tape.run: values given, but the tape has no inputs: record it as "
                "Tape(root, inputs=[...]) to set them with run(values)"
            )
        try:
            it = iter(values)
        except TypeError:
            raise TypeError(
                f"Tape.run: values must be a sequence of numbers (one per input), got "
                f"{type(values).__name__}"
            ) from None
        xs = [_number("Tape.run", f"element {i} of values", x) for i, x in enumerate(it)]
        if len(xs) != len(inputs):
            raise ValueError(
                f"Tape.run: expected {len(inputs)} numbers (one per input), got {len(xs)}"
            )
        for v, x in zip(inputs, xs):
            v._data = x

    def __reduce__(self) -> tuple:
        raise TypeError("cannot pickle 'Tape' object: record a new Tape from the rebuilt graph")

    def run(self, values: Optional[Iterable[Any]] = None) -> float:
        """``forward()``, ``zero_grad()``, ``backward()``; returns the root's new value.
        An interrupted run leaves every gradient as it was (values are recomputed by
        the next run). ``values`` (one number per input, for a tape recorded with
        ``inputs``) first sets the inputs' ``data``, as ``set_data(inputs, values)``
        does."""
        if values is not None:
            self._set_inputs(values)
        self.forward()
        R._sweep_or_restore(self._order, self._order)
        return self.root.data


def _leaves(inputs: Iterable[Any]) -> tuple[Value, ...]:
    """``Tape``'s ``inputs``: distinct leaves."""
    out: list[Value] = []
    seen: dict[int, int] = {}
    for k, v in enumerate(inputs):
        if not isinstance(v, R.Value):
            raise TypeError(
                f"Tape inputs: element {k} must be a reference Value, got {type(v).__name__}"
            )
        if v._kind != "leaf":
            raise ValueError(f"Tape: input {k} must be a leaf, got a node made by {v._kind!r}")
        if id(v) in seen:
            raise ValueError(f"Tape: inputs {seen[id(v)]} and {k} are the same Value")
        seen[id(v)] = k
        out.append(v)
    return tuple(out)
