"""Python and PyTorch habits: ``format``, ``int``, ``round``, ``item``, ``bool`` of a
Value, and ``no_grad()``, on both backends."""

from __future__ import annotations

import math
import struct
import threading
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
import scalargrad
from scalargrad import _core, detect_anomaly, no_grad, reference
from scalargrad.nn import MLP, Module

NAN, INF = float("nan"), float("inf")


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


# ---- format, int, round, item, bool --------------------------------------------


@pytest.mark.parametrize(
    "spec", [".3f", ".2e", "g", ">10.4f", "+.1%", "08.2f", ",.2f", ".0f", "e", "n", "G"]
)
@pytest.mark.parametrize("x", [2.56789, -1234.5, 0.0, -0.0, 1e-300, 1e300, NAN, INF, -INF])
def test_format_spec_formats_data(V, x, spec):
    assert format(V(x, label="v"), spec) == format(x, spec)


def test_format_in_f_strings(V):
    v = V(2.56789, label="w")
    assert f"{v:.3f}" == "2.568"
    assert f"loss {v:.2e}!" == "loss 2.57e+00!"
    # an empty spec keeps str() and repr(), as before
    assert f"{v}" == str(v) == repr(v) == "Value(data=2.56789, grad=0.0, label='w')"
    assert format(v) == format(v, "") == repr(v)
    assert str.format("{}|{:.1f}", v, v) == f"{v!r}|2.6"


def test_format_errors_name_the_value(V):
    with pytest.raises(ValueError) as e:
        format(V(1.0), ".3z")
    assert str(e.value) == (
        "format(Value, '.3z'): Unknown format code 'z' for object of type 'float'"
    )
    with pytest.raises(TypeError):
        format(V(1.0), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("x", [2.7, -2.7, 0.5, -0.0, 1e20, 2.0**63 + 2048, -1e300])
def test_int_truncates_like_a_float(V, x):
    got = int(V(x))
    assert type(got) is int and got == int(x)


@pytest.mark.parametrize("x, exc", [(NAN, ValueError), (INF, OverflowError), (-INF, OverflowError)])
def test_int_of_non_finite_raises_as_for_a_float(V, x, exc):
    with pytest.raises(exc) as e:
        int(V(x))
    with pytest.raises(exc) as want:
        int(x)
    assert str(e.value) == str(want.value)


@pytest.mark.parametrize("x", [2.5, 3.5, -2.5, 2.675, 1234.5678, -0.4, 1e17, 0.0])
def test_round_as_for_a_float(V, x):
    for got, want in [
        (round(V(x)), round(x)),
        (round(V(x), None), round(x, None)),
        (round(V(x), 2), round(x, 2)),
        (round(V(x), -2), round(x, -2)),
        (round(V(x), np.int64(1)), round(x, 1)),
        (round(V(x), 0), round(x, 0)),
    ]:
        assert type(got) is type(want) and got == want
    assert type(round(V(x))) is int and type(round(V(x), 2)) is float


def test_round_errors(V):
    with pytest.raises(TypeError) as e:
        round(V(2.5), 1.5)  # type: ignore[call-overload]
    assert str(e.value) == "round: ndigits must be an integer or None, got float"
    with pytest.raises(ValueError, match="NaN"):
        round(V(NAN))
    with pytest.raises(OverflowError):
        round(V(INF))
    assert math.isnan(round(V(NAN), 2))


def test_item_is_the_data_as_a_float(V):
    a = V(3.0)
    b = a * a - 0.5
    for v, want in [(a, 3.0), (b, 8.5), (V(7), 7.0), (V(np.float32(0.25)), 0.25)]:
        got = v.item()
        assert type(got) is float and got == want == v.data
    assert math.isnan(V(NAN).item())


@pytest.mark.parametrize(
    "x, want",
    [
        (0.0, False),
        (-0.0, False),
        (1.0, True),
        (-3.5, True),
        (1e-320, True),
        (NAN, True),
        (INF, True),
        (-INF, True),
    ],
)
def test_bool_as_for_a_float(V, x, want):
    v = V(x)
    assert bool(v) is want is bool(x)
    assert (not v) is (not want)
    assert bool(v * 1.0) is want  # a node's data, not its existence
    assert ("yes" if v else "no") == ("yes" if want else "no")


def test_habits_leave_hashing_and_comparison_alone(V):
    a, b = V(0.0), V(0.0)
    assert not a and a == b and hash(a) != hash(b) and len({a, b, a}) == 2


# ---- no_grad ---------------------------------------------------------------------

# Every way an op is built, each a function of a backend and two leaves.
OPS: dict[str, Callable[[ModuleType, Any, Any], Any]] = {
    "a+b": lambda B, a, b: a + b,
    "a-b": lambda B, a, b: a - b,
    "a*b": lambda B, a, b: a * b,
    "a/b": lambda B, a, b: a / b,
    "a+1.5": lambda B, a, b: a + 1.5,
    "2-a": lambda B, a, b: 2 - a,
    "a*3": lambda B, a, b: a * 3,
    "0.5/a": lambda B, a, b: 0.5 / a,
    "a+np": lambda B, a, b: a + np.float64(0.25),
    "-a": lambda B, a, b: -a,
    "a**2": lambda B, a, b: a**2,
    "2**a": lambda B, a, b: 2**a,
    "a**b": lambda B, a, b: a**b,
    "abs": lambda B, a, b: abs(a),
    "exp": lambda B, a, b: a.exp(),
    "log": lambda B, a, b: a.log(),
    "tanh": lambda B, a, b: a.tanh(),
    "sigmoid": lambda B, a, b: a.sigmoid(),
    "relu": lambda B, a, b: (-a).relu(),
    "clamp": lambda B, a, b: a.clamp(0.0, 1.0),
    "sum": lambda B, a, b: B.sum([a, b, 1.0], 0.5),
    "dot": lambda B, a, b: B.dot([a, b], [b, 2.0]),
    "logsumexp": lambda B, a, b: B.logsumexp([a, b, -1.0]),
    "layer": lambda B, a, b: B.layer([[a, b], [b, a]], [a, b], [0.5, -2.0], "tanh")[1],
    "layer-linear": lambda B, a, b: B.layer([[a, b]], [b], [a, 3.0], "linear")[0],
}


@pytest.mark.parametrize("name", OPS)
def test_no_grad_results_are_leaves_with_the_same_bits(backend, name):
    build = OPS[name]
    a, b = backend.Value(1.7, label="a"), backend.Value(0.3, label="b")
    recorded = build(backend, a, b)
    assert recorded._prev  # outside the block the op is recorded
    with no_grad():
        out = build(backend, a, b)
    assert out._prev == () and out._op == "" and out._kind == "leaf" and out.label == ""
    assert _bits(out.data) == _bits(recorded.data) and out.grad == 0.0
    out.backward()  # reaches nothing: the operands' gradients stay 0
    assert (out.grad, a.grad, b.grad) == (1.0, 0.0, 0.0)


def test_no_grad_gives_the_same_bits_on_both_backends():
    x = [[0.3, -1.2], [2.0, 0.5], [-0.7, 0.1]]
    outs = {}
    for name in scalargrad.BACKENDS:
        model = MLP(2, [8, (4, "tanh"), 2], seed=5, backend=name)
        with no_grad():
            outs[name] = [[_bits(v.data) for v in model(row)] for row in x]
    assert outs["rust"] == outs["reference"]


def test_no_grad_keeps_no_intermediate_nodes(backend, live_nodes):
    model = MLP(3, [16, 16, 1], seed=1, backend=backend)
    before = live_nodes()
    with no_grad():
        out = model([0.5, -1.0, 2.0])
        assert live_nodes() == before + 1  # only the result
    recorded = model([0.5, -1.0, 2.0])
    assert live_nodes() > before + 50
    assert _bits(out.data) == _bits(recorded.data)


def test_no_grad_nests_and_restores_on_exceptions(backend):
    V = backend.Value
    a = V(2.0)

    def recorded() -> bool:
        return bool((a * a)._prev)

    with no_grad():
        with no_grad():
            assert not recorded()
        assert not recorded()  # the inner block restores "off"
        with pytest.raises(KeyError), no_grad():
            raise KeyError("x")
        assert not recorded()
    assert recorded()
    with pytest.raises(ZeroDivisionError), no_grad():
        1 / 0  # noqa: B018
    assert recorded()


def test_no_grad_decorates_a_function(V):
    @no_grad()
    def evaluate(v: Any) -> Any:
        return v.tanh() * 2.0

    a = V(0.5)
    assert evaluate(a)._prev == ()
    assert (a.tanh() * 2.0)._prev  # and only inside the call


def test_no_grad_is_per_thread(backend):
    V = backend.Value
    a = V(2.0)
    entered, checked = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def in_no_grad() -> None:
        with no_grad():
            entered.set()
            checked.wait(10)
            seen["worker"] = bool((a + 1.0)._prev)

    t = threading.Thread(target=in_no_grad)
    t.start()
    assert entered.wait(10)
    seen["main, while the worker is in no_grad"] = bool((a + 1.0)._prev)
    checked.set()
    t.join(10)
    assert seen == {"worker": False, "main, while the worker is in no_grad": True}

    # and the other way round: a new thread records while this one is in no_grad
    with no_grad():
        box: list[bool] = []
        t = threading.Thread(target=lambda: box.append(bool((a * a)._prev)))
        t.start()
        t.join(10)
        assert box == [True] and (a * a)._prev == ()


def test_no_grad_switches_both_backends_together():
    r, p = _core.Value(1.0), reference.Value(1.0)
    with no_grad():
        assert (r + r)._prev == () and (p + p)._prev == ()
    assert len((r + r)._prev) == 2 and len((p + p)._prev) == 2


def test_set_grad_enabled_returns_the_previous_setting(backend):
    assert backend.set_grad_enabled(False) is True
    try:
        assert backend.set_grad_enabled(False) is False
        assert (backend.Value(1.0) * 2.0)._prev == ()
    finally:
        assert backend.set_grad_enabled(True) is False
    assert backend.set_grad_enabled(True) is True
    assert (backend.Value(1.0) * 2.0)._prev


def test_detect_anomaly_still_checks_under_no_grad(V):
    with no_grad(), detect_anomaly():
        with pytest.raises(FloatingPointError, match="log produced -inf"):
            V(0.0, label="x").log()
        with pytest.raises(FloatingPointError):
            V(1.0) / 0.0


class _Spy(Module):
    """A model that remembers what it returned."""

    nin, nout = 2, 1

    def __init__(self, backend: ModuleType) -> None:
        self.w = backend.Value(0.5)
        self.outs: list[Any] = []

    def __call__(self, x: Any) -> Any:
        out = self.w * x[0] + x[1]
        self.outs.append(out)
        return out

    def parameters(self) -> list[Any]:
        return [self.w]


def test_predict_builds_no_graph(backend):
    model = _Spy(backend)
    got = scalargrad.predict(model, [[1.0, 2.0], [3.0, -1.0]])
    assert got == [2.5, 0.5]
    assert [o._prev for o in model.outs] == [(), ()]


def test_decision_boundary_builds_no_graph(backend):
    from scalargrad.plot import decision_boundary

    model = _Spy(backend)
    decision_boundary(model, [[0.0, 0.0], [1.0, 1.0]], [-1, 1], h=0.5)
    assert len(model.outs) > 10 and all(o._prev == () for o in model.outs)
    assert (model.w * 2.0)._prev  # and the grad mode is back on
