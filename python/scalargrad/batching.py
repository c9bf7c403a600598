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
from scalargrad._grad_mode import no_grad

__all__ = ["Batches", "count_correct", "forward", "loss_on", "replayable"]

LossFn = Callable[[list, list], Any]

#: A data set's samples: a float64 array with a row per sample, or a list of lists
#: of floats (what ``train`` makes of inputs NumPy cannot hold as numbers). Targets
#: are a 1-D array or a list likewise.
Rows = Any


def _lists(data: Any) -> list:
    """``data`` as lists of Python numbers, for the paths that call the model or the
    loss on each sample: an array's ``tolist()`` (the same floats), a list as is."""
    return data.tolist() if hasattr(data, "tolist") else data


def _array(rows: Rows) -> Any:
    """``rows`` as a C-contiguous float64 2-D array."""
    import numpy as np

    return np.ascontiguousarray(rows, dtype=np.float64)


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


def _count_rows(kind: Optional[str], out: Any, y: Any) -> Optional[int]:
    """``count_correct`` over a batch's outputs as an array (a row per sample)."""
    import numpy as np

    if kind in _THRESHOLDS:
        o, t = _THRESHOLDS[kind]
        return int(np.count_nonzero((out[:, 0] > o) == (y > t)))
    if kind in _CLASSIFIERS:
        return int(np.count_nonzero(out.argmax(axis=1) == y))
    return None


def _builtin(model: Any) -> bool:
    from scalargrad.nn import MLP, Layer, Neuron

    return type(model) in (MLP, Layer, Neuron) and bool(model.parameters())


def predict_rows(model: Any, rows: Rows) -> list[Any]:
    """The model's outputs on ``rows`` as floats (lists of floats for multi-output
    models): for a built-in model, one sample's graph run over all rows as batched
    lanes (the same bits as calling the model on each row); any other model called
    on each row under ``no_grad()``, which keeps no graph."""
    if not len(rows) or not _builtin(model):
        with no_grad():
            outs = forward(model, _lists(rows))
            return [
                [float(v) for v in o] if isinstance(o, (list, tuple)) else float(o) for o in outs
            ]
    from scalargrad.batch import BatchTape

    data = _array(rows)
    B = _backend.module_of(model.parameters()[:1])
    x = [B.Value(0.0) for _ in range(data.shape[1])]
    out = model(x)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    root = outs[0] if len(outs) == 1 else _backend.sum(outs)  # a root that reaches them all
    values = BatchTape(root, x, outs).forward(data)
    return values.tolist() if isinstance(out, (list, tuple)) else values[:, 0].tolist()


def evaluate_rows(
    model: Any, loss_fn: LossFn, kind: Optional[str], rows: Rows, targets: Any
) -> tuple[float, Optional[int]]:
    """The loss on ``rows``/``targets`` and the count of right predictions, forward
    only: as batched lanes for a built-in model and loss (the same bits as
    building the loss), else by building it."""
    if len(rows) and _builtin(model) and kind in losses._TERMS:
        lanes = _Lanes(model, kind, 0.0, rows, targets)
        lanes.tape.forward(lanes.data)
        return lanes.tape.value, _count_rows(kind, lanes.tape.outputs, lanes.y)  # type: ignore[return-value]
    loss, _, correct = loss_on(model, loss_fn, kind, _lists(rows), _lists(targets))
    return loss.data, correct


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
    targets only through numbers (``losses._TERMS``: every built-in loss)."""
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
        rows: Rows,
        targets: Any,
        *,
        l2: float = 0.0,
        batch_size: Optional[int] = None,
        replay: Optional[bool] = None,
    ) -> None:
        self.model, self.loss_fn, self.kind, self.l2 = model, loss_fn, kind, l2
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
        self._lanes: Optional[_Lanes] = None
        if self.replay and kind in losses._TERMS and n and self.params:
            self._lanes = _Lanes(model, kind, l2, rows, targets)
            self.rows, self.targets = rows, targets
        else:
            # The model and the loss are called on each sample: Python numbers.
            self.rows, self.targets = _lists(rows), _lists(targets)

    def run(self, idx: list[int]) -> tuple[float, Optional[int]]:
        """Forward and backward on the samples ``idx`` (gradients of the model's
        parameters start from 0): the loss and the count of right predictions
        (``None`` for regression losses). Full-batch, ``idx`` is every sample in
        order (``fit`` never shuffles a single batch)."""
        if self._tape is not None:
            # Same graph as last time: re-run it on the updated parameters.
            value = self._tape.run()
            return value, count_correct(self.kind, self._outs, self.targets)
        if self._lanes is not None:
            return self._lanes.run(None if self.full_batch else idx)
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


class _Lanes:
    """Batched lanes (``BatchTape``): the model and one sample's loss term recorded
    once, with the features and the target's numbers as inputs; every batch, full
    or mini, of any size, runs as lanes (one value per sample per node) in one call
    into the backend, with the L2 penalty's ``Tape`` run beside it. The loss and
    the outputs are bit-identical to rebuilding the batch's graph; the parameters'
    gradients are added in the order ``BatchTape`` documents."""

    def __init__(self, model: Any, kind: str, l2: float, rows: Rows, targets: Any) -> None:
        import numpy as np

        from scalargrad.batch import BatchTape

        code, term = losses._TERMS[kind]
        params = model.parameters()
        B = _backend.module_of(params[:1])
        x = [B.Value(0.0) for _ in rows[0]]
        out = model(x)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        codes = losses._codes(kind, targets, len(outs))
        if codes is None:
            codes = np.array([code(t, len(outs)) for t in targets], dtype=float)
        codes = codes.reshape(len(rows), -1)
        c = [B.Value(0.0) for _ in range(codes.shape[1])]
        one_number = isinstance(code(targets[0], len(outs)), float)
        self.tape = BatchTape(term(out, c[0] if one_number else c), [*x, *c], outs)
        self.data = np.ascontiguousarray(np.column_stack([_array(rows), codes]))
        self.l2 = B.Tape(losses.l2(params, l2)) if l2 else None
        self.group = _backend.param_group(params)
        self.params, self.kind = params, kind
        self.y = np.array(targets, dtype=float)

    def run(self, idx: Any) -> tuple[float, Optional[int]]:
        """One step on the rows ``idx`` (``None``: all of them, in order, with no copy)."""
        if self.l2 is not None:
            penalty = self.l2.run()  # sets every parameter's gradient to the penalty's
        elif self.group is not None:
            self.group.zero_grad()
        else:
            for p in self.params:
                p.grad = 0.0
        data, y = (self.data, self.y) if idx is None else (self.data[idx], self.y[idx])
        value = self.tape.run(data)
        if self.l2 is not None:
            value = value + penalty
        return value, _count_rows(self.kind, self.tape.outputs, y)
