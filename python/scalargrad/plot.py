"""Plots with matplotlib (the ``plot`` extra: ``pip install 'scalargrad[plot]'``).

The decision boundary of a 2-D classifier and training curves. Figures are built
from ``matplotlib.figure.Figure`` directly, never pyplot, so no display or GUI
backend is needed; save them with ``path=`` or ``fig.savefig``. matplotlib is
imported only when a plot is made, so ``import scalargrad.plot`` works without it.

>>> from scalargrad.plot import history
>>> fig = history({"loss": [0.9, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9]})
>>> len(fig.axes)            # loss, and accuracy on a twin axis
2
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from scalargrad._grad_mode import no_grad

__all__ = ["decision_boundary", "history"]

PathLike = Union[str, "os.PathLike[str]", None]

# More grid points than this is almost surely a too-small `h`: every point is a
# Python call of the model.
_MAX_GRID = 1_000_000

# Class 0 (y <= 0) red, class 1 blue: light for the regions, dark for the points.
_REGION = ("#f7c6b3", "#b7d7ea")
_POINT = ("#ca0020", "#0571b0")


def _figure(**kw: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "scalargrad.plot needs matplotlib: pip install 'scalargrad[plot]'"
        ) from None
    return Figure(**kw)


def _save(fig: Any, path: PathLike) -> None:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")


def decision_boundary(
    model: Any,
    X: Any,
    y: Any,
    *,
    ax: Any = None,
    path: PathLike = None,
    h: float = 0.05,
    margin: float = 0.5,
    title: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    xlabel: str = "x[0]",
    ylabel: str = "x[1]",
) -> Any:
    """The decision regions of a 2-D binary classifier, with the data on top.

    ``model([x0, x1])`` (called with two floats; it returns a Value or a number)
    is evaluated at every point of a grid of step ``h`` covering ``X`` plus
    ``margin``; a score above 0 is class 1. The plane is coloured by class and
    ``X`` (``n x 2``, a list or an array) is scattered over it, coloured by ``y``
    (labels in {-1, 1} or {0, 1}): class 1 blue, the other class red, light for
    the regions and dark for the points. The model is called once per grid point (about
    5,000 for the moons data set at the default ``h``), under ``no_grad()``.

    The axes are labelled ``xlabel`` and ``ylabel`` (the model's two inputs), and
    a legend names the two classes: ``class_names`` (red first, then blue), by
    default from the labels in ``y`` (``"class -1"`` and ``"class 1"``; ``"y <= 0"``
    and ``"y > 0"`` when a side holds several values).

    Draws into ``ax`` if given, else into a new figure; saves the figure to
    ``path`` (format from its suffix, 120 dpi) if given; returns the figure.

    >>> from scalargrad import Value
    >>> X, y = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]], [1, -1, 1, -1]
    >>> fig = decision_boundary(lambda p: Value(p[1]) - Value(p[0]), X, y, h=0.1)
    >>> ax = fig.axes[0]
    >>> ax.get_xlabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('x[0]', ['class -1', 'class 1'])
    """
    import numpy as np

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision_boundary: X must be n x 2, got shape {X.shape}")
    if len(y) != len(X):
        raise ValueError(f"decision_boundary: X has {len(X)} rows but y has {len(y)}")
    if not h > 0:
        raise ValueError(f"decision_boundary: h must be positive, got {h}")
    if class_names is None:
        class_names = [_class_name(y[y <= 0], "y <= 0"), _class_name(y[y > 0], "y > 0")]
    elif isinstance(class_names, str) or len(class_names) != 2:
        raise ValueError(f"decision_boundary: class_names must be two names, got {class_names!r}")
    xs = np.arange(X[:, 0].min() - margin, X[:, 0].max() + margin + h / 2, h)
    ys = np.arange(X[:, 1].min() - margin, X[:, 1].max() + margin + h / 2, h)
    if len(xs) * len(ys) > _MAX_GRID:
        raise ValueError(
            f"decision_boundary: a {len(xs)} x {len(ys)} grid is more than {_MAX_GRID:,} "
            "model calls; use a larger h"
        )
    xx, yy = np.meshgrid(xs, ys)
    with no_grad():  # scores only: no graph for thousands of model calls
        scores = np.array(
            [float(model([a, b])) for a, b in zip(xx.ravel().tolist(), yy.ravel().tolist())]
        )
    Z = (scores > 0).astype(float).reshape(xx.shape)

    if ax is None:
        fig = _figure(figsize=(6, 5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.contourf(xx, yy, Z, levels=[-0.5, 0.5, 1.5], colors=[_REGION[0], _REGION[1]])
    ax.scatter(X[:, 0], X[:, 1], c=[_POINT[int(t > 0)] for t in y], s=40, edgecolors="k")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], ls="", marker="o", ms=7, mfc=colour, mec="k", label=str(name))
            for colour, name in zip(_POINT, class_names)
        ],
        loc="best",
    )
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig


def _class_name(labels: Any, otherwise: str) -> str:
    """``"class -1"`` when ``labels`` hold one value, else ``otherwise``."""
    values = sorted(set(labels.tolist()))
    return f"class {values[0]:g}" if len(values) == 1 else otherwise


def history(hist: Any, *, path: PathLike = None, title: Optional[str] = None) -> Any:
    """Training curves: loss per epoch, and accuracy on a twin axis when recorded.

    ``hist`` is anything with ``loss`` and ``accuracy`` lists (``fit``'s
    ``History``), or a dict with those keys; an empty or missing ``accuracy``
    gives a loss-only figure with one Axes. Saves to ``path`` if given (format
    from its suffix, 120 dpi); returns the figure.

    >>> fig = history({"loss": [0.9, 0.5, 0.3], "accuracy": []}, title="training")
    >>> len(fig.axes), fig.axes[0].get_ylabel()
    (1, 'loss')
    """
    if isinstance(hist, Mapping):
        loss, acc = hist.get("loss", []), hist.get("accuracy", [])
    else:
        loss, acc = getattr(hist, "loss", []), getattr(hist, "accuracy", [])
    loss, acc = [float(v) for v in loss or []], [float(v) for v in acc or []]

    fig = _figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(range(1, len(loss) + 1), loss, color="tab:blue", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    if acc:
        ax2 = ax.twinx()
        ax2.plot(range(1, len(acc) + 1), acc, color="tab:orange", label="accuracy")
        ax2.set_ylabel("accuracy", color="tab:orange")
        ax2.set_ylim(0.0, 1.05)
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig
