"""The Value API on both backends: construction, attributes, graph identity,
comparisons, backward semantics, errors, anomaly mode, depth and memory."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scalargrad


def micrograd_readme(V):
    """The expression of micrograd's README, on backend ``V``."""
    a = V(-4.0)
    b = V(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return a, b, g


def test_micrograd_readme_numbers(V):
    a, b, g = micrograd_readme(V)
    assert f"{g.data:.4f}" == "24.7041"
    assert f"{a.grad:.4f}" == "138.8338"
    assert f"{b.grad:.4f}" == "645.5773"


def test_micrograd_sanity_check_expression(V):
    # micrograd's test_sanity_check: y = relu(z) + z*x + relu(q) + q*x, dy/dx = -7... and y = -20.
    x = V(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert y.data == -20.0
    assert x.grad == 46.0


def test_constructor_and_attributes(V):
    v = V(3, label="x")
    assert v.data == 3.0 and type(v.data) is float
    assert v.grad == 0.0 and v.label == "x"
    assert v._op == "" and tuple(v._prev) == ()
    v.data = 5
    v.grad = 0.25
    v.label = "y"
    assert (v.data, v.grad, v.label) == (5.0, 0.25, "y")
    assert float(v) == 5.0
    assert repr(v) == "Value(data=5.0, grad=0.25, label='y')"
    assert repr(V(1.5)) == "Value(data=1.5, grad=0.0)"


@pytest.mark.parametrize(
    "build, op",
    [
        (lambda a, b: a + b, "+"),
        (lambda a, b: a - b, "-"),
        (lambda a, b: a * b, "*"),
        (lambda a, b: a / b, "/"),
        (lambda a, b: a**b, "**"),
        (lambda a, b: a**2, "**2"),
        (lambda a, b: a**-1, "**-1"),
        (lambda a, b: a**0.5, "**0.5"),
        (lambda a, b: 2**a, "2**"),
        (lambda a, b: -a, "neg"),
        (lambda a, b: a.relu(), "ReLU"),
        (lambda a, b: a.tanh(), "tanh"),
        (lambda a, b: a.exp(), "exp"),
        (lambda a, b: a.log(), "log"),
        (lambda a, b: a.sigmoid(), "sigmoid"),
        (lambda a, b: abs(a), "abs"),
        (lambda a, b: a.clamp(-1, 1), "clamp"),
    ],
)
def test_op_names_match_micrograd(V, build, op):
    assert build(V(2.0), V(3.0))._op == op


def test_ops_list_is_shared():
    from scalargrad import _core, reference

    assert tuple(_core.OPS) == tuple(reference.OPS) == scalargrad.OPS
    assert len(set(scalargrad.OPS)) == len(scalargrad.OPS)


# One way to build each op, in the order of the op table (DESIGN.md section 4).
_ONE_OF_EACH_OP = [
    ("leaf", lambda m, a, b: m.Value(1.0)),
    ("add", lambda m, a, b: a + b),
    ("sub", lambda m, a, b: a - b),
    ("mul", lambda m, a, b: a * b),
    ("div", lambda m, a, b: a / b),
    ("neg", lambda m, a, b: -a),
    ("pow_const", lambda m, a, b: a**2),
    ("rpow_const", lambda m, a, b: 2**a),
    ("pow", lambda m, a, b: a**b),
    ("exp", lambda m, a, b: a.exp()),
    ("log", lambda m, a, b: a.log()),
    ("tanh", lambda m, a, b: a.tanh()),
    ("sigmoid", lambda m, a, b: a.sigmoid()),
    ("relu", lambda m, a, b: a.relu()),
    ("abs", lambda m, a, b: abs(a)),
    ("clamp", lambda m, a, b: a.clamp(0, 1)),
    ("sum", lambda m, a, b: m.sum([a, b])),
    ("dot", lambda m, a, b: m.dot([a], [b])),
    ("logsumexp", lambda m, a, b: m.logsumexp([a, b])),
]


def test_each_backend_lists_the_op_table_in_order_and_builds_what_it_lists(backend):
    # Both backends' op tables (rust/ops.rs's ALL, the reference's table) list the
    # same ops in the same order, and each listed op is the kind of the node its
    # operator builds: a reordered or renamed row on either side fails here.
    assert tuple(backend.OPS) == tuple(kind for kind, _ in _ONE_OF_EACH_OP)
    a, b = backend.Value(2.0), backend.Value(3.0)
    assert [build(backend, a, b)._kind for _, build in _ONE_OF_EACH_OP] == list(backend.OPS)


def test_prev_is_ordered_and_identity_stable(V):
    a, b = V(1.0), V(2.0)
    c = a * b
    d = c + a
    assert len(d._prev) == 2
    assert d._prev[0] is c and d._prev[1] is a
    assert c._prev[0] is a and c._prev[1] is b
    # The same node reached twice is the same object and the same dict key.
    assert d._prev[1] is c._prev[0]
    assert len({a, c._prev[0], d._prev[1]}) == 1
    assert len({a, b, c, d}) == 4


def test_constants_become_leaves(V):
    a = V(3.0)
    for expr, lhs_is_a in ((a + 1.0, True), (1.0 + a, False), (2 * a, False), (a - 2, True)):
        operands = expr._prev
        assert len(operands) == 2
        const = operands[1] if lhs_is_a else operands[0]
        assert const._op == "" and const._prev == ()


def test_hash_by_node_and_compare_by_data(V):
    a, b = V(2.0), V(2.0)
    assert a == b
    assert (a != b) is False
    assert hash(a) != hash(b)
    assert len({a, b}) == 2
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"
    assert a < 3 and a <= 2 and a > 1 and a >= 2.0 and a == 2 and a != 3
    assert V(1.0) < V(2.0)
    assert (a == "2") is False
    # Numbers and Values are different keys, even where their data compare equal.
    z = V(0.0)
    keys = {z: "value", 0: "zero", 1: "one"}
    assert len(keys) == 3 and keys[z] == "value" and keys[0.0] == "zero"
    assert 0 not in {z} and z not in {0, 1, 2}
    assert min(abs(hash(V(0.0))) for _ in range(100)) > 2**32  # far from small ints
    with pytest.raises(TypeError):
        _ = a < "x"


def test_compare_with_ints_exactly_as_floats_do(V):
    big = V(2.0**53)
    for other in (2**53, 2**53 + 1, 10**400, -(10**400), True, 0):
        for op in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
            assert getattr(big, op)(other) == getattr(2.0**53, op)(other), (op, other)
    assert big < 10**400 and big > -(10**400) and big != 2**53 + 1


def test_walking_the_graph_with_a_set(V):
    # micrograd's trace() from its draw_dot notebook, unchanged.
    def trace(root):
        nodes, edges = set(), set()

        def build(v):
            if v not in nodes:
                nodes.add(v)
                for child in v._prev:
                    edges.add((child, v))
                    build(child)

        build(root)
        return nodes, edges

    x = V(1.0)
    y = (x * 2 + 1).relu()
    nodes, edges = trace(y * x)
    # x, const 2, x*2, const 1, +, relu, y*x  -> 7 nodes, 7 edges
    assert len(nodes) == 7 and len(edges) == 7
    assert len({id(n) for n in nodes}) == 7
    assert {id(c) for c, _ in edges} <= {id(n) for n in nodes}


def test_backward_accumulates_and_seeds_root(V):
    x = V(3.0)
    y = x * x
    y.backward()
    assert (x.grad, y.grad) == (6.0, 1.0)
    y.backward()
    assert x.grad == 12.0 and y.grad == 1.0
    x.grad = 0.0
    y.backward()
    assert x.grad == 6.0


def test_sum_and_dot_are_single_nodes(backend, V):
    xs = [V(float(i)) for i in range(5)]
    s = backend.sum(xs)
    assert s.data == 10.0 and s._op == "sum" and len(s._prev) == 5
    s2 = backend.sum(xs, start=1.0)
    assert s2.data == 11.0 and len(s2._prev) == 6
    assert backend.sum([]).data == 0.0
    ws = [V(2.0), 3.0, V(-1.0)]
    d = backend.dot(ws, xs[:3])
    assert d.data == 0 * 2 + 1 * 3 - 2 and d._op == "dot" and len(d._prev) == 6
    d.backward()
    assert xs[0].grad == 2.0 and xs[1].grad == 3.0 and xs[2].grad == -1.0
    assert ws[0].grad == 0.0 and ws[2].grad == 2.0
    with pytest.raises(ValueError, match="dot"):
        backend.dot([V(1.0)], [1.0, 2.0])
    with pytest.raises(TypeError, match="sum: element 1"):
        backend.sum([V(1.0), "x"])


def test_module_level_sum_dispatches_on_backend():
    for name in scalargrad.BACKENDS:
        V = scalargrad.backend_module(name).Value
        s = scalargrad.sum([1.0, V(2.0)])
        d = scalargrad.dot([V(1.0)], [2.0])
        assert type(s) is V and type(d) is V
    assert type(scalargrad.sum([1.0, 2.0])) is scalargrad.Value


def test_numpy_scalars_are_numbers(V):
    for c in (np.float64(2.0), np.float32(2.0), np.int64(2), np.array(2.0)):
        a = V(c)
        assert a.data == 2.0
        assert (V(3.0) * c).data == 6.0
        assert (V(3.0) - c).data == 1.0
        assert (V(3.0) ** c).data == 9.0
    assert (np.float64(2.0) * V(3.0)).data == 6.0


@pytest.mark.parametrize("bad", ["x", "1.0", b"1", [1.0], (1.0,), {}, None, object()])
def test_non_numbers_raise_type_error(V, bad):
    with pytest.raises(TypeError, match=r"Value\(\).*data"):
        V(bad)
    a = V(1.0)
    for op in ("+", "-", "*", "/", "**"):
        with pytest.raises(TypeError):
            eval(f"a {op} bad")
        with pytest.raises(TypeError):
            eval(f"bad {op} a")
    with pytest.raises(TypeError, match="data"):
        a.data = bad
    with pytest.raises(TypeError, match="clamp"):
        a.clamp(bad, 1.0)
    assert a.data == 1.0 and a.grad == 0.0


def test_type_error_names_op_and_type(V):
    with pytest.raises(TypeError, match=r"\+.*'str'"):
        V(1.0) + "a"
    with pytest.raises(TypeError, match=r"\*.*'list'"):
        V(1.0) * [1.0, 2.0]


def test_backends_do_not_mix():
    R = scalargrad.backend_module("reference").Value
    C = scalargrad.backend_module("rust").Value
    for x, y in ((R(1.0), C(2.0)), (C(1.0), R(2.0))):
        with pytest.raises(TypeError, match="backend"):
            x + y
        with pytest.raises(TypeError, match="backend"):
            x * y
        with pytest.raises(TypeError):
            type(x)(y)


def test_clamp_rejects_bad_bounds(V):
    with pytest.raises(ValueError, match="clamp"):
        V(0.0).clamp(1.0, -1.0)
    with pytest.raises(ValueError, match="clamp"):
        V(0.0).clamp(math.nan, 1.0)


OPERATORS = {
    "+": ("__add__", "__radd__"),
    "-": ("__sub__", "__rsub__"),
    "*": ("__mul__", "__rmul__"),
    "/": ("__truediv__", "__rtruediv__"),
}
# Operands of every kind the operators take: exact floats and ints (the rust
# backend's fast slots), and what only its general path takes (bool, NumPy
# scalars, ints that round when made floats).
OPERANDS = [2.5, -0.0, 3, 0, True, np.float64(-1.5), np.int64(7), 2**53 + 1, -(2**60) - 1]


def _node(v):
    """A node's value, op and operand values, as text (so -0.0 differs from 0.0)."""
    return repr((v.data, v._op, [p.data for p in v._prev]))


@pytest.mark.parametrize("sym", list(OPERATORS))
def test_operators_build_the_nodes_their_dunders_build(V, sym):
    # `x + y` runs the type's number slot; `V.__add__(x, y)` runs the method the
    # class defines. On the rust backend the first is a fast path for Values,
    # floats and ints, the second its general path: both must build the same node,
    # with the same gradients, and hand back the operand's own handle in `_prev`.
    fwd, rev = OPERATORS[sym]
    routes = [
        (lambda a, c: eval(f"a {sym} c"), lambda a, c: getattr(V, fwd)(a, c), 0),
        (lambda a, c: eval(f"c {sym} a"), lambda a, c: getattr(V, rev)(a, c), 1),
    ]
    for c in [*OPERANDS, V(-0.5)]:
        for by_op, by_dunder, pos in routes:
            results = []
            for build in (by_op, by_dunder):
                a = V(1.75)
                out = build(a, c)
                assert out._prev[pos] is a
                out.backward()
                results.append((_node(out), repr(a.grad)))
            assert results[0] == results[1], (sym, c)
    assert _node(-V(2.0)) == _node(V.__neg__(V(2.0)))
    a = V(3.0)
    assert _node(a * a) == _node(V.__mul__(a, a))


def test_huge_int_is_value_error(V):
    with pytest.raises(ValueError, match="too large"):
        V(1.0) + 10**400


def test_label_must_be_utf8_encodable(V):
    assert V(1.0, label="λ").label == "λ"
    with pytest.raises(UnicodeEncodeError):
        V(1.0, label="\ud800")
    v = V(1.0, label="v")
    with pytest.raises(UnicodeEncodeError):
        v.label = "\ud800"
    assert v.label == "v"


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_value_freed_by_a_collection_inside_a_method(V):
    # A Value that only a garbage cycle holds is freed by the next collection,
    # wherever it runs: here inside `label`'s setter, while the exception for a
    # label that cannot be stored is being made. The graph stays consistent: the
    # node's operand handle is still `w`'s data, fresh Values are not aliased, and
    # nothing is reported as unraisable.
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()
    try:
        w = V(5.0, label="w")
        r = w * 2.0
        assert r._prev[0] is w
        cycle = [w]
        cycle.append(cycle)
        del w, cycle
        v = V(1.0)
        raised = None
        gc.set_threshold(1, 1, 1)
        try:
            gc.enable()  # nothing allocates between here and the setter
            v.label = "\ud800"
        except UnicodeEncodeError as e:
            raised = e
        assert raised is not None
    finally:
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()
    gc.collect()
    fresh = [V(100.0 + i) for i in range(8)]
    p = r._prev[0]
    assert p.data == 5.0 and p.label == "w"
    assert not any(p is f for f in fresh)
    r.backward()
    assert p.grad == 2.0


def test_label_must_be_str(V):
    with pytest.raises(TypeError, match="label"):
        V(1.0, label=3)


def test_non_finite_values_follow_ieee(V):
    assert (V(1.0) / 0.0).data == math.inf
    assert math.isnan((V(0.0) / 0).data)
    assert V(0.0).log().data == -math.inf
    assert math.isnan(V(-1.0).log().data)
    assert V(1000.0).exp().data == math.inf
    assert math.isnan((V(-8.0) ** (1 / 3)).data)
    assert V(-1000.0).sigmoid().data == 0.0
    assert math.isnan(V(math.nan).relu().data)
    x = V(0.0)
    y = x.log()
    y.backward()
    assert x.grad == math.inf


def test_detect_anomaly_forward(V):
    x = V(0.0, label="x")
    with scalargrad.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"log.*-inf.*x=0\.0"):
            x.log()
        with pytest.raises(FloatingPointError, match=r"/.*inf"):
            V(1.0, label="one") / x
        with pytest.raises(FloatingPointError, match="sum"):
            scalargrad.backend_module(V._backend).sum([V(math.inf), 1.0])
        ok = (x + 1.0).log()
    assert ok.data == 0.0
    assert x.log().data == -math.inf  # off again outside the block


def test_detect_anomaly_backward(V):
    x = V(0.0, label="x")
    y = (x**0.5).tanh()  # d/dx sqrt at 0 is inf
    with (
        scalargrad.detect_anomaly(),
        pytest.raises(FloatingPointError, match=r"backward of pow_const.*x=0\.0"),
    ):
        y.backward()


def test_deep_chain_million(V):
    x = V(0.5)
    y = x
    for i in range(1_000_000):
        y = y * 1.0 if i % 2 else y + 0.0
    y.backward()
    assert x.grad == 1.0
    assert y.data == 0.5
    del y  # freeing must not recurse either
    gc.collect()


def test_memory_flat_over_fresh_graphs(backend, V, live_nodes):
    # A training-style loop that builds a fresh graph every step and never resets anything.
    import tracemalloc

    w = [V(0.1 * i) for i in range(10)]

    def step():
        loss = backend.sum((wi * float(i) - 1.0).tanh() ** 2 for i, wi in enumerate(w))
        loss.backward()
        for p in w:
            p.data -= 0.01 * p.grad
            p.grad = 0.0

    for _ in range(200):
        step()
    live0 = live_nodes()
    tracemalloc.start()
    snap0 = tracemalloc.get_traced_memory()[0]
    for _ in range(3000):
        step()
    grown = tracemalloc.get_traced_memory()[0] - snap0
    tracemalloc.stop()
    assert live_nodes() == live0 >= 10  # the parameters stay
    assert grown < 64 * 1024


def test_unreachable_nodes_are_freed(backend, V, live_nodes):
    base = live_nodes()
    a = V(1.0)
    b = (a * 2.0 + 1.0).tanh()
    assert live_nodes() == base + 6  # a, 2.0, a * 2.0, 1.0, + 1.0, tanh
    c = b._prev[0]
    del b
    assert live_nodes() == base + 5  # c keeps its subgraph
    del c
    assert live_nodes() == base + 1
    del a
    assert live_nodes() == base


def test_rust_node_size():
    from scalargrad import _core

    assert _core.stats()["bytes_per_node"] <= 48


def test_engine_import_path_and_env_backend():
    from scalargrad.engine import Value

    assert Value is scalargrad.Value
    code = "import scalargrad, scalargrad.engine as e;print(scalargrad.backend, e.Value.__module__)"
    for env, expect in (
        ("reference", "reference scalargrad.reference"),
        ("", "rust scalargrad._core"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "SCALARGRAD_BACKEND": env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expect
    bad = subprocess.run(
        [sys.executable, "-c", "import scalargrad"],
        env={**os.environ, "SCALARGRAD_BACKEND": "gpu"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "SCALARGRAD_BACKEND='gpu'" in bad.stderr
