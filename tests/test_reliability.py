"""Reliability: threads, long runs, crash-safe saving, interrupts and fuzzing.

Run with ``pytest tests/test_reliability.py -q -s`` to see the measured numbers
(RSS growth, interrupt latencies, example counts).
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from types import ModuleType
from typing import Any, Callable

import pytest
import scalargrad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scalargrad import _core, nn, reference
from scalargrad import io as model_io
from scalargrad.nn import MLP
from scalargrad.optim import SGD

MiB = 1 << 20
EXAMPLES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
    yield
    if EXAMPLES:
        print("\nhypothesis examples run:", dict(EXAMPLES))


def _live() -> int:
    return _core.stats()["live_nodes"]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _canon(x: float) -> float:
    """Plain Python arithmetic's NaN (its sign is the hardware's) as the engine's one."""
    return math.nan if math.isnan(x) else x


def _bits(x: float) -> Any:
    """A float's identity for bit-for-bit comparison (NaN's bits included: both
    backends give one NaN)."""
    return struct.pack("<d", x)


# ---- threads ---------------------------------------------------------------------


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _run_threads(n: int, target: Callable[[int], Any], timeout: float = 120.0) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[k] = target(k)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads did not finish (deadlock?)"
    assert not errors, errors
    return results


def _own_work(B: ModuleType, k: int, reps: int = 200) -> list[tuple]:
    """Builds and differentiates this worker's own graphs: an MLP step, a replayed
    tape and a long chain; returns every value and gradient as bits."""
    model = MLP(3, [8, 8, 1], seed=100 + k, backend=B)
    rng = random.Random(k)
    out = []
    for it in range(reps):
        xs = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(2)]
        model.zero_grad()
        loss = B.sum([(model(x) - t) ** 2 for x, t in zip(xs, (1.0, -1.0))])
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        if it % 10 == 0:
            tape = B.Tape(loss)
            grads.append(tape.run())
            grads += [p.grad for p in model.parameters()]
        c = B.Value(rng.uniform(-1, 1))
        y = c
        for j in range(100):
            y = (y * 0.9 + 0.1).tanh() if j % 2 else y.sigmoid() * 2.0 - c
        y.backward()
        out.append(tuple(_bits(v) for v in [loss.data, *grads, y.data, c.grad]))
    return out


def test_threads_own_graphs_match_single_threaded(backend, fast_switching, live_nodes):
    n = 4
    single = [_own_work(backend, k) for k in range(n)]
    live = live_nodes()
    threaded = _run_threads(n, lambda k: _own_work(backend, k))
    for k in range(n):
        assert threaded[k] == single[k], f"thread {k} differs from single-threaded"
    assert live_nodes() == live


def test_threads_share_a_model_read_only(backend, fast_switching):
    model = MLP(3, [8, 8, 1], seed=7, backend=backend)
    rng = random.Random(0)
    inputs = [[[rng.uniform(-3, 3) for _ in range(3)] for _ in range(10)] for _ in range(4)]

    def forward(k: int) -> list[Any]:
        outs = []
        for _ in range(200):
            outs.append([_bits(model(x).data) for x in inputs[k]])
        return outs

    single = [forward(k) for k in range(4)]
    threaded = _run_threads(4, forward)
    assert threaded == single


def test_threads_backward_large_graphs_at_once(backend):
    # Sweeps (and orderings) of a million nodes or more pause for other threads; two
    # of them taking turns each finish with their own exact result.
    n = 1_500_000 if backend is _core else 50_000

    def work(k: int) -> list[Any]:
        x = backend.Value(1.0 + k)
        y = x
        for _ in range(n):
            y = y * 1.0
        tape = backend.Tape(y)
        grads = []
        for _ in range(3):
            tape.zero_grad()
            y.backward()
            grads.append(x.grad)
        return [grads, y.data]

    assert _run_threads(2, work) == [[[1.0] * 3, 1.0], [[1.0] * 3, 2.0]]


# ---- long runs: flat memory --------------------------------------------------------

X4 = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
Y4 = [-1.0, 1.0, 1.0, -1.0]


def test_eager_training_runs_in_flat_memory(backend, live_nodes):
    # 10,000 steps on both backends (the reference backend takes a few seconds).
    steps, warm = 10_000, 500
    model = MLP(2, [4, 1], seed=0, backend=backend)
    opt = SGD(model.parameters(), lr=0.05)

    def step() -> float:
        loss = backend.sum([(model(x) - y) ** 2 for x, y in zip(X4, Y4)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.data

    for _ in range(warm):
        step()
    live0, rss0, t0 = live_nodes(), _rss(), time.perf_counter()
    for _ in range(steps):
        last = step()
    live1, rss1, dt = live_nodes(), _rss(), time.perf_counter() - t0
    print(
        f"\n[eager {backend.__name__}] {steps} steps in {dt:.1f}s, loss {last:.3g}, "
        f"RSS growth {(rss1 - rss0) / 1024:.0f} KiB, live nodes {live0} -> {live1}"
    )
    assert math.isfinite(last)
    assert live1 == live0 >= len(model.parameters())
    assert rss1 - rss0 < 2 * MiB


def test_fit_runs_in_flat_memory(backend, live_nodes):
    # 10,000 full-batch epochs (replayed); the History of the run is dropped before
    # the final reading, since its per-epoch lists are expected growth.
    model = MLP(2, [4, 1], seed=0, backend=backend)
    opt = SGD(model.parameters(), lr=0.05)
    hist = scalargrad.fit(model, X4, Y4, loss="mse", optimizer=opt, epochs=200, progress=False)
    del hist
    live0, rss0, t0 = live_nodes(), _rss(), time.perf_counter()
    hist = scalargrad.fit(model, X4, Y4, loss="mse", optimizer=opt, epochs=10_000, progress=False)
    dt = time.perf_counter() - t0
    last = hist.loss[-1]
    assert len(hist.loss) == 10_000
    del hist
    live1, rss1 = live_nodes(), _rss()
    print(
        f"\n[fit {backend.__name__}] 10000 epochs in {dt:.1f}s, loss {last:.3g}, "
        f"RSS growth {(rss1 - rss0) / 1024:.0f} KiB, live nodes {live0} -> {live1}"
    )
    assert live1 == live0
    assert rss1 - rss0 < 2 * MiB


# ---- saving: a crash mid-save leaves the old file -----------------------------------


@pytest.mark.parametrize("exc", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["json.dump", "os.replace"])
def test_failed_save_keeps_old_file(backend, tmp_path, monkeypatch, exc, where):
    old_model = MLP(2, [3, 1], seed=1, backend=backend)
    path = tmp_path / "m.json"
    old_model.save(path)
    old = path.read_bytes()

    if where == "json.dump":

        def broken(obj: Any, f: Any, **kw: Any) -> None:
            s = json.dumps(obj, **kw)
            f.write(s[: len(s) // 2])
            f.flush()
            raise exc("disk full")

        monkeypatch.setattr(model_io.json, "dump", broken)
    else:

        def broken_replace(src: Any, dst: Any) -> None:
            raise exc("rename failed")

        monkeypatch.setattr(model_io.os, "replace", broken_replace)

    with pytest.raises(exc):
        MLP(2, [3, 1], seed=2, backend=backend).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.json"], "a temporary file was left behind"
    loaded = nn.load(path, backend=backend)
    want = {k: _bits(v) for k, v in old_model.state_dict().items()}
    assert {k: _bits(v) for k, v in loaded.state_dict().items()} == want


# ---- interrupts ------------------------------------------------------------------

_INTERRUPT_CHILD = textwrap.dedent(
    r"""
    import ctypes, ctypes.util, json, os, signal, struct, sys, threading, time
    import scalargrad

    name, sender, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    B = scalargrad.backend_module(name)

    def posix_timer(every):
        # SIGINT from a kernel timer every `every` s: needs no thread and no GIL.
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "timer_create"):
            libc = ctypes.CDLL(ctypes.util.find_library("rt"), use_errno=True)

        class sigevent(ctypes.Structure):
            _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                        ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]

        class timespec(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

        class itimerspec(ctypes.Structure):
            _fields_ = [("interval", timespec), ("value", timespec)]

        ev = sigevent(signo=signal.SIGINT, notify=0)  # SIGEV_SIGNAL
        tid = ctypes.c_void_p()
        assert libc.timer_create(1, ctypes.byref(ev), ctypes.byref(tid)) == 0  # MONOTONIC
        spec = itimerspec()
        for t in (spec.value, spec.interval):
            t.sec, t.nsec = int(every), int(every % 1 * 1e9)
        assert libc.timer_settime(tid, 0, ctypes.byref(spec), None) == 0
        return lambda: libc.timer_delete(tid)

    def thread_timer(every):
        # SIGINT sent every `every` s by a thread, as a watchdog would send it.
        stop = threading.Event()

        def fire():
            while not stop.wait(every):
                os.kill(os.getpid(), signal.SIGINT)

        t = threading.Thread(target=fire, daemon=True)
        t.start()
        return lambda: (stop.set(), t.join())

    def grads():
        return [struct.pack("<d", v.grad).hex() for v in probes]

    armed = [False]

    def once(signum, frame):
        # Ctrl-C's KeyboardInterrupt, raised once per attempt: later signals of the
        # same attempt (the timers repeat) are ignored, wherever they land.
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, once)

    def attempt(fn, every):
        # Calls fn with SIGINT arriving every `every` s until it returns or is
        # interrupted. Returns whether it was interrupted.
        armed[0] = True
        stop = (posix_timer if sender == "posix" else thread_timer)(every)
        try:
            fn()
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        armed[0] = False
        stop()
        return interrupted

    x = B.Value(1.0)
    y, probes = x, [x]
    for i in range(n):
        y = y * 1.0
        if i % (n // 8) == 0:
            probes.append(y)
    tape = B.Tape(y)

    def mark():  # gradients that no sweep would give: what an interrupted call keeps
        tape.zero_grad()
        for k, p in enumerate(probes):
            p.grad = 0.25 * (k + 1)

    res = {}
    for what, call in (("backward", y.backward), ("tape", tape.run)):
        # The uninterrupted result, from the marked gradients
        mark()
        t = time.perf_counter()
        call()
        full_s = time.perf_counter() - t
        want = grads()
        r = res[what] = {"full_s": full_s, "interrupted": 0, "completed": 0, "bad": []}
        # Interrupted attempts: each leaves the marks, or (a signal too late) the
        # whole result; nothing in between. Signals come often, so calls are cut short.
        for k in range(12):
            mark()
            before = grads()
            if what == "tape":
                x.data = 1.0 + k  # run recomputes the values too
            hit = attempt(call, max(full_s / 6, 0.002))
            got = grads()
            if got == before and hit:
                r["interrupted"] += 1
            elif got == want:
                r["completed"] += 1
            else:
                r["bad"].append(k)
            if r["interrupted"] >= 3:
                break
        # Calling again, uninterrupted: the uninterrupted result, bit for bit
        mark()
        x.data = 1.0
        call()
        r["again_ok"] = grads() == want and y.data == 1.0
    print(json.dumps(res))
    """
)

# The reference backend's chain is shorter: a Python object per node.
_CHAIN = {"rust": 10_000_000, "reference": 300_000}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX timers via ctypes")
@pytest.mark.parametrize(
    "name, sender",
    [
        ("rust", "posix"),
        ("rust", "thread"),
        ("reference", "posix"),
        ("reference", "thread"),
    ],
)
def test_interrupt_backward_and_replay(name, sender):
    # Outcomes only, no timing windows: under load a call takes longer and is
    # interrupted sooner, and a signal that comes too late is counted as such.
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_CHILD, name, sender, str(_CHAIN[name])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n[interrupt {name}/{sender}] {json.dumps(res)}")
    for what in ("backward", "tape"):
        r = res[what]
        assert not r["bad"], (
            f"{what}: gradients neither as before nor complete: attempts {r['bad']}"
        )
        assert r["interrupted"] >= 1, f"{what}: no attempt was interrupted inside the call"
        assert r["again_ok"], f"{what}: calling again did not give the uninterrupted result"


# ---- fuzzing -----------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1e308, -1e308, 5e-324, 710.0]
SPECIAL += [math.nan, math.inf, -math.inf]
numbers = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 10),
    st.integers(-5, 5),
    st.just(10**400),  # too large for a float: ValueError
)
small = numbers.filter(lambda x: not isinstance(x, int) or abs(x) < 10**300)
BINARY = ["+", "-", "*", "/", "**"]
UNARY = ["neg", "exp", "log", "tanh", "sigmoid", "relu", "abs"]
step = st.one_of(
    st.tuples(st.sampled_from(BINARY), st.integers(0, 999), st.integers(0, 999)),
    st.tuples(st.sampled_from(["c" + o for o in BINARY] + [o + "c" for o in BINARY]),
              st.integers(0, 999), numbers),
    st.tuples(st.sampled_from(UNARY), st.integers(0, 999), st.none()),
    # no huge ints for clamp: see test_huge_int_is_a_value_error_on_both_backends
    st.tuples(st.just("clamp"), st.integers(0, 999), st.tuples(small, small)),
    st.tuples(st.sampled_from(["sum", "dot"]), st.integers(0, 999),
              st.lists(st.integers(0, 999), max_size=8)),
)  # fmt: skip

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
}


def _program(B: ModuleType, leaves: list[Any], steps: list[tuple]) -> list[Any]:
    """Runs ``steps`` on backend ``B``; returns, per step, the new node's value or the
    exception type's name, then every node's gradient after backward (or an error)."""
    pool = [B.Value(x) if isinstance(x, float) else B.Value(float(x)) for x in leaves]
    trace: list[Any] = []
    for kind, i, arg in steps:
        a = pool[i % len(pool)]
        try:
            if kind in _OPS:
                v = _OPS[kind](a, pool[arg % len(pool)])
            elif kind == "clamp":
                v = a.clamp(*arg)
            elif kind[0] == "c":
                v = _OPS[kind[1:]](arg, a)
            elif kind[-1] == "c":
                v = _OPS[kind[:-1]](a, arg)
            elif kind == "neg":
                v = -a
            elif kind == "sum":
                v = B.sum([pool[j % len(pool)] for j in arg], a)
            elif kind == "dot":
                others = [pool[j % len(pool)] for j in arg]
                v = B.dot(others, list(reversed(others)))
            else:
                v = getattr(a, kind)()
        except (TypeError, ValueError) as e:
            trace.append(type(e).__name__)
            continue
        pool.append(v)
        trace.append(_bits(v.data))
    try:
        pool[-1].backward()
        trace.append([_bits(v.grad) for v in pool])
    except FloatingPointError:
        trace.append("FloatingPointError")
    return trace


def _program_or_anomaly(B: ModuleType, leaves: list[Any], steps: list[tuple], anomaly: bool):
    if not anomaly:
        return _program(B, leaves, steps)
    try:
        with scalargrad.detect_anomaly():
            return _program(B, leaves, steps)
    except FloatingPointError as e:
        return ["FloatingPointError", str(e).split(" from ")[0].split(" gave ")[0]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    leaves=st.lists(small, min_size=1, max_size=6),
    steps=st.lists(step, max_size=25),
    anomaly=st.booleans(),
)  # fmt: skip
def test_fuzz_ops_agree_across_backends_and_do_not_leak(leaves, steps, anomaly):
    EXAMPLES["ops"] += 1
    live = _live()
    got = _program_or_anomaly(_core, leaves, steps, anomaly)
    assert _live() == live, "rust nodes leaked by the example"
    want = _program_or_anomaly(reference, leaves, steps, anomaly)
    assert got == want


@pytest.mark.parametrize(
    "make",
    [
        lambda B: B.Value(10**400),
        lambda B: B.Value(0.0).clamp(10**400, 10**400),
        lambda B: B.sum([B.Value(1.0), 10**400]),
        lambda B: B.dot([B.Value(1.0)], [10**400]),
    ],
    ids=["Value", "clamp", "sum", "dot"],
)
def test_huge_int_is_a_value_error_on_both_backends(make):
    for B in (_core, reference):
        with pytest.raises(ValueError):
            make(B)


_MIXED: list[Callable[[Any, Any], Any]] = [
    *(_OPS.values()),
    lambda a, b: b + a,
    lambda a, b: b * a,
    lambda a, b: b**a,
    lambda a, b: b / a,
    lambda a, b: b - a,
    lambda a, b: a.clamp(b, b),
    lambda a, b: type(a)(b),
    lambda a, b: scalargrad.sum([a, b]),
    lambda a, b: scalargrad.sum([b, a]),
    lambda a, b: scalargrad.dot([a], [b]),
    lambda a, b: scalargrad.dot([b, a], [a, b]),
    lambda a, b: scalargrad.sum([a], b),
]


@settings(max_examples=200, deadline=None)
@given(x=numbers, y=numbers, k=st.integers(0, len(_MIXED) - 1), rust_first=st.booleans())
def test_fuzz_mixing_backends_is_a_type_error(x, y, k, rust_first):
    EXAMPLES["mixed"] += 1
    live = _live()

    def check() -> None:
        fx = float(x) if not isinstance(x, int) or abs(x) < 10**300 else 1.0
        fy = float(y) if not isinstance(y, int) or abs(y) < 10**300 else 1.0
        r, f = _core.Value(fx), reference.Value(fy)
        a, b = (r, f) if rust_first else (f, r)
        with pytest.raises(TypeError):
            _MIXED[k](a, b)
        for mod in (_core, reference):
            with pytest.raises(TypeError):
                mod.sum([a, b])
            with pytest.raises(TypeError):
                mod.dot([a], [b])

    check()
    assert _live() == live


@settings(max_examples=25, deadline=None)  # 10^4..10^5 operands: fewer examples
@given(
    n=st.integers(10_000, 100_000),
    seed=st.integers(0, 2**32),
    specials=st.lists(st.tuples(st.integers(0, 99_999), st.sampled_from(SPECIAL)), max_size=5),
    as_values=st.booleans(),
)
def test_fuzz_huge_fan_in_is_left_to_right(n, seed, specials, as_values):
    EXAMPLES["fan_in"] += 1
    rng = random.Random(seed)
    xs = [rng.uniform(-1e3, 1e3) * 10 ** rng.randint(-20, 20) for _ in range(n)]
    ws = [rng.uniform(-1, 1) for _ in range(n)]
    for i, v in specials:
        xs[i % n] = v
    s_want = xs[0]
    for v in xs[1:]:
        s_want += v
    d_want = ws[0] * xs[0]
    for w, v in zip(ws[1:], xs[1:]):
        d_want += w * v
    live = _live()
    results = []
    for B in (_core, reference):
        xv = [B.Value(v) for v in xs] if as_values else xs
        wv = [B.Value(w) for w in ws]
        s = B.sum(xv)
        d = B.dot(wv, xv)
        assert _bits(s.data) == _bits(_canon(s_want))
        assert _bits(d.data) == _bits(_canon(d_want))
        s.backward()
        d.backward()
        res = [_bits(w.grad) for w in wv]
        if as_values:
            res += [_bits(v.grad) for v in xv]
        results.append(res)
        del xv, wv, s, d
    assert results[0] == results[1]
    assert results[0][:n] == [_bits(_canon(0.0 + v)) for v in xs]  # dw_i = 1.0 * x_i
    assert _live() == live
