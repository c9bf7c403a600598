"""scalargrad.train (fit, predict, evaluate, History) on both backends: micrograd's
moons demo, bit-identical histories across backends, inputs, early stopping, the
progress bar, regression and multi-class losses, and argument checking."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
import scalargrad
from scalargrad import losses
from scalargrad.nn import MLP
from scalargrad.optim import SGD, Adam, LinearDecay, ReduceLROnPlateau


@pytest.fixture(scope="module")
def moons():
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=100, noise=0.1, random_state=1)
    return X, y * 2 - 1


@pytest.fixture
def name(backend):
    return backend.Value._backend


def _micrograd_demo(X, y, backend, epochs=100, replay=None):
    """micrograd's demo.ipynb: MLP(2, [16, 16, 1]), SVM max-margin loss, L2 1e-4,
    SGD with lr = 1.0 - 0.9*k/100."""
    model = MLP(2, [16, 16, 1], seed=1337, backend=backend)
    opt = SGD(model.parameters(), lr=1.0)
    sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)
    hist = scalargrad.fit(
        model,
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
    return model, hist


# ---- micrograd's moons demo ----------------------------------------------------------------


def test_moons_demo_reaches_accuracy_with_identical_histories(moons):
    X, y = moons
    hists = {}
    for b in scalargrad.BACKENDS:
        model, hist = _micrograd_demo(X, y, b)
        hists[b] = hist
        assert hist.epochs == len(hist.loss) == len(hist.accuracy) == len(hist.lr) == 100
        assert hist.accuracy[-1] >= 0.97, (b, hist.accuracy[-1])
        assert hist.loss[-1] < hist.loss[0]
        assert not hist.stopped_early
        assert all(abs(lr - (1.0 - 0.9 * k / 100)) <= 1e-15 for k, lr in enumerate(hist.lr))
        acc = scalargrad.evaluate(model, X, y, loss="hinge")["accuracy"]
        assert acc >= 0.97
    rust, ref = hists["rust"], hists["reference"]
    assert [v.hex() for v in rust.loss] == [v.hex() for v in ref.loss]
    assert rust.accuracy == ref.accuracy and rust.lr == ref.lr


def test_batched_and_rebuilt_training_agree(moons):
    """Full-batch training runs the per-sample graph as batched lanes; rebuilding
    the batch's graph every epoch gives the same first loss bit for bit (same
    parameters, same forward), and later losses within the summation-order bound
    of the gradients (BatchTape's documented order), compounded over 100 steps."""
    X, y = moons
    _, batched = _micrograd_demo(X, y, "rust", epochs=100, replay=True)
    _, rebuilt = _micrograd_demo(X, y, "rust", epochs=100, replay=False)
    assert batched.loss[0].hex() == rebuilt.loss[0].hex()
    assert batched.loss == pytest.approx(rebuilt.loss, rel=1e-9, abs=1e-12)
    assert batched.accuracy == rebuilt.accuracy
    _, ref_rebuilt = _micrograd_demo(X, y, "reference", epochs=20, replay=False)
    assert ref_rebuilt.loss == rebuilt.loss[:20]
    assert ref_rebuilt.accuracy == rebuilt.accuracy[:20]
    _, ref_batched = _micrograd_demo(X, y, "reference", epochs=20, replay=True)
    assert ref_batched.loss == batched.loss[:20]


def test_adam_minibatches_identical_across_backends(moons):
    X, y = moons
    runs = []
    for b in scalargrad.BACKENDS:
        model = MLP(2, [16, 16, 1], seed=1337, backend=b)
        hist = scalargrad.fit(
            model,
            X,
            y,
            loss="hinge",
            optimizer=Adam(model.parameters(), lr=0.01),
            epochs=20,
            batch_size=16,
            seed=0,
            progress=False,
        )
        assert len(hist.loss) == len(hist.accuracy) == len(hist.lr) == 20
        runs.append((hist, [p.data.hex() for p in model.parameters()]))
    (h1, w1), (h2, w2) = runs
    assert [v.hex() for v in h1.loss] == [v.hex() for v in h2.loss]
    assert h1.accuracy == h2.accuracy
    assert w1 == w2
    assert h1.loss[-1] < h1.loss[0]


def test_minibatch_shuffle_is_seeded(name, moons):
    X, y = moons
    X, y = X[:40], y[:40]

    def run(seed):
        m = MLP(2, [4, 1], seed=0, backend=name)
        return scalargrad.fit(
            m,
            X,
            y,
            optimizer=SGD(m.parameters(), lr=0.1),
            epochs=3,
            batch_size=8,
            seed=seed,
            progress=False,
        ).loss

    assert run(0) == run(0)
    assert run(0) != run(1)


# ---- inputs and history ---------------------------------------------------------------------


def test_list_and_numpy_inputs_give_the_same_history(name, moons):
    X, y = moons
    X, y = X[:30], y[:30]
    hists = []
    for xs, ys in ((X, y), (X.tolist(), y.tolist()), ([tuple(r) for r in X.tolist()], list(y))):
        m = MLP(2, [4, 1], seed=2, backend=name)
        hists.append(
            scalargrad.fit(
                m, xs, ys, optimizer=SGD(m.parameters(), lr=0.1), epochs=5, progress=False
            )
        )
    assert hists[0].loss == hists[1].loss == hists[2].loss
    assert hists[0].accuracy == hists[1].accuracy == hists[2].accuracy


def test_fit_puts_the_model_in_training_mode(name):
    m = MLP(2, [3, 1], seed=0, backend=name).eval()
    scalargrad.fit(m, [[0.0, 1.0]], [1], epochs=1, progress=False)
    assert m.training and m.layers[0].neurons[0].training


def test_history_lengths_equal_epochs(name):
    X = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    y = [1, -1, 1]
    for epochs, batch_size in ((7, None), (4, 2), (0, None)):
        m = MLP(2, [3, 1], seed=0, backend=name)
        hist = scalargrad.fit(m, X, y, epochs=epochs, batch_size=batch_size, progress=False)
        assert isinstance(hist, scalargrad.History)
        assert hist.epochs == len(hist.loss) == len(hist.accuracy) == len(hist.lr) == epochs
        assert not hist.stopped_early
        assert all(0.0 <= a <= 1.0 for a in hist.accuracy)


def test_first_epoch_loss_is_the_loss_before_training(name, moons):
    X, y = moons
    m = MLP(2, [8, 1], seed=0, backend=name)
    before = scalargrad.evaluate(m, X, y, loss="hinge")
    hist = scalargrad.fit(m, X, y, epochs=2, progress=False)
    assert hist.loss[0] == pytest.approx(before["loss"], rel=1e-14)
    assert hist.accuracy[0] == before["accuracy"]


def test_schedule_receives_the_epoch_loss(name):
    # a model that cannot improve (lr too small to matter): plateau halves lr each epoch
    m = MLP(1, [1], seed=0, backend=name)
    opt = SGD(m.parameters(), lr=1e-300)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    hist = scalargrad.fit(
        m,
        [[1.0], [2.0]],
        [1.0, 5.0],
        loss="mse",
        optimizer=opt,
        schedule=sched,
        epochs=4,
        progress=False,
    )
    assert hist.lr == [1e-300, 1e-300, 5e-301, 2.5e-301]


# ---- early stopping ---------------------------------------------------------------------


def test_early_stopping_on_a_plateau(name):
    # lr so small the loss never improves by min_delta: best at epoch 1, then 3 stale
    m = MLP(1, [1], seed=0, backend=name)
    hist = scalargrad.fit(
        m,
        [[0.0], [1.0]],
        [1.0, 3.0],
        loss="mse",
        optimizer=SGD(m.parameters(), lr=1e-12),
        epochs=50,
        early_stopping=3,
        min_delta=1e-3,
        progress=False,
    )
    assert hist.stopped_early
    assert hist.epochs == len(hist.loss) == len(hist.lr) == 4


def test_early_stopping_after_loss_reaches_zero(name):
    # a separable problem: the hinge loss drops to exactly 0 and stays there
    X = [[-2.0], [-1.0], [1.0], [2.0]]
    y = [-1, -1, 1, 1]
    m = MLP(1, [1], seed=0, backend=name)
    hist = scalargrad.fit(
        m,
        X,
        y,
        optimizer=SGD(m.parameters(), lr=0.5),
        epochs=200,
        early_stopping=5,
        progress=False,
    )
    assert hist.stopped_early and hist.epochs < 200
    assert hist.loss[-1] == 0.0 and hist.accuracy[-1] == 1.0
    assert hist.loss[-6:] == [0.0] * 6


def test_no_early_stopping_while_improving(name):
    X = [[0.0], [1.0], [2.0], [3.0]]
    y = [1.0, 3.0, 5.0, 7.0]
    m = MLP(1, [1], seed=0, backend=name)
    hist = scalargrad.fit(
        m,
        X,
        y,
        loss="mse",
        optimizer=SGD(m.parameters(), lr=0.01),
        epochs=30,
        early_stopping=2,
        progress=False,
    )
    assert not hist.stopped_early and hist.epochs == 30


# ---- progress bar ------------------------------------------------------------------------


def test_progress_bar_on_stderr(name, capsys):
    m = MLP(2, [3, 1], seed=0, backend=name)
    X = [[0.0, 1.0], [1.0, 0.0]]
    scalargrad.fit(m, X, [1, -1], epochs=3, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "loss=" in captured.err and "acc=" in captured.err
    assert "3/3" in captured.err
    scalargrad.fit(m, X, [1, -1], epochs=3, progress=False)
    assert capsys.readouterr().err == ""


class _SlowSchedule:
    """Makes each epoch last longer than the bar's redraw interval, so the bar is
    drawn after every epoch."""

    def step(self, metric: float) -> None:
        time.sleep(0.12)


def _frames(err: str) -> list[str]:
    return [f for f in re.split(r"[\r\n]", err) if "loss=" in f]


def test_progress_bar_shows_the_epoch_whose_loss_it_prints(name, capsys):
    m = MLP(2, [3, 1], seed=0, backend=name)
    X = [[0.0, 1.0], [1.0, 0.0]]
    hist = scalargrad.fit(m, X, [1, -1], epochs=4, progress=True, schedule=_SlowSchedule())
    frames = _frames(capsys.readouterr().err)
    shown = set()
    for f in frames:
        done = int(re.search(r"(\d+)/4 ", f).group(1))
        loss = re.search(r"loss=([-\d.]+)", f).group(1)
        assert done >= 1 and loss == f"{hist.loss[done - 1]:.4f}", f
        shown.add(done)
    assert shown == {1, 2, 3, 4}


def test_progress_bar_redraws_at_most_ten_times_a_second(name, capsys):
    m = MLP(1, [1], seed=0, backend=name)
    t0 = time.perf_counter()
    scalargrad.fit(m, [[1.0]], [1], loss="mse", epochs=3000, progress=True)
    elapsed = time.perf_counter() - t0
    draws = len(_frames(capsys.readouterr().err))
    assert 1 <= draws <= elapsed / 0.1 + 3


# ---- targets checked against the loss --------------------------------------------------------


XY4 = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize(
    "loss, y, match",
    [
        ("hinge", [1, 2, 1, 2], r"fit: loss 'hinge' expects targets -1 or \+1, got 2 \(2 of 4"),
        ("hinge", [0, 1, 1, 0], r"expects targets -1 or \+1, got 0"),
        ("bce", [-1, 1, 1, -1], r"fit: loss 'bce' expects targets 0 or 1, got -1"),
        ("bce_with_logits", [0.5, 1, 1, 0], r"expects targets 0 or 1, got 0.5"),
        ("hinge", ["a", "b", "a", "b"], r"expects targets -1 or \+1, got 'a', 'b' \(4 of 4"),
        (
            "mse",
            [1.0, float("nan"), 0.0, 2.0],
            r"loss 'mse' expects targets finite numbers, got nan",
        ),
        ("mse", [1.0, "x", 0.0, 2.0], r"expects targets finite numbers, got 'x'"),
    ],
)
def test_fit_and_evaluate_check_targets_against_the_loss(name, loss, y, match):
    m = MLP(2, [3, 1], seed=0, backend=name)
    before = [p.data for p in m.parameters()]
    with pytest.raises(ValueError, match=match):
        scalargrad.fit(m, XY4, y, loss=loss, epochs=2, progress=False)
    with pytest.raises(ValueError, match=match.replace("fit:", "evaluate:")):
        scalargrad.evaluate(m, XY4, y, loss=loss)
    assert [p.data for p in m.parameters()] == before


def test_softmax_targets_must_be_classes_of_the_model(name):
    m = MLP(2, [3, 3], seed=0, backend=name)
    with pytest.raises(
        ValueError, match=r"expects targets class indices 0..2 \(one per output\), got 3"
    ):
        scalargrad.fit(m, XY4, [0, 1, 2, 3], loss="softmax_cross_entropy", progress=False)
    with pytest.raises(ValueError, match=r"got 1.5"):
        scalargrad.evaluate(m, XY4, [0, 1.5, 2, 0], loss="cross_entropy")
    hist = scalargrad.fit(
        m, XY4, [0.0, 1.0, 2.0, 0.0], loss="cross_entropy", epochs=2, progress=False
    )
    assert len(hist.accuracy) == 2


@pytest.mark.parametrize(
    "loss, y", [("hinge", [-1, 1, 1, -1]), ("bce", [0, 1, 1, 0]), ("mse", [0.5, 1, 2, 0])]
)
def test_a_column_of_targets_gives_the_same_history(name, loss, y):
    hists = []
    for targets in (y, [[t] for t in y], np.array(y, dtype=float).reshape(-1, 1)):
        m = MLP(2, [3, 1], seed=0, backend=name)
        hists.append(scalargrad.fit(m, XY4, targets, loss=loss, epochs=5, progress=False))
    assert hists[0] == hists[1] == hists[2]
    assert scalargrad.evaluate(
        m, XY4, np.array(y).reshape(-1, 1), loss=loss
    ) == scalargrad.evaluate(m, XY4, y, loss=loss)


def test_losses_check_their_targets(backend):
    V = backend.Value
    preds = [V(0.3), V(-0.2)]
    with pytest.raises(ValueError, match=r"hinge: loss 'hinge' expects targets -1 or \+1, got 2"):
        losses.hinge(preds, [1, 2])
    with pytest.raises(
        ValueError, match=r"binary_cross_entropy: .* expects targets in \[0, 1\], got -1"
    ):
        losses.binary_cross_entropy([V(0.3), V(0.6)], [-1, 1])
    with pytest.raises(ValueError, match=r"mse: .*finite numbers, got 'a'"):
        losses.mse(preds, ["a", 1])
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: .*class indices 0..1 .*got 2"):
        losses.softmax_cross_entropy([[V(1.0), V(2.0)]], [2])
    assert losses.hinge(preds, [[1], [-1]]).data == losses.hinge(preds, [1, -1]).data


# ---- mistakes with clear messages ---------------------------------------------------------


def test_optimizer_given_by_name_is_a_clear_type_error(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    with pytest.raises(TypeError, match=r"fit: optimizer must be an optimizer object .*got 'adam'"):
        scalargrad.fit(m, XY4, [1, -1, 1, -1], optimizer="adam", progress=False)


def test_softmax_cross_entropy_needs_several_outputs(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    msg = r"'softmax_cross_entropy' needs a model with one output per class \(at least 2\), got 1"
    with pytest.raises(ValueError, match=msg):
        scalargrad.fit(m, XY4, [0, 1, 1, 0], loss="softmax_cross_entropy", progress=False)
    with pytest.raises(ValueError, match="each sample needs a list of logits, one per class"):
        losses.softmax_cross_entropy([m(x) for x in XY4], [0, 1, 1, 0])


def test_hinge_needs_one_output(name):
    m = MLP(2, [3, 3], seed=0, backend=name)
    with pytest.raises(
        ValueError, match=r"fit: loss 'hinge' needs a model with 1 output, got 3 outputs"
    ):
        scalargrad.fit(m, XY4, [1, -1, 1, -1], loss="hinge", progress=False)
    with pytest.raises(
        ValueError, match=r"hinge: each prediction must be one Value .*got a list of 3"
    ):
        losses.hinge([m(x) for x in XY4], [1, -1, 1, -1])


def test_calling_a_model_on_a_number_names_what_it_expects(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    with pytest.raises(
        TypeError, match=r"MLP: expects one sample, a list of 2 inputs, got float 1.0"
    ):
        m(1.0)
    with pytest.raises(
        TypeError, match=r"Neuron: .*got float 1.0; for one input write neuron\(\[x\]\)"
    ):
        scalargrad.nn.Neuron(1, backend=name)(1.0)
    with pytest.raises(ValueError, match="MLP: expected 2 inputs, got 3"):
        m([1.0, 2.0, 3.0])


def test_mlp_with_an_int_for_nouts_names_the_list_it_wants():
    with pytest.raises(
        TypeError,
        match=r"MLP: nouts must be a list of layer sizes such as \[16, 16, 1\], got int 1",
    ):
        MLP(2, 1)


def test_predict_on_one_sample_says_to_wrap_it(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    X = np.array(XY4)
    with pytest.raises(
        ValueError,
        match=r"predict: each sample of X must have 2 features .*looks like one sample: pass \[x\]",
    ):
        scalargrad.predict(m, X[0])
    assert scalargrad.predict(m, [X[0]]) == scalargrad.predict(m, X)[:1]


# ---- predict and evaluate -------------------------------------------------------------------


def test_predict(name):
    m = MLP(2, [4, 1], seed=0, backend=name)
    X = [[0.5, -1.0], [2.0, 0.25]]
    out = scalargrad.predict(m, X)
    assert out == [m(x).data for x in X] and all(type(v) is float for v in out)
    assert scalargrad.predict(m, np.array(X)) == out
    multi = MLP(2, [4, 3], seed=0, backend=name)
    outs = scalargrad.predict(multi, X)
    assert len(outs) == 2 and all(len(o) == 3 and all(type(v) is float for v in o) for o in outs)
    assert outs[1] == [v.data for v in multi(X[1])]


def test_evaluate(name, moons):
    X, y = moons
    m = MLP(2, [8, 1], seed=0, backend=name)
    before = [p.data for p in m.parameters()]
    res = scalargrad.evaluate(m, X, y, loss="hinge")
    outs = [m(x) for x in X.tolist()]
    assert res["loss"] == pytest.approx(losses.hinge(outs, y.tolist()).data, rel=1e-15)
    right = sum((o.data > 0) == (t > 0) for o, t in zip(outs, y))
    assert res["accuracy"] == right / len(y)
    assert [p.data for p in m.parameters()] == before  # no training
    assert all(p.grad == 0.0 for p in m.parameters())
    reg = scalargrad.evaluate(m, X, y.astype(float), loss="mse")
    assert set(reg) == {"loss"}


# ---- regression and multi-class -----------------------------------------------------------------


def test_mse_regression_has_no_accuracy(name):
    X = [[0.0], [1.0], [2.0], [3.0]]
    y = [1.0, 3.0, 5.0, 7.0]
    m = MLP(1, [1], seed=0, backend=name)
    hist = scalargrad.fit(
        m, X, y, loss="mse", optimizer=SGD(m.parameters(), lr=0.05), epochs=300, progress=False
    )
    assert hist.accuracy == [] and len(hist.loss) == len(hist.lr) == 300
    assert hist.loss[-1] < 1e-6
    assert scalargrad.predict(m, [[4.0]])[0] == pytest.approx(9.0, abs=1e-2)


def test_softmax_cross_entropy_three_classes(name):
    X = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]] * 3
    y = [0, 1, 2] * 3
    m = MLP(2, [8, 3], seed=0, backend=name)
    hist = scalargrad.fit(m, X, y, loss="softmax_cross_entropy", epochs=60, progress=False)
    assert hist.accuracy[-1] == 1.0 and hist.loss[-1] < hist.loss[0]
    preds = scalargrad.predict(m, X[:3])
    assert [p.index(max(p)) for p in preds] == [0, 1, 2]
    res = scalargrad.evaluate(m, X, y, loss="softmax_cross_entropy")
    assert res["accuracy"] == 1.0
    assert res["loss"] == pytest.approx(hist.loss[-1], rel=0.5)


def test_bce_with_logits_and_callable_loss(name):
    X = [[-2.0], [-1.0], [1.0], [2.0]]
    y = [0, 0, 1, 1]
    m = MLP(1, [1], seed=3, backend=name)  # starts with a negative weight: all wrong
    hist = scalargrad.fit(
        m,
        X,
        y,
        loss="bce_with_logits",
        optimizer=SGD(m.parameters(), lr=0.5),
        epochs=30,
        progress=False,
    )
    assert len(hist.accuracy) == 30 and hist.accuracy[0] == 0.0 and hist.accuracy[-1] == 1.0
    assert hist.loss[-1] < 0.1
    m2 = MLP(1, [1], seed=3, backend=name)
    custom = scalargrad.fit(
        m2,
        X,
        y,
        loss=losses.bce_with_logits,
        optimizer=SGD(m2.parameters(), lr=0.5),
        epochs=30,
        progress=False,
    )
    assert custom.loss == hist.loss and custom.accuracy == []  # no accuracy for a callable


# ---- argument checking -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": [1, -1]}, "samples"),
        ({"X": [[0.0, 1.0]]}, "samples"),
        ({"loss": "huber"}, "unknown loss"),
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"X": [], "y": []}, "empty"),
        ({"replay": True, "batch_size": 1, "loss": losses.mse}, "mini-batches"),
    ],
)
def test_fit_bad_arguments_raise_value_error(name, kwargs, match):
    args = {"X": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "y": [1, -1, 1], **kwargs}
    nout = args.pop("nout", 1)
    X, y = args.pop("X"), args.pop("y")
    if nout > 1:
        y = [1, 0, 1]
    m = MLP(2, [3, nout], seed=0, backend=name)
    before = [p.data for p in m.parameters()]
    with pytest.raises(ValueError, match=match):
        scalargrad.fit(m, X, y, progress=False, **args)
    assert [p.data for p in m.parameters()] == before


def test_evaluate_unknown_loss_is_value_error(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    with pytest.raises(ValueError, match="unknown loss"):
        scalargrad.evaluate(m, [[0.0, 1.0]], [1], loss="huber")


def test_training_api_is_re_exported():
    from scalargrad import train

    assert scalargrad.fit is train.fit
    assert scalargrad.predict is train.predict
    assert scalargrad.evaluate is train.evaluate
    assert scalargrad.History is train.History
    assert math.isfinite(scalargrad.History().epochs) and scalargrad.History().epochs == 0
