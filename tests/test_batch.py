"""Batched lanes (``scalargrad.BatchTape``): one sample's graph run over a batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scalargrad
from scalargrad import losses
from scalargrad.batch import BatchTape, get_num_threads, set_num_threads
from scalargrad.nn import MLP

CHUNK = 64  # rows per chunk: part of the documented reduction order


def _bits(xs) -> list[int]:
    return np.asarray(xs, dtype=np.float64).view(np.int64).tolist()


def _data(n: int, nin: int = 2, seed: int = 0) -> np.ndarray:
    """Rows of features and a +1/-1 target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, nin))
    y = np.where(X[:, 0] * X[:, -1] > 0, 1.0, -1.0)
    return np.c_[X, y]


def _tape(B, nin=2, hidden=(8, 8), act="relu", seed=1, loss="hinge"):
    """A model and its per-sample graph: inputs, the target's code, the loss term."""
    m = MLP(nin, [*hidden, 1], seed=seed, activation=act, backend=B)
    x = [B.Value(0.0) for _ in range(nin)]
    t = B.Value(0.0)
    out = m(x)
    term = losses._TERMS[loss][1](out, t)
    return m, BatchTape(term, inputs=[*x, t], outputs=[out])


def _reduce(c: list[float]) -> float:
    a = [0.0] * 8
    for k, v in enumerate(c):
        a[k & 7] += v
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@pytest.mark.parametrize("rows", [1, 9, 64, 130])
def test_lanes_equal_each_row_run_alone(backend, rows):
    """Per-row values are those of each row's own graph, bit for bit, and each
    parameter's gradient is the rows' contributions added in the documented order."""
    B = backend
    data = _data(rows)
    m, tape = _tape(B)
    m.zero_grad()
    loss = tape.run(data)
    got_grads = [p.grad for p in m.parameters()]
    got_outs = tape.outputs[:, 0].tolist()

    # Each row alone, eagerly, seeded as the mean seeds it: 1.0 * (1 / rows).
    per_row, outs, terms = [], [], []
    for row in data:
        m.zero_grad()
        out = m(list(row[:2]))
        term = losses._hinge_term(out, float(row[2]))
        (term * (1.0 / rows)).backward()
        per_row.append([p.grad for p in m.parameters()])
        outs.append(out.data)
        terms.append(term.data)
    want = []
    for k in range(len(got_grads)):
        total = 0.0
        for c in range(0, rows, CHUNK):
            total += _reduce([g[k] for g in per_row[c : c + CHUNK]])
        want.append(0.0 + total)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    assert _bits(got_outs) == _bits(outs)
    assert _bits([loss]) == _bits([total * (1.0 / rows)])
    assert _bits(got_grads) == _bits(want)


def test_backends_give_the_same_bits():
    data = _data(150, nin=3, seed=4)
    results = []
    for name in scalargrad.BACKENDS:
        B = scalargrad.backend_module(name)
        for act, loss in [("tanh", "mse"), ("sigmoid", "bce"), ("relu", "bce_with_logits")]:
            m, tape = _tape(B, nin=3, hidden=(5,), act=act, seed=7, loss=loss)
            rows = data.copy()
            if loss == "bce":
                rows[:, -1] = rows[:, -1] > 0
            m.zero_grad()
            value = tape.run(rows)
            results.append(
                (name, loss, _bits([value]), _bits([p.grad for p in m.parameters()]),
                 _bits(tape.outputs))
            )  # fmt: skip
    half = len(results) // 2
    for r, ref in zip(results[:half], results[half:]):
        assert r[1:] == ref[1:], r[1]


def test_lanes_match_the_eager_batch_graph(backend):
    """Against the whole batch's graph built eagerly: the same loss and outputs,
    gradients within 1e-12 of their scale (the summation order differs)."""
    B = backend
    data = _data(300, seed=2)
    m, tape = _tape(B, hidden=(16, 16))
    m.zero_grad()
    codes = data.copy()
    codes[:, 2] = [losses._hinge_code(t) for t in data[:, 2]]  # hinge's term takes -y
    loss = tape.run(codes)
    lanes = np.array([p.grad for p in m.parameters()])
    m.zero_grad()
    outs = [m(list(r[:2])) for r in data]
    eager = losses.hinge(outs, data[:, 2].tolist())
    eager.backward()
    want = np.array([p.grad for p in m.parameters()])
    assert _bits([loss]) == _bits([eager.data])
    assert _bits(tape.outputs[:, 0]) == _bits([o.data for o in outs])
    assert np.abs(lanes - want).max() <= 1e-12 * np.abs(want).max()


def test_gradients_accumulate_and_forward_touches_none(backend):
    B = backend
    data = _data(20)
    m, tape = _tape(B)
    m.zero_grad()
    tape.run(data)
    once = [p.grad for p in m.parameters()]
    tape.run(data)
    assert [p.grad for p in m.parameters()] == [g + g for g in once]
    out = tape.forward(data)
    assert out.shape == (20, 1)
    assert [p.grad for p in m.parameters()] == [g + g for g in once]
    assert tape.run(data, reduction="sum") == pytest.approx(tape.run(data) * 20, rel=1e-12)


def test_results_do_not_depend_on_the_thread_count(backend):
    before = get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3):
            set_num_threads(n)
            assert get_num_threads() == n or backend.__name__.endswith("reference")
            m, tape = _tape(backend, hidden=(32, 32))
            m.zero_grad()
            value = tape.run(_data(2000 if backend.__name__.endswith("_core") else 200))
            runs.append((_bits([value]), _bits([p.grad for p in m.parameters()])))
    finally:
        set_num_threads(before)
    assert runs[0] == runs[1] == runs[2]


def test_parameters_are_read_at_every_run(backend):
    m, tape = _tape(backend)
    data = _data(10)
    first = tape.forward(data).copy()
    for p in m.parameters():
        p.data = p.data * 0.5
    assert not np.array_equal(tape.forward(data), first)


def test_a_root_no_input_reaches(backend):
    """A shared root (an L2 penalty alone): each row sends it the seed."""
    B = backend
    w = B.Value(3.0)
    x = B.Value(0.0)
    tape = BatchTape(w * w, inputs=[x])
    assert tape.run([[1.0], [2.0], [5.0]]) == 9.0
    assert w.grad == 6.0


def test_bad_batches_raise_clear_errors(backend):
    B = backend
    m, tape = _tape(B)
    with pytest.raises(ValueError, match=r"expected X of shape \(rows, 3\).*got shape \(4, 2\)"):
        tape.run(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"expected X of shape \(rows, 3\).*got shape \(3,\)"):
        tape.run([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="X has no rows"):
        tape.forward(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="BatchTape.run: X must hold numbers"):
        tape.run([["a", "b", "c"]])
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'max'"):
        tape.run(np.zeros((2, 3)), reduction="max")
    x, y = B.Value(1.0), B.Value(2.0)
    s = x * y
    with pytest.raises(ValueError, match="input 0 must be a leaf"):
        BatchTape(s * 2.0, inputs=[s])
    with pytest.raises(ValueError, match="inputs 0 and 1 are the same Value"):
        BatchTape(s, inputs=[x, x])
    with pytest.raises(ValueError, match="output 0 is not part of the root's graph"):
        BatchTape(s, inputs=[x], outputs=[B.Value(3.0)])
    with pytest.raises(TypeError, match="root must be a Value, got float"):
        BatchTape(1.0, inputs=[x])
    with pytest.raises(TypeError, match="set_num_threads: expected an int"):
        set_num_threads(1.5)
    with pytest.raises(ValueError, match="set_num_threads: expected a thread count >= 1"):
        set_num_threads(0)


_INTERRUPT = textwrap.dedent(
    r"""
    import json, os, signal, sys, threading, time
    import numpy as np
    import scalargrad
    from scalargrad import losses
    from scalargrad.batch import BatchTape
    from scalargrad.nn import MLP

    name, rows = sys.argv[1], int(sys.argv[2])
    B = scalargrad.backend_module(name)
    m = MLP(2, [64, 64, 1], seed=0, backend=B)
    x = [B.Value(0.0), B.Value(0.0)]; t = B.Value(0.0)
    tape = BatchTape(losses._hinge_term(m(x), t), inputs=[*x, t])
    X = np.c_[np.random.default_rng(0).normal(size=(rows, 2)), np.ones(rows)]
    m.zero_grad()
    t0 = time.perf_counter(); tape.run(X); full = time.perf_counter() - t0
    want = [p.grad for p in m.parameters()]
    m.zero_grad()
    threading.Timer(full / 4, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    finished = False
    try:
        tape.run(X)
        finished = True
        time.sleep(3 + 4 * full)  # an interrupt that arrives late lands here
    except KeyboardInterrupt:
        pass
    interrupted = not finished
    untouched = all(p.grad == 0.0 for p in m.parameters())
    tape.run(X)
    again = [p.grad for p in m.parameters()] == want
    print(json.dumps({"interrupted": interrupted, "untouched": untouched, "again": again}))
    """
)


@pytest.mark.parametrize("name, rows", [("rust", 200_000), ("reference", 3000)])
def test_ctrl_c_stops_a_batched_run_and_leaves_gradients_alone(name, rows):
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPT, name, str(rows)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["interrupted"], "the run finished before the interrupt"
    assert res["untouched"], "an interrupted run changed gradients"
    assert res["again"], "the run after an interrupt differs from an uninterrupted one"


def test_thread_count_from_the_environment():
    code = "import scalargrad; print(scalargrad.get_num_threads())"
    for env, want in [("3", "3"), ("junk", None)]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "SCALARGRAD_NUM_THREADS": env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == (want or str(os.cpu_count() or 1))
