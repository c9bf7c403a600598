"""scikit-learn estimators over [`scalargrad.nn.MLP`][scalargrad.nn.MLP] (the ``sklearn`` extra:
``pip install 'scalargrad[sklearn]'``).

[`MLPClassifier`][scalargrad.sklearn.MLPClassifier] and
[`MLPRegressor`][scalargrad.sklearn.MLPRegressor] take scikit-learn's
``MLPClassifier`` parameter names where they apply, train through
[`scalargrad.fit`][scalargrad.train.fit] (graph replay included) and work wherever
a scikit-learn estimator does: ``Pipeline``, ``cross_val_score``, ``GridSearchCV``,
``DecisionBoundaryDisplay``. scikit-learn's own ``check_estimator`` passes for both.

>>> from sklearn.datasets import make_moons
>>> from scalargrad.sklearn import MLPClassifier
>>> X, y = make_moons(n_samples=100, noise=0.1, random_state=0)
>>> clf = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=300, random_state=0)
>>> clf.fit(X, y).score(X, y)
1.0
>>> clf.predict_proba(X[:2]).shape
(2, 2)
>>> clf.model_                        # the trained scalargrad.nn.MLP
MLP of [Layer of [ReLUNeuron(2), ...

Differences from scikit-learn's ``MLPClassifier``/``MLPRegressor``:

- the weights start as micrograd's (uniform in [-1, 1], biases 0), and the
  defaults suit a scalar engine: ``hidden_layer_sizes=(16, 16)``,
  ``learning_rate_init=0.01``;
- ``alpha`` weighs the L2 penalty ``alpha / (2 * batch) * sum(p * p)`` over all
  parameters, biases included (scikit-learn's leaves the biases out);
- the solvers are ``"adam"`` and ``"sgd"`` (constant learning rate, heavy-ball
  ``momentum``); there is no ``"lbfgs"``, ``partial_fit`` or ``warm_start``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "scalargrad.sklearn needs scikit-learn 1.6 or later: pip install 'scalargrad[sklearn]'"
    ) from None

import scalargrad
from scalargrad.nn import MLP
from scalargrad.optim import SGD, Adam, Optimizer
from scalargrad.train import fit, predict

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names, and ours (which scikit-learn's map onto).
_ACTIVATIONS = {
    "identity": "linear",
    "logistic": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "linear": "linear",
    "sigmoid": "sigmoid",
}
_SOLVERS = ("adam", "sgd")


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, their checks, the
    model, the optimizer and the training loop."""

    def __init__(
        self,
        hidden_layer_sizes: Union[int, Sequence[int]] = (16, 16),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Union[int, str, None] = "auto",
        learning_rate_init: float = 0.01,
        max_iter: int = 200,
        tol: float = 1e-4,
        momentum: float = 0.9,
        random_state: Any = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        verbose: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        # scikit-learn's convention: store the parameters as given; check them in fit.
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.momentum = momentum
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.verbose = verbose
        self.backend = backend

    # -- checks --

    def _fail(self, what: str, expected: str, got: Any) -> ValueError:
        return ValueError(f"{type(self).__name__}.fit: {what} must be {expected}, got {got!r}")

    def _hidden(self) -> list[int]:
        given: Any = self.hidden_layer_sizes
        sizes = [given] if _is_int(given) else given
        try:
            ok = all(_is_int(s) and s >= 1 for s in sizes)
        except TypeError:
            ok = False
        if not ok:
            raise self._fail("hidden_layer_sizes", "a positive int or a sequence of them", given)
        return [int(s) for s in sizes]

    def _check_params(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise self._fail("activation", f"one of {', '.join(_ACTIVATIONS)}", self.activation)
        if self.solver not in _SOLVERS:
            raise self._fail("solver", "'adam' or 'sgd'", self.solver)
        if not (_is_real(self.alpha) and self.alpha >= 0):
            raise self._fail("alpha", "a number >= 0", self.alpha)
        b: Any = self.batch_size
        if not (b is None or b == "auto" or (_is_int(b) and b >= 1)):
            raise self._fail("batch_size", "'auto', None or a positive int", b)
        if not (_is_real(self.learning_rate_init) and self.learning_rate_init > 0):
            raise self._fail("learning_rate_init", "a number > 0", self.learning_rate_init)
        if not (_is_int(self.max_iter) and self.max_iter >= 1):
            raise self._fail("max_iter", "an int >= 1", self.max_iter)
        if not (_is_real(self.tol) and self.tol >= 0):
            raise self._fail("tol", "a number >= 0", self.tol)
        if not (_is_real(self.momentum) and 0 <= self.momentum < 1):
            raise self._fail("momentum", "a number in [0, 1)", self.momentum)
        if not (_is_real(self.validation_fraction) and 0 < self.validation_fraction < 1):
            raise self._fail("validation_fraction", "a number in (0, 1)", self.validation_fraction)
        if not (_is_int(self.n_iter_no_change) and self.n_iter_no_change >= 1):
            raise self._fail("n_iter_no_change", "an int >= 1", self.n_iter_no_change)
        if self.backend is not None and self.backend not in scalargrad.BACKENDS:
            raise self._fail(
                "backend", f"None or one of {', '.join(scalargrad.BACKENDS)}", self.backend
            )

    # -- training --

    def _train(self, X: np.ndarray, y: np.ndarray, n_out: int, loss: Any) -> None:
        """Builds ``model_`` with ``n_out`` linear outputs and trains it on the
        float rows ``X`` and encoded targets ``y`` with ``loss`` (a ``fit`` loss)."""
        hidden = self._hidden()
        self._check_params()
        rs = check_random_state(self.random_state)
        init_seed, fit_seed, split_seed = (int(s) for s in rs.randint(2**31 - 1, size=3))
        act = _ACTIVATIONS[self.activation]
        self.model_ = MLP(
            X.shape[1],
            [(h, act) for h in hidden] + [(n_out, "linear")],
            seed=init_seed,
            backend=self.backend,
        )
        params = self.model_.parameters()
        opt: Optimizer
        if self.solver == "adam":
            opt = Adam(params, lr=self.learning_rate_init)
        else:
            opt = SGD(params, lr=self.learning_rate_init, momentum=self.momentum)

        if self.early_stopping:
            X, X_val, y, y_val = self._split(X, y, split_seed)
        n = len(X)
        if self.batch_size is None:
            batch = n
        elif self.batch_size == "auto":
            batch = min(200, n)
        else:
            batch = min(int(self.batch_size), n)
        kw = dict(
            loss=loss,
            optimizer=opt,
            batch_size=batch,
            l2=float(self.alpha) / (2 * batch),
            progress=bool(self.verbose),
        )
        self.best_validation_score_: Optional[float] = None
        if not self.early_stopping:
            # scikit-learn's stopping rule: the training loss has not improved by
            # `tol` for `n_iter_no_change` epochs, which is fit's early_stopping.
            hist = fit(
                self.model_,
                X,
                y,
                epochs=int(self.max_iter),
                seed=fit_seed,
                early_stopping=int(self.n_iter_no_change),
                min_delta=float(self.tol),
                **kw,
            )
            self.loss_curve_ = list(hist.loss)
            stopped = hist.stopped_early
        else:
            stopped = self._train_validated(X, y, X_val, y_val, fit_seed, kw)
        self.n_iter_ = len(self.loss_curve_)
        self.loss_ = self.loss_curve_[-1]
        if not stopped:
            warnings.warn(
                f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and the "
                f"optimization has not converged yet",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _train_validated(
        self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any, seed: int, kw: dict
    ) -> bool:
        """scikit-learn's ``early_stopping``: one epoch per ``fit`` call (the same
        optimizer throughout), scored on the held-out rows after each; stops when
        the score has not improved by ``tol`` for ``n_iter_no_change`` epochs and
        keeps the best epoch's weights."""
        rng = np.random.RandomState(seed)
        self.loss_curve_ = []
        self.validation_scores_: list[float] = []
        best, best_state, stale = -np.inf, self.model_.state_dict(), 0
        for _ in range(int(self.max_iter)):
            hist = fit(self.model_, X, y, epochs=1, seed=int(rng.randint(2**31 - 1)), **kw)
            self.loss_curve_.append(hist.loss[-1])
            score = self._validation_score(X_val, y_val)
            self.validation_scores_.append(score)
            if score > best:
                best_state = self.model_.state_dict()
            if score > best + self.tol:
                stale = 0
            else:
                stale += 1
            best = max(best, score)
            if stale >= self.n_iter_no_change:
                break
        self.model_.load_state_dict(best_state)
        self.best_validation_score_ = float(best)
        return stale >= self.n_iter_no_change

    def _split(self, X: np.ndarray, y: np.ndarray, seed: int) -> tuple:
        stratify = y if isinstance(self, ClassifierMixin) else None
        try:
            return train_test_split(
                X, y, test_size=self.validation_fraction, random_state=seed, stratify=stratify
            )
        except ValueError as e:
            raise ValueError(
                f"{type(self).__name__}.fit: early_stopping needs a validation set of "
                f"validation_fraction={self.validation_fraction} of {len(X)} samples: {e}"
            ) from None

    def _outputs(self, X: Any) -> np.ndarray:
        """The model's outputs on ``X`` as an ``(n_samples, n_outputs)`` array."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.asarray(predict(self.model_, X), dtype=np.float64)
        return out.reshape(len(X), -1)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier, a scikit-learn estimator.

    Labels can be anything ``numpy.unique`` sorts (ints, strings, ...); they are
    kept in ``classes_``. Two classes train one logit with
    ``bce_with_logits``; more train one logit per class with
    ``softmax_cross_entropy``.

    Args:
        hidden_layer_sizes: the hidden layers' widths (``()`` for none).
        activation: the hidden layers' activation: ``"relu"``, ``"tanh"``,
            ``"logistic"`` (``"sigmoid"``) or ``"identity"`` (``"linear"``).
        solver: ``"adam"`` or ``"sgd"``.
        alpha: strength of the L2 penalty ``alpha / (2 * batch) * sum(p * p)``.
        batch_size: samples per mini-batch; ``"auto"`` is ``min(200, n_samples)``,
            ``None`` full-batch.
        learning_rate_init: the optimizer's learning rate.
        max_iter: the most epochs to train.
        tol: the least improvement that counts (of the training loss, or of the
            validation accuracy with ``early_stopping``).
        momentum: heavy-ball momentum of the ``"sgd"`` solver.
        random_state: seeds the initial weights, the shuffling and the validation
            split (an int, a ``numpy.random.RandomState`` or ``None``).
        early_stopping: hold out ``validation_fraction`` of the training data
            (stratified), stop when its accuracy has not improved by ``tol`` for
            ``n_iter_no_change`` epochs and keep the best epoch's weights. Without
            it, training stops when the training loss has not improved by ``tol``
            for ``n_iter_no_change`` epochs.
        validation_fraction: the share of the data held out by ``early_stopping``.
        n_iter_no_change: epochs without improvement before stopping.
        verbose: show ``fit``'s progress bar.
        backend: ``"rust"``, ``"reference"`` or ``None`` (``scalargrad.backend``).

    Attributes:
        classes_: the class labels, sorted.
        model_: the trained ``scalargrad.nn.MLP`` (one output for two classes, one
            per class otherwise); ``scalargrad.viz.draw_dot(clf.model_(x))`` draws it.
        loss_curve_: the training loss of each epoch.
        loss_: the last epoch's training loss.
        n_iter_: the epochs run.
        validation_scores_: with ``early_stopping``, each epoch's validation accuracy.
        best_validation_score_: with ``early_stopping``, the best of them (else ``None``).
        n_features_in_: the number of features seen in ``fit``.
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Trains a new model on ``X`` (``n_samples x n_features``) and labels ``y``;
        returns ``self``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError(
                f"MLPClassifier.fit: y has 1 class ({self.classes_.tolist()[0]!r}); "
                f"a classifier needs at least 2 classes"
            )
        codes = codes.reshape(-1)
        if k == 2:
            self._train(X, codes.astype(np.float64), 1, "bce_with_logits")
        else:
            self._train(X, codes, k, "softmax_cross_entropy")
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits: shape ``(n_samples,)`` for two classes (positive means
        ``classes_[1]``), ``(n_samples, n_classes)`` otherwise."""
        out = self._outputs(X)
        return out[:, 0] if len(self.classes_) == 2 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in the
        order of ``classes_``: the sigmoid of the logit for two classes, the
        softmax of the logits otherwise."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = _sigmoid(z)
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The natural log of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted labels (taken from ``classes_``)."""
        z = self.decision_function(X)
        idx = (z > 0).astype(int) if z.ndim == 1 else z.argmax(axis=1)
        return self.classes_[idx]

    def _validation_score(self, X: np.ndarray, codes: np.ndarray) -> float:
        out = np.asarray(predict(self.model_, X), dtype=np.float64).reshape(len(X), -1)
        pred = (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
        return float(np.mean(pred == codes.astype(int)))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor, a scikit-learn estimator: mean squared
    error, a linear output per target (``y`` may be ``(n_samples, n_targets)``).

    The parameters are [`MLPClassifier`][scalargrad.sklearn.MLPClassifier]'s;
    with ``early_stopping`` the held-out score is R² (not stratified).

    Attributes:
        model_: the trained ``scalargrad.nn.MLP``.
        loss_curve_: the training loss (mean squared error plus the penalty) of
            each epoch.
        loss_: the last epoch's training loss.
        n_iter_: the epochs run.
        n_outputs_: the number of targets.
        validation_scores_: with ``early_stopping``, each epoch's validation R².
        best_validation_score_: with ``early_stopping``, the best of them (else ``None``).
        n_features_in_: the number of features seen in ``fit``.
    """

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Trains a new model on ``X`` and the targets ``y``; returns ``self``."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self.n_outputs_ = y.shape[1] if y.ndim == 2 else 1
        if self.n_outputs_ == 1:
            self._train(X, y.reshape(-1), 1, "mse")
        else:
            self._train(X, y, self.n_outputs_, _multi_mse)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predictions: shape ``(n_samples,)`` for one target,
        ``(n_samples, n_targets)`` for several."""
        out = self._outputs(X)
        return out if self.n_outputs_ > 1 else out[:, 0]

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        from sklearn.metrics import r2_score

        out = np.asarray(predict(self.model_, X), dtype=np.float64).reshape(len(X), -1)
        return float(r2_score(y.reshape(len(X), -1), out))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _multi_mse(outs: list, targets: list) -> Any:
    """Mean squared error over samples and targets, for models with several outputs."""
    terms = [(o - float(t)) ** 2 for row, ts in zip(outs, targets) for o, t in zip(row, ts)]
    return scalargrad.sum(terms) * (1.0 / len(terms))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Stable both ways: exp of a non-positive number only.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
