"""Neural-network modules over Values: micrograd's ``Neuron``, ``Layer`` and ``MLP``
with micrograd's semantics, plus activations per layer, seeded initialisation, a
choice of backend, state dicts and a summary; ``save``/``load`` are
``scalargrad.io``'s.

Code written for ``micrograd.nn`` ports by changing its import:

>>> import random
>>> from scalargrad.nn import MLP
>>> random.seed(1337)
>>> model = MLP(2, [16, 16, 1])        # ReLU hidden layers, linear output
>>> len(model.parameters())
337
>>> model([1.0, -2.0])._op
'+'

Each neuron computes ``act(dot(w, x) + b)``: one fused ``dot`` node however many
inputs, so a model's graph stays compact.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional, Union

from scalargrad import _backend as backends
from scalargrad import io as _io
from scalargrad.io import load

if TYPE_CHECKING:
    from scalargrad._core import Value

#: An input: a number or a Value.
Input = Union[float, "Value"]
#: What a module returns for one sample: a Value, or a list of Values when it has
#: several outputs (as micrograd's ``Layer`` and ``MLP`` do).
Output = Union["Value", list["Value"]]

__all__ = ["ACTIVATIONS", "MLP", "Input", "Layer", "Module", "Neuron", "Output", "load"]

#: Activation names, and how each neuron applies it.
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")

_NEURON_NAMES = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "linear": "Linear"}

Backend = Union[str, ModuleType, None]


def _backend(backend: Backend) -> ModuleType:
    if backend is None:
        return backends.backend_module(backends.backend)
    if isinstance(backend, ModuleType):
        return backend
    return backends.backend_module(backend)


def _rng(seed: Optional[int], rng: Optional[random.Random]) -> Any:
    """The random source for initial weights: ``rng`` if given, a fresh generator
    for ``seed``, else Python's global ``random`` (as micrograd draws)."""
    if rng is not None:
        return rng
    if seed is not None:
        return random.Random(seed)
    return random


def _inputs(name: str, x: Any, nin: int) -> Sequence[Input]:
    """``x`` as one sample of ``nin`` inputs, or a TypeError/ValueError saying why not."""
    try:
        n = len(x)
    except TypeError:
        n = None
    if n is None or isinstance(x, (str, bytes)):
        hint = f"; for one input write {name.lower()}([x])" if nin == 1 else ""
        raise TypeError(
            f"{name}: expects one sample, a list of {nin} inputs, got "
            f"{type(x).__name__} {x!r:.40}{hint}"
        )
    if n != nin:
        raise ValueError(f"{name}: expected {nin} inputs, got {n}")
    return x  # type: ignore[no-any-return]


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


class Module:
    """Base class: parameters, gradients, train/eval mode, state dicts, saving.

    Subclasses override ``named_parameters()`` (or, as in micrograd, ``parameters()``).
    """

    training: bool = True

    # Pickling and copy.deepcopy: the backend is stored by name; parameters copy as
    # fresh leaves, so a deep copy or an unpickled module is an independent model.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(state.get("backend"), ModuleType):
            state["backend"] = state["backend"].Value._backend
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("backend"), str):
            state = dict(state, backend=backends.backend_module(state["backend"]))
        self.__dict__.update(state)

    def __call__(self, x: Sequence[Input]) -> Output:
        """The module's output for one sample ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")

    def named_parameters(self) -> list[tuple[str, Value]]:
        """``(name, Value)`` pairs, in a stable order."""
        return [(str(i), p) for i, p in enumerate(self.parameters())]

    def parameters(self) -> list[Value]:
        """The trainable Values, in a stable order."""
        return []

    def zero_grad(self) -> None:
        """Sets every parameter's gradient to 0 (gradients accumulate otherwise)."""
        for p in self.parameters():
            p.grad = 0.0

    def children(self) -> Iterator[Module]:
        return iter(())

    def train(self, mode: bool = True) -> Module:
        """Training mode (the default); returns the module."""
        self.training = mode
        for c in self.children():
            c.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode; returns the module."""
        return self.train(False)

    # -- state --

    def state_dict(self) -> dict[str, float]:
        """Parameter values by name (plain floats)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Sets parameters from ``state``. Checks everything before changing
        anything: a bad state raises ``ValueError`` and leaves the module as it was."""
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise ValueError(
                f"load_state_dict: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
        values = {}
        for k in params:
            if k in state:
                try:
                    values[k] = float(state[k])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"load_state_dict: {k} must be a number, got {type(state[k]).__name__}"
                    ) from None
        for k, x in values.items():
            params[k].data = x

    def config(self) -> dict[str, Any]:
        """The architecture: enough to build the same module again (see ``load``)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its architecture")

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Writes architecture, weights, library version and a checksum as JSON
        (``scalargrad.io.save``: atomic, through symlinks; weights round-trip bit
        for bit)."""
        _io.save(self, path)

    def load(self, path: Union[str, os.PathLike[str]]) -> None:
        """Loads weights saved by ``save`` into this module, after checking the
        file's checksum and that its architecture is this module's. On any error
        (``OSError``, ``ValueError``) the module is left untouched."""
        _io.load_into(self, path)

    # -- display --

    def _rows(self) -> list[tuple[str, str, str, int]]:
        return [(type(self).__name__, "", "", len(self.parameters()))]

    def summary(self) -> str:
        """A table of layers, shapes, activations and parameter counts: a ``str``
        that a REPL shows as the table itself (its ``repr`` is the text)."""
        rows = [("layer", "shape", "activation", "params")]
        rows += [(a, b, c, f"{n:,}") for a, b, c, n in self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        line = "  ".join("-" * w for w in widths)

        def fmt(r: Sequence[str]) -> str:
            return "  ".join(
                s.rjust(w) if i == 3 else s.ljust(w) for i, (s, w) in enumerate(zip(r, widths))
            )

        total = len(self.parameters())
        out = [type(self).__name__, line, fmt(rows[0]), line]
        out += [fmt(r) for r in rows[1:]]
        out += [line, f"total parameters: {total:,}"]
        return _Table("\n".join(out))


class _Table(str):
    """A str whose repr is itself, so a REPL prints a table rather than an escaped string."""

    def __repr__(self) -> str:
        return str.__str__(self)


class Neuron(Module):
    """``act(w . x + b)`` with ``w`` drawn uniformly from [-1, 1] and ``b = 0``.

    ``Neuron(nin, nonlin=True)`` is micrograd's (ReLU, or linear with
    ``nonlin=False``); ``activation=`` picks any of ``ACTIVATIONS`` instead.
    """

    def __init__(
        self,
        nin: int,
        nonlin: bool = True,
        *,
        activation: Optional[str] = None,
        seed: Optional[int] = None,
        backend: Backend = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        if not isinstance(nin, int) or nin < 1:
            raise ValueError(f"Neuron: nin must be a positive int, got {nin!r}")
        self.backend = _backend(backend)
        self.activation = _activation(activation or ("relu" if nonlin else "linear"))
        r = _rng(seed, rng)
        V = self.backend.Value
        self.w = [V(r.uniform(-1, 1)) for _ in range(nin)]
        self.b = V(0.0)

    @property
    def nonlin(self) -> bool:
        return self.activation != "linear"

    @property
    def nin(self) -> int:
        return len(self.w)

    @property
    def nout(self) -> int:
        return 1

    def __call__(self, x: Sequence[Input]) -> Value:
        x = _inputs("Neuron", x, len(self.w))
        act = self.backend.dot(self.w, x) + self.b
        a = self.activation
        if a == "relu":
            return act.relu()
        if a == "tanh":
            return act.tanh()
        if a == "sigmoid":
            return act.sigmoid()
        return act

    def named_parameters(self) -> list[tuple[str, Value]]:
        return [(f"w.{i}", w) for i, w in enumerate(self.w)] + [("b", self.b)]

    def parameters(self) -> list[Value]:
        return [*self.w, self.b]

    def config(self) -> dict[str, Any]:
        return {"type": "Neuron", "nin": len(self.w), "activation": self.activation}

    def __repr__(self) -> str:
        return f"{_NEURON_NAMES[self.activation]}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons over the same ``nin`` inputs. Calling it returns a list of
    Values, or a single Value when ``nout == 1`` (as micrograd's does). Keyword
    arguments go to each ``Neuron``."""

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        if not isinstance(nout, int) or nout < 1:
            raise ValueError(f"Layer: nout must be a positive int, got {nout!r}")
        seed = kwargs.pop("seed", None)
        kwargs["rng"] = _rng(seed, kwargs.get("rng"))
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    @property
    def nin(self) -> int:
        return len(self.neurons[0].w)

    @property
    def activation(self) -> str:
        return self.neurons[0].activation

    @property
    def nout(self) -> int:
        return len(self.neurons)

    def __call__(self, x: Sequence[Input]) -> Output:
        neurons = self.neurons
        act = neurons[0].activation
        x = _inputs("Layer", x, len(neurons[0].w))
        if all(n.activation == act for n in neurons):
            # All neurons' nodes in one call: the same nodes `Neuron.__call__` builds.
            backend = neurons[0].backend
            out = backend.layer([n.w for n in neurons], [n.b for n in neurons], x, act)
        else:
            out = [n(x) for n in neurons]
        return out[0] if len(out) == 1 else out  # type: ignore[no-any-return]

    def children(self) -> Iterator[Module]:
        return iter(self.neurons)

    def named_parameters(self) -> list[tuple[str, Value]]:
        return [
            (f"neurons.{i}.{name}", p)
            for i, n in enumerate(self.neurons)
            for name, p in n.named_parameters()
        ]

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def config(self) -> dict[str, Any]:
        return {
            "type": "Layer",
            "nin": self.nin,
            "nout": len(self.neurons),
            "activation": self.activation,
        }

    def _rows(self) -> list[tuple[str, str, str, int]]:
        n = len(self.neurons)
        return [("Layer", f"{self.nin} -> {n}", self.activation, n * (self.nin + 1))]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


LayerSpec = Union[int, tuple[int, str], list]


class MLP(Module):
    """A multi-layer perceptron.

    ``MLP(nin, nouts)`` is micrograd's: ReLU hidden layers and a linear output.
    ``activation=`` sets the hidden layers' activation; an entry of ``nouts`` may be
    ``(size, activation)`` to set one layer's, e.g.
    ``MLP(2, [(4, "relu"), (4, "tanh"), (1, "sigmoid")])``. ``seed=`` makes the
    initial weights reproducible (otherwise they come from Python's ``random``, as
    in micrograd); ``backend=`` builds the model on ``"rust"`` or ``"reference"``.
    """

    def __init__(
        self,
        nin: int,
        nouts: Sequence[LayerSpec],
        *,
        activation: str = "relu",
        seed: Optional[int] = None,
        backend: Backend = None,
    ) -> None:
        if not isinstance(nin, int) or nin < 1:
            raise ValueError(f"MLP: nin must be a positive int, got {nin!r}")
        if isinstance(nouts, (str, bytes)) or not isinstance(nouts, Sequence):
            raise TypeError(
                f"MLP: nouts must be a list of layer sizes such as [16, 16, 1], got "
                f"{type(nouts).__name__} {nouts!r:.40}; for one layer of {nouts!r:.20} write "
                f"MLP(nin, [{nouts!r:.20}])"
            )
        if len(nouts) == 0:
            raise ValueError("MLP: nouts must name at least one layer")
        _activation(activation)
        specs = []
        for i, spec in enumerate(nouts):
            if isinstance(spec, (tuple, list)):
                size, act = spec
            else:
                size, act = spec, (activation if i != len(nouts) - 1 else "linear")
            specs.append((size, _activation(act)))
        self.backend = _backend(backend)
        rng = _rng(seed, None)
        sizes = [nin] + [s for s, _ in specs]
        self.layers = [
            Layer(sizes[i], size, activation=act, rng=rng, backend=self.backend)
            for i, (size, act) in enumerate(specs)
        ]

    def __call__(self, x: Sequence[Input]) -> Output:
        """The output for one sample: a Value when the last layer has one neuron
        (as micrograd's), else a list of Values. Hidden layers may have one neuron."""
        out: Any = _inputs("MLP", x, self.layers[0].nin)
        for layer in self.layers:
            # A 1-neuron layer returns a bare Value (micrograd's final layer does);
            # the next layer takes a list, so a hidden layer of width 1 passes [out].
            out = layer(out if isinstance(out, list) else [out])
        return out  # type: ignore[no-any-return]

    @property
    def nin(self) -> int:
        return self.layers[0].nin

    @property
    def nout(self) -> int:
        return len(self.layers[-1].neurons)

    def children(self) -> Iterator[Module]:
        return iter(self.layers)

    def named_parameters(self) -> list[tuple[str, Value]]:
        return [
            (f"layers.{i}.{name}", p)
            for i, layer in enumerate(self.layers)
            for name, p in layer.named_parameters()
        ]

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def config(self) -> dict[str, Any]:
        return {
            "type": "MLP",
            "nin": self.nin,
            "layers": [[len(layer.neurons), layer.activation] for layer in self.layers],
        }

    def _rows(self) -> list[tuple[str, str, str, int]]:
        return [r for layer in self.layers for r in layer._rows()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
