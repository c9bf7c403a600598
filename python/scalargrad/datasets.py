"""Toy datasets for demos and tests (scikit-learn's generators; the ``datasets``
extra installs it)."""

from __future__ import annotations

from typing import Any

__all__ = ["moons"]


def moons(n_samples: int = 100, noise: float = 0.1, seed: int = 1) -> tuple[Any, Any]:
    """Two interleaving half-moons, as in micrograd's demo: ``X`` of shape
    ``(n_samples, 2)`` and labels ``y`` in {-1, +1} (what the hinge loss expects).

    >>> X, y = moons(100)
    >>> X.shape, sorted(set(y.tolist()))
    ((100, 2), [-1, 1])
    """
    try:
        from sklearn.datasets import make_moons
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "scalargrad.datasets needs scikit-learn: pip install 'scalargrad[datasets]'"
        ) from None
    X, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return X, y * 2 - 1
