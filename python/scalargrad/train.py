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
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from scalargrad import losses
from scalargrad.batching import Batches, Rows, evaluate_rows, predict_rows
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


def _shape(model: Any) -> tuple[Optional[int], Optional[int]]:
    """The model's numbers of inputs and outputs, where it says them."""
    nin = getattr(model, "nin", None)
    nout = getattr(model, "nout", None)
    return (nin if isinstance(nin, int) else None), (nout if isinstance(nout, int) else None)


def _row(row: Any) -> list[float]:
    return [float(v) for v in row] if isinstance(row, (list, tuple)) else [float(row)]


def _rows(caller: str, X: Any, nin: Optional[int] = None) -> Rows:
    """The samples of ``X`` as a float64 array with a row per sample (or, where
    NumPy cannot hold them as numbers, as lists of floats), checked against the
    model's ``nin`` inputs; a 1-D ``X`` is one feature per sample."""
    array = _numeric_rows(X)
    if array is None:
        return _rows_of_lists(caller, X, nin)
    n, width = array.shape
    if n == 0:
        raise ValueError(f"{caller}: X is empty")
    if nin is not None and width != nin:
        hint = ""
        if nin > 1 and width == 1 and n == nin:
            hint = "; X looks like one sample: pass [x] for a single sample"
        raise ValueError(
            f"{caller}: each sample of X must have {nin} features (the model's "
            f"inputs), got {width} in sample 0{hint}"
        )
    return array


#: The types of sample ``_numeric_rows`` hands to ``np.asarray`` from a list: the
#: ones the per-sample path reads the same way (a row's numbers, or one number).
_ROW_TYPES = frozenset({list, tuple})
_NUMBER_TYPES = frozenset({float, int, bool})


def _numeric_rows(X: Any) -> Any:
    """``X`` as a C-contiguous float64 2-D array when it is a numeric NumPy array,
    or a list or tuple of rows (or of numbers) that NumPy turns into one holding
    the same floats the per-sample path reads; else ``None`` (that path then reads
    it, and raises its messages)."""
    import numpy as np

    if isinstance(X, np.ndarray):
        if isinstance(X, np.ma.MaskedArray):
            return None
        array = X
    elif type(X) in (list, tuple):
        kinds = set(map(type, X))
        if not kinds <= _NUMBER_TYPES:
            if not kinds <= _ROW_TYPES | {np.ndarray}:
                return None
            try:
                if len(set(map(len, X))) != 1:  # ragged: the per-sample path says where
                    return None
            except TypeError:  # a 0-d array
                return None
        array = losses._asarray(X)
        if array is None:
            return None
    else:
        return None
    if not _numeric(array.dtype):
        return None
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    elif array.ndim != 2:
        return None
    return np.ascontiguousarray(array, dtype=np.float64)


def _numeric(dtype: Any) -> bool:
    """Whether ``float()`` of every element gives what ``astype(float64)`` does:
    bools, integers, and floats of at most 64 bits."""
    return dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8)


def _rows_of_lists(caller: str, X: Any, nin: Optional[int] = None) -> list[list[float]]:
    """``_rows`` one sample at a time: whatever ``_numeric_rows`` does not take."""
    if hasattr(X, "tolist"):
        X = X.tolist()
    if isinstance(X, (str, bytes)) or not hasattr(X, "__iter__"):
        raise TypeError(
            f"{caller}: X must be a list of samples (a 2-D array), got {type(X).__name__}"
        )
    rows = [_row(row.tolist() if hasattr(row, "tolist") else row) for row in X]
    if not rows:
        raise ValueError(f"{caller}: X is empty")
    if nin is not None:
        for i, row in enumerate(rows):
            if len(row) != nin:
                hint = ""
                if nin > 1 and all(len(r) == 1 for r in rows) and len(rows) == nin:
                    hint = "; X looks like one sample: pass [x] for a single sample"
                raise ValueError(
                    f"{caller}: each sample of X must have {nin} features (the model's "
                    f"inputs), got {len(row)} in sample {i}{hint}"
                )
    return rows


def _epoch_batches(order: Any, batch_size: Optional[int], rng: Any) -> list:
    """One epoch's batches of sample indices (NumPy arrays): the whole set, or
    mini-batches of a fresh shuffle of ``order`` (in place, by NumPy's ``rng``)."""
    n = len(order)
    if batch_size is None or batch_size >= n:
        return [order]
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _loss_fn(loss: Union[str, LossFn]) -> tuple[LossFn, Optional[str]]:
    if callable(loss):
        return loss, None
    try:
        return LOSSES[loss], loss
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}") from None


def _targets(caller: str, y: Any, kind: Optional[str], nout: Optional[int]) -> Any:
    """The targets, checked against the loss and against the model's outputs: for a
    built-in loss, ``check_targets``' numbers (as a 1-D array when ``y`` is numeric);
    for a loss function of your own, ``y`` as a flat list."""
    name = losses._CANONICAL.get(kind or "")
    if name in losses.SINGLE_OUTPUT and nout not in (None, 1):
        raise ValueError(
            f"{caller}: loss {kind!r} needs a model with 1 output, got {nout} outputs; "
            f"with one output per class use 'softmax_cross_entropy'"
        )
    if name == "softmax_cross_entropy" and nout == 1:
        raise ValueError(
            f"{caller}: loss {kind!r} needs a model with one output per class (at least 2), "
            f"got 1 output; for two classes use 'bce_with_logits', or give the model 2 outputs"
        )
    if name is None:
        return losses._column(y)
    return losses._checked_targets(kind, y, nout, caller=caller)  # type: ignore[arg-type]


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

    - ``X``: samples (a NumPy array or a list of lists; 1-D: one feature per
      sample); ``y``: targets (+1/-1 for ``"hinge"``, 0/1 for the cross-entropies,
      class indices for ``"softmax_cross_entropy"``, numbers for ``"mse"``). Numeric
      arrays (and lists NumPy reads as one) are checked and encoded whole, with no
      Python work per sample; anything else is read one sample at a time, to the
      same floats and the same errors.
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

    ``replay``: training an ``nn.MLP``, ``Layer`` or ``Neuron`` with a built-in
    loss records one sample's graph (the model and its loss term) once and runs
    every batch through it as batched lanes (``scalargrad.BatchTape``: one value per
    sample per node, in Rust, on several threads for large batches), full batch or
    mini-batches of any size. Losses, outputs and accuracies are bit-identical to
    rebuilding each batch's graph; the parameters' gradients are the same sums
    added in ``BatchTape``'s documented order (a few ulps apart). ``None`` (the
    default) replays exactly then; ``False`` always rebuilds; ``True`` insists for
    any model (freezing whatever the first build's Python code decided from values,
    such as a subclass's branches) and, full-batch, any loss (then the whole
    batch's graph is recorded once as a ``Tape``).
    """
    if optimizer is not None and not (
        callable(getattr(optimizer, "step", None)) and hasattr(optimizer, "lr")
    ):
        raise TypeError(
            f"fit: optimizer must be an optimizer object such as "
            f"scalargrad.optim.Adam(model.parameters(), lr=0.01), got {optimizer!r}"
        )
    loss_fn, kind = _loss_fn(loss)
    nin, nout = _shape(model)
    rows = _rows("fit", X, nin)
    targets = _targets("fit", y, kind, nout)
    if len(rows) != len(targets):
        raise ValueError(f"fit: {len(rows)} samples in X but {len(targets)} targets in y")
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=0.01)
    batches = Batches(
        model, loss_fn, kind, rows, targets, l2=l2, batch_size=batch_size, replay=replay
    )
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(rows)
    order = np.arange(n)
    hist = History()
    best, stale = math.inf, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        # Redrawn at most 10 times a second, after the epoch it shows has ended.
        bar = tqdm(total=epochs, desc="fit", unit="epoch", leave=True, mininterval=0.1)
    if hasattr(model, "train"):
        model.train()
    try:
        for _ in range(epochs):
            total, right, classified = 0.0, 0, False
            epoch = _epoch_batches(order, batch_size, rng)
            for idx in epoch:
                value, correct = batches.run(idx)
                optimizer.step()
                total += value * len(idx)
                if correct is not None:
                    right += correct
                    classified = True
            # One batch: its loss itself (`value * n / n` may round differently).
            epoch_loss = value if len(epoch) == 1 else total / n
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
                bar.set_postfix(post, refresh=False)
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
    """The model's outputs on ``X`` (a list of samples) as floats (lists of floats
    for multi-output models). A built-in model runs as batched lanes; any other model
    is called on each sample under ``no_grad()``, so no graph is kept."""
    return predict_rows(model, _rows("predict", X, _shape(model)[0]))


def evaluate(model: Any, X: Any, y: Any, *, loss: Union[str, LossFn] = "hinge") -> dict[str, float]:
    """``{"loss": ..., "accuracy": ...}`` of ``model`` on ``X``, ``y`` (no training;
    accuracy only for classification losses). The targets are checked as ``fit``
    checks them."""
    loss_fn, kind = _loss_fn(loss)
    nin, nout = _shape(model)
    rows = _rows("evaluate", X, nin)
    targets = _targets("evaluate", y, kind, nout)
    if len(rows) != len(targets):
        raise ValueError(f"evaluate: {len(rows)} samples in X but {len(targets)} targets in y")
    value, correct = evaluate_rows(model, loss_fn, kind, rows, targets)
    result = {"loss": value}
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
