"""The fast paths (replay tapes, Rust optimizer steps, bulk I/O) give the same bits
as the eager path, on both backends."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scalargrad
from scalargrad.nn import MLP
from scalargrad.optim import SGD, Adam


def test_bulk_io(backend):
    V = backend.Value
    vs = [V(1.0), V(2.0), V(3.0)]
    (vs[0] * vs[1] + vs[2]).backward()
    assert scalargrad.get_data(vs).tolist() == [1.0, 2.0, 3.0]
    assert scalargrad.get_grad(vs).tolist() == [2.0, 1.0, 1.0]
    scalargrad.set_data(vs, np.array([0.5, -1.0, 4.0]))
    assert [v.data for v in vs] == [0.5, -1.0, 4.0]
    with pytest.raises(ValueError, match="set_data"):
        scalargrad.set_data(vs, [1.0])
    assert [v.data for v in vs] == [0.5, -1.0, 4.0]  # untouched by the failed call
    with pytest.raises(TypeError, match="element 1"):
        backend.get_data([vs[0], 2.0])


def test_tape_replay_matches_a_rebuilt_graph(backend):
    V = backend.Value
    w = [V(0.3), V(-0.7), V(0.1)]
    x = [V(1.5), V(-2.0), V(0.25)]

    def build():
        z = backend.dot(w, x) + w[0] * x[1]
        return (z.tanh() ** 2 + (z.sigmoid() + 1.0).log() + abs(z).clamp(0.0, 0.5)) / (
            1.5 + x[2].exp()
        )

    tape = backend.Tape(build())
    for step in range(5):
        scalargrad.set_data(x, [1.5 - step, -2.0 + 0.3 * step, 0.25 * step])
        for p in w:
            p.data += 0.1
        value = tape.run()
        replayed = [p.grad for p in w + x]
        for p in w + x:
            p.grad = 0.0
        fresh = build()
        fresh.backward()
        assert value.hex() == fresh.data.hex()
        assert [g.hex() for g in replayed] == [p.grad.hex() for p in w + x]


def test_tape_run_with_values_sets_the_inputs_then_runs(backend):
    V = backend.Value
    w, a, b = V(0.5), V(-4.0), V(2.0)
    xs = [(1.5, -2.0), (3, 0.25), (np.float64(-1.0), True), np.array([0.5, 7.0])]

    def build():
        return ((a * w + b) ** 2 + 10.0 / (a - b)).relu() * b

    tape = backend.Tape(build(), inputs=[a, b])
    assert tape.inputs == [a, b] and tape.inputs[0] is a
    plain = backend.Tape(build())
    assert plain.inputs == []
    for values in xs:
        value = tape.run(values)
        grads = [v.grad for v in (w, a, b)]
        assert [a.data, b.data] == [float(x) for x in values]
        for v in (w, a, b):
            v.grad = 0.0
        fresh = build()
        fresh.backward()
        assert value.hex() == fresh.data.hex()
        assert [g.hex() for g in grads] == [v.grad.hex() for v in (w, a, b)]
    # run() without values keeps the inputs as they are
    assert tape.run() == value and (a.data, b.data) == (0.5, 7.0)


def test_tape_inputs_and_values_are_checked(backend):
    V = backend.Value
    a, b, c = V(1.0), V(2.0), V(3.0)
    y = a * b + c
    with pytest.raises(ValueError, match=r"Tape: input 1 must be a leaf, got a node made by 'mul'"):
        backend.Tape(y, inputs=[a, a * b])
    with pytest.raises(ValueError, match="Tape: inputs 0 and 2 are the same Value"):
        backend.Tape(y, inputs=[a, b, a])
    with pytest.raises(TypeError, match="Tape inputs: element 1 must be a .* Value, got float"):
        backend.Tape(y, inputs=[a, 2.0])
    with pytest.raises(ValueError, match="has no inputs"):
        backend.Tape(y).run([1.0])
    tape = backend.Tape(y, inputs=[a, b])
    before = (a.data, b.data, a.grad, b.grad)
    bad = [
        ([1.0], ValueError, r"Tape.run: expected 2 numbers \(one per input\), got 1"),
        ((1.0, 2.0, 3.0), ValueError, "expected 2 numbers"),
        ([1.0, "x"], TypeError, "Tape.run: element 1 of values must be a number, got str"),
        ([c, 1.0], TypeError, "Tape.run: element 0 of values must be a number, not a Value"),
        (5, TypeError, "Tape.run: values must be a sequence of numbers .*got int"),
    ]
    for values, kind, message in bad:
        with pytest.raises(kind, match=message):
            tape.run(values)
        assert (a.data, b.data, a.grad, b.grad) == before  # nothing set
    # an input outside the root's graph is set all the same, as set_data sets it
    d = V(0.0)
    other = backend.Tape(y, inputs=[a, d])
    assert other.run([2.0, 9.0]) == 2.0 * 2.0 + 3.0 and d.data == 9.0
    del other, tape
    assert d.data == 9.0 and a.data == 2.0  # the inputs outlive the tapes


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, lr=0.1),
        lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda ps: Adam(ps, lr=0.01, weight_decay=1e-4),
    ],
)
def test_rust_optimizer_steps_match_python_steps(make):
    rust = MLP(3, [4, 2], seed=0, backend="rust")
    ref = MLP(3, [4, 2], seed=0, backend="reference")
    opts = [make(rust.parameters()), make(ref.parameters())]
    assert opts[0]._group is not None and opts[1]._group is None
    for step in range(4):
        for model in (rust, ref):
            model.zero_grad()
            out = model([0.5, -1.0 + step, 2.0])
            scalargrad.sum([o * o for o in out]).backward()
        for opt in opts:
            opt.step()
        assert [p.data.hex() for p in rust.parameters()] == [p.data.hex() for p in ref.parameters()]
    state = [getattr(o, "velocity", None) or o.m for o in opts]
    assert state[0] == state[1]
    opts[0].zero_grad()
    assert all(p.grad == 0.0 for p in rust.parameters())


def test_fit_batched_and_eager_on_both_backends():
    """Batched lanes give the same bits on both backends, as rebuilding does; the two
    paths agree to the summation-order bound of the gradients."""
    from scalargrad.datasets import moons
    from scalargrad.optim import LinearDecay

    X, y = moons(n_samples=100, noise=0.1, seed=1)
    hists = {}
    for b in scalargrad.BACKENDS:
        for replay in (False, True):
            m = MLP(2, [16, 16, 1], seed=1337, backend=b)
            opt = SGD(m.parameters(), lr=1.0)
            sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)
            epochs = 30 if (b, replay) == ("reference", False) else 100
            hists[b, replay] = scalargrad.fit(
                m,
                X,
                y,
                loss="hinge",
                l2=1e-4,
                optimizer=opt,
                schedule=sched,
                epochs=epochs,
                progress=False,
                replay=replay,
            )
    assert hists["rust", True].accuracy[-1] >= 0.97
    assert hists["rust", True].loss == hists["reference", True].loss
    assert hists["reference", False].loss == hists["rust", False].loss[:30]
    assert hists["rust", True].loss[0] == hists["rust", False].loss[0]
    assert hists["rust", True].loss == pytest.approx(hists["rust", False].loss, rel=1e-9)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "linear"])
def test_fused_layer_equals_neuron_by_neuron(backend, act):
    from scalargrad.nn import Layer

    layer = Layer(3, 4, activation=act, seed=2, backend=backend)
    x = [0.5, backend.Value(-1.25), 2.0]
    fused = layer(x)
    single = [n(x) for n in layer.neurons]
    assert [o.data.hex() for o in fused] == [o.data.hex() for o in single]
    assert [o._op for o in fused] == [o._op for o in single]
    assert [o._prev[0]._op for o in fused] == [o._prev[0]._op for o in single]
    grads = []
    for outs in (fused, single):
        layer.zero_grad()
        x[1].grad = 0.0
        scalargrad.sum([o * float(k + 1) for k, o in enumerate(outs)]).backward()
        grads.append([p.grad.hex() for p in layer.parameters()] + [x[1].grad.hex()])
    assert grads[0] == grads[1]


def test_fused_layer_errors(backend):
    from scalargrad.nn import Layer

    layer = Layer(2, 3, seed=0, backend=backend)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        layer([1.0])
    with pytest.raises(ValueError, match="activation"):
        backend.layer([[backend.Value(1.0)]], [backend.Value(0.0)], [1.0], "swish")
    with pytest.raises(ValueError, match="bias"):
        backend.layer([[backend.Value(1.0)]], [], [1.0], "relu")
    with pytest.raises(ValueError, match="weight row"):
        backend.layer([[backend.Value(1.0), 2.0]], [backend.Value(0.0)], [1.0, 1.0], "relu")
    big = Layer(1, 2, activation="linear", seed=0, backend=backend)
    with scalargrad.detect_anomaly(), pytest.raises(FloatingPointError, match="dot|add|\\+"):
        big([float("inf")])


class _Net(MLP):
    """A user model: branches on a value, so its graph may change between epochs."""

    def __call__(self, x):
        out = super().__call__(x)
        return out * 2.0 if out.data > 0 else out


@pytest.mark.parametrize(
    "loss, model, replays",
    [
        ("hinge", MLP, True),
        ("mse", MLP, True),
        ("bce_with_logits", MLP, True),
        ("binary_cross_entropy", MLP, True),
        ("softmax_cross_entropy", MLP, True),
        ("hinge", _Net, False),
    ],
)
def test_fit_replays_only_graphs_that_cannot_change(backend, monkeypatch, loss, model, replays):
    import random

    rng = random.Random(0)
    X = [[rng.uniform(-2, 2), rng.uniform(-2, 2)] for _ in range(24)]
    if loss == "softmax_cross_entropy":
        y, nout = [int(a > 0) + int(b > 0) for a, b in X], 3
    elif loss == "hinge":
        y, nout = [1 if a * b > 0 else -1 for a, b in X], 1
    else:
        y, nout = [1 if a * b > 0 else 0 for a, b in X], 1
    acts = [(6, "tanh"), (nout, "sigmoid" if loss == "binary_cross_entropy" else "linear")]

    tapes = _count_batch_tapes(monkeypatch)
    runs = {}
    for replay in (None, False):
        m = model(2, acts, seed=3, backend=backend)
        opt = SGD(m.parameters(), lr=0.2)
        h = scalargrad.fit(
            m, X, y, loss=loss, optimizer=opt, epochs=25, progress=False, replay=replay
        )
        runs[replay] = (h.loss, [p.data for p in m.parameters()])
    assert len(tapes) == (1 if replays else 0)
    _assert_same_training(runs[None], runs[False])


def _count_batch_tapes(monkeypatch) -> list:
    """Records every per-sample graph ``fit`` records for batched lanes."""
    from scalargrad import batch

    tapes: list = []
    real = batch.BatchTape
    monkeypatch.setattr(batch, "BatchTape", lambda *a, **k: tapes.append(a) or real(*a, **k))
    return tapes


def _assert_same_training(batched, rebuilt) -> None:
    """Batched lanes against rebuilding each batch's graph: the first loss is the
    same bits (same parameters, same forward); the gradients differ only by their
    documented summation order, a few ulps that training then compounds."""
    (loss_b, params_b), (loss_r, params_r) = batched, rebuilt
    assert loss_b[0].hex() == loss_r[0].hex()
    assert loss_b == pytest.approx(loss_r, rel=1e-9, abs=1e-12)
    assert params_b == pytest.approx(params_r, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("loss", ["hinge", "mse", "bce_with_logits", "binary_cross_entropy"])
def test_mini_batch_replay_equals_rebuilding(backend, monkeypatch, loss):
    # 30 samples in batches of 8: one graph for the 8s and one for the last 6, each
    # re-run on every batch of its size, reshuffled every epoch.
    import random

    rng = random.Random(1)
    X = [[rng.uniform(-2, 2), rng.uniform(-2, 2)] for _ in range(30)]
    y = [1 if a * b > 0 else (-1 if loss == "hinge" else 0) for a, b in X]
    out = "sigmoid" if loss == "binary_cross_entropy" else "linear"
    tapes = _count_batch_tapes(monkeypatch)
    runs = {}
    for replay in (None, False):
        m = MLP(2, [(6, "tanh"), (1, out)], seed=5, backend=backend)
        h = scalargrad.fit(
            m,
            X,
            y,
            loss=loss,
            l2=1e-3,
            optimizer=Adam(m.parameters(), lr=0.05),
            epochs=15,
            batch_size=8,
            seed=2,
            progress=False,
            replay=replay,
        )
        runs[replay] = (h.loss, [p.data for p in m.parameters()], h.accuracy)
    assert len(tapes) == 1  # one per-sample graph, for every batch and batch size
    _assert_same_training(runs[None][:2], runs[False][:2])
    assert runs[None][2] == runs[False][2]
    assert runs[None][0][-1] < runs[None][0][0]  # it trains


def test_tape_run_checks_anomalies_when_asked(backend):
    w = backend.Value(1.0, label="w")
    tape = backend.Tape(w.log() * 2.0)
    w.data = 0.0
    assert tape.run() == -math.inf  # not checked: IEEE results, as eagerly
    with scalargrad.detect_anomaly(), pytest.raises(FloatingPointError, match="log"):
        tape.run()
    w.data = math.e
    assert tape.run() == 2.0 and w.grad == 2.0 / math.e


# ---- Tape.forward() and Tape.backward(), op by op --------------------------------------
# Each op is recorded, its leaves are changed, and the replay must give the bits of a
# graph built afresh from the new values: operands in the wrong order, a wrong split of
# a dot's operands or a sum in another order change the bits.

TAPE_OPS = {
    "add": lambda B, a, b, c, d: a + b,
    "sub": lambda B, a, b, c, d: a - b,
    "rsub": lambda B, a, b, c, d: 1.5 - a,
    "mul": lambda B, a, b, c, d: a * b,
    "div": lambda B, a, b, c, d: a / b,
    "rdiv": lambda B, a, b, c, d: 2.0 / b,
    "neg": lambda B, a, b, c, d: -b,
    "pow": lambda B, a, b, c, d: a**b,
    "pow_const": lambda B, a, b, c, d: b**3.0,
    "rpow_const": lambda B, a, b, c, d: 2.0**b,
    "exp": lambda B, a, b, c, d: b.exp(),
    "log": lambda B, a, b, c, d: a.log(),
    "tanh": lambda B, a, b, c, d: b.tanh(),
    "sigmoid": lambda B, a, b, c, d: b.sigmoid(),
    "relu": lambda B, a, b, c, d: b.relu(),
    "abs": lambda B, a, b, c, d: abs(b),
    "clamp": lambda B, a, b, c, d: b.clamp(-0.5, 1.0),
    "sum": lambda B, a, b, c, d: B.sum([a, b, c, d]),
    "dot": lambda B, a, b, c, d: B.dot([a, b], [c, d]),
    "dot3": lambda B, a, b, c, d: B.dot([a, b, c], [d, c, b]),
    # a node used twice, and an op over an op: each operand's gradient arrives by two paths
    "chain": lambda B, a, b, c, d: (a - b) / (c - d) ** 2.0 - B.dot([a, c], [b - d, d]),
}

# the leaves at recording time, then the values the tape is replayed with ("a" stays
# positive, so that log and a ** b are real; the sums cancel differently in each order)
TAPE_DATA = [
    (1.5, 0.25, -2.0, 3.0),
    (0.7, 2.5, 1.25, -0.5),
    (3.0, -1.5, 4.0, 0.125),
    (1e16, -1e16, 1.0, 3.0),
    (2.0, 0.0, -7.0, 1e-3),
]


def _eager(backend, f, xs):
    leaves = [backend.Value(x) for x in xs]
    out = f(backend, *leaves)
    out.backward()
    return out.data.hex(), [v.grad.hex() for v in leaves]


@pytest.mark.parametrize("op", TAPE_OPS)
def test_tape_forward_and_backward_per_op(backend, op):
    f = TAPE_OPS[op]
    leaves = [backend.Value(x) for x in TAPE_DATA[0]]
    root = f(backend, *leaves)
    tape = backend.Tape(root)
    assert tape.root is root or tape.root.data == root.data
    seen = set()
    for xs in TAPE_DATA[1:]:
        for v, x in zip(leaves, xs):
            v.data = x
        tape.forward()
        want, want_grads = _eager(backend, f, xs)
        assert root.data.hex() == want, f"{op} forward at {xs}"
        tape.zero_grad()
        assert [v.grad for v in leaves] == [0.0] * 4
        tape.backward()
        assert [v.grad.hex() for v in leaves] == want_grads, f"{op} backward at {xs}"
        seen.add(want)
    assert len(seen) > 1  # the replays did compute something new


@pytest.mark.parametrize(
    "op, values, message",
    [
        ("sub", (1e308, -1e308), r"sub produced inf from operands \(a=1e\+?308, b=-1e\+?308\)$"),
        ("div", (1.5, 0.0), r"div produced inf from operands \(a=1\.5, b=0\.0\)$"),
        (
            "pow",
            (-8.0, 1 / 3),
            r"pow produced nan from operands \(a=-8\.0, b=0\.3333333333333333\)$",
        ),
        (
            "sum",
            (1e308, 1e308),
            r"sum produced inf from operands \(a=1e\+?308, b=1e\+?308, c=1e\+?308, d=0\.25\)$",
        ),
        (
            "dot",
            (1e200, 1e200),
            r"dot produced inf from operands \(a=1e\+?200, b=1e\+?200, c=1e\+?200, ",
        ),
    ],
)
def test_tape_forward_under_detect_anomaly_names_op_and_operands(backend, op, values, message):
    f = TAPE_OPS[op]
    a, b = backend.Value(1.0, label="a"), backend.Value(2.0, label="b")
    c, d = backend.Value(0.5, label="c"), backend.Value(0.25, label="d")
    root = f(backend, a, b, c, d)
    tape = backend.Tape(root)
    a.data, b.data = values
    c.data = values[0]
    tape.forward()  # outside the block: IEEE results, no exception
    assert not math.isfinite(root.data)
    with scalargrad.detect_anomaly(), pytest.raises(FloatingPointError) as err:
        tape.forward()
    assert re.search(message, str(err.value)), str(err.value)
    a.data, b.data, c.data = 1.0, 2.0, 0.5
    with scalargrad.detect_anomaly():
        tape.forward()  # finite again: no exception
    assert math.isfinite(root.data)


def test_tape_backward_under_detect_anomaly(backend):
    # forward stays finite (0 ** 0.5 = 0), the gradient 0.5 * 0 ** -0.5 does not
    a, b = backend.Value(4.0, label="a"), backend.Value(0.5, label="b")
    tape = backend.Tape(a**b)
    a.data = 0.0
    with scalargrad.detect_anomaly():
        tape.forward()
    tape.zero_grad()
    tape.backward()  # outside the block: IEEE results
    assert a.grad == math.inf
    tape.zero_grad()
    with scalargrad.detect_anomaly(), pytest.raises(FloatingPointError, match="detect_anomaly"):
        tape.backward()


def test_bulk_calls_on_lists_check_every_element_first(backend):
    vs = [backend.Value(1.0), backend.Value(2.0), backend.Value(3.0)]
    with pytest.raises(TypeError, match=r"set_data: element 2 of data must be a number, got str"):
        backend.set_data(vs, [5.0, 6.0, "7"])
    with pytest.raises(TypeError, match=r"set_data: element 1 of data must be a number, got str"):
        scalargrad.set_data(vs, [5.0, "6", 7.0])
    with pytest.raises(ValueError, match=r"set_data: 3 values but 2 numbers"):
        scalargrad.set_data(vs, [5.0, 6.0])
    with pytest.raises(TypeError, match=r"element 2 must be a (rust|reference) Value, got float"):
        scalargrad.set_data([*vs[:2], 4.0], [5.0, 6.0, 7.0])
    assert [v.data for v in vs] == [1.0, 2.0, 3.0]
    # Ints, NumPy scalars and arrays are numbers too; the result is the same as floats'.
    scalargrad.set_data(vs, [5, np.float64(6.0), 7.0])
    assert [v.data for v in vs] == [5.0, 6.0, 7.0]
    scalargrad.set_data(vs, np.array([-1.0, 0.5, 2.0]))
    assert scalargrad.get_data(vs).tolist() == [-1.0, 0.5, 2.0]
    assert scalargrad.get_data(vs).dtype == np.float64
    assert scalargrad.get_grad(vs).dtype == np.float64
    assert scalargrad.get_data([]).dtype == np.float64
    # The array is the caller's own: writing it changes no Value.
    got = scalargrad.get_data(vs)
    got[0] = 9.0
    assert vs[0].data == -1.0 and scalargrad.get_data(vs)[0] == -1.0
    with pytest.raises(TypeError, match=r"get_grad: element 1 must be a (rust|reference) Value"):
        scalargrad.get_grad([vs[0], 2.0])
