"""Values and gradients against PyTorch (float64), on both backends.

PyTorch is not a test dependency. Its results for every case of ``torch_cases.py``
(every op over a grid of inputs, micrograd's test expressions) are committed in
``torch_table.json``, written by ``scripts/make_torch_table.py``; the table tests run
everywhere. Where torch is installed, the same cases also run against it live."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import scalargrad
import torch_cases
from torch_cases import CASES, run_backend

try:
    import torch
except ImportError:  # the table tests below cover this case
    torch = None

TABLE = json.loads((pathlib.Path(__file__).parent / "torch_table.json").read_text())["cases"]
IDS = [name for name, *_ in CASES]


# Where the op table (DESIGN.md section 4) and PyTorch define a gradient differently,
# on purpose: case name -> (the gradients the op table gives, why).
DIFFERENCES = {
    "clamp[0.5,-1.0,0.5]": ([1.0], "clamp passes the gradient at its bounds; PyTorch does not"),
    "clamp[0.0,0.0,0.0]": ([1.0], "clamp passes the gradient at its bounds; PyTorch does not"),
}

# 1 - out * out cancels when out is near +-1: one ulp of difference between two libms'
# tanh (or exp) is 2e-16 in the gradient, however small the gradient is.
ABS_TOL = {"tanh": 1e-15, "sigmoid": 1e-15}


def _close(ours: float, theirs: float, abs_tol: float = 0.0) -> bool:
    """Equal within a few ulps of PyTorch's own libm (inf equal to inf, nan to nan)."""
    if math.isnan(theirs) or math.isinf(theirs):
        return ours == theirs or (math.isnan(ours) and math.isnan(theirs))
    return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=abs_tol)


def _check(backend, case, value: float, grads: list[float]) -> None:
    name, op, _, inputs = case
    out, leaves = run_backend(backend, case)
    assert out._kind == op, f"{name}: the result is a {out._kind} node"
    assert _close(out.data, value), f"{name}: value {out.data!r}, PyTorch {value!r}"
    if name in DIFFERENCES:
        want, why = DIFFERENCES[name]
        assert [v.grad for v in leaves] == want, why
        assert grads != want, f"{name}: PyTorch now agrees; drop it from DIFFERENCES"
        return
    for i, (leaf, g) in enumerate(zip(leaves, grads)):
        ok = _close(leaf.grad, g, ABS_TOL.get(op, 0.0))
        assert ok, f"{name}: grad of input {i} {leaf.grad!r}, PyTorch {g!r}"


def test_table_holds_exactly_the_cases():
    assert list(TABLE) == IDS, "tests/torch_table.json is stale: run scripts/make_torch_table.py"
    for name, op, _, inputs in CASES:
        row = TABLE[name]
        assert row["op"] == op
        assert [float.fromhex(x) for x in row["inputs"]] == list(inputs)
        assert len(row["grads"]) == len(inputs)


def test_table_covers_every_op():
    ops = {op for _, op, *_ in CASES}
    assert ops == set(scalargrad.OPS) - {"leaf", "free"}


def test_table_has_zero_negative_and_large_inputs():
    for op in {op for _, op, *_ in CASES} - {"log", "pow"}:
        xs = [float.fromhex(x) for r in TABLE.values() if r["op"] == op for x in r["inputs"]]
        assert 0.0 in xs and min(xs) < 0 and max(map(abs, xs)) >= 1e3, op


def test_checks_can_fail(backend):
    """A wrong table entry is caught: the comparison is not vacuous."""
    case = next(c for c in CASES if c[0] == "tanh[0.5]")
    row = TABLE["tanh[0.5]"]
    value, grads = float.fromhex(row["value"]), [float.fromhex(g) for g in row["grads"]]
    _check(backend, case, value, grads)
    with pytest.raises(AssertionError, match="value"):
        _check(backend, case, value * (1 + 1e-11), grads)
    with pytest.raises(AssertionError, match="grad of input 0"):
        _check(backend, case, value, [grads[0] * (1 + 1e-11)])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_the_torch_table(backend, case):
    row = TABLE[case[0]]
    _check(backend, case, float.fromhex(row["value"]), [float.fromhex(g) for g in row["grads"]])


if torch is not None:

    @pytest.mark.parametrize("case", CASES, ids=IDS)
    def test_matches_torch_live(backend, case):
        value, grads = torch_cases.run_torch(torch, case)
        _check(backend, case, value, grads)
