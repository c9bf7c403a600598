"""Running a model on batches of a data set: what ``fit``, ``evaluate`` and
``predict`` call, so that they read as loops over batches.

``Batches`` is made once per ``fit``; ``Batches.run(idx)`` does one training
step's forward and backward on the samples ``idx`` and returns the loss and the
count of right predictions. How it does so is its own business: it rebuilds the
graph each batch, or records it once and replays it with a ``Tape`` (full-batch:
one graph for every epoch; mini-batches: one graph per batch size, whose input
and target leaves are set in bulk for each batch). Both give the same bits.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Callable, Optional

from scalargrad import _backend, losses

__all__ = ["Batches", "count_correct", "forward", "loss_on", "replayable"]

LossFn = Callable[[list, list], Any]

# Binary classifiers: right when (output > first) == (target > second).
_THRESHOLDS = {
    "hinge": (0.0, 0),
    "bce_with_logits": (0.0, 0.5),
    "bce": (0.5, 0.5),
    "binary_cross_entropy": (0.5, 0.5),
}

_CLASSIFIERS = (*_THRESHOLDS, "softmax_cross_entropy", "cross_entropy")


def count_correct(kind: Optional[str], outs: list, y: list) -> Optional[int]:
    """How many outputs are right, for classification losses (None otherwise)."""
    if kind not in _CLASSIFIERS:
        return None
    if outs and getattr(type(outs[0]), "_backend", None) is not None:
        outs = _backend.module_of(outs[:1]).get_data(outs)  # one call, not a float() each
    if kind in _THRESHOLDS:
        # A binary classifier, over the whole batch at C speed.
        o, t = _THRESHOLDS[kind]
        return sum(
            map(operator.eq, map(operator.gt, outs, repeat(o)), map(operator.gt, y, repeat(t)))
        )
    # Softmax: right when the target's logit is the largest.
    right = 0
    for row, t in zip(outs, y):
        scores = [float(v) for v in row]
        right += scores.index(max(scores)) == int(t)
    return right


def forward(model: Any, rows: Sequence[Sequence[float]]) -> list[Any]:
    """The model's outputs on ``rows``, as Values (lists of Values for
    multi-output models)."""
    return [model(x) for x in rows]


def loss_on(
    model: Any, loss_fn: LossFn, kind: Optional[str], rows: list, targets: list, l2: float = 0.0
) -> tuple[Any, list[Any], Optional[int]]:
    """Forward only: the loss Value on ``rows``/``targets`` (plus the L2 penalty),
    the outputs, and the count of right predictions."""
    outs = forward(model, rows)
    loss = loss_fn(outs, targets)
    if l2:
        loss = loss + losses.l2(model.parameters(), l2)
    return loss, outs, count_correct(kind, outs, targets)


def replayable(model: Any, kind: Optional[str]) -> bool:
    """Whether every batch builds the same graph: a built-in model (not a subclass,
    which may branch on values) and a built-in loss whose graph depends on the
    targets only through numbers (not softmax_cross_entropy, which shifts each row
    by its largest logit, a number read off the forward values)."""
    from scalargrad.nn import MLP, Layer, Neuron

    return type(model) in (MLP, Layer, Neuron) and kind in losses._TERMS


class Batches:
    """One training set, ready to run a step's forward and backward on any batch
    of it.

    ``replay``: ``None`` replays exactly when ``replayable``; ``False`` always
    rebuilds; ``True`` insists (full-batch: any model and loss; mini-batches: one of
    the losses in ``losses._TERMS``).
    """

    def __init__(
        self,
        model: Any,
        loss_fn: LossFn,
        kind: Optional[str],
        rows: list,
        targets: list,
        *,
        l2: float = 0.0,
        batch_size: Optional[int] = None,
        replay: Optional[bool] = None,
    ) -> None:
        self.model, self.loss_fn, self.kind, self.l2 = model, loss_fn, kind, l2
        self.rows, self.targets = rows, targets
        self.params = model.parameters()
        n = len(rows)
        self.full_batch = batch_size is None or batch_size >= n
        if replay is None:
            replay = replayable(model, kind)
        elif replay and not self.full_batch and kind not in losses._TERMS:
            name = kind or getattr(loss_fn, "__name__", repr(loss_fn))
            raise ValueError(
                f"fit: replay=True with mini-batches needs one of the losses "
                f"{', '.join(losses._TERMS)}, got {name!r}"
            )
        self.replay = bool(replay)
        self._tape: Any = None  # full-batch: the graph recorded on the first run
        self._outs: list[Any] = []
        self._sized: Optional[_SizedTapes] = None
        if self.replay and not self.full_batch and n and self.params:
            assert kind is not None
            self._sized = _SizedTapes(model, kind, l2, rows, targets)

    def run(self, idx: list[int]) -> tuple[float, Optional[int]]:
        """Forward and backward on the samples ``idx`` (gradients of the model's
        parameters start from 0): the loss and the count of right predictions
        (``None`` for regression losses)."""
        if self._tape is not None:
            # Same graph as last time: re-run it on the updated parameters.
            value = self._tape.run()
            return value, count_correct(self.kind, self._outs, self.targets)
        if self._sized is not None:
            return self._sized.run(idx)
        bx = [self.rows[i] for i in idx]
        by = [self.targets[i] for i in idx]
        loss, outs, correct = loss_on(self.model, self.loss_fn, self.kind, bx, by, self.l2)
        for p in self.params:
            p.grad = 0.0
        loss.backward()
        if self.replay and self.full_batch:
            self._tape = _backend.module_of([loss]).Tape(loss)
            self._outs = outs
        return loss.data, correct


class _SizedTapes:
    """Mini-batch replay: per batch size, one graph recorded with the inputs and
    the targets' numbers as leaves; each batch sets those leaves in bulk and
    re-runs the graph. Same bits as building the batch's loss from scratch."""

    def __init__(self, model: Any, kind: str, l2: float, rows: list, targets: list) -> None:
        self.model, self.kind, self.l2 = model, kind, l2
        self.rows, self.targets = rows, targets
        code, self.term = losses._TERMS[kind]
        self.codes = [code(t) for t in targets]
        self.graphs: dict[int, tuple] = {}

    def run(self, idx: list[int]) -> tuple[float, Optional[int]]:
        x = [v for i in idx for v in self.rows[i]]
        c = [self.codes[i] for i in idx]
        graph = self.graphs.get(len(idx))
        if graph is None:
            graph = self.graphs[len(idx)] = self._record(idx)
        B, xs, cs, outs, tape = graph
        B.set_data(xs, x)
        B.set_data(cs, c)
        value = tape.run()
        return value, count_correct(self.kind, outs, [self.targets[i] for i in idx])

    def _record(self, idx: list[int]) -> tuple:
        params = self.model.parameters()
        B = _backend.module_of(params[:1])
        xs = [[B.Value(float(v)) for v in self.rows[i]] for i in idx]
        cs = [B.Value(self.codes[i]) for i in idx]
        outs = [self.model(x) for x in xs]
        loss = losses._mean([self.term(o, t) for o, t in zip(outs, cs)])
        if self.l2:
            loss = loss + losses.l2(params, self.l2)
        return B, [v for x in xs for v in x], cs, outs, B.Tape(loss)
