"""Model files: ``save`` and ``load`` for ``scalargrad.nn`` modules.

A file is JSON: the format name and version, the library version, the
architecture (``Module.config()``), every parameter as a hex float (so weights
round-trip bit for bit) and a SHA-256 checksum over the rest.

>>> import tempfile, os
>>> from scalargrad.nn import MLP
>>> m = MLP(2, [3, 1], seed=0)
>>> p = os.path.join(tempfile.mkdtemp(), "m.json")
>>> save(m, p)
>>> load(p).state_dict() == m.state_dict()
True

Reading treats the file as untrusted: the architecture must be one of the
built-in modules with sizes in ``[1, MAX_SIZE]``, and it must need exactly as many
parameters as the file holds, all checked before anything is built; so a small
forged file cannot make ``load`` allocate a huge model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union

from scalargrad import _core

if TYPE_CHECKING:
    from scalargrad.nn import Module

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_SIZE", "load", "load_into", "read", "save"]

FORMAT = "scalargrad.module"
FORMAT_VERSION = 1

#: The largest ``nin`` or layer size a file may declare.
MAX_SIZE = 1 << 20

_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")

PathLike = Union[str, "os.PathLike[str]"]
Backend = Union[str, ModuleType, None]


# ---- writing -------------------------------------------------------------------


def save(module: Module, path: PathLike) -> None:
    """Writes ``module``'s architecture, weights, the library version and a
    checksum to ``path`` as JSON.

    Atomic: the file is written beside the target and renamed over it, so a crash
    mid-save leaves any old file intact. If ``path`` is a symbolic link, the file
    it points to is replaced and the link kept. A save killed before its rename
    leaves its temporary file (``.NAME.PID.XXXX.tmp``) behind; the next save to
    the same path removes those of processes that no longer run.
    """
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _core.__version__,
        "architecture": module.config(),
        "parameters": {k: float.hex(v) for k, v in module.state_dict().items()},
    }
    body["checksum"] = _checksum(body)
    target = Path(os.path.realpath(path))  # write through a symlink to its target
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# How long a temporary file must have been left before a save removes it where
# its writer's liveness cannot be checked (Windows).
_STALE_SECONDS = 3600.0


def _remove_stale_temps(target: Path) -> None:
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return  # mkstemp reports the real problem
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or not _stale(int(m.group(1)), entry):
            continue
        # Another save may have removed it already, or it may not be ours to remove.
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def _stale(pid: int, entry: os.DirEntry[str]) -> bool:
    if os.name != "posix":
        try:
            return time.time() - entry.stat().st_mtime > _STALE_SECONDS
        except OSError:
            return False
    if pid == os.getpid():
        return False  # maybe another thread's save in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # alive under another user, or not a pid at all
    return False


def _checksum(body: dict[str, Any]) -> str:
    payload = {k: v for k, v in body.items() if k != "checksum"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ---- reading -------------------------------------------------------------------


def read(path: PathLike) -> dict[str, Any]:
    """Reads and checks a file written by ``save``: format, version, checksum, and
    an architecture that needs exactly the parameters the file holds. Returns the
    body with the parameters as floats. Raises ``OSError`` or ``ValueError`` saying
    what is wrong."""
    raw = Path(path).read_text()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not a scalargrad model file (truncated or corrupted: {e})"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}: not a scalargrad model file (JSON nested too deeply)") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{path}: not a scalargrad model file")
    if body.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {_short(body.get('format_version'))} is not supported "
            f"(this library reads version {FORMAT_VERSION})"
        )
    try:
        checksum = _checksum(body)
    except RecursionError:
        raise ValueError(f"{path}: malformed file: JSON nested too deeply") from None
    if body.get("checksum") != checksum:
        raise ValueError(f"{path}: checksum mismatch: the file is corrupted")
    params = body.get("parameters")
    bad = f"{path}: malformed file: no parameters, or parameters not numbers"
    if not isinstance(params, dict):
        raise ValueError(bad)
    try:
        body["parameters"] = {k: float.fromhex(v) for k, v in params.items()}
    except (TypeError, ValueError):
        raise ValueError(bad) from None
    body["architecture"] = _check_architecture(path, body.get("architecture"), len(params))
    return body


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(path: PathLike, what: str, x: Any) -> int:
    if type(x) is not int or not 1 <= x <= MAX_SIZE:
        raise ValueError(
            f"{path}: malformed architecture: {what} must be an int in [1, {MAX_SIZE}], "
            f"got {_short(x)}"
        )
    return x


def _act(path: PathLike, what: str, x: Any) -> str:
    if x not in _ACTIVATIONS:
        raise ValueError(
            f"{path}: malformed architecture: {what} must be one of "
            f"{', '.join(_ACTIVATIONS)}, got {_short(x)}"
        )
    return str(x)


def _check_architecture(path: PathLike, arch: Any, n_params: int) -> dict[str, Any]:
    """The architecture, checked field by field, with the parameter count it needs
    equal to ``n_params``: all arithmetic on small ints, nothing built."""
    if not isinstance(arch, dict) or not isinstance(arch.get("type"), str):
        raise ValueError(f"{path}: malformed file: no architecture")
    kind = arch["type"]
    if kind == "MLP":
        nin = _size(path, "nin", arch.get("nin"))
        layers = arch.get("layers")
        if not isinstance(layers, list) or not layers or len(layers) > n_params:
            raise ValueError(
                f"{path}: malformed architecture: layers must be a non-empty list of "
                f"[size, activation] with at most one layer per parameter, got {_short(layers)}"
            )
        needed, width = 0, nin
        for i, spec in enumerate(layers):
            if not isinstance(spec, list) or len(spec) != 2:
                raise ValueError(
                    f"{path}: malformed architecture: layers[{i}] must be [size, activation], "
                    f"got {_short(spec)}"
                )
            size = _size(path, f"layers[{i}] size", spec[0])
            _act(path, f"layers[{i}] activation", spec[1])
            needed += (width + 1) * size
            width = size
        clean = {"type": kind, "nin": nin, "layers": [list(s) for s in layers]}
    elif kind == "Layer":
        nin = _size(path, "nin", arch.get("nin"))
        nout = _size(path, "nout", arch.get("nout"))
        act = _act(path, "activation", arch.get("activation"))
        needed = (nin + 1) * nout
        clean = {"type": kind, "nin": nin, "nout": nout, "activation": act}
    elif kind == "Neuron":
        nin = _size(path, "nin", arch.get("nin"))
        act = _act(path, "activation", arch.get("activation"))
        needed = nin + 1
        clean = {"type": kind, "nin": nin, "activation": act}
    else:
        raise ValueError(f"{path}: malformed architecture: unknown module type {_short(kind)}")
    if set(arch) != set(clean):
        raise ValueError(
            f"{path}: malformed architecture: {kind} has the keys {sorted(clean)}, "
            f"got {_short(sorted(arch))}"
        )
    if needed != n_params:
        raise ValueError(
            f"{path}: the architecture needs {needed:,} parameters but the file holds {n_params:,}"
        )
    return clean


def load(path: PathLike, *, backend: Backend = None) -> Module:
    """Builds the module saved at ``path`` (architecture and weights) on
    ``backend``, after ``read`` has checked the file."""
    from scalargrad.nn import MLP, Layer, Neuron

    body = read(path)
    arch = body["architecture"]
    kind = arch["type"]
    module: Module
    if kind == "MLP":
        module = MLP(arch["nin"], [tuple(spec) for spec in arch["layers"]], seed=0, backend=backend)
    elif kind == "Layer":
        module = Layer(
            arch["nin"], arch["nout"], activation=arch["activation"], seed=0, backend=backend
        )
    else:
        module = Neuron(arch["nin"], activation=arch["activation"], seed=0, backend=backend)
    try:
        module.load_state_dict(body["parameters"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return module


def load_into(module: Module, path: PathLike) -> None:
    """Loads the weights saved at ``path`` into ``module``, after checking the file
    and that its architecture is ``module``'s. On any error (``OSError``,
    ``ValueError``) the module is left untouched."""
    body = read(path)
    if body["architecture"] != module.config():
        raise ValueError(
            f"{path}: architecture {_short(body['architecture'], 200)} does not match this "
            f"module's {module.config()}"
        )
    module.load_state_dict(body["parameters"])
