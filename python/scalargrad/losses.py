"""Loss functions over Values. Each returns one Value: the mean over the samples.

Predictions are Values (or lists of Values for ``softmax_cross_entropy``); targets
are numbers. Every loss is built from the op table, so it runs on both backends and
differentiates like any other expression.

>>> from scalargrad import Value
>>> from scalargrad.losses import hinge
>>> hinge([Value(2.0), Value(-0.5)], [1, 1]).data   # mean of relu(1 - y*s)
0.75
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from scalargrad import _backend

if TYPE_CHECKING:
    from scalargrad._core import Value

__all__ = [
    "binary_cross_entropy",
    "bce_with_logits",
    "check_targets",
    "hinge",
    "l2",
    "mse",
    "softmax",
    "softmax_cross_entropy",
]


def _pairs(name: str, preds: Any, targets: Any) -> tuple[list[Any], list[Any]]:
    if not isinstance(preds, (list, tuple)):
        preds, targets = [preds], [targets]
    targets = _column(targets)
    if len(preds) != len(targets):
        raise ValueError(f"{name}: {len(preds)} predictions but {len(targets)} targets")
    if not preds:
        raise ValueError(f"{name}: no predictions")
    return list(preds), targets


def _scalars(name: str, preds: list[Any]) -> list[Any]:
    """Checks that each prediction is one Value or number (a 1-output model's)."""
    for p in preds:
        if isinstance(p, (list, tuple)):
            raise ValueError(
                f"{name}: each prediction must be one Value (a model with 1 output), got a "
                f"list of {len(p)}; with one output per class use softmax_cross_entropy"
            )
    return preds


# ---- targets -------------------------------------------------------------------

#: Loss names and aliases, by the canonical name their targets are checked under.
_CANONICAL = {
    "hinge": "hinge",
    "mse": "mse",
    "bce": "binary_cross_entropy",
    "binary_cross_entropy": "binary_cross_entropy",
    "bce_with_logits": "bce_with_logits",
    "softmax_cross_entropy": "softmax_cross_entropy",
    "cross_entropy": "softmax_cross_entropy",
}

#: Losses whose model has one output per sample.
SINGLE_OUTPUT = ("hinge", "mse", "binary_cross_entropy", "bce_with_logits")


def _column(targets: Any) -> list[Any]:
    """The targets as a flat list; an ``(n, 1)`` column (NumPy or nested lists)
    becomes its ``n`` numbers."""
    if hasattr(targets, "tolist"):
        targets = targets.tolist()
    if not isinstance(targets, (list, tuple)):
        targets = list(targets)
    return [t[0] if isinstance(t, (list, tuple)) and len(t) == 1 else t for t in targets]


def _number(t: Any) -> float:
    if isinstance(t, (str, bytes, list, tuple, dict)):
        raise TypeError
    return float(t)


def check_targets(
    loss: str,
    targets: Any,
    n_classes: Optional[int] = None,
    *,
    caller: Optional[str] = None,
    soft: bool = False,
) -> list[Any]:
    """The targets, checked for the loss ``loss`` and made numbers: -1.0/+1.0 for
    ``hinge``; 0.0/1.0 for the binary cross-entropies; ints in ``0..n_classes-1``
    for ``softmax_cross_entropy`` (any non-negative int when ``n_classes`` is
    ``None``); finite floats for ``mse``. ``soft=True`` lets the binary
    cross-entropies take any probability in [0, 1] (the loss functions do; ``fit``
    and ``evaluate`` take labels). An ``(n, 1)`` column is accepted.

    Raises ``ValueError`` naming ``caller`` (default: the loss), the loss, the
    targets it expects and the ones it got.

    >>> check_targets("hinge", [[1], [-1]])
    [1.0, -1.0]
    >>> check_targets("hinge", [1, 2])
    Traceback (most recent call last):
    ...
    ValueError: hinge: loss 'hinge' expects targets -1 or +1, got 2 (1 of 2 targets)
    """
    name = _CANONICAL.get(loss, loss)
    ts = _column(targets)
    out: list[Any] = []
    bad: list[Any] = []
    for t in ts:
        try:
            x = _number(t)
        except (TypeError, ValueError, OverflowError):
            bad.append(t)
            continue
        if name == "hinge":
            ok = x == 1.0 or x == -1.0
        elif name in ("binary_cross_entropy", "bce_with_logits"):
            ok = 0.0 <= x <= 1.0 if soft else x == 0.0 or x == 1.0
        elif name == "softmax_cross_entropy":
            ok = x == int(x) and 0 <= x < (n_classes or math.inf) if math.isfinite(x) else False
            if ok:
                out.append(int(x))
                continue
        else:
            ok = math.isfinite(x)
        if ok:
            out.append(x)
        else:
            bad.append(t)
    if bad:
        raise ValueError(
            f"{caller or name}: loss {loss!r} expects targets {_expects(name, n_classes, soft)}, "
            f"got {_some(bad)} ({len(bad)} of {len(ts)} targets)"
        )
    return out


def _checked_targets(
    loss: str, targets: Any, n_classes: Optional[int] = None, *, caller: Optional[str] = None
) -> Any:
    """``check_targets(loss, targets, n_classes, caller=caller)``, as a 1-D NumPy
    array of the same numbers (int64 for ``softmax_cross_entropy``, else float64)
    checked without a Python loop per target when ``targets`` is numeric (an array,
    or a list of numbers or of one-number rows); otherwise, or when a target is bad,
    ``check_targets`` itself: its list, or its error."""
    import numpy as np

    y = _numeric_column(targets)
    if y is not None:
        name = _CANONICAL.get(loss, loss)
        if name == "hinge":
            ok = (y == 1.0) | (y == -1.0)
        elif name in ("binary_cross_entropy", "bce_with_logits"):
            ok = (y == 0.0) | (y == 1.0)
        elif name == "softmax_cross_entropy":
            # `2**53`: beyond it an int64 may not hold the class index check_targets gives.
            top = min(n_classes or math.inf, 2.0**53)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(y) & (y == np.trunc(y)) & (y >= 0) & (y < top)
            if ok.all():
                return y.astype(np.int64)
        else:
            ok = np.isfinite(y)
        if ok.all():
            return y
    return check_targets(loss, targets, n_classes, caller=caller)


def _numeric_column(targets: Any) -> Any:
    """``targets`` as a float64 1-D array when ``_column`` would give the numbers of
    a numeric array (1-D, or an ``(n, 1)`` column) or of a list of Python numbers
    (or of one-number lists); else ``None``."""
    import numpy as np

    if isinstance(targets, np.ndarray):
        if isinstance(targets, np.ma.MaskedArray):
            return None
        y = targets
    elif type(targets) in (list, tuple):
        kinds = set(map(type, targets))
        if not (kinds <= {float, int, bool} or kinds <= {list, tuple}):
            return None
        y = _asarray(targets)
        if y is None:
            return None
    else:
        return None
    if not (y.dtype.kind in "biu" or (y.dtype.kind == "f" and y.dtype.itemsize <= 8)):
        return None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim != 1:
        return None
    return y.astype(np.float64)


def _asarray(seq: Any) -> Any:
    """``np.asarray(seq)``, or ``None`` where NumPy cannot make one array of it
    (ragged, or an int no dtype holds)."""
    import numpy as np

    try:
        if _ragged_warns():
            with warnings.catch_warnings():  # not thread-safe: only where it is needed
                warnings.simplefilter("ignore")
                return np.asarray(seq)
        return np.asarray(seq)
    except (TypeError, ValueError, OverflowError):
        return None


@functools.cache
def _ragged_warns() -> bool:
    """Whether this NumPy warns of ragged nested lists (before 1.24) instead of
    raising ``ValueError``."""
    import numpy as np

    return bool(np.lib.NumpyVersion(np.__version__) < "1.24.0")


def _expects(name: str, n_classes: Optional[int], soft: bool) -> str:
    if name == "hinge":
        return "-1 or +1"
    if name in ("binary_cross_entropy", "bce_with_logits"):
        return "in [0, 1]" if soft else "0 or 1"
    if name == "softmax_cross_entropy":
        if n_classes is None:
            return "class indices 0, 1, 2, ..."
        return f"class indices 0..{n_classes - 1} (one per output)"
    return "finite numbers"


def _some(values: list[Any], limit: int = 5) -> str:
    seen: list[str] = []
    for v in values:
        r = repr(v)
        r = r if len(r) <= 40 else r[:37] + "..."
        if r not in seen:
            seen.append(r)
            if len(seen) > limit:
                break
    more = ", ..." if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def _mean(terms: list[Any]) -> Any:
    return _backend.sum(terms) * (1.0 / len(terms))


# Each loss below is one term per sample, ``term(pred, code(target))``: the target
# enters only through a number, which may also be a leaf Value holding it. A graph
# recorded once with such leaves can then be re-run on any batch of the same size
# (``fit`` replays mini-batches this way) and gives the same bits as the loss
# rebuilt from the numbers: each op sees the same operand values in the same order.


def _mse_term(p: Any, t: Any) -> Any:
    return (p - t) ** 2


def _bce_term(p: Any, t: Any, eps: float = 1e-12) -> Any:
    p = p.clamp(eps, 1.0 - eps)
    return -(t * p.log() + (1.0 - t) * (1.0 - p).log())


def _bce_logits_term(z: Any, t: Any) -> Any:
    softplus = z * 0.5 + abs(z) * 0.5 + (1.0 + (-abs(z)).exp()).log()
    return softplus - z * t


def _hinge_code(t: Any) -> float:
    return -(1.0 if t > 0 else -1.0)


def _hinge_code_n(t: Any, n: int) -> float:
    return _hinge_code(t)


def _hinge_term(s: Any, c: Any) -> Any:
    return (1 + c * s).relu()


def _one_hot(t: Any, n: int) -> list[float]:
    code = [0.0] * n
    code[int(t)] = 1.0
    return code


def _softmax_term(z: Sequence[Any], code: Sequence[Any]) -> Any:
    # -log softmax(z)[t] = logsumexp(z) - z[t], with z[t] picked by a one-hot dot, so
    # that the target enters as numbers (the same value as z[t] for finite logits).
    return _backend.logsumexp(z) - _backend.dot(code, z)


def _float_code(t: Any, n: int) -> float:
    return float(t)


#: ``name: (code, term)`` for the losses whose graph depends on the targets only
#: through numbers: ``term(prediction, code(target, n_outputs))`` is one sample's
#: loss, and a graph recorded once with the code's numbers as leaves runs on any
#: sample (``fit`` runs it over whole batches as lanes: ``scalargrad.BatchTape``).
_TERMS: dict[str, tuple[Callable[[Any, int], Any], Callable[[Any, Any], Any]]] = {
    "mse": (_float_code, _mse_term),
    "bce": (_float_code, _bce_term),
    "binary_cross_entropy": (_float_code, _bce_term),
    "bce_with_logits": (_float_code, _bce_logits_term),
    "hinge": (_hinge_code_n, _hinge_term),
    "softmax_cross_entropy": (_one_hot, _softmax_term),
    "cross_entropy": (_one_hot, _softmax_term),
}


def _codes(kind: str, targets: Any, n_outputs: int) -> Any:
    """What ``np.array([code(t, n_outputs) for t in targets], dtype=float)`` gives for
    the loss ``kind``'s ``code`` (``_TERMS``), from a 1-D array of checked targets
    (``_checked_targets``), computed over the whole array at once: one-hot rows by
    indexing, hinge's ``-y`` by ``np.where``, the others' floats by ``astype``.
    ``None`` for a list, or for class indices a one-hot row of ``n_outputs`` has no
    place for (the per-target code then raises)."""
    import numpy as np

    if not isinstance(targets, np.ndarray):
        return None
    code = _TERMS[kind][0]
    if code is _one_hot:
        n = len(targets)
        if targets.dtype.kind != "i" or not ((targets >= -n_outputs) & (targets < n_outputs)).all():
            return None
        codes = np.zeros((n, n_outputs))
        codes[np.arange(n), targets] = 1.0  # a negative index counts from the end, as a list's
        return codes
    if code is _float_code:
        return targets.astype(np.float64)
    if code is _hinge_code_n:
        return np.where(targets > 0, -1.0, 1.0)
    return None


def mse(preds: Sequence[Any], targets: Sequence[Any]) -> Value:
    """Mean squared error ``mean((p - t)**2)``."""
    preds, targets = _pairs("mse", preds, targets)
    targets = check_targets("mse", targets)
    return _mean([_mse_term(p, t) for p, t in zip(_scalars("mse", preds), targets)])


def binary_cross_entropy(probs: Sequence[Any], targets: Sequence[Any], eps: float = 1e-12) -> Value:
    """``-mean(t log p + (1 - t) log(1 - p))`` for probabilities ``p`` (clamped to
    ``[eps, 1 - eps]`` so a confident mistake costs a large but finite loss);
    targets ``t`` in [0, 1]."""
    probs, targets = _pairs("binary_cross_entropy", probs, targets)
    targets = check_targets("binary_cross_entropy", targets, soft=True)
    probs = _scalars("binary_cross_entropy", probs)
    return _mean([_bce_term(p, t, eps) for p, t in zip(probs, targets)])


def bce_with_logits(logits: Sequence[Any], targets: Sequence[Any]) -> Value:
    """Binary cross-entropy on logits, stable for any magnitude:
    ``max(z, 0) - z t + log(1 + exp(-|z|))``, with ``max(z, 0)`` written as
    ``z/2 + |z|/2`` so that the gradient at ``z = 0`` is ``sigmoid(0) - t`` (``relu``
    and ``abs`` alone would both give 0 there)."""
    logits, targets = _pairs("bce_with_logits", logits, targets)
    targets = check_targets("bce_with_logits", targets, soft=True)
    logits = _scalars("bce_with_logits", logits)
    return _mean([_bce_logits_term(z, t) for z, t in zip(logits, targets)])


def hinge(scores: Sequence[Any], targets: Sequence[Any]) -> Value:
    """SVM max-margin loss ``mean(relu(1 - y s))``, micrograd's demo loss. Targets
    are +1/-1."""
    scores, targets = _pairs("hinge", scores, targets)
    targets = check_targets("hinge", targets)
    scores = _scalars("hinge", scores)
    return _mean([_hinge_term(s, _hinge_code(t)) for s, t in zip(scores, targets)])


def softmax(values: Sequence[Any]) -> list[Value]:
    """Softmax of a list of Values, as a list of Values. Stable: shifted by the
    largest value (a constant, so gradients are unchanged)."""
    values = list(values)
    if not values:
        raise ValueError("softmax: no values")
    m = max(float(v) for v in values)
    exps = [(v - m).exp() for v in values]
    total = _backend.sum(exps)
    return [e / total for e in exps]


def softmax_cross_entropy(logits: Sequence[Sequence[Any]], targets: Sequence[int]) -> Value:
    """Mean of ``-log softmax(logits)[target]`` over samples; each sample's logits
    are a list of Values and its target a class index. Each term is
    ``logsumexp(logits) - logits[target]``: one stable ``logsumexp`` node, so no
    exponential overflows and nothing is read off the forward values."""
    logits, targets = _pairs("softmax_cross_entropy", logits, targets)
    terms = []
    for row in logits:
        if not isinstance(row, (list, tuple)) or len(row) < 2:
            got = f"{len(row)}" if isinstance(row, (list, tuple)) else f"one {type(row).__name__}"
            raise ValueError(
                f"softmax_cross_entropy: each sample needs a list of logits, one per class "
                f"(at least 2), got {got}; for two classes with one output use bce_with_logits"
            )
    targets = check_targets("softmax_cross_entropy", targets, min(len(r) for r in logits))
    for row, k in zip(logits, targets):
        terms.append(_softmax_term(list(row), _one_hot(k, len(row))))
    return _mean(terms)


def l2(params: Sequence[Any], alpha: float = 1.0) -> Value:
    """The L2 penalty ``alpha * sum(p * p)`` (micrograd's ``reg_loss``)."""
    return alpha * _backend.sum([p * p for p in params])
