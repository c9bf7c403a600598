"""The two backends give the same bits; every op's gradient matches finite differences."""

# The op tables below are lambdas called at once, inside the loop that binds them.
# ruff: noqa: B023

from __future__ import annotations

import math
import struct

import pytest
import scalargrad
from hypothesis import given, settings
from hypothesis import strategies as st

RUST = scalargrad.backend_module("rust")
REF = scalargrad.backend_module("reference")

UNARY = ["neg", "exp", "log", "tanh", "sigmoid", "relu", "abs", "clamp", "pow_const", "rpow_const"]
BINARY = ["+", "-", "*", "/", "**"]
NARY = ["sum", "dot"]

numbers = st.one_of(
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 1e300, -1e-300, math.inf, -math.inf, math.nan]),
)
instruction = st.one_of(
    st.tuples(st.just("u"), st.sampled_from(UNARY), st.integers(0, 99), numbers),
    st.tuples(st.just("b"), st.sampled_from(BINARY), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("c"), st.sampled_from(BINARY), st.integers(0, 99), numbers),  # v op c
    st.tuples(st.just("r"), st.sampled_from(BINARY), st.integers(0, 99), numbers),  # c op v
    st.tuples(
        st.just("n"), st.sampled_from(NARY), st.lists(st.integers(0, 99), max_size=6), numbers
    ),
)


def run(m, leaves, program):
    pool = [m.Value(x) for x in leaves]
    for kind, op, i, j in program:
        a = pool[(i if isinstance(i, int) else len(i)) % len(pool)]
        if kind == "u":
            v = {
                "neg": lambda: -a,
                "exp": a.exp,
                "log": a.log,
                "tanh": a.tanh,
                "sigmoid": a.sigmoid,
                "relu": a.relu,
                "abs": a.abs,
                "clamp": lambda: a.clamp(-1.5, 2.0),
                "pow_const": lambda: a**j,
                "rpow_const": lambda: abs(j) ** a,
            }[op]()
        elif kind == "n":
            xs = [pool[k % len(pool)] for k in i]
            v = m.sum(xs + [j]) if op == "sum" else m.dot(xs, [x * 0.5 for x in xs])
        else:
            b = pool[j % len(pool)] if kind == "b" else j
            x, y = (b, a) if kind == "r" else (a, b)
            v = {
                "+": lambda: x + y,
                "-": lambda: x - y,
                "*": lambda: x * y,
                "/": lambda: x / y,
                "**": lambda: x**y,
            }[op]()
        pool.append(v)
    pool[-1].backward()
    return pool


def bits(x):
    return struct.pack("<d", x)


@settings(max_examples=300, deadline=None)
@given(st.lists(numbers, min_size=1, max_size=4), st.lists(instruction, min_size=1, max_size=25))
def test_random_graphs_bit_identical(leaves, program):
    a = run(RUST, leaves, program)
    b = run(REF, leaves, program)
    for x, y in zip(a, b):
        assert x._op == y._op and len(x._prev) == len(y._prev)
        # NaN included: both backends give the one canonical NaN
        assert bits(x.data) == bits(y.data)
        assert bits(x.grad) == bits(y.grad)


GRID = [-3.0, -1.0, -0.3, 0.0, 0.5, 2.0, 40.0]
OPS = {
    "add": (lambda a, b: a + b, lambda a, b: True),
    "sub": (lambda a, b: a - b, lambda a, b: True),
    "mul": (lambda a, b: a * b, lambda a, b: True),
    "div": (lambda a, b: a / b, lambda a, b: b != 0),
    "pow": (lambda a, b: a**b, lambda a, b: a > 0 and abs(b) < 5),
    "rsub": (lambda a, b: 1 - a, lambda a, b: True),
    "rdiv": (lambda a, b: 2 / a, lambda a, b: a != 0),
    "rmul": (lambda a, b: 2 * a, lambda a, b: True),
    "rpow": (lambda a, b: 2**a, lambda a, b: abs(a) < 30),
    "pow_const": (lambda a, b: a**3, lambda a, b: True),
    "sqrt": (lambda a, b: a**0.5, lambda a, b: a > 0),
    "neg": (lambda a, b: -a, lambda a, b: True),
    "exp": (lambda a, b: a.exp(), lambda a, b: abs(a) < 30),
    "log": (lambda a, b: a.log(), lambda a, b: a > 0),
    "tanh": (lambda a, b: a.tanh(), lambda a, b: True),
    "sigmoid": (lambda a, b: a.sigmoid(), lambda a, b: True),
    "relu": (lambda a, b: a.relu(), lambda a, b: a != 0),
    "abs": (lambda a, b: abs(a), lambda a, b: a != 0),
    "clamp": (lambda a, b: a.clamp(-1.0, 1.0), lambda a, b: abs(a) != 1),
    "sum": (lambda a, b: scalargrad.sum([a, b, a]), lambda a, b: True),
    "dot": (lambda a, b: scalargrad.dot([a, b], [b, a * a]), lambda a, b: True),
}


@pytest.mark.parametrize("op", list(OPS))
def test_gradients_match_finite_differences(V, op):
    f, ok = OPS[op]
    for a in GRID:
        for b in GRID:
            if not ok(a, b):
                continue
            x, y = V(a), V(b)
            out = f(x, y)
            out.backward()
            for k, v in enumerate((a, b)):
                h = 1e-6 * max(1.0, abs(v))
                args = [a, b]
                args[k] = v + h
                up = f(V(args[0]), V(args[1])).data
                args[k] = v - h
                down = f(V(args[0]), V(args[1])).data
                numeric = (up - down) / (2 * h)
                analytic = (x, y)[k].grad
                assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6), (op, a, b, k)
