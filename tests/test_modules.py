"""The package's modules hold what their names say, and import downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

import scalargrad
import scalargrad.batching
import scalargrad.io
import scalargrad.nn

PACKAGE = Path(scalargrad.__file__).parent

# The library modules below the package's front door: none may import the package
# itself (``import scalargrad``, ``from scalargrad import fit``), only its modules,
# so importing any of them never needs ``__init__`` to have finished.
LIBRARY = ["_backend", "batching", "io", "losses", "nn", "optim", "train"]


def _imports(module: str) -> list[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "scalargrad":
                found += [f"scalargrad.{a.name}" for a in node.names]
            else:
                found.append(node.module)
    return found


def test_library_modules_import_modules_not_the_package():
    for module in LIBRARY:
        for name in _imports(module):
            if name == "scalargrad" or name.startswith("scalargrad."):
                sub = name.split(".")[1] if "." in name else None
                ok = sub == "_core" or (sub is not None and (PACKAGE / f"{sub}.py").exists())
                assert ok, f"{module}.py imports {name}"


def test_no_module_imports_the_package_front_door_in_a_cycle():
    """``__init__`` imports ``train``, which imports ``optim``: neither may import
    ``scalargrad`` back."""
    for module in ("train", "optim", "batching", "losses", "_backend"):
        assert "scalargrad" not in _imports(module)


def test_files_live_in_io_and_nn_holds_the_modules():
    assert scalargrad.nn.load is scalargrad.io.load
    nn_imports = _imports("nn")
    assert "json" not in nn_imports and "hashlib" not in nn_imports
    assert "tempfile" not in nn_imports
    assert {"Module", "Neuron", "Layer", "MLP", "ACTIVATIONS"} <= set(scalargrad.nn.__all__)


def test_the_optimizer_asks_the_backend_for_its_parameter_group(backend):
    """Routing by backend lives in ``_backend.param_group``: the rust backend steps
    through its ``ParamGroup``, the reference backend through the Python loop."""
    from scalargrad import _backend
    from scalargrad.optim import SGD

    params = [backend.Value(1.0), backend.Value(2.0)]
    group = _backend.param_group(params)
    opt = SGD(params, lr=0.5)
    if hasattr(backend, "ParamGroup"):
        assert type(group) is backend.ParamGroup and type(opt._group) is backend.ParamGroup
    else:
        assert group is None and opt._group is None
    mixed = [scalargrad.backend_module("rust").Value(1.0), scalargrad.reference.Value(1.0)]
    assert _backend.param_group(mixed) is None
