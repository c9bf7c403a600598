"""scalargrad.losses on both backends: every loss's value and gradient against a
hand computation with plain ``math``, stability at extreme inputs, and argument
checking."""

from __future__ import annotations

import math

import pytest
import scalargrad
from scalargrad import losses
from scalargrad.nn import MLP

REL = 1e-12


def _vals(V, xs):
    return [V(float(x)) for x in xs]


def _grads(vs):
    return [v.grad for v in vs]


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


# ---- mse -------------------------------------------------------------------------------------


def test_mse_value_and_gradient(V):
    pred, target = [1.0, -2.0, 0.5], [0.5, 1.0, 0.5]
    p = _vals(V, pred)
    loss = losses.mse(p, target)
    assert isinstance(loss, V)
    loss.backward()
    n = len(pred)
    assert loss.data == pytest.approx(sum((a - b) ** 2 for a, b in zip(pred, target)) / n, rel=REL)
    assert _grads(p) == pytest.approx([2 * (a - b) / n for a, b in zip(pred, target)], rel=REL)


def test_mse_single_value_and_numpy_targets(V):
    np = pytest.importorskip("numpy")
    p = V(3.0)
    loss = losses.mse(p, 1.0)  # one prediction, one target
    loss.backward()
    assert loss.data == 4.0 and p.grad == 4.0
    ps = _vals(V, [1.0, 2.0])
    assert losses.mse(ps, np.array([0.0, 0.0])).data == pytest.approx(2.5, rel=REL)


# ---- binary cross-entropy on probabilities -----------------------------------------------------


def test_binary_cross_entropy_value_and_gradient(V):
    probs, target = [0.8, 0.3, 0.6], [1, 0, 1]
    p = _vals(V, probs)
    loss = losses.binary_cross_entropy(p, target)
    loss.backward()
    n = len(probs)
    expect = -sum(t * math.log(q) + (1 - t) * math.log(1 - q) for q, t in zip(probs, target)) / n
    assert loss.data == pytest.approx(expect, rel=REL)
    grads = [(-t / q + (1 - t) / (1 - q)) / n for q, t in zip(probs, target)]
    assert _grads(p) == pytest.approx(grads, rel=REL)


def test_binary_cross_entropy_soft_targets(V):
    p = _vals(V, [0.25])
    loss = losses.binary_cross_entropy(p, [0.4])
    loss.backward()
    assert loss.data == pytest.approx(-(0.4 * math.log(0.25) + 0.6 * math.log(0.75)), rel=REL)
    assert p[0].grad == pytest.approx(-0.4 / 0.25 + 0.6 / 0.75, rel=REL)


def test_binary_cross_entropy_clamps_at_zero_and_one(V):
    p = _vals(V, [0.0, 1.0])
    loss = losses.binary_cross_entropy(p, [1, 0])  # confidently wrong: large but finite
    loss.backward()
    assert math.isfinite(loss.data)
    assert loss.data == pytest.approx(-math.log(1e-12), rel=1e-4)
    assert all(math.isfinite(g) for g in _grads(p))
    right = losses.binary_cross_entropy(_vals(V, [1.0, 0.0]), [1, 0])  # confidently right
    assert math.isfinite(right.data) and 0.0 <= right.data < 1e-11
    custom = losses.binary_cross_entropy(_vals(V, [0.0]), [1], eps=1e-3)
    assert custom.data == pytest.approx(-math.log(1e-3), rel=1e-12)


# ---- binary cross-entropy on logits ------------------------------------------------------------


def test_bce_with_logits_value_and_gradient(V):
    logits, target = [0.5, -1.5, 2.0], [1, 0, 1]
    z = _vals(V, logits)
    loss = losses.bce_with_logits(z, target)
    loss.backward()
    n = len(logits)
    expect = (
        -sum(
            t * math.log(_sig(a)) + (1 - t) * math.log(1 - _sig(a)) for a, t in zip(logits, target)
        )
        / n
    )
    assert loss.data == pytest.approx(expect, rel=REL)
    assert _grads(z) == pytest.approx([(_sig(a) - t) / n for a, t in zip(logits, target)], rel=REL)


def test_bce_with_logits_agrees_with_bce_on_sigmoid(V):
    logits, target = [0.3, -2.0, 4.0], [0, 0, 1]
    a = losses.bce_with_logits(_vals(V, logits), target)
    b = losses.binary_cross_entropy([v.sigmoid() for v in _vals(V, logits)], target)
    assert a.data == pytest.approx(b.data, rel=1e-12)


def test_bce_with_logits_stable_at_extreme_logits(V):
    z = _vals(V, [1000.0, -1000.0])
    right = losses.bce_with_logits(z, [1, 0])
    right.backward()
    assert right.data == 0.0  # log(1 + exp(-1000)) == 0 in floating point
    assert _grads(z) == pytest.approx([0.0, 0.0], abs=1e-300)
    z = _vals(V, [1000.0, -1000.0])
    wrong = losses.bce_with_logits(z, [0, 1])
    wrong.backward()
    assert math.isfinite(wrong.data) and wrong.data == pytest.approx(1000.0, rel=REL)
    assert _grads(z) == pytest.approx([0.5, -0.5], rel=REL)  # (sigmoid(z) - t) / 2


def test_bce_with_logits_gradient_at_zero_logit(V):
    """At z = 0 the loss is smooth with gradient sigmoid(0) - t = 0.5 - t (per sample).
    A zero logit is common: an MLP's output bias starts at 0. (Regression test: with
    ``relu(z) - z*t + log(1 + exp(-|z|))``, relu'(0) = abs'(0) = 0 gave -t.)"""
    for t in (0, 1):
        z = V(0.0)
        loss = losses.bce_with_logits([z], [t])
        loss.backward()
        assert loss.data == pytest.approx(math.log(2.0), rel=REL)
        assert z.grad == pytest.approx(0.5 - t, rel=REL)
    # the same through a model: an MLP whose output is exactly its zero bias
    m = MLP(2, [1], seed=0, backend=V._backend)
    out = m([0.0, 0.0])
    assert out.data == 0.0
    losses.bce_with_logits([out], [1]).backward()
    assert m.layers[0].neurons[0].b.grad == pytest.approx(-0.5, rel=REL)


# ---- hinge ------------------------------------------------------------------------------------


def test_hinge_value_and_gradient(V):
    scores, target = [2.0, -0.5, 0.25, 0.5], [1, 1, -1, -1]
    s = _vals(V, scores)
    loss = losses.hinge(s, target)
    loss.backward()
    n = len(scores)
    terms = [max(0.0, 1 - y * x) for x, y in zip(scores, target)]
    assert loss.data == pytest.approx(sum(terms) / n, rel=REL)
    grads = [(-y / n if term > 0 else 0.0) for term, y in zip(terms, target)]
    assert _grads(s) == pytest.approx(grads, rel=REL)


def test_hinge_is_micrograds_relu_of_margin(V):
    s = _vals(V, [0.5, -3.0])
    loss = losses.hinge(s, [1, -1])
    terms = loss._prev[0]._prev
    assert [t._op for t in terms] == ["ReLU", "ReLU"]
    assert loss.data == pytest.approx(0.25, rel=REL)
    ref = [(1 + -yi * si).relu() for yi, si in zip([1, -1], _vals(V, [0.5, -3.0]))]
    assert loss.data == sum(r.data for r in ref) * (1.0 / len(ref))


def test_hinge_refuses_targets_other_than_plus_minus_one(V):
    """Labels {0, 1} or {1, 2} given to hinge are a mistake, not a -1 class."""
    for targets, got in (([0, 0, 1], "0"), ([1, 2, 1], "2")):
        with pytest.raises(ValueError, match=rf"hinge.*expects targets -1 or \+1, got {got}"):
            losses.hinge(_vals(V, [0.25, -0.75, 2.0]), targets)


def test_hinge_at_the_margin_has_zero_gradient(V):
    s = V(1.0)
    loss = losses.hinge([s], [1])
    loss.backward()
    assert loss.data == 0.0 and s.grad == 0.0  # relu'(0) = 0, as in micrograd


# ---- softmax ------------------------------------------------------------------------------------


def test_softmax_values_sum_to_one(V):
    row = [1.0, 2.0, 3.0, -0.5]
    probs = losses.softmax(_vals(V, row))
    assert len(probs) == 4 and all(isinstance(p, V) for p in probs)
    e = [math.exp(x) for x in row]
    assert [p.data for p in probs] == pytest.approx([x / sum(e) for x in e], rel=REL)
    assert sum(p.data for p in probs) == pytest.approx(1.0, abs=1e-15)
    assert scalargrad.softmax is losses.softmax


def test_softmax_is_stable_for_large_logits(V):
    probs = losses.softmax(_vals(V, [1000.0, 1000.0, 0.0]))
    assert all(math.isfinite(p.data) for p in probs)
    assert [p.data for p in probs] == pytest.approx([0.5, 0.5, 0.0], abs=1e-15)
    probs = losses.softmax(_vals(V, [1000.0, 1.0, 2.0]))
    assert probs[0].data == pytest.approx(1.0, abs=1e-15)
    probs = losses.softmax(_vals(V, [-1000.0, -1001.0]))
    assert [p.data for p in probs] == pytest.approx(_softmax([0.0, -1.0]), rel=REL)


@pytest.mark.parametrize("row", [[0.5, -1.0, 2.0], [1000.0, 1001.0, 999.0]])
def test_softmax_gradient(V, row):
    p = _softmax(row)
    k = len(row)
    for i in range(k):
        z = _vals(V, row)
        losses.softmax(z)[i].backward()
        expect = [p[i] * ((1.0 if i == j else 0.0) - p[j]) for j in range(k)]
        assert _grads(z) == pytest.approx(expect, rel=1e-9, abs=1e-15)


# ---- softmax cross-entropy ---------------------------------------------------------------------


def test_softmax_cross_entropy_value_and_gradient(V):
    rows = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.2, 0.2, 0.2]]
    targets = [0, 2, 1]
    logits = [_vals(V, r) for r in rows]
    loss = losses.softmax_cross_entropy(logits, targets)
    loss.backward()
    n = len(rows)
    expect = sum(-math.log(_softmax(r)[t]) for r, t in zip(rows, targets)) / n
    assert loss.data == pytest.approx(expect, rel=REL)
    for r, t, z in zip(rows, targets, logits):
        onehot = [1.0 if j == t else 0.0 for j in range(len(r))]
        expect_grad = [(p - o) / n for p, o in zip(_softmax(r), onehot)]
        assert _grads(z) == pytest.approx(expect_grad, rel=1e-12, abs=1e-16)


def test_softmax_cross_entropy_stable_for_large_logits(V):
    z = _vals(V, [1000.0, 0.0, -1000.0])
    loss = losses.softmax_cross_entropy([z], [1])
    loss.backward()
    assert loss.data == pytest.approx(1000.0, rel=REL)
    assert _grads(z) == pytest.approx([1.0, -1.0, 0.0], abs=1e-15)
    right = losses.softmax_cross_entropy([_vals(V, [1000.0, 0.0])], [0])
    assert right.data == 0.0


def test_softmax_cross_entropy_bad_targets(V):
    with pytest.raises(ValueError, match="class"):
        losses.softmax_cross_entropy([_vals(V, [1.0, 2.0])], [2])
    with pytest.raises(ValueError, match="class"):
        losses.softmax_cross_entropy([_vals(V, [1.0, 2.0])], [-1])


# ---- l2 -------------------------------------------------------------------------------------


def test_l2_value_and_gradient(V):
    ps = _vals(V, [1.0, -2.0, 0.5])
    reg = losses.l2(ps, 0.5)
    reg.backward()
    assert reg.data == pytest.approx(0.5 * (1.0 + 4.0 + 0.25), rel=REL)
    assert _grads(ps) == pytest.approx([2 * 0.5 * x for x in (1.0, -2.0, 0.5)], rel=REL)
    ps = _vals(V, [3.0])
    plain = losses.l2(ps)  # alpha defaults to 1
    plain.backward()
    assert plain.data == 9.0 and ps[0].grad == 6.0


def test_l2_is_micrograds_reg_loss(V):
    m = MLP(2, [4, 1], seed=0, backend=V._backend)
    reg = losses.l2(m.parameters(), 1e-4)
    assert reg.data == pytest.approx(1e-4 * sum(p.data * p.data for p in m.parameters()), rel=REL)


# ---- argument checking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda V: losses.mse([V(1.0)], [1.0, 2.0]),
        lambda V: losses.mse([V(1.0), V(2.0)], [1.0]),
        lambda V: losses.binary_cross_entropy([V(0.5)], [1, 0]),
        lambda V: losses.bce_with_logits([V(0.5), V(0.1)], [1]),
        lambda V: losses.hinge([V(0.5)], [1, -1]),
        lambda V: losses.softmax_cross_entropy([[V(0.5), V(1.0)]], [0, 1]),
    ],
)
def test_length_mismatch_is_value_error(V, call):
    with pytest.raises(ValueError, match="targets"):
        call(V)


@pytest.mark.parametrize(
    "call",
    [
        lambda: losses.mse([], []),
        lambda: losses.hinge([], []),
        lambda: losses.softmax_cross_entropy([], []),
        lambda: losses.softmax([]),
    ],
)
def test_empty_inputs_are_value_error(call):
    with pytest.raises(ValueError):
        call()
