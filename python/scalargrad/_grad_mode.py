"""``no_grad()``: ops that build no graph, for evaluation and plotting.

Both backends keep the switch per thread (``_core.set_grad_enabled`` and
``reference.set_grad_enabled``); ``no_grad()`` turns both off and back, so a
program that holds Values of both backends gets the same behaviour from each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from scalargrad import _core, reference

__all__ = ["both_backends", "no_grad"]


@contextmanager
def both_backends(switch: str, on: bool) -> Iterator[None]:
    """Sets the per-thread switch ``switch`` (``"set_grad_enabled"``,
    ``"set_anomaly"``) of both backends to ``on`` for a block, then gives each back
    the setting it had, also when the block raises."""
    previous = (getattr(_core, switch)(on), getattr(reference, switch)(on))
    try:
        yield
    finally:
        getattr(_core, switch)(previous[0])
        getattr(reference, switch)(previous[1])


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ops build no graph, on either backend: each op computes
    its value as usual (the same bits) and returns a new leaf holding it, with no
    operands (``_prev`` is empty), so ``backward()`` reaches nothing through it and
    a model's intermediate nodes are freed at once. For evaluation and plotting:
    ``plot.decision_boundary`` uses it, and ``predict`` for a model other than the
    built-in ones (which run as batched lanes).

    As PyTorch's ``torch.no_grad()``: per thread; blocks nest; leaving a block, by
    an exception too, restores the setting it found; ``@no_grad()`` decorates a
    function. ``detect_anomaly()`` still checks the values ops produce.

    >>> from scalargrad import Value, no_grad
    >>> w = Value(3.0, label="w")
    >>> with no_grad():
    ...     y = w * 2.0 + 1.0
    >>> y, y._prev
    (Value(data=7.0, grad=0.0), ())
    >>> z = w * 2.0  # recorded again after the block
    >>> z._prev[0] is w
    True
    """
    with both_backends("set_grad_enabled", False):
        yield
