"""Shared fixtures: every engine and nn test runs on both backends."""

from __future__ import annotations

from types import ModuleType

import pytest
import scalargrad


@pytest.fixture(params=scalargrad.BACKENDS)
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """The backend module under test (``Value``, ``sum``, ``dot``)."""
    return scalargrad.backend_module(request.param)


@pytest.fixture
def V(backend: ModuleType) -> type:
    """The ``Value`` class of the backend under test."""
    return backend.Value
