"""Plots with matplotlib (the ``plot`` extra): the decision boundary of a 2-D
classifier and training curves. Figures are built without pyplot, so no display
is needed; save them with ``path=`` or ``fig.savefig``."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

__all__ = ["decision_boundary", "history"]

PathLike = Union[str, "os.PathLike[str]", None]


def _figure(**kw: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "scalargrad.plot needs matplotlib: pip install 'scalargrad[plot]'"
        ) from None
    return Figure(**kw)


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
) -> Any:
    """Colours the plane by the sign of ``model([x0, x1])`` (a Value or a number;
    positive is class 1) over a grid covering ``X``, and scatters ``X`` coloured by
    ``y``; returns the figure (saved to ``path`` if given)."""
    import numpy as np

    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    x0, x1 = X[:, 0].min() - margin, X[:, 0].max() + margin
    y0, y1 = X[:, 1].min() - margin, X[:, 1].max() + margin
    xx, yy = np.meshgrid(np.arange(x0, x1, h), np.arange(y0, y1, h))
    scores = np.array(
        [float(model([a, b])) for a, b in zip(xx.ravel().tolist(), yy.ravel().tolist())]
    )
    Z = (scores > 0).reshape(xx.shape)
    if ax is None:
        fig = _figure(figsize=(6, 5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.contourf(xx, yy, Z, cmap="Spectral", alpha=0.8, levels=[-0.5, 0.5, 1.5])
    ax.scatter(X[:, 0], X[:, 1], c=(y > 0), s=40, cmap="Spectral", edgecolors="k")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def history(hist: Any, *, path: PathLike = None, title: Optional[str] = None) -> Any:
    """Loss per epoch and, when recorded, accuracy on a second axis. ``hist`` is a
    ``History`` or a dict with ``loss`` and ``accuracy``."""
    get = hist.get if isinstance(hist, dict) else lambda k, d=None: getattr(hist, k, d)
    loss, acc = list(get("loss", [])), list(get("accuracy", []) or [])
    fig = _figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = range(1, len(loss) + 1)
    ax.plot(epochs, loss, color="tab:blue", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    if acc:
        ax2 = ax.twinx()
        ax2.plot(range(1, len(acc) + 1), acc, color="tab:orange", label="accuracy")
        ax2.set_ylabel("accuracy", color="tab:orange")
        ax2.set_ylim(0, 1.05)
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
