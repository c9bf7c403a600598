"""Python and PyTorch habits: ``format``, ``int``, ``round``, ``item``, ``bool`` of a
Value, on both backends."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

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
