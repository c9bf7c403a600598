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

from collections.abc import Callable, Sequence
from typing import Any

import scalargrad

__all__ = [
    "binary_cross_entropy",
    "bce_with_logits",
    "hinge",
    "l2",
    "mse",
    "softmax",
    "softmax_cross_entropy",
]


def _pairs(name: str, preds: Any, targets: Any) -> tuple[list[Any], list[Any]]:
    if not isinstance(preds, (list, tuple)):
        preds, targets = [preds], [targets]
    targets = list(targets)
    if len(preds) != len(targets):
        raise ValueError(f"{name}: {len(preds)} predictions but {len(targets)} targets")
    if not preds:
        raise ValueError(f"{name}: no predictions")
    return list(preds), targets


def _mean(terms: list[Any]) -> Any:
    return scalargrad.sum(terms) * (1.0 / len(terms))


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


def _hinge_term(s: Any, c: Any) -> Any:
    return (1 + c * s).relu()


#: ``name: (code, term)`` for the losses whose graph depends on the targets only
#: through numbers.
_TERMS: dict[str, tuple[Callable[[Any], float], Callable[[Any, Any], Any]]] = {
    "mse": (float, _mse_term),
    "bce": (float, _bce_term),
    "binary_cross_entropy": (float, _bce_term),
    "bce_with_logits": (float, _bce_logits_term),
    "hinge": (_hinge_code, _hinge_term),
}


def mse(preds: Sequence[Any], targets: Sequence[Any]) -> Any:
    """Mean squared error ``mean((p - t)**2)``."""
    preds, targets = _pairs("mse", preds, targets)
    return _mean([_mse_term(p, float(t)) for p, t in zip(preds, targets)])


def binary_cross_entropy(probs: Sequence[Any], targets: Sequence[Any], eps: float = 1e-12) -> Any:
    """``-mean(t log p + (1 - t) log(1 - p))`` for probabilities ``p`` (clamped to
    ``[eps, 1 - eps]`` so a confident mistake costs a large but finite loss)."""
    probs, targets = _pairs("binary_cross_entropy", probs, targets)
    return _mean([_bce_term(p, float(t), eps) for p, t in zip(probs, targets)])


def bce_with_logits(logits: Sequence[Any], targets: Sequence[Any]) -> Any:
    """Binary cross-entropy on logits, stable for any magnitude:
    ``max(z, 0) - z t + log(1 + exp(-|z|))``, with ``max(z, 0)`` written as
    ``z/2 + |z|/2`` so that the gradient at ``z = 0`` is ``sigmoid(0) - t`` (``relu``
    and ``abs`` alone would both give 0 there)."""
    logits, targets = _pairs("bce_with_logits", logits, targets)
    return _mean([_bce_logits_term(z, float(t)) for z, t in zip(logits, targets)])


def hinge(scores: Sequence[Any], targets: Sequence[Any]) -> Any:
    """SVM max-margin loss ``mean(relu(1 - y s))``, micrograd's demo loss. Targets
    are +1/-1 (0 counts as -1)."""
    scores, targets = _pairs("hinge", scores, targets)
    return _mean([_hinge_term(s, _hinge_code(t)) for s, t in zip(scores, targets)])


def softmax(values: Sequence[Any]) -> list[Any]:
    """Softmax of a list of Values, as a list of Values. Stable: shifted by the
    largest value (a constant, so gradients are unchanged)."""
    values = list(values)
    if not values:
        raise ValueError("softmax: no values")
    m = max(float(v) for v in values)
    exps = [(v - m).exp() for v in values]
    total = scalargrad.sum(exps)
    return [e / total for e in exps]


def softmax_cross_entropy(logits: Sequence[Sequence[Any]], targets: Sequence[int]) -> Any:
    """Mean of ``-log softmax(logits)[target]`` over samples; each sample's logits
    are a list of Values and its target a class index. Stable (log-sum-exp)."""
    logits, targets = _pairs("softmax_cross_entropy", logits, targets)
    terms = []
    for row, t in zip(logits, targets):
        row = list(row)
        k = int(t)
        if not 0 <= k < len(row):
            raise ValueError(f"softmax_cross_entropy: target {t} is not a class of {len(row)}")
        m = max(float(v) for v in row)
        lse = scalargrad.sum([(v - m).exp() for v in row]).log() + m
        terms.append(lse - row[k])
    return _mean(terms)


def l2(params: Sequence[Any], alpha: float = 1.0) -> Any:
    """The L2 penalty ``alpha * sum(p * p)`` (micrograd's ``reg_loss``)."""
    return alpha * scalargrad.sum([p * p for p in params])
