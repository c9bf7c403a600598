"""Failure (DESIGN.md sections 3 and 5): running out of memory, errors partway
through a sweep, one NaN on both backends, per-thread ``detect_anomaly`` and the
conversions both backends share. Interrupts by signal are in test_reliability.py."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest
import scalargrad
from scalargrad import BatchTape, detect_anomaly

CANONICAL_NAN = 0x7FF8_0000_0000_0000


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# ---- out of memory: a MemoryError, the graph as it was, the engine still working ------

_OOM_CHILD = textwrap.dedent(
    r"""
    import json, resource, sys
    import scalargrad

    name, which = sys.argv[1], sys.argv[2]
    B = scalargrad.backend_module(name)
    live = (lambda: scalargrad._core.stats()["live_nodes"]) if name == "rust" else (lambda: 0)
    x, c = B.Value(0.5, label="x"), B.Value(1.0)
    base = live()
    with open("/proc/self/statm") as f:  # the address space in use, plus some
        used = int(f.read().split()[0]) * resource.getpagesize()
    room = (768 if name == "rust" else 256) << 20  # the reference fills it slowly
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + room, hard))
    res = {"error": None}
    y = s = hs = None
    try:
        if which == "chain":
            y = x
            while True:
                y = y * c + x
        elif which == "sum":
            n = 1 << 20
            while True:
                xs = [x] * n
                s = B.sum(xs)
                n *= 2
        else:
            hs = []
            while True:
                hs.append(B.Value(1.0))
    except MemoryError as e:
        res["error"] = "MemoryError"
    y = s = hs = xs = None
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    res["leaked"] = live() - base
    z = (x * 3.0 + c).tanh()
    z.backward()
    res["after"] = [z.data, x.grad]
    print(json.dumps(res))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
@pytest.mark.parametrize("which", ["chain", "sum", "handles"])
@pytest.mark.parametrize("name", scalargrad.BACKENDS)
def test_running_out_of_memory_is_a_memory_error(name, which):
    proc = subprocess.run(
        [sys.executable, "-c", _OOM_CHILD, name, which],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "memory allocation" not in proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["error"] == "MemoryError"
    assert res["leaked"] == 0, "nodes of the failed op were left behind"
    want = math.tanh(0.5 * 3.0 + 1.0)
    assert res["after"] == [want, 3.0 * (1.0 - want * want)]


# ---- an error partway through a sweep leaves every gradient as it was -----------------


def _log_graph(B):
    """``log(x) * w + w * w`` at x = 0, its nodes' gradients set to markers."""
    V = B.Value
    x, w = V(0.0, label="x"), V(2.0, label="w")
    y = x.log() * w + w * w
    nodes = [y, *y._prev, x, w]
    for k, v in enumerate(nodes):
        v.grad = 0.25 * (k + 1)
    return y, nodes


def test_failed_backward_leaves_gradients_as_they_were(backend):
    # The sweep adds the sum's contributions, then the product log(x) * w gives w the
    # gradient -inf: detect_anomaly stops it there, and every gradient goes back.
    y, nodes = _log_graph(backend)
    before = [_bits(v.grad) for v in nodes]
    with detect_anomaly(), pytest.raises(FloatingPointError, match="backward of mul"):
        y.backward()
    assert [_bits(v.grad) for v in nodes] == before
    tape = backend.Tape(y)
    for call in (tape.backward, tape.run):
        with detect_anomaly(), pytest.raises(FloatingPointError):
            call()
        assert [_bits(v.grad) for v in nodes] == before, call.__name__
    # Calling again gives what one uninterrupted call gives on a fresh graph.
    y.backward()
    y2, nodes2 = _log_graph(backend)
    y2.backward()
    assert [_bits(v.grad) for v in nodes] == [_bits(v.grad) for v in nodes2]


# ---- one NaN: Python's float("nan"), in data and gradients, on both backends -------


def _nans(B) -> list[float]:
    V = B.Value
    inf = V(math.inf)
    prod = inf * 0.0
    neg = -prod
    diff = inf + (-inf)
    diff.backward()
    cases = [
        (V(0.0) / 0.0).data,
        V(-1.0).log().data,
        (V(-8.0) ** (1 / 3)).data,
        (V(-8.0) ** V(1 / 3)).data,
        ((-2.0) ** V(0.5)).data,
        prod.data,
        neg.data,
        diff.data,
        B.sum([V(math.inf), V(-math.inf)]).data,
        B.dot([V(math.inf)], [V(0.0)]).data,
        B.logsumexp([V(-math.nan), V(1.0)]).data,
        V(struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]).data,
    ]
    # gradients: d/da (a * b) with b = inf * 0, and inf - inf accumulated
    a, b = V(1.0), V(math.inf)
    z = a * (b * 0.0)
    z.backward()
    cases.append(a.grad)
    s = V(1.0)
    t = s * math.inf + s * -math.inf
    t.backward()
    cases.append(s.grad)
    return cases


def test_every_nan_has_the_canonical_bits(backend):
    got = _nans(backend)
    assert all(math.isnan(x) for x in got)
    assert [hex(_bits(x)) for x in got] == [hex(CANONICAL_NAN)] * len(got)
    assert _bits(float("nan")) == CANONICAL_NAN


def test_batched_lanes_give_the_canonical_nan(backend):
    V = backend.Value
    w, x = V(1.0), V(0.0)
    y = (w * x).log() * w
    tape = BatchTape(y, inputs=[x], outputs=[y])
    total = tape.run([[-1.0], [-2.0]], reduction="sum")
    assert _bits(total) == CANONICAL_NAN
    assert [_bits(v) for v in tape.outputs.reshape(-1)] == [CANONICAL_NAN] * 2
    assert _bits(w.grad) == CANONICAL_NAN


def test_optimizer_state_and_bulk_reads_give_the_canonical_nan(backend):
    V = backend.Value
    p = V(1.0)
    (p * math.inf * 0.0).backward()  # grad nan
    assert _bits(scalargrad.get_grad([p])[0]) == CANONICAL_NAN
    from scalargrad.optim import SGD

    SGD([p], lr=0.1, momentum=0.9).step()
    assert _bits(p.data) == CANONICAL_NAN
    assert _bits(scalargrad.get_data([p])[0]) == CANONICAL_NAN


# ---- detect_anomaly is per thread ------------------------------------------------------


def test_detect_anomaly_is_per_thread(backend):
    V = backend.Value
    a_inside, b_checked, a_left, b_done = (threading.Event() for _ in range(4))
    seen: dict[str, Any] = {}

    def raises() -> bool:
        try:
            V(0.0).log()
        except FloatingPointError:
            return True
        return False

    def thread_a() -> None:
        with detect_anomaly():
            seen["a_inside"] = raises()
            a_inside.set()
            b_checked.wait(30)
        seen["a_after"] = raises()
        a_left.set()
        b_done.wait(30)

    def thread_b() -> None:
        a_inside.wait(30)
        seen["b_outside_while_a_inside"] = raises()
        with detect_anomaly():
            b_checked.set()
            a_left.wait(30)
            seen["b_inside_after_a_left"] = raises()
        seen["b_after"] = raises()
        b_done.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == {
        "a_inside": True,
        "b_outside_while_a_inside": False,
        "a_after": False,
        "b_inside_after_a_left": True,
        "b_after": False,
    }
    assert not raises(), "the main thread never asked"


@pytest.mark.parametrize(
    "rows, what",
    [
        ([[1.0], [0.0], [2.0]], "sample 1 gave root value -inf"),
        ([[1.0], [-1.0]], "sample 1 gave root value nan"),
    ],
)
def test_batch_tape_under_detect_anomaly_names_the_sample(backend, rows, what):
    V = backend.Value
    w, x = V(1.0, label="w"), V(0.0)
    y = (w * x).log()
    tape = BatchTape(y, inputs=[x])
    with detect_anomaly(), pytest.raises(FloatingPointError, match=f"BatchTape {what}"):
        tape.run(rows)
    assert w.grad == 0.0, "nothing was added"
    tape.run(rows)  # unchecked: runs


def test_batch_tape_under_detect_anomaly_names_a_gradient_total(backend):
    # Every row's value is finite; the rows' gradients for w add up to inf.
    V = backend.Value
    w, x = V(1.0, label="w"), V(0.0)
    tape = BatchTape(x * w, inputs=[x])
    with (
        detect_anomaly(),
        pytest.raises(
            FloatingPointError, match=r"BatchTape gave gradient total inf to shared leaf w=1.0"
        ),
    ):
        tape.run([[1e308], [1e308]], reduction="sum")
    assert w.grad == 0.0, "nothing was added"


def test_batch_tape_messages_agree_across_backends():
    msgs = []
    for name in scalargrad.BACKENDS:
        B = scalargrad.backend_module(name)
        w, x = B.Value(1.0, label="w"), B.Value(0.0)
        m = w * x
        tape = BatchTape(m.log(), inputs=[x], outputs=[m])
        with detect_anomaly(), pytest.raises(FloatingPointError) as e:
            tape.run([[1.0], [-0.5]])
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


# ---- conversions: the same behaviour on both backends ----------------------------------


class _Raises:
    def __float__(self) -> float:
        raise RuntimeError("my own error")


@pytest.mark.parametrize(
    "make",
    [
        lambda B: B.Value(_Raises()),
        lambda B: B.Value(1.0) + _Raises(),
        lambda B: _Raises() * B.Value(1.0),
        lambda B: B.Value(1.0).clamp(_Raises(), 1.0),
        lambda B: B.sum([B.Value(1.0), _Raises()]),
        lambda B: B.dot([B.Value(1.0)], [_Raises()]),
        lambda B: scalargrad.set_data([B.Value(1.0)], [_Raises()]),
    ],
    ids=["Value", "add", "rmul", "clamp", "sum", "dot", "set_data"],
)
def test_a_failing_float_conversion_passes_its_own_error(backend, make):
    with pytest.raises(RuntimeError, match="my own error"):
        make(backend)


def test_numpy_arrays_still_take_over_operators(backend):
    out = backend.Value(2.0) * np.array([1.0, 2.0])
    assert [v.data for v in out] == [2.0, 4.0]


def test_set_data_refuses_strings_and_huge_ints(backend):
    vs = [backend.Value(0.0) for _ in range(3)]
    with pytest.raises(TypeError, match=r"set_data: element 0 of data must be a number, got str"):
        scalargrad.set_data(vs, ["1"] * 3)
    with pytest.raises(ValueError, match=r"set_data: integer ~10\*\*400 is too large"):
        scalargrad.set_data(vs, [1.0, 10**400, 2.0])
    assert [v.data for v in vs] == [0.0] * 3, "nothing was set"
    scalargrad.set_data(vs, [1, 2.5, np.float64(3.0)])
    assert [v.data for v in vs] == [1.0, 2.5, 3.0]


@pytest.mark.parametrize(
    "make, op",
    [
        (lambda B, n: B.Value(n), "Value()"),
        (lambda B, n: B.Value(1.0) + n, "+"),
        (lambda B, n: B.Value(1.0).clamp(n, n), "clamp"),
        (lambda B, n: B.sum([n]), "sum"),
    ],
)
def test_huge_ints_are_abbreviated_in_messages(backend, capfd, make, op):
    for n, shown in [(10**400, "~10**400"), (-(10**5000), "-~10**5000"), (2**1024, "~10**308")]:
        with pytest.raises(ValueError) as e:
            make(backend, n)
        assert str(e.value) == f"{op}: integer {shown} is too large to convert to float"
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and err == ""


def test_huge_int_messages_agree_across_backends():
    msgs = []
    for name in scalargrad.BACKENDS:
        B = scalargrad.backend_module(name)
        with pytest.raises(ValueError) as e:
            B.Value(-(10**400))
        msgs.append(str(e.value))
    assert msgs == ["Value(): integer -~10**400 is too large to convert to float"] * 2


def test_tape_root_is_the_same_object_each_time(backend):
    x = backend.Value(2.0)
    tape = backend.Tape(x * x)
    assert tape.root is tape.root
    r = tape.root
    del r
    assert tape.root is tape.root
    assert tape.root.data == 4.0
