"""scalargrad.sklearn: scikit-learn's own estimator checks, the estimators in
scikit-learn's tools, and what they train, on both backends."""

from __future__ import annotations

import doctest
import pickle
import warnings

import numpy as np
import pytest
import scalargrad
import scalargrad.sklearn
from matplotlib.figure import Figure
from scalargrad import viz
from scalargrad.nn import MLP
from scalargrad.optim import SGD, Adam
from scalargrad.sklearn import MLPClassifier, MLPRegressor
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.inspection import DecisionBoundaryDisplay
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

# Small enough for the pure-Python backend to run the whole check suite in
# reasonable time, large enough to pass its accuracy (> 0.83) and R² (> 0.5) bars.
FAST = dict(hidden_layer_sizes=(4,), max_iter=30, learning_rate_init=0.1)

# Short trainings stop at max_iter; the warning itself is tested below.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _checked():
    return [
        est(backend=b, **FAST) for b in scalargrad.BACKENDS for est in (MLPClassifier, MLPRegressor)
    ]


# No check is expected to fail: expected_failed_checks is left empty on purpose.
@parametrize_with_checks(_checked())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def name_of(backend):
    return backend.Value._backend


@pytest.fixture
def moons():
    return make_moons(n_samples=60, noise=0.1, random_state=0)


def test_doctest():
    result = doctest.testmod(scalargrad.sklearn, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---- the classifier ------------------------------------------------------------


def test_binary_string_labels_one_logit(backend, moons):
    X, y = moons
    labels = np.array(["no", "yes"])[y]
    clf = MLPClassifier((8,), max_iter=100, learning_rate_init=0.05, random_state=0)
    clf.set_params(backend=name_of(backend)).fit(X, labels)
    assert clf.classes_.tolist() == ["no", "yes"]
    assert isinstance(clf.model_, MLP) and clf.model_.nout == 1
    assert clf.model_.backend is backend
    assert clf.score(X, labels) > 0.85
    z = clf.decision_function(X)
    assert z.shape == (60,)
    assert clf.predict(X).tolist() == np.where(z > 0, "yes", "no").tolist()
    p = clf.predict_proba(X)
    assert p.shape == (60, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(p))
    # The logit is the model's output on the row, as a float.
    assert z[3] == float(clf.model_(X[3].tolist()))


def test_multiclass_softmax(backend):
    X, y = make_blobs(n_samples=90, centers=3, random_state=1)
    X = StandardScaler().fit_transform(X)
    labels = np.array([10, 20, 30])[y]
    clf = MLPClassifier((8,), max_iter=60, learning_rate_init=0.05, random_state=0)
    clf.set_params(backend=name_of(backend)).fit(X, labels)
    assert clf.classes_.tolist() == [10, 20, 30]
    assert clf.model_.nout == 3
    assert clf.score(X, labels) > 0.9
    z = clf.decision_function(X)
    assert z.shape == (90, 3)
    p = clf.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    e = np.exp(z)
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True))
    assert clf.predict(X).tolist() == clf.classes_[z.argmax(axis=1)].tolist()


def test_trains_through_fit_with_the_documented_settings(backend, moons):
    """The estimator is `scalargrad.fit` on `nn.MLP`: the same loss curve, bit for
    bit, as calling them directly with the seeds drawn from `random_state`, the
    optimizer it names, `l2 = alpha / (2 * batch)`, and fit's early stopping."""
    X, y = moons
    params = dict(hidden_layer_sizes=(5, 3), activation="tanh", alpha=0.01, batch_size=16)
    for solver, opt in (("adam", Adam), ("sgd", SGD)):
        clf = MLPClassifier(
            **params, solver=solver, max_iter=12, learning_rate_init=0.03, random_state=7
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.set_params(backend=name_of(backend)).fit(X, y)
        init_seed, fit_seed, _ = np.random.RandomState(7).randint(2**31 - 1, size=3)
        model = MLP(
            2, [(5, "tanh"), (3, "tanh"), (1, "linear")], seed=int(init_seed), backend=backend
        )
        kw = dict(lr=0.03, momentum=0.9) if solver == "sgd" else dict(lr=0.03)
        hist = scalargrad.fit(
            model,
            X,
            y.astype(float),
            loss="bce_with_logits",
            optimizer=opt(model.parameters(), **kw),
            epochs=12,
            batch_size=16,
            l2=0.01 / 32,
            progress=False,
            seed=int(fit_seed),
            early_stopping=10,
            min_delta=1e-4,
        )
        assert clf.loss_curve_ == hist.loss
        assert clf.n_iter_ == 12 and clf.loss_ == hist.loss[-1]
        assert clf.model_.state_dict() == model.state_dict()


def test_same_bits_on_both_backends(moons):
    X2, y2 = moons
    X3, y3 = make_blobs(n_samples=30, centers=3, random_state=2)
    Y3 = np.stack([X3[:, 0], X3[:, 0] * X3[:, 1]], axis=1)
    for est, X, y in (
        (MLPClassifier((6,), max_iter=20, random_state=3), X2, y2),
        (MLPClassifier((4,), max_iter=10, batch_size=8, random_state=3), X3, y3),
        (MLPRegressor((5,), max_iter=10, random_state=3), X2, X2[:, 0] * X2[:, 1]),
        (MLPRegressor((5,), max_iter=10, random_state=3), X3, Y3),
    ):
        fitted = [clone(est).set_params(backend=b).fit(X, y) for b in scalargrad.BACKENDS]
        assert fitted[0].loss_curve_ == fitted[1].loss_curve_
        assert fitted[0].predict(X).tolist() == fitted[1].predict(X).tolist()


def test_model_graph_can_be_drawn(backend, moons):
    X, y = moons
    clf = MLPClassifier((3,), max_iter=5, random_state=0, backend=name_of(backend)).fit(X, y)
    graph = viz.draw_dot(clf.model_(X[0].tolist()))
    # 3 hidden neurons and the output neuron: a dot node each.
    assert sum("dot" in line for line in graph.body) == 4


def test_stops_when_the_training_loss_stalls(backend, moons):
    X, y = moons
    clf = MLPClassifier((4,), tol=1e9, n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.set_params(backend=name_of(backend)).fit(X, y)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4


def test_convergence_warning_at_max_iter(backend, moons):
    X, y = moons
    clf = MLPClassifier((4,), max_iter=3, random_state=0, backend=name_of(backend))
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        clf.fit(X, y)
    assert clf.n_iter_ == 3


def test_early_stopping_on_validation_accuracy(backend, moons):
    X, y = moons
    clf = MLPClassifier(
        (8,),
        max_iter=200,
        learning_rate_init=0.05,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=4,
        random_state=0,
        backend=name_of(backend),
    ).fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == len(clf.loss_curve_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # The kept weights are the best epoch's: retraining up to that epoch gives them.
    best = clf.validation_scores_.index(clf.best_validation_score_) + 1
    again = clone(clf).set_params(max_iter=best, n_iter_no_change=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again.fit(X, y)
    assert again.model_.state_dict() == clf.model_.state_dict()


def test_pickle_round_trip(backend, moons):
    X, y = moons
    clf = MLPClassifier((4,), max_iter=10, random_state=0, backend=name_of(backend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert copy.model_.backend is backend
    assert copy.decision_function(X).tolist() == clf.decision_function(X).tolist()


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("solver", "lbfgs", "'adam' or 'sgd'"),
        ("activation", "softmax", "one of identity, logistic, tanh, relu, linear, sigmoid"),
        ("hidden_layer_sizes", (4, 0), "a positive int or a sequence of them"),
        ("hidden_layer_sizes", "wide", "a positive int or a sequence of them"),
        ("hidden_layer_sizes", 2.5, "a positive int or a sequence of them"),
        ("batch_size", 0, "'auto', None or a positive int"),
        ("max_iter", 0, "an int >= 1"),
        ("learning_rate_init", -1.0, "a number > 0"),
        ("validation_fraction", 1.0, r"a number in \(0, 1\)"),
        ("backend", "gpu", "None or one of rust, reference"),
    ],
)
def test_bad_parameters_name_the_estimator_and_parameter(moons, param, value, expected):
    X, y = moons
    for est in (MLPClassifier(), MLPRegressor()):
        est.set_params(**{param: value})  # accepted as given, checked in fit
        name = type(est).__name__
        with pytest.raises(ValueError, match=rf"{name}\.fit: {param} must be {expected}, got"):
            est.fit(X, y)


def test_one_class_is_refused(backend):
    clf = MLPClassifier(backend=name_of(backend))
    with pytest.raises(ValueError, match=r"MLPClassifier\.fit: y has 1 class \('a'\)"):
        clf.fit([[0.0], [1.0]], ["a", "a"])


def test_continuous_targets_are_refused():
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit([[0.0], [1.0], [2.0]], [0.5, 1.5, 2.5])


# ---- the regressor ------------------------------------------------------------


def test_regressor_fits_a_curve(backend):
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(80, 1))
    y = np.sin(X[:, 0])
    reg = MLPRegressor((16,), activation="tanh", max_iter=300, learning_rate_init=0.05)
    reg.set_params(random_state=0, backend=name_of(backend)).fit(X, y)
    assert reg.n_outputs_ == 1 and reg.model_.nout == 1
    assert reg.predict(X).shape == (80,)
    assert reg.score(X, y) > 0.95
    assert reg.loss_curve_[-1] < reg.loss_curve_[0] / 10


def test_regressor_several_targets(backend):
    rng = np.random.RandomState(1)
    X = rng.normal(size=(40, 3))
    Y = np.stack([X[:, 0] + X[:, 1], X[:, 2] - X[:, 0]], axis=1)
    reg = MLPRegressor((), max_iter=200, learning_rate_init=0.05, alpha=0.0, random_state=0)
    reg.set_params(backend=name_of(backend)).fit(X, Y)
    assert reg.n_outputs_ == 2 and reg.model_.nout == 2
    pred = reg.predict(X)
    assert pred.shape == (40, 2)
    assert reg.score(X, Y) > 0.99  # a linear model of linear targets
    # No hidden layer: the weights approach the targets' coefficients.
    w = [[n.w[i].data for i in range(3)] for n in reg.model_.layers[0].neurons]
    np.testing.assert_allclose(w, [[1, 1, 0], [-1, 0, 1]], atol=0.1)


def test_regressor_early_stopping_on_validation_r2(backend):
    rng = np.random.RandomState(2)
    X = rng.normal(size=(60, 2))
    y = X[:, 0] - 2 * X[:, 1]
    reg = MLPRegressor(
        (8,),
        max_iter=200,
        learning_rate_init=0.1,
        early_stopping=True,
        validation_fraction=0.2,
        random_state=0,
    )
    reg.set_params(backend=name_of(backend)).fit(X, y)
    assert reg.best_validation_score_ == max(reg.validation_scores_)
    assert reg.n_iter_ < 200
    assert reg.best_validation_score_ > 0.9


def test_early_stopping_needs_a_validation_set():
    clf = MLPClassifier(early_stopping=True, validation_fraction=0.1)
    with pytest.raises(ValueError, match=r"MLPClassifier\.fit: early_stopping needs"):
        clf.fit([[0.0], [1.0], [2.0], [3.0]], [0, 1, 0, 1])


# ---- in scikit-learn's tools ---------------------------------------------------


def test_pipeline_cross_val_score_grid_search(backend, moons):
    X, y = moons
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier((8,), max_iter=40, learning_rate_init=0.05, random_state=0).set_params(
            backend=name_of(backend)
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        assert scores.shape == (3,) and scores.mean() > 0.8
        grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(2,), (8,)]}, cv=3).fit(
            X, y
        )
    assert grid.best_params_ == {"mlpclassifier__hidden_layer_sizes": (8,)}
    assert grid.best_estimator_.score(X, y) > 0.85
    assert isinstance(grid.best_estimator_[-1].model_, MLP)


def test_regressor_in_grid_search(backend):
    rng = np.random.RandomState(3)
    X = rng.normal(size=(45, 2))
    y = 3 * X[:, 0] + X[:, 1]
    reg = MLPRegressor((), max_iter=100, learning_rate_init=0.05, random_state=0)
    reg.set_params(backend=name_of(backend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = GridSearchCV(reg, {"learning_rate_init": [1e-4, 0.05]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"learning_rate_init": 0.05}
    assert grid.best_score_ > 0.95


def test_decision_boundary_display(backend, moons):
    X, y = moons
    clf = MLPClassifier((8,), max_iter=60, learning_rate_init=0.05, random_state=0)
    clf.set_params(backend=name_of(backend)).fit(X, y)
    ax = Figure().subplots()
    disp = DecisionBoundaryDisplay.from_estimator(clf, X, grid_resolution=15, ax=ax)
    assert disp.response.shape == (15, 15)
    grid = np.c_[disp.xx0.ravel(), disp.xx1.ravel()]
    # The display shows the decision function by default.
    np.testing.assert_allclose(disp.response.ravel(), clf.decision_function(grid))
    assert disp.ax_ is ax and ax.collections
