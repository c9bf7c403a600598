"""The training loop: ``fit``, ``predict`` and ``evaluate``.

>>> from scalargrad import fit
>>> from scalargrad.nn import MLP
>>> X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
>>> y = [-1, 1, 1, -1]                                  # XOR
>>> model = MLP(2, [8, 1], seed=3)
>>> hist = fit(model, X, y, loss="hinge", epochs=300, progress=False, seed=0)
>>> hist.accuracy[-1]
1.0
"""

from __future__ import annotations

import math
import operator
import random
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Optional, Union

import scalargrad
from scalargrad import losses
from scalargrad.optim import Adam, Optimizer

__all__ = ["History", "LOSSES", "evaluate", "fit", "fit_like_micrograd", "predict"]

LossFn = Callable[[list, list], Any]

#: Loss names ``fit`` accepts, and the functions they mean.
LOSSES: dict[str, LossFn] = {
    "hinge": losses.hinge,
    "mse": losses.mse,
    "bce": losses.binary_cross_entropy,
    "binary_cross_entropy": losses.binary_cross_entropy,
    "bce_with_logits": losses.bce_with_logits,
    "softmax_cross_entropy": losses.softmax_cross_entropy,
    "cross_entropy": losses.softmax_cross_entropy,
}


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch."""

    loss: list[float] = field(default_factory=list)
    #: Fraction of training samples classified right (empty for regression losses).
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.loss)


def _rows(X: Any) -> list[list[float]]:
    if hasattr(X, "tolist"):
        X = X.tolist()
    rows = [
        [float(v) for v in row] if isinstance(row, (list, tuple)) else [float(row)] for row in X
    ]
    if not rows:
        raise ValueError("fit: X is empty")
    return rows


def _targets(y: Any) -> list[Any]:
    if hasattr(y, "tolist"):
        y = y.tolist()
    return list(y)


def _loss_fn(loss: Union[str, LossFn]) -> tuple[LossFn, Optional[str]]:
    if callable(loss):
        return loss, None
    try:
        return LOSSES[loss], loss
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}") from None


def _count(kind: Optional[str], outs: list, y: list) -> Optional[int]:
    """How many outputs are right, for classification losses (None otherwise)."""
    if kind not in _CLASSIFIERS:
        return None
    if outs and getattr(type(outs[0]), "_backend", None) is not None:
        outs = _backend_of(outs[0]).get_data(outs)  # one call instead of a float() each
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


# Binary classifiers: right when (output > first) == (target > second).
_THRESHOLDS = {
    "hinge": (0.0, 0),
    "bce_with_logits": (0.0, 0.5),
    "bce": (0.5, 0.5),
    "binary_cross_entropy": (0.5, 0.5),
}


_CLASSIFIERS = (
    "hinge",
    "bce_with_logits",
    "bce",
    "binary_cross_entropy",
    "softmax_cross_entropy",
    "cross_entropy",
)


def _backend_of(v: Any) -> Any:
    return scalargrad.backend_module(type(v)._backend)


def _batch_loss(model: Any, loss_fn: LossFn, kind: Optional[str], X: list, y: list, l2: float):
    outs = [model(x) for x in X]
    loss = loss_fn(outs, y)
    if l2:
        loss = loss + losses.l2(model.parameters(), l2)
    return loss, outs, _count(kind, outs, y)


def _replayable(model: Any, kind: Optional[str]) -> bool:
    """Whether every batch builds the same graph: a built-in model (not a subclass,
    which may branch on values) and a built-in loss whose graph depends on the
    targets only through numbers (not softmax_cross_entropy, which shifts each row
    by its largest logit, a number read off the forward values)."""
    from scalargrad.nn import MLP, Layer, Neuron

    return type(model) in (MLP, Layer, Neuron) and kind in losses._TERMS


class _BatchTapes:
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
        """Forward and backward on the samples ``idx``: the loss and the count of
        right predictions."""
        x = [v for i in idx for v in self.rows[i]]
        c = [self.codes[i] for i in idx]
        graph = self.graphs.get(len(idx))
        if graph is None:
            graph = self.graphs[len(idx)] = self._record(idx)
        B, xs, cs, outs, tape = graph
        B.set_data(xs, x)
        B.set_data(cs, c)
        value = tape.run()
        return value, _count(self.kind, outs, [self.targets[i] for i in idx])

    def _record(self, idx: list[int]) -> tuple:
        params = self.model.parameters()
        B = _backend_of(params[0])
        xs = [[B.Value(float(v)) for v in self.rows[i]] for i in idx]
        cs = [B.Value(self.codes[i]) for i in idx]
        outs = [self.model(x) for x in xs]
        loss = losses._mean([self.term(o, t) for o, t in zip(outs, cs)])
        if self.l2:
            loss = loss + losses.l2(params, self.l2)
        return B, [v for x in xs for v in x], cs, outs, B.Tape(loss)


def fit(
    model: Any,
    X: Any,
    y: Any,
    *,
    loss: Union[str, LossFn] = "hinge",
    optimizer: Optional[Optimizer] = None,
    schedule: Any = None,
    epochs: int = 100,
    batch_size: Optional[int] = None,
    l2: float = 0.0,
    progress: bool = True,
    seed: Optional[int] = None,
    early_stopping: Optional[int] = None,
    min_delta: float = 0.0,
    replay: Optional[bool] = None,
) -> History:
    """Trains ``model`` on ``X``, ``y`` and returns the per-epoch ``History``.

    - ``X``: samples (a NumPy array or a list of lists); ``y``: targets (+1/-1 for
      ``"hinge"``, 0/1 for the cross-entropies, class indices for
      ``"softmax_cross_entropy"``, numbers for ``"mse"``).
    - ``loss``: a name from ``LOSSES`` or a function ``(outputs, targets) -> Value``;
      ``l2`` adds ``l2 * sum(p*p)`` over the parameters (micrograd's ``reg_loss``).
    - ``optimizer``: defaults to ``Adam(model.parameters(), lr=0.01)``;
      ``schedule``: stepped once per epoch (with the epoch loss, for
      ``ReduceLROnPlateau``).
    - ``batch_size=None`` trains full-batch (micrograd's demo); otherwise on
      mini-batches of a shuffled order, reshuffled every epoch from ``seed``.
    - ``progress``: a tqdm bar with loss and accuracy; ``early_stopping=N`` stops when
      the epoch loss has not improved by ``min_delta`` for ``N`` epochs.

    The loss and accuracy recorded for an epoch are those of the forward passes made
    during it (as micrograd's demo prints them), averaged over its batches.

    ``replay``: training an ``nn.MLP``, ``Layer`` or ``Neuron`` with ``"hinge"``,
    ``"mse"``, ``"bce"`` or ``"bce_with_logits"`` builds the graph once and re-runs
    it (``Tape``: forward and backward with no Python work per node): full-batch,
    the same graph every epoch; with mini-batches, one graph per batch size whose
    input and target leaves are set for each batch. The results are bit-identical
    to rebuilding the graph. ``None`` (the default) replays exactly then; ``False``
    always rebuilds; ``True`` insists for any model (and, full-batch, any loss),
    freezing whatever the first build's Python code decided from values (a
    subclass's branches; ``softmax_cross_entropy``'s per-row shift, which leaves the
    loss the same in exact arithmetic but not in the last bits).
    """
    rows, targets = _rows(X), _targets(y)
    if len(rows) != len(targets):
        raise ValueError(f"fit: {len(rows)} samples in X but {len(targets)} targets in y")
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
    loss_fn, kind = _loss_fn(loss)
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=0.01)
    params = model.parameters()
    rng = random.Random(seed)
    n = len(rows)
    order = list(range(n))
    hist = History()
    best, stale = math.inf, 0

    full_batch = batch_size is None or batch_size >= n
    if replay is None:
        replay = _replayable(model, kind)
    elif replay and not full_batch and kind not in losses._TERMS:
        raise ValueError(
            f"fit: replay=True with mini-batches needs one of the losses "
            f"{', '.join(losses._TERMS)}, got {kind or getattr(loss, '__name__', loss)!r}"
        )
    tape = None
    batch_tapes = None
    if replay and not full_batch and n and model.parameters():
        batch_tapes = _BatchTapes(model, kind, l2, rows, targets)
    outs: list[Any] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="fit", unit="epoch", leave=True)
    if hasattr(model, "train"):
        model.train()
    try:
        for _ in range(epochs):
            if batch_size is not None and batch_size < n:
                rng.shuffle(order)
                batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
            else:
                batches = [order]
            total, right, classified = 0.0, 0, False
            for idx in batches:
                if tape is not None:
                    # Same graph as last epoch: re-run it on the updated parameters.
                    value = tape.run()
                    correct = _count(kind, outs, targets)
                elif batch_tapes is not None:
                    value, correct = batch_tapes.run(idx)
                else:
                    bx = [rows[i] for i in idx]
                    by = [targets[i] for i in idx]
                    lossv, outs, correct = _batch_loss(model, loss_fn, kind, bx, by, l2)
                    for p in params:
                        p.grad = 0.0
                    lossv.backward()
                    value = lossv.data
                    if replay and full_batch:
                        tape = _backend_of(lossv).Tape(lossv)
                    del lossv
                optimizer.step()
                total += value * len(idx)
                if correct is not None:
                    right += correct
                    classified = True
            epoch_loss = total / n
            hist.loss.append(epoch_loss)
            hist.lr.append(optimizer.lr)
            if classified:
                hist.accuracy.append(right / n)
            if schedule is not None:
                schedule.step(epoch_loss)
            if bar is not None:
                post = {"loss": f"{epoch_loss:.4f}"}
                if hist.accuracy:
                    post["acc"] = f"{hist.accuracy[-1]:.3f}"
                bar.set_postfix(post)
                bar.update(1)
            if early_stopping is not None:
                if epoch_loss < best - min_delta:
                    best, stale = epoch_loss, 0
                else:
                    stale += 1
                    if stale >= early_stopping:
                        hist.stopped_early = True
                        break
    finally:
        if bar is not None:
            bar.close()
    return hist


def predict(model: Any, X: Any) -> list[Any]:
    """The model's outputs on ``X`` as floats (lists of floats for multi-output models)."""
    out = []
    for x in _rows(X):
        o = model(x)
        out.append([float(v) for v in o] if isinstance(o, (list, tuple)) else float(o))
    return out


def evaluate(model: Any, X: Any, y: Any, *, loss: Union[str, LossFn] = "hinge") -> dict[str, float]:
    """``{"loss": ..., "accuracy": ...}`` of ``model`` on ``X``, ``y`` (no training;
    accuracy only for classification losses)."""
    rows, targets = _rows(X), _targets(y)
    loss_fn, kind = _loss_fn(loss)
    lossv, _, correct = _batch_loss(model, loss_fn, kind, rows, targets, 0.0)
    result = {"loss": lossv.data}
    if correct is not None:
        result["accuracy"] = correct / len(rows)
    return result


def fit_like_micrograd(
    model: Any,
    X: Any,
    y: Any,
    *,
    epochs: int = 100,
    progress: bool = False,
    seed: Optional[int] = None,
) -> History:
    """micrograd's demo recipe: hinge loss plus ``1e-4`` L2, full-batch SGD with the
    learning rate falling linearly from 1.0 to 0.1 over 100 steps (the demo's
    ``1.0 - 0.9*k/100``). What ``scalargrad demo`` and the benchmarks run."""
    from scalargrad.optim import SGD, LinearDecay

    opt = SGD(model.parameters(), lr=1.0)
    schedule = LinearDecay(opt, start=1.0, end=0.1, steps=100)
    return fit(
        model,
        X,
        y,
        loss="hinge",
        l2=1e-4,
        optimizer=opt,
        schedule=schedule,
        epochs=epochs,
        progress=progress,
        seed=seed,
    )
