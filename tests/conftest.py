"""Shared fixtures: every engine and nn test runs on both backends."""

from __future__ import annotations

import os
from types import ModuleType

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
