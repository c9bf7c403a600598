"""Batched lanes: one sample's graph, recorded once, run over a whole batch.

A model's per-sample graph (the model and one sample's loss term) is recorded with
its per-sample leaves (the inputs, and the target's number) marked as ``inputs``;
everything else it reaches (parameters, constants) is shared by all samples.
``BatchTape.run(X)`` then computes every row of ``X`` at once, each node holding one
value per row, and adds the gradient of the batch's mean (or sum) into the
parameters' ``grad``, in Rust with no Python work per node or per row (and on
several threads for large batches: see ``set_num_threads``).

>>> import scalargrad
>>> from scalargrad import Value, BatchTape
>>> w, b = Value(0.5), Value(0.0)               # parameters: shared by every row
>>> x, t = Value(0.0), Value(0.0)               # one sample's input and target
>>> y = w * x + b
>>> tape = BatchTape((y - t) ** 2, inputs=[x, t], outputs=[y])
>>> tape.run([[1.0, 2.0], [2.0, 3.0]])          # mean of (w*x + b - t)**2 over rows
3.125
>>> w.grad, b.grad                              # its gradient, added into grad
(-5.5, -3.5)
>>> tape.outputs.tolist()                       # y for each row
[[0.5], [1.0]]

Per-row values, and everything computed from them, are bit-identical to running
each row's graph on its own. A parameter's gradient is the sum of the rows'
contributions in a fixed order (chunks of 64 rows, each reduced by eight
interleaved accumulators, then the chunks in order; see ``rust/lanes.rs``), the
same on both backends and for any thread count; against a graph of the whole
batch built eagerly it differs by summation order only (a few ulps: tested to
1e-12 relative to the gradient's scale).

Python control flow taken while recording is frozen, as with ``Tape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from scalargrad import _backend

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BatchTape", "get_num_threads", "set_num_threads"]


def _lane_tape(root: Any) -> Any:
    """The backend's ``LaneTape`` class for ``root``."""
    kind = getattr(type(root), "_backend", None)
    if kind == "rust":
        return _backend.backend_module("rust").LaneTape
    if kind == "reference":
        from scalargrad.reference_lanes import LaneTape

        return LaneTape
    raise TypeError(f"BatchTape: root must be a Value, got {type(root).__name__}")


class BatchTape:
    """``root``'s graph for one sample, run over batches of rows.

    - ``inputs``: the leaves that take a new value for every row, in column order
      (features and target numbers alike); every other leaf is shared.
    - ``outputs``: nodes whose per-row values ``run`` and ``forward`` report
      (default: ``[root]``).
    """

    def __init__(
        self, root: Any, inputs: Sequence[Any], outputs: Optional[Sequence[Any]] = None
    ) -> None:
        self.inputs = list(inputs)
        self.output_nodes = [root] if outputs is None else list(outputs)
        self._tape = _lane_tape(root)(root, self.inputs, self.output_nodes)
        self.root = root
        #: The outputs of the last ``run`` or ``forward``, one row per sample.
        self.outputs: Optional[np.ndarray] = None
        #: The mean of the root over the rows of the last ``run`` or ``forward``.
        self.value: Optional[float] = None

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    def __len__(self) -> int:
        return len(self._tape)

    def _rows(self, op: str, X: Any) -> np.ndarray:
        import numpy as np

        try:
            x = np.ascontiguousarray(X, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"BatchTape.{op}: X must hold numbers ({e})") from None
        if x.ndim == 1 and self.n_inputs == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(
                f"BatchTape.{op}: expected X of shape (rows, {self.n_inputs}), one column "
                f"per input, got shape {x.shape}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"BatchTape.{op}: X has no rows")
        return x

    def run(self, X: Any, *, reduction: str = "mean") -> float:
        """Forward over every row of ``X``, then backward of the rows' ``"mean"``
        (or ``"sum"``) of the root: its gradient is *added* into every shared leaf's
        ``grad`` (zero them first, as with ``backward()``). Returns that mean (sum).
        Ctrl-C leaves every gradient as it was."""
        x = self._rows("run", X)
        n = x.shape[0]
        if reduction == "mean":
            scale = 1.0 / n
        elif reduction == "sum":
            scale = 1.0
        else:
            raise ValueError(f"BatchTape.run: reduction must be 'mean' or 'sum', got {reduction!r}")
        out = _empty(n, len(self.output_nodes))
        # The seed is what `sum(terms) * scale` sends each term: 1.0 * scale.
        total = self._tape.run(x, 1.0 * scale, out)
        self.outputs = out
        self.value = total * (1.0 / n)
        return total * scale if reduction == "mean" else total

    def forward(self, X: Any) -> np.ndarray:
        """The outputs for every row of ``X``, shape ``(rows, len(outputs))``; no
        gradients are touched."""
        x = self._rows("forward", X)
        out = _empty(x.shape[0], len(self.output_nodes))
        total = self._tape.run(x, None, out)
        self.outputs = out
        self.value = total * (1.0 / x.shape[0])
        return out


def _empty(rows: int, cols: int) -> np.ndarray:
    import numpy as np

    return np.empty((rows, cols))


def set_num_threads(n: int) -> None:
    """Sets how many threads a ``BatchTape`` run may use (default: every core, or
    the ``SCALARGRAD_NUM_THREADS`` environment variable). Results do not depend on
    it: the reduction order is fixed by the batch, not by the threads."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    _backend.backend_module("rust").set_num_threads(n)


def get_num_threads() -> int:
    """How many threads a ``BatchTape`` run may use."""
    return int(_backend.backend_module("rust").get_num_threads())
