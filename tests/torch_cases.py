"""The expressions compared against PyTorch, written once for every engine.

Each case is a function of an engine ``E`` (``E.sum``, ``E.dot``) and of leaves that
are scalargrad ``Value``s or 0-d float64 torch tensors: the methods and operators
used (``+ - * / ** -x abs() exp() log() tanh() sigmoid() relu() clamp()``) mean the
same on both. ``tests/test_torch.py`` checks both backends against the committed
table ``tests/torch_table.json`` everywhere, and against PyTorch itself where torch
is installed; ``scripts/make_torch_table.py`` writes the table.

Every op of the op table (DESIGN.md section 4) runs over a fixed grid of inputs that
includes 0, negatives and large values (where the op is defined there), followed by
micrograd's own test expressions."""

from __future__ import annotations

from typing import Any, Callable

Case = tuple[str, str, Callable[..., Any], tuple[float, ...]]

#: (name, the op kind of the result, function, inputs)
CASES: list[Case] = []


def _case(op: str, name: str, inputs: tuple[float, ...]) -> Callable:
    def register(f: Callable) -> Callable:
        CASES.append((f"{op}[{name}]", op, f, inputs))
        return f

    return register


# inputs: 0, small and large of either sign
GRID = (0.0, 0.5, -0.5, 1.5, -2.25, 3.0, -7.0, 40.0, -40.0, 1e3, -1e3)
# second operands: no 0 (the ops with a pole at 0 get their own cases)
GRID_B = (0.75, -1.25, 3.0, -20.0, 1e3)
POSITIVE = (1e-300, 1e-3, 0.5, 1.0, 2.5, 40.0, 1e3, 1e300)

for a in GRID:
    for b in GRID_B:
        for op, f in (
            ("add", lambda E, x, y: x + y),
            ("sub", lambda E, x, y: x - y),
            ("mul", lambda E, x, y: x * y),
            ("div", lambda E, x, y: x / y),
        ):
            _case(op, f"{a!r},{b!r}", (a, b))(f)
    _case("neg", repr(a), (a,))(lambda E, x: -x)
    _case("exp", repr(a), (a,))(lambda E, x: x.exp())
    _case("tanh", repr(a), (a,))(lambda E, x: x.tanh())
    _case("sigmoid", repr(a), (a,))(lambda E, x: x.sigmoid())
    _case("relu", repr(a), (a,))(lambda E, x: x.relu())
    _case("abs", repr(a), (a,))(lambda E, x: abs(x))
    for lo, hi in ((-1.0, 0.5), (-50.0, 50.0), (0.0, 0.0)):
        _case("clamp", f"{a!r},{lo!r},{hi!r}", (a,))(lambda E, x, lo=lo, hi=hi: x.clamp(lo, hi))
    # integer powers are defined for every base; 0 is excluded where the power has a pole
    for c in (2.0, 3.0, -1.0, -2.0, 0.5, 1.5):
        if (a == 0.0 and c < 0) or (a < 0 and c != int(c)):
            continue
        _case("pow_const", f"{a!r},{c!r}", (a,))(lambda E, x, c=c: x**c)
    for c in (2.0, 0.5, 10.0):
        _case("rpow_const", f"{c!r},{a!r}", (a,))(lambda E, x, c=c: c**x)

for a in POSITIVE:
    _case("log", repr(a), (a,))(lambda E, x: x.log())
    for b in (0.0, 1.0, -1.5, 2.5, 0.3):
        _case("pow", f"{a!r},{b!r}", (a, b))(lambda E, x, y: x**y)

# the poles: division by zero and the log of zero give infinities, as in IEEE
_case("div", "1.0,0.0", (1.0, 0.0))(lambda E, x, y: x / y)
_case("div", "-2.0,0.0", (-2.0, 0.0))(lambda E, x, y: x / y)
_case("log", "0.0", (0.0,))(lambda E, x: x.log())
_case("pow_const", "0.0,-1.0", (0.0,))(lambda E, x: x**-1.0)

for n, xs in (
    (1, (2.5,)),
    (2, (0.0, -3.0)),
    (5, (1.0, -2.0, 0.5, 40.0, -1e3)),
    (9, (0.1, 0.2, 0.3, 0.4, 0.5, -0.6, -0.7, 1e3, -1e3)),
):
    _case("sum", f"n={n}", xs)(lambda E, *x: E.sum(x))
    ws = tuple(0.5 - 0.25 * i for i in range(n))
    _case("dot", f"n={n}", ws + xs)(lambda E, *x, n=n: E.dot(x[:n], x[n:]))
    _case("logsumexp", f"n={n}", xs)(lambda E, *x: E.logsumexp(x))


# ---- micrograd's test expressions ---------------------------------------------------


def every_op(E: Any, a: Any, b: Any) -> Any:
    """One expression that uses every op of the op table (``a > 0``, so ``a ** b`` is real)."""
    c = a * b + b**3 - a / b + (-a) + 2 ** (b * 0.1) + a ** (b * 0.5)
    e = (c * 0.01).tanh() + (a * 0.3).sigmoid() + (b * 0.2).exp() + (b * b).log()
    f = (a - b).relu() + abs(a * 0.7) + (a * 0.5).clamp(-1.0, 0.5)
    return E.sum([e, f, c * 0.001]) + E.dot([a, b, e], [f, c * 0.01, b])


for xy in ((1.3, 2.1), (0.4, -1.7), (2.5, 0.6), (0.9, 3.3)):
    _case("add", "every-op " + ",".join(map(repr, xy)), xy)(every_op)


@_case("add", "micrograd sanity check", (-4.0,))
def micrograd_sanity_check(E: Any, x: Any) -> Any:
    """micrograd's ``test_sanity_check``."""
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    return h + q + q * x


@_case("add", "micrograd more ops", (-4.0, 2.0))
def micrograd_more_ops(E: Any, a: Any, b: Any) -> Any:
    """micrograd's ``test_more_ops`` (``c += d`` written out as micrograd runs it)."""
    c = a + b
    d = a * b + b**3
    c = c + (c + 1)
    c = c + (1 + c + (-a))
    d = d + (d * 2 + (b + a).relu())
    d = d + (3 * d + (b - a).relu())
    e = c - d
    f = e**2
    g = f / 2.0
    return g + 10.0 / f


def torch_engine(torch: Any) -> Any:
    """``sum`` and ``dot`` in PyTorch's own ops, for the case functions."""

    class TorchEngine:
        @staticmethod
        def sum(xs: Any) -> Any:
            return torch.stack(list(xs)).sum()

        @staticmethod
        def dot(ws: Any, xs: Any) -> Any:
            return torch.dot(torch.stack(list(ws)), torch.stack(list(xs)))

        @staticmethod
        def logsumexp(xs: Any) -> Any:
            return torch.logsumexp(torch.stack(list(xs)), dim=0)

    return TorchEngine


def run_torch(torch: Any, case: Case) -> tuple[float, list[float]]:
    """The value and the leaves' gradients of ``case`` in PyTorch, float64."""
    _, _, f, inputs = case
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    out = f(torch_engine(torch), *leaves)
    out.backward()
    return out.item(), [0.0 if t.grad is None else t.grad.item() for t in leaves]


def run_backend(backend: Any, case: Case) -> tuple[Any, list[Any]]:
    """The root and the leaves of ``case`` on a scalargrad backend, after ``backward()``."""
    _, _, f, inputs = case
    leaves = [backend.Value(x) for x in inputs]
    out = f(backend, *leaves)
    out.backward()
    return out, leaves
