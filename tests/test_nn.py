"""nn, losses, optimizers, schedules and fit, on both backends."""

from __future__ import annotations

import json
import math
import random

import pytest
import scalargrad
from scalargrad import losses
from scalargrad.nn import MLP, Layer, Neuron, load
from scalargrad.optim import (
    SGD,
    Adam,
    LinearDecay,
    ReduceLROnPlateau,
    StepLR,
    clip_grad_norm,
    clip_grad_value,
)


@pytest.fixture
def name(backend):
    return backend.Value._backend


# ---- nn ------------------------------------------------------------------------


def test_micrograd_mlp_shape_and_semantics(name):
    random.seed(0)
    m = MLP(2, [16, 16, 1], backend=name)
    assert len(m.parameters()) == 337
    assert [layer.activation for layer in m.layers] == ["relu", "relu", "linear"]
    out = m([1.0, -2.0])
    assert not isinstance(out, list) and out._op == "+"
    dot = out._prev[0]
    assert dot._op == "dot" and len(dot._prev) == 32  # one fused node: 16 w + 16 x
    assert isinstance(Layer(2, 3, backend=name)([1.0, 2.0]), list)
    assert repr(Neuron(3, backend=name)) == "ReLUNeuron(3)"
    assert repr(Neuron(3, nonlin=False, backend=name)) == "LinearNeuron(3)"
    assert repr(MLP(1, [1], backend=name)) == "MLP of [Layer of [LinearNeuron(1)]]"


def test_initialisation_seeded_or_from_global_random(name):
    a = MLP(2, [4, 1], seed=7, backend=name).state_dict()
    assert a == MLP(2, [4, 1], seed=7, backend=name).state_dict()
    assert a != MLP(2, [4, 1], seed=8, backend=name).state_dict()
    random.seed(3)
    b = MLP(2, [4, 1], backend=name).state_dict()
    random.seed(3)
    assert b == MLP(2, [4, 1], backend=name).state_dict()


def test_backends_build_identical_models():
    r = MLP(3, [5, (4, "tanh"), (2, "sigmoid")], seed=1, backend="rust")
    p = MLP(3, [5, (4, "tanh"), (2, "sigmoid")], seed=1, backend="reference")
    x = [0.3, -1.2, 2.0]
    assert [o.data.hex() for o in r(x)] == [o.data.hex() for o in p(x)]


def test_per_layer_activations(name):
    m = MLP(2, [(4, "relu"), (4, "tanh"), (1, "sigmoid")], seed=0, backend=name)
    out = m([0.5, -0.5])
    assert out._op == "sigmoid" and 0.0 < out.data < 1.0
    assert out._prev[0]._prev[0]._prev[-1]._op == "tanh"
    assert MLP(2, [3, 1], activation="tanh", seed=0, backend=name).layers[0].activation == "tanh"
    with pytest.raises(ValueError, match="activation"):
        MLP(2, [(3, "swish")], backend=name)
    with pytest.raises(ValueError, match="nin"):
        MLP(0, [3], backend=name)


def test_parameters_names_modes_and_zero_grad(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == len(set(names)) == 13
    assert names[0] == "layers.0.neurons.0.w.0" and names[-1] == "layers.1.neurons.0.b"
    m([1.0, 2.0]).backward()
    assert any(p.grad != 0 for p in m.parameters())
    m.zero_grad()
    assert all(p.grad == 0 for p in m.parameters())
    assert m.eval() is m and not m.training and not m.layers[0].neurons[0].training
    assert m.train().training


def test_state_dict_round_trip_and_strictness(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    other = MLP(2, [3, 1], seed=1, backend=name)
    other.load_state_dict(m.state_dict())
    assert other.state_dict() == m.state_dict()
    before = other.state_dict()
    bad = dict(m.state_dict(), extra=1.0)
    with pytest.raises(ValueError, match="unexpected"):
        other.load_state_dict(bad)
    broken = dict(m.state_dict())
    broken["layers.1.neurons.0.b"] = "x"
    with pytest.raises(ValueError, match="number"):
        other.load_state_dict(broken)
    assert other.state_dict() == before


def test_save_load(name, tmp_path):
    m = MLP(2, [(3, "tanh"), 1], seed=0, backend=name)
    for p in m.parameters():
        p.data = p.data / 3.0  # values that need all 53 bits
    path = tmp_path / "m.json"
    m.save(path)
    body = json.loads(path.read_text())
    assert body["architecture"]["layers"] == [[3, "tanh"], [1, "linear"]]
    assert body["library_version"] == scalargrad.__version__ and body["checksum"].startswith(
        "sha256:"
    )
    again = load(path, backend=name)
    assert [v.hex() for v in again.state_dict().values()] == [
        v.hex() for v in m.state_dict().values()
    ]
    fresh = MLP(2, [(3, "tanh"), 1], seed=5, backend=name)
    fresh.load(path)
    assert fresh.state_dict() == m.state_dict()

    wrong = MLP(2, [4, 1], seed=5, backend=name)
    before = wrong.state_dict()
    with pytest.raises(ValueError, match="architecture"):
        wrong.load(path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        wrong.load(path)
    tampered = dict(body)
    tampered["parameters"] = dict(body["parameters"], **{"layers.1.neurons.0.b": (1.0).hex()})
    path.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="checksum"):
        load(path)
    with pytest.raises(FileNotFoundError):
        wrong.load(tmp_path / "missing.json")
    assert wrong.state_dict() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary files left


def test_summary(name):
    s = MLP(2, [16, 16, 1], seed=0, backend=name).summary()
    for text in (
        "2 -> 16",
        "16 -> 16",
        "16 -> 1",
        "relu",
        "linear",
        "272",
        "total parameters: 337",
    ):
        assert text in s


# ---- losses: value and gradient against hand computations ----------------------------


def _grads(vs):
    return [v.grad for v in vs]


def test_mse(V):
    p = [V(1.0), V(-2.0)]
    loss = losses.mse(p, [0.5, 1.0])
    loss.backward()
    assert loss.data == ((0.5) ** 2 + 9.0) / 2
    assert _grads(p) == pytest.approx([2 * 0.5 / 2, 2 * -3.0 / 2])


def test_binary_cross_entropy(V):
    p = [V(0.8), V(0.3)]
    loss = losses.binary_cross_entropy(p, [1, 0])
    loss.backward()
    assert loss.data == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert _grads(p) == pytest.approx([-1 / 0.8 / 2, 1 / 0.7 / 2])
    assert math.isfinite(losses.binary_cross_entropy([V(0.0), V(1.0)], [1, 0]).data)


def test_bce_with_logits(V):
    z = [V(0.5), V(-1.5)]
    loss = losses.bce_with_logits(z, [1, 0])
    loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expect = -(math.log(sig(0.5)) + math.log(1 - sig(-1.5))) / 2
    assert loss.data == pytest.approx(expect)
    assert _grads(z) == pytest.approx([(sig(0.5) - 1) / 2, sig(-1.5) / 2])
    big = losses.bce_with_logits([V(1000.0), V(-1000.0)], [0, 0])
    assert big.data == pytest.approx(500.0)


def test_hinge(V):
    s = [V(2.0), V(-0.5), V(0.25)]
    loss = losses.hinge(s, [1, 1, 0])
    loss.backward()
    assert loss.data == pytest.approx((0 + 1.5 + 1.25) / 3)
    assert _grads(s) == pytest.approx([0.0, -1 / 3, 1 / 3])


def test_softmax_and_cross_entropy(V):
    z = [V(1.0), V(2.0), V(1000.0)]
    probs = losses.softmax(z)
    assert sum(p.data for p in probs) == pytest.approx(1.0)
    assert probs[2].data == pytest.approx(1.0)
    logits = [[V(1.0), V(2.0), V(0.5)], [V(0.0), V(-1.0), V(3.0)]]
    loss = losses.softmax_cross_entropy(logits, [0, 2])
    loss.backward()
    expect = 0.0
    for row, t in zip(([1.0, 2.0, 0.5], [0.0, -1.0, 3.0]), (0, 2)):
        e = [math.exp(x) for x in row]
        expect += -math.log(e[t] / sum(e)) / 2
    assert loss.data == pytest.approx(expect)
    e = [math.exp(x) for x in (1.0, 2.0, 0.5)]
    sm = [x / sum(e) for x in e]
    assert _grads(logits[0]) == pytest.approx([(sm[0] - 1) / 2, sm[1] / 2, sm[2] / 2])
    with pytest.raises(ValueError, match="class"):
        losses.softmax_cross_entropy([[V(1.0)]], [3])


def test_l2_and_length_checks(V):
    ps = [V(1.0), V(-2.0)]
    reg = losses.l2(ps, 0.5)
    reg.backward()
    assert reg.data == 2.5 and _grads(ps) == [1.0, -2.0]
    with pytest.raises(ValueError, match="targets"):
        losses.mse([V(1.0)], [1.0, 2.0])


# ---- optimizers and schedules ------------------------------------------------------------


def test_sgd_plain_momentum_weight_decay(V):
    p = V(1.0)
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    vel, x = 0.0, 1.0
    for g in (0.5, -0.25, 1.0):
        p.grad = g
        opt.step()
        gg = g + 0.01 * x
        vel = 0.9 * vel + gg
        x -= 0.1 * vel
        assert p.data == x
    q = V(2.0)
    q.grad = 3.0
    SGD([q], lr=0.5).step()
    assert q.data == 0.5


def test_adam_matches_hand_written(V):
    p = V(1.0)
    opt = Adam([p], lr=0.01)
    m = v = 0.0
    x = 1.0
    for t, g in enumerate((0.5, -0.25, 1.0), start=1):
        p.grad = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        x -= 0.01 * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
        assert p.data == pytest.approx(x, rel=1e-15)


def test_schedules_and_clipping(V):
    opt = SGD([V(0.0)], lr=0.5)
    sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)
    for k in range(101):
        assert opt.lr == pytest.approx(1.0 - 0.9 * k / 100, abs=1e-15)
        sched.step()
    opt2 = SGD([V(0.0)], lr=1.0)
    step = StepLR(opt2, step_size=2, gamma=0.5)
    seen = []
    for _ in range(5):
        step.step()
        seen.append(opt2.lr)
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt3 = SGD([V(0.0)], lr=1.0)
    plateau = ReduceLROnPlateau(opt3, patience=2, factor=0.5)
    for loss in (1.0, 0.5, 0.5, 0.5):
        plateau.step(loss)
    assert opt3.lr == 1.0
    plateau.step(0.5)
    assert opt3.lr == 0.5
    ps = [V(0.0), V(0.0)]
    ps[0].grad, ps[1].grad = 3.0, 4.0
    assert clip_grad_norm(ps, 1.0) == 5.0
    assert math.hypot(ps[0].grad, ps[1].grad) == pytest.approx(1.0)
    ps[0].grad = -7.0
    clip_grad_value(ps, 0.5)
    assert ps[0].grad == -0.5
    with pytest.raises(ValueError, match="lr"):
        SGD([V(0.0)], lr=-1)


# ---- fit ----------------------------------------------------------------------------------


def _moons():
    from scalargrad.datasets import moons

    return moons(n_samples=100, noise=0.1, seed=1)


def test_fit_moons_micrograd_recipe_reaches_accuracy():
    X, y = _moons()
    hists = {}
    for b in scalargrad.BACKENDS:
        for replay in (False, True):
            m = MLP(2, [16, 16, 1], seed=1337, backend=b)
            opt = SGD(m.parameters(), lr=1.0)
            sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)
            h = scalargrad.fit(
                m,
                X,
                y,
                loss="hinge",
                l2=1e-4,
                optimizer=opt,
                schedule=sched,
                epochs=100 if b == "rust" or replay else 30,
                progress=False,
                replay=replay,
            )
            hists[b, replay] = h
    assert hists["rust", True].accuracy[-1] >= 0.97
    # eager and replayed training, and the two backends, agree bit for bit
    assert hists["rust", True].loss == hists["reference", True].loss == hists["rust", False].loss
    assert hists["reference", False].loss == hists["rust", True].loss[:30]


def test_fit_adam_minibatches_identical_across_backends():
    X, y = _moons()
    runs = []
    for b in scalargrad.BACKENDS:
        m = MLP(2, [8, 1], seed=3, backend=b)
        h = scalargrad.fit(
            m,
            X.tolist(),
            y.tolist(),
            loss="hinge",
            optimizer=Adam(m.parameters(), lr=0.05),
            epochs=8,
            batch_size=16,
            seed=0,
            progress=False,
        )
        runs.append(h)
        assert len(h.loss) == len(h.accuracy) == len(h.lr) == 8
    assert runs[0].loss == runs[1].loss and runs[0].accuracy == runs[1].accuracy


def test_fit_options(name, capsys):
    X = [[0.0], [1.0], [2.0], [3.0]]
    y = [1.0, 3.0, 5.0, 7.0]
    m = MLP(1, [1], seed=0, backend=name)
    h = scalargrad.fit(
        m,
        X,
        y,
        loss="mse",
        optimizer=SGD(m.parameters(), lr=0.05),
        epochs=200,
        progress=True,
        early_stopping=3,
        min_delta=1e-6,
    )
    assert h.accuracy == [] and h.loss[-1] < 1e-3
    assert h.stopped_early and h.epochs < 200
    assert "loss=" in capsys.readouterr().err
    assert scalargrad.predict(m, [[4.0]])[0] == pytest.approx(9.0, abs=0.1)
    assert scalargrad.evaluate(m, X, y, loss="mse")["loss"] < 1e-3
    with pytest.raises(ValueError, match="samples"):
        scalargrad.fit(m, X, y[:2], progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        scalargrad.fit(m, X, y, loss="huber", progress=False)


def test_fit_softmax_cross_entropy(name):
    X = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]] * 3
    y = [0, 1, 2] * 3
    m = MLP(2, [8, 3], seed=0, backend=name)
    h = scalargrad.fit(m, X, y, loss="softmax_cross_entropy", epochs=60, progress=False)
    assert h.accuracy[-1] == 1.0 and h.loss[-1] < h.loss[0]
