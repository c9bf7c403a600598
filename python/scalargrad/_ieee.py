"""IEEE-754 arithmetic where Python raises, for the reference backend.

Where plain Python would raise (``1 / 0``, ``math.log(0)``, ``math.exp(1000)``) or
return a complex number (``(-8) ** (1/3)``), these return the IEEE-754 result that
C's libm (and so the Rust backend) gives.
"""

from __future__ import annotations

import math

_INF = math.inf
_NAN = math.nan


def div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return _NAN
        return math.copysign(_INF, a) * math.copysign(1.0, b)


def _odd_integer(b: float) -> bool:
    return math.isfinite(b) and abs(math.fmod(b, 2.0)) == 1.0


def pow(a: float, b: float) -> float:
    """C's ``pow``: ``math.pow`` with its exceptions turned into IEEE results."""
    try:
        return math.pow(a, b)
    except OverflowError:
        return -_INF if a < 0.0 and _odd_integer(b) else _INF
    except ValueError:
        if a == 0.0:  # a pole: 0 ** negative
            return -_INF if math.copysign(1.0, a) < 0.0 and _odd_integer(b) else _INF
        return _NAN  # negative ** non-integer


def exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return _INF


def log(a: float) -> float:
    try:
        return math.log(a)
    except ValueError:
        return -_INF if a == 0.0 else _NAN


def sign(a: float) -> float:
    if a > 0.0:
        return 1.0
    if a < 0.0:
        return -1.0
    if a == 0.0:
        return 0.0
    return _NAN


def logsumexp(xs: list[float]) -> float:
    """``m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))`` with ``m`` the largest ``xi``
    taken in order (``rust/ops.rs``); where that has no answer, its limit: any NaN
    gives NaN, else ``m = +-inf`` gives ``m``, and no operands give ``-inf``."""
    if not xs:
        return -_INF
    m = xs[0]
    for x in xs[1:]:
        if x > m:
            m = x
    if math.isinf(m):
        return _NAN if any(x != x for x in xs) else m
    s = exp(xs[0] - m)
    for x in xs[1:]:
        s = s + exp(x - m)
    return m + log(s)
