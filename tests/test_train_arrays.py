"""``fit``, ``evaluate`` and ``predict`` on NumPy arrays (and lists NumPy turns into
numeric arrays): checked and encoded over whole arrays, they give the same
``History`` bits as lists of Python numbers for every built-in loss, full batch and
mini-batch, and the same exceptions with the same messages for every bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scalargrad
from scalargrad import batching, losses, train
from scalargrad.nn import MLP
from scalargrad.optim import Adam

N = 10  # samples; batches of 3 leave a last batch of 1


@pytest.fixture
def name(backend):
    return backend.Value._backend


def _data(kind: str, n: int = N, nin: int = 3, seed: int = 0):
    """Features and targets for the loss ``kind`` (class indices 0..2 for softmax)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, nin))
    s = X[:, 0] - X[:, 1]
    canonical = losses._CANONICAL[kind]
    if canonical == "hinge":
        y = np.where(s > 0, 1, -1)
    elif canonical in ("binary_cross_entropy", "bce_with_logits"):
        y = (s > 0).astype(np.int64)
    elif canonical == "softmax_cross_entropy":
        y = np.digitize(s, [-0.5, 0.5])  # 0, 1 or 2
    else:
        y = s * 2.0 + 0.25
    return X, y


def _nout(kind: str) -> int:
    return 3 if losses._CANONICAL[kind] == "softmax_cross_entropy" else 1


def _run(name, kind, X, y, batch_size, replay=None, epochs=4):
    out = (_nout(kind), "linear")
    if losses._CANONICAL[kind] == "binary_cross_entropy":
        out = (1, "sigmoid")  # probabilities
    m = MLP(3, [5, out], seed=7, backend=name)
    hist = scalargrad.fit(
        m,
        X,
        y,
        loss=kind,
        optimizer=Adam(m.parameters(), lr=0.05),
        epochs=epochs,
        batch_size=batch_size,
        l2=1e-3,
        seed=3,
        progress=False,
        replay=replay,
    )
    return hist, m


def _hex(xs) -> list[str]:
    return [float(v).hex() for v in xs]


# ---- the same bits --------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(train.LOSSES))
@pytest.mark.parametrize("batch_size", [None, 3])
def test_arrays_and_lists_give_the_same_history_bits(name, kind, batch_size, monkeypatch):
    """Against the per-sample path (every sample read, checked and encoded in
    Python, as before arrays were read whole), the array path and lists give the
    same bits: losses, accuracies, parameters, ``evaluate`` and ``predict``."""
    X, y = _data(kind)
    inputs = [
        (X, y),
        (X.tolist(), y.tolist()),
        ([tuple(r) for r in X.tolist()], tuple(y.tolist())),
        (list(X), y.reshape(-1, 1)),  # a list of 1-D arrays; an (n, 1) column
        (np.asfortranarray(X), [[t] for t in y.tolist()]),
    ]
    runs = []
    for i, (xs, ys) in enumerate([inputs[0], *inputs]):
        if i == 0:  # the reference: the per-sample path only
            monkeypatch.setattr(train, "_numeric_rows", lambda X: None)
            monkeypatch.setattr(losses, "_numeric_column", lambda y: None)
            monkeypatch.setattr(losses, "_codes", lambda kind, y, n: None)
        hist, m = _run(name, kind, xs, ys, batch_size)
        runs.append((_hex(hist.loss), hist.accuracy, hist.lr, _hex(p.data for p in m.parameters())))
        res = scalargrad.evaluate(m, xs, ys, loss=kind)
        runs[-1] += (sorted((k, float(v).hex()) for k, v in res.items()),)
        runs[-1] += (scalargrad.predict(m, xs),)
        if i == 0:
            monkeypatch.undo()
    assert all(r == runs[0] for r in runs[1:])
    assert len(runs[0][0]) == 4 and runs[0][0][-1] != runs[0][0][0]  # it trained


@pytest.mark.parametrize("kind", ["hinge", "mse", "bce_with_logits", "softmax_cross_entropy"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_rebuilding_from_arrays_and_lists_gives_the_same_bits(name, kind, batch_size):
    """``replay=False`` calls the model and the loss on Python floats either way."""
    X, y = _data(kind)
    a, ma = _run(name, kind, X, y, batch_size, replay=False, epochs=2)
    b, mb = _run(name, kind, X.tolist(), y.tolist(), batch_size, replay=False, epochs=2)
    assert _hex(a.loss) == _hex(b.loss) and a.accuracy == b.accuracy
    assert _hex(p.data for p in ma.parameters()) == _hex(p.data for p in mb.parameters())


def test_integer_bool_and_float32_features_are_the_floats_float_gives(name):
    X = np.array([[1, 2**60 + 1, -3], [0, 5, 2**53 + 1]], dtype=np.int64)
    Xu = np.array([[1, 2**64 - 1, 3], [0, 5, 2**63 + 1]], dtype=np.uint64)
    Xb = np.array([[True, False, True], [False, False, True]])
    Xf = np.array([[0.1, -2.5, 1e30], [3.25, 7.0, -0.0]], dtype=np.float32)
    for A in (X, Xu, Xb, Xf):
        rows = train._rows("fit", A, 3)
        assert isinstance(rows, np.ndarray) and rows.dtype == np.float64
        assert _hex(rows.ravel()) == _hex(float(v) for v in A.ravel().tolist())
    m = MLP(3, [2, 1], seed=0, backend=name)
    assert scalargrad.predict(m, Xu) == scalargrad.predict(m, Xu.tolist())


def test_custom_loss_gets_the_targets_as_given(name):
    """A loss function of your own sees ``y`` as a list of Python numbers."""
    seen = []

    def loss(outs, targets):
        seen.append([(type(t), t) for t in targets])
        return losses.mse(outs, targets)

    X, y = _data("mse", n=4)
    for ys in (y, y.tolist()):
        m = MLP(3, [2, 1], seed=0, backend=name)
        scalargrad.fit(m, X, ys, loss=loss, epochs=1, progress=False)
    assert seen[0] == seen[1] and all(t is float for t, _ in seen[0])


# ---- the same checks --------------------------------------------------------------------


def _outcome(f, *args, **kwargs):
    """What a call gives: its exception's type and message, or its result as Python
    numbers with their types (arrays via ``tolist``, NaN-safe)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # float() of 1-element arrays
            r = f(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 (the exception is what is compared)
        return type(e), str(e)
    if isinstance(r, np.ndarray):
        r = r.tolist()

    def norm(v):
        if isinstance(v, list):
            return [norm(u) for u in v]
        return type(v), v.hex() if isinstance(v, float) else repr(v)

    return norm(r)


XY4 = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def _ragged() -> np.ndarray:
    rows = np.empty(2, dtype=object)
    rows[0], rows[1] = [1.0, 2.0], [3.0]
    return rows


X_CASES = [
    np.array(XY4),
    XY4,
    [tuple(r) for r in XY4],
    list(np.array(XY4)),
    np.array(XY4)[0],  # one sample: the hint
    np.zeros((2, 1)),  # also the hint (2 samples of 1 feature for 2 inputs)
    np.zeros((3, 1)),
    [[1.0], [2.0]],
    [1.0, 2.0],
    np.zeros((4, 3)),
    np.zeros((3, 0)),
    np.zeros((0, 2)),
    np.zeros(0),
    [],
    (),
    [[]],
    [[1.0, 2.0], [3.0]],  # ragged
    [[1.0, 2.0], [3.0, 4.0, 5.0]],
    [[1.0, 2.0], 3.0],
    _ragged(),  # an object array of rows
    [["a", 1.0]],  # non-numbers
    np.array([["a", "b"]]),
    [["1.5", "2"]],  # strings float() reads
    [[None, 1.0]],
    np.array([[1, None]], dtype=object),
    np.array([[1 + 2j, 0]]),
    [[1j, 2.0]],
    np.zeros((2, 2, 2)),
    [[[1.0, 2.0]], [[3.0, 4.0]]],
    np.array(1.0),
    np.array(3),
    "ab",
    b"ab",
    5,
    None,
    [range(2), range(2)],  # not a row the per-sample path reads
    np.ma.array([[1.0, 2.0]], mask=[[0, 1]]),
    np.array([[1.1, 2.0]], dtype=np.longdouble),
    [[2**70, 1.0]],
    [[-1, 2**63]],
    [[2**64, 1]],
    [[np.float32(0.1), np.int8(3)]],
    [[True, 2.5]],
    [np.array(1.0), np.array(2.0)],
    [np.array([1.0, 2.0]), np.array([[1.0, 2.0]])],
    [[math.nan, math.inf]],
    np.array([[-math.inf, math.nan]]),
    "a generator",
]


@pytest.mark.parametrize("X", X_CASES, ids=lambda X: type(X).__name__)
@pytest.mark.parametrize("nin", [2, None])
def test_rows_read_as_the_per_sample_path_reads_them(X, nin):
    """``_rows`` gives what reading each sample in Python gives: the same floats, or
    the same exception with the same message."""
    if isinstance(X, str) and X == "a generator":  # read once: one for each
        got = _outcome(train._rows, "fit", (r for r in XY4), nin)
        assert got == _outcome(train._rows_of_lists, "fit", (r for r in XY4), nin)
        assert got[0][0][0] is float
        return
    assert _outcome(train._rows, "fit", X, nin) == _outcome(train._rows_of_lists, "fit", X, nin)


def test_numeric_arrays_take_the_array_path():
    for X in (np.array(XY4), XY4, list(np.array(XY4)), [1.0, 2.0], np.array([[1, 2]], np.uint8)):
        assert isinstance(train._rows("fit", X), np.ndarray)
    for X in ([["1.5", "2"]], [np.array(1.0)], np.ma.array(XY4), [[1.0, 2.0], [3.0]]):
        assert type(train._rows("fit", X)) is list


TARGET_CASES = [
    ("hinge", [1, -1, 1, -1], None),
    ("hinge", np.array([1, -1, -1, 1]), None),
    ("hinge", np.array([[1], [-1]]), None),
    ("hinge", [[1], [-1]], None),
    ("hinge", [(1,), (-1,)], None),
    ("hinge", [1, 2, 1, 2], None),
    ("hinge", np.array([1, 2, 1, 2]), None),
    ("hinge", np.array([0, 1, 1, 0]), None),
    ("hinge", [True, False], None),  # bools: False is not -1
    ("hinge", np.array([True, True]), None),
    ("hinge", np.array([1.0, math.nan]), None),
    ("hinge", np.array([1.0, -math.inf]), None),
    ("hinge", ["a", "b", "a", "b"], None),
    ("hinge", np.array(["1", "-1"]), None),
    ("hinge", np.array([1 + 0j, -1]), None),
    ("hinge", [1, [-1]], None),
    ("hinge", [[1, -1], [1, -1]], None),
    ("hinge", np.ones((2, 2)), None),
    ("hinge", np.ones((2, 1, 1)), None),
    ("hinge", np.array(1.0), None),
    ("hinge", [], None),
    ("hinge", np.array([]), None),
    ("hinge", "a generator", None),
    ("hinge", [np.array([1.0]), np.array([-1.0])], None),
    ("hinge", np.ma.array([1, -1], mask=[0, 1]), None),
    ("bce", [0, 1, 1, 0], None),
    ("bce", np.array([-1, 1, 1, -1]), None),
    ("bce_with_logits", np.array([0.5, 1, 1, 0]), None),
    ("binary_cross_entropy", np.array([[0.0], [1.0]], dtype=np.float32), None),
    ("mse", np.array([1.0, math.nan, 0.0, 2.0]), None),
    ("mse", [1.0, "x", 0.0, 2.0], None),
    ("mse", np.array([1, 2**60 + 1], dtype=np.int64), None),
    ("mse", np.array([2**64 - 1], dtype=np.uint64), None),
    ("mse", np.array([0.1, -0.0], dtype=np.float32), None),
    ("mse", np.array([1.1], dtype=np.longdouble), None),
    ("mse", [2**70, 1.5], None),
    ("mse", [math.inf], None),
    ("mse", [[1.0, 2.0], [3.0, 4.0]], None),
    ("softmax_cross_entropy", np.array([0, 1, 2, 0]), 3),
    ("softmax_cross_entropy", [0, 1, 2, 3], 3),
    ("softmax_cross_entropy", np.array([0, 1, 2, 3]), 3),
    ("cross_entropy", np.array([0, 1.5, 2, 0]), 3),
    ("cross_entropy", np.array([0.0, 1.0, 2.0]), 3),
    ("softmax_cross_entropy", np.array([-1, 0]), 3),
    ("softmax_cross_entropy", np.array([math.inf, 0]), 3),
    ("softmax_cross_entropy", np.array([math.nan, 0]), 3),
    ("softmax_cross_entropy", [True, False], 2),
    ("softmax_cross_entropy", np.array([5, 2**62]), None),  # beyond 2**53: the list's ints
    ("softmax_cross_entropy", np.array([5, 7]), None),
    ("softmax_cross_entropy", np.array([5, 7]), 0),
    ("softmax_cross_entropy", np.array([[2], [1]], dtype=np.uint8), 3),
]


@pytest.mark.parametrize("loss, y, n", TARGET_CASES, ids=lambda v: type(v).__name__)
def test_targets_checked_as_check_targets_checks_them(loss, y, n):
    """The same numbers of the same types (ints for softmax), or the same exception
    with the same message, as ``check_targets``' loop over the targets."""
    if isinstance(y, str) and y == "a generator":  # read once: one for each
        got = _outcome(losses._checked_targets, loss, (t for t in [1, -1]), n, caller="fit")
        assert got == _outcome(losses.check_targets, loss, (t for t in [1, -1]), n, caller="fit")
        assert got == [(float, "0x1.0000000000000p+0"), (float, "-0x1.0000000000000p+0")]
        return
    got = _outcome(losses._checked_targets, loss, y, n, caller="fit")
    assert got == _outcome(losses.check_targets, loss, y, n, caller="fit")


@pytest.mark.parametrize("kind", list(losses._TERMS))
def test_codes_over_an_array_are_the_per_target_codes(kind):
    code = losses._TERMS[kind][0]
    n_out = _nout(kind)
    _, y = _data(kind, n=40)
    y = losses._checked_targets(kind, y, n_out)
    assert isinstance(y, np.ndarray)
    got = losses._codes(kind, y, n_out)
    want = np.array([code(t, n_out) for t in y.tolist()], dtype=float).reshape(len(y), -1)
    assert got.reshape(len(y), -1).tolist() == want.tolist()
    assert losses._codes(kind, y.tolist(), n_out) is None


def test_one_hot_codes_out_of_range_raise_as_the_per_target_code_does(name):
    """A model without ``nout`` and ``replay=True``: the targets are not checked
    against its outputs, and a class index it has no output for fails as before."""

    class Bare:
        def __init__(self):
            self.m = MLP(2, [2, 2], seed=0, backend=name)

        def __call__(self, x):
            return self.m(x)

        def parameters(self):
            return self.m.parameters()

    for y in (np.array([0, 1, 5, 0]), [0, 1, 5, 0]):
        with pytest.raises(IndexError, match="list assignment index out of range"):
            scalargrad.fit(Bare(), XY4, y, loss="cross_entropy", replay=True, progress=False)
    y = np.array([0, 1, 1, 0])
    hist = scalargrad.fit(
        Bare(), np.array(XY4), y, loss="cross_entropy", replay=True, epochs=2, progress=False
    )
    assert len(hist.accuracy) == 2


# ---- every message, end to end --------------------------------------------------------------


BAD = [
    # (X, y, loss, nout, exception, message)
    (
        np.array(XY4)[0],
        [1, -1],
        "hinge",
        1,
        ValueError,
        "fit: each sample of X must have 2 features (the model's inputs), got 1 in sample 0; "
        "X looks like one sample: pass [x] for a single sample",
    ),
    (
        np.zeros((4, 3)),
        [1, -1, 1, -1],
        "hinge",
        1,
        ValueError,
        "fit: each sample of X must have 2 features (the model's inputs), got 3 in sample 0",
    ),
    (
        [[1.0, 2.0], [3.0]],
        [1, -1],
        "hinge",
        1,
        ValueError,
        "fit: each sample of X must have 2 features (the model's inputs), got 1 in sample 1",
    ),
    (
        _ragged(),
        [1, -1],
        "hinge",
        1,
        ValueError,
        "fit: each sample of X must have 2 features (the model's inputs), got 1 in sample 1",
    ),
    ([["a", 1.0]], [1], "hinge", 1, ValueError, "could not convert string to float: 'a'"),
    (np.array([["a", "1"]]), [1], "hinge", 1, ValueError, "could not convert string to float: 'a'"),
    (np.zeros((0, 2)), [], "hinge", 1, ValueError, "fit: X is empty"),
    (
        np.array(XY4),
        np.array([1, 2, 1, 2]),
        "hinge",
        1,
        ValueError,
        "fit: loss 'hinge' expects targets -1 or +1, got 2 (2 of 4 targets)",
    ),
    (
        np.array(XY4),
        np.array([[1], [0], [1], [0]]),
        "hinge",
        1,
        ValueError,
        "fit: loss 'hinge' expects targets -1 or +1, got 0 (2 of 4 targets)",
    ),
    (np.array(XY4), np.array([True, False, True, True]), "bce", 1, None, None),
    (
        np.array(XY4),
        np.array([True, False, True, True]),
        "hinge",
        1,
        ValueError,
        "fit: loss 'hinge' expects targets -1 or +1, got False (1 of 4 targets)",
    ),
    (
        np.array(XY4),
        np.array([1.0, np.nan, 0.0, np.inf]),
        "mse",
        1,
        ValueError,
        "fit: loss 'mse' expects targets finite numbers, got nan, inf (2 of 4 targets)",
    ),
    (
        np.array(XY4),
        np.array([0, 1, 2, 3]),
        "softmax_cross_entropy",
        3,
        ValueError,
        "fit: loss 'softmax_cross_entropy' expects targets class indices 0..2 (one per output), "
        "got 3 (1 of 4 targets)",
    ),
    (
        np.array(XY4),
        np.array([0, 1, 2, 1.5]),
        "softmax_cross_entropy",
        3,
        ValueError,
        "fit: loss 'softmax_cross_entropy' expects targets class indices 0..2 (one per output), "
        "got 1.5 (1 of 4 targets)",
    ),
    (
        np.array(XY4),
        np.array([1, -1, 1]),
        "hinge",
        1,
        ValueError,
        "fit: 4 samples in X but 3 targets in y",
    ),
    (
        np.array(XY4),
        np.ones((4, 2)),
        "mse",
        1,
        ValueError,
        "fit: loss 'mse' expects targets finite numbers, got [1.0, 1.0] (4 of 4 targets)",
    ),
]


@pytest.mark.parametrize("X, y, loss, nout, exc, msg", BAD)
def test_bad_arrays_raise_the_messages_lists_raise(name, X, y, loss, nout, exc, msg):
    for xs, ys in ((X, y), (_lists(X), _lists(y))):
        m = MLP(2, [3, nout], seed=0, backend=name)
        before = _hex(p.data for p in m.parameters())
        calls = {
            "fit": dict(fn=scalargrad.fit, epochs=1, progress=False),
            "evaluate": dict(fn=scalargrad.evaluate),
        }
        for caller, kw in calls.items():
            fn = kw.pop("fn")
            if exc is None:
                fn(m, xs, ys, loss=loss, **kw)
                continue
            with pytest.raises(exc) as info:
                fn(m, xs, ys, loss=loss, **kw)
            assert str(info.value) == msg.replace("fit:", f"{caller}:")
        if exc is not None:
            assert _hex(p.data for p in m.parameters()) == before


def test_predict_messages_on_arrays(name):
    m = MLP(2, [3, 1], seed=0, backend=name)
    for X in (np.array(XY4)[0], np.array(XY4)[0].tolist()):
        with pytest.raises(ValueError, match=r"^predict: .* got 1 in sample 0; X looks like one"):
            scalargrad.predict(m, X)
    for X in (np.zeros((0, 2)), []):
        with pytest.raises(ValueError, match="^predict: X is empty$"):
            scalargrad.predict(m, X)
    with pytest.raises(TypeError, match=r"^predict: X must be a list of samples .*got float$"):
        scalargrad.predict(m, np.array(1.0))


def _lists(a):
    return a.tolist() if isinstance(a, np.ndarray) else a


def test_batches_hold_python_numbers_for_the_rebuild_path(name):
    X, y = _data("hinge")
    m = MLP(3, [2, 1], seed=0, backend=name)
    rows, targets = train._rows("fit", X, 3), train._targets("fit", y, "hinge", 1)
    assert isinstance(rows, np.ndarray) and isinstance(targets, np.ndarray)
    b = batching.Batches(m, losses.hinge, "hinge", rows, targets, replay=False)
    assert type(b.rows) is list and type(b.rows[0][0]) is float
    assert type(b.targets) is list and type(b.targets[0]) is float
