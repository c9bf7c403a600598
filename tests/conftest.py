"""Shared fixtures: every engine and nn test runs on both backends."""

from __future__ import annotations

import gc
import os
from types import ModuleType
from typing import Callable

import pytest
import scalargrad

# scikit-learn's estimator checks test array-API dispatch only when SciPy reads
# this at its import (before any test module imports it); otherwise they skip.
os.environ.setdefault("SCIPY_ARRAY_API", "1")


@pytest.fixture(params=scalargrad.BACKENDS)
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """The backend module under test (``Value``, ``sum``, ``dot``)."""
    return scalargrad.backend_module(request.param)


@pytest.fixture
def V(backend: ModuleType) -> type:
    """The ``Value`` class of the backend under test."""
    return backend.Value


@pytest.fixture
def live_nodes(backend: ModuleType) -> Callable[[], int]:
    """Counts the live graph nodes of the backend under test: the Rust arena's own
    count, or the reference backend's ``Value`` objects that the cyclic collector
    tracks (every one, since the class has slots; a node freed by reference counting
    leaves the list at once, one kept alive by a leak or a cycle stays in it)."""
    if backend is scalargrad._core:
        return lambda: scalargrad._core.stats()["live_nodes"]
    cls = backend.Value
    return lambda: sum(type(o) is cls for o in gc.get_objects())
