"""micrograd's import path: ``from scalargrad.engine import Value``.

``Value`` is the selected backend's (see ``scalargrad.backend``).
"""

from scalargrad import Value

__all__ = ["Value"]
