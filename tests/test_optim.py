"""scalargrad.optim on both backends: SGD and Adam against hand-written updates,
the learning-rate schedules, gradient clipping and argument checking."""

from __future__ import annotations

import math

import pytest
from scalargrad.nn import MLP
from scalargrad.optim import (
    SGD,
    Adam,
    LinearDecay,
    ReduceLROnPlateau,
    StepLR,
    clip_grad_norm,
    clip_grad_value,
)

GRADS = [(0.5, -1.5), (-0.25, 0.75), (1.0, 2.0)]  # per step, per parameter


def _params(V, xs=(1.0, -2.0)):
    return [V(x) for x in xs]


def _run(opt, ps, grads=GRADS):
    """Sets the gradients of each step and steps; yields the parameters after each."""
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        yield [p.data for p in ps]


# ---- SGD ---------------------------------------------------------------------------------


def test_sgd_plain(V):
    ps = _params(V)
    x = [1.0, -2.0]
    for got, gs in zip(_run(SGD(ps, lr=0.1), ps), GRADS):
        x = [xi - 0.1 * g for xi, g in zip(x, gs)]
        assert got == x  # the same float operations: exact


def test_sgd_default_lr_and_micrograd_update(V):
    p = V(2.0)
    p.grad = 3.0
    opt = SGD([p])
    assert opt.lr == 0.1
    opt.step()
    assert p.data == 2.0 - 0.1 * 3.0
    q = V(2.0)
    q.grad = 3.0
    SGD([q], lr=0.5).step()
    assert q.data == 0.5


def test_sgd_momentum(V):
    ps = _params(V)
    x, vel = [1.0, -2.0], [0.0, 0.0]
    for got, gs in zip(_run(SGD(ps, lr=0.1, momentum=0.9), ps), GRADS):
        vel = [0.9 * v + g for v, g in zip(vel, gs)]
        x = [xi - 0.1 * v for xi, v in zip(x, vel)]
        assert got == x


def test_sgd_weight_decay(V):
    ps = _params(V)
    x = [1.0, -2.0]
    for got, gs in zip(_run(SGD(ps, lr=0.1, weight_decay=0.01), ps), GRADS):
        x = [xi - 0.1 * (g + 0.01 * xi) for xi, g in zip(x, gs)]
        assert got == x


def test_sgd_momentum_and_weight_decay(V):
    ps = _params(V)
    x, vel = [1.0, -2.0], [0.0, 0.0]
    for got, gs in zip(_run(SGD(ps, lr=0.05, momentum=0.5, weight_decay=0.1), ps), GRADS):
        vel = [0.5 * v + (g + 0.1 * xi) for v, g, xi in zip(vel, gs, x)]
        x = [xi - 0.05 * v for xi, v in zip(x, vel)]
        assert got == pytest.approx(x, rel=1e-15)


def test_sgd_does_not_touch_gradients_and_zero_grad_clears_them(V):
    ps = _params(V)
    opt = SGD(ps, lr=0.1)
    ps[0].grad, ps[1].grad = 0.5, -0.5
    opt.step()
    assert [p.grad for p in ps] == [0.5, -0.5]
    opt.zero_grad()
    assert [p.grad for p in ps] == [0.0, 0.0]


def test_sgd_lr_change_takes_effect(V):
    p = V(1.0)
    opt = SGD([p], lr=0.1)
    p.grad = 1.0
    opt.step()
    opt.lr = 0.01
    opt.step()
    assert p.data == (1.0 - 0.1) - 0.01


def test_sgd_on_a_model_descends(V):
    m = MLP(2, [4, 1], seed=0, backend=V._backend)
    opt = SGD(m.parameters(), lr=0.05)
    before = [p.data for p in m.parameters()]
    out = m([1.0, -1.0])
    (out * out).backward()
    grads = [p.grad for p in m.parameters()]
    opt.step()
    assert [p.data for p in m.parameters()] == [x - 0.05 * g for x, g in zip(before, grads)]
    after = m([1.0, -1.0])
    assert after.data**2 < out.data**2


# ---- Adam ----------------------------------------------------------------------------------


def _hand_adam(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    """Adam as in Kingma & Ba, Algorithm 1 (with L2 weight decay in the gradient)."""
    m = [0.0] * len(x)
    v = [0.0] * len(x)
    out = []
    for t, gs in enumerate(grads, start=1):
        x = list(x)
        for i, g in enumerate(gs):
            g = g + wd * x[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            x[i] = x[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(x)
    return out


def test_adam_matches_hand_written(V):
    ps = _params(V)
    expected = _hand_adam([1.0, -2.0], GRADS, lr=0.01)
    got = list(_run(Adam(ps, lr=0.01), ps))
    assert len(got) == 3
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-14)


def test_adam_defaults_and_options(V):
    opt = Adam(_params(V))
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    ps = _params(V)
    kw = dict(lr=0.05, b1=0.8, b2=0.99, eps=1e-6, wd=0.1)
    expected = _hand_adam([1.0, -2.0], GRADS, **kw)
    opt = Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for g, e in zip(_run(opt, ps), expected):
        assert g == pytest.approx(e, rel=1e-14)
    assert opt.t == 3


def test_adam_first_step_moves_by_lr(V):
    ps = _params(V)
    (after,) = _run(Adam(ps, lr=0.01), ps, GRADS[:1])
    # with bias correction the first step is lr * g/|g| (up to eps)
    assert after == pytest.approx([1.0 - 0.01, -2.0 + 0.01], rel=1e-9)


# ---- schedules -------------------------------------------------------------------------------


def test_linear_decay_is_micrograds_schedule(V):
    opt = SGD([V(0.0)], lr=0.5)
    sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)
    assert opt.lr == 1.0  # set on construction
    for k in range(101):
        expected = 1.0 - 0.9 * k / 100
        assert abs(sched.lr_at(k) - expected) <= 1e-15
        assert abs(opt.lr - expected) <= 1e-15
        sched.step()
    for _ in range(10):  # then stays at the end value
        assert opt.lr == pytest.approx(0.1, abs=1e-15)
        sched.step()
    assert sched.lr_at(10_000) == 0.1


def test_linear_decay_can_increase(V):
    opt = SGD([V(0.0)], lr=1.0)
    sched = LinearDecay(opt, start=0.1, end=0.5, steps=4)
    seen = [opt.lr]
    for _ in range(5):
        sched.step()
        seen.append(opt.lr)
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.5], abs=1e-15)


def test_step_lr(V):
    opt = SGD([V(0.0)], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    assert opt.lr == 1.0
    seen = []
    for _ in range(7):
        sched.step()
        seen.append(opt.lr)
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert [sched.lr_at(k) for k in (0, 1, 2, 3, 4)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt2 = SGD([V(0.0)], lr=0.3)
    sched2 = StepLR(opt2, step_size=1)  # gamma defaults to 0.1
    sched2.step()
    assert opt2.lr == pytest.approx(0.03, rel=1e-15)


def test_reduce_on_plateau_waits_for_patience(V):
    opt = SGD([V(0.0)], lr=1.0)
    plateau = ReduceLROnPlateau(opt, patience=2, factor=0.5)
    for loss in (1.0, 0.9):  # improving
        plateau.step(loss)
    assert opt.lr == 1.0
    for _ in range(2):  # `patience` bad epochs: not yet
        plateau.step(0.9)
        assert opt.lr == 1.0
    plateau.step(0.95)  # one more: reduce
    assert opt.lr == 0.5
    for _ in range(2):  # the count starts again after a reduction
        plateau.step(0.9)
        assert opt.lr == 0.5
    plateau.step(0.9)
    assert opt.lr == 0.25
    plateau.step(0.5)  # an improvement resets the count
    for _ in range(2):
        plateau.step(0.6)
        assert opt.lr == 0.25
    plateau.step(0.4)
    plateau.step(0.4)
    plateau.step(0.4)
    assert opt.lr == 0.25
    plateau.step(0.4)
    assert opt.lr == 0.125


def test_reduce_on_plateau_threshold_min_lr_and_zero_patience(V):
    opt = SGD([V(0.0)], lr=1.0)
    plateau = ReduceLROnPlateau(opt, patience=0, factor=0.1, threshold=0.1, min_lr=0.05)
    plateau.step(1.0)
    assert opt.lr == 1.0
    plateau.step(0.95)  # better, but by less than 10 %: a bad epoch
    assert opt.lr == pytest.approx(0.1, rel=1e-15)
    plateau.step(0.85)  # 15 % better than the best (1.0): an improvement
    assert opt.lr == pytest.approx(0.1, rel=1e-15)
    plateau.step(0.85)
    assert opt.lr == 0.05  # floored at min_lr
    plateau.step(0.85)
    assert opt.lr == 0.05
    with pytest.raises(ValueError, match="metric"):
        plateau.step()


# ---- clipping ---------------------------------------------------------------------------------


def test_clip_grad_norm(V):
    ps = _params(V, (0.0, 0.0))
    ps[0].grad, ps[1].grad = 3.0, 4.0
    assert clip_grad_norm(ps, 1.0) == 5.0  # the norm before clipping
    assert [p.grad for p in ps] == pytest.approx([0.6, 0.8], rel=1e-9)
    assert math.hypot(ps[0].grad, ps[1].grad) == pytest.approx(1.0, rel=1e-9)
    ps[0].grad, ps[1].grad = 0.3, -0.4
    assert clip_grad_norm(ps, 1.0) == pytest.approx(0.5, rel=1e-15)
    assert [p.grad for p in ps] == [0.3, -0.4]  # below max_norm: untouched
    ps[0].grad, ps[1].grad = -6.0, 8.0
    assert clip_grad_norm(ps, 2.5) == 10.0
    assert [p.grad for p in ps] == pytest.approx([-1.5, 2.0], rel=1e-9)
    # just above max_norm (max_norm < norm <= 2 * max_norm) is clipped too
    ps[0].grad, ps[1].grad = 3.0, -4.0
    assert clip_grad_norm(ps, 4.0) == 5.0
    assert [p.grad for p in ps] == pytest.approx([2.4, -3.2], rel=1e-9)
    ps[0].grad, ps[1].grad = 3.0, 4.0
    assert clip_grad_norm(ps, 2.5) == 5.0  # norm == 2 * max_norm
    assert [p.grad for p in ps] == pytest.approx([1.5, 2.0], rel=1e-9)
    ps[0].grad, ps[1].grad = 3.0, 4.0
    assert clip_grad_norm(ps, 5.0) == 5.0  # norm == max_norm: untouched
    assert [p.grad for p in ps] == [3.0, 4.0]


def test_clip_grad_value(V):
    ps = _params(V, (0.0, 0.0, 0.0, 0.0))
    for p, g in zip(ps, (-7.0, 0.3, 2.0, -0.5)):
        p.grad = g
    assert clip_grad_value(ps, 0.5) is None
    assert [p.grad for p in ps] == [-0.5, 0.3, 0.5, -0.5]
    clip_grad_value(ps, 0.0)
    assert [p.grad for p in ps] == [0.0, 0.0, 0.0, 0.0]


# ---- argument checking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda V: SGD([V(0.0)], lr=0.0), "lr"),
        (lambda V: SGD([V(0.0)], lr=-1.0), "lr"),
        (lambda V: SGD([V(0.0)], lr=float("nan")), "lr"),
        (lambda V: SGD([], lr=0.1), "parameters"),
        (lambda V: SGD([V(0.0)], momentum=1.0), "momentum"),
        (lambda V: SGD([V(0.0)], momentum=-0.1), "momentum"),
        (lambda V: Adam([V(0.0)], lr=0.0), "lr"),
        (lambda V: Adam([], lr=0.1), "parameters"),
        (lambda V: Adam([V(0.0)], betas=(1.0, 0.999)), "betas"),
        (lambda V: Adam([V(0.0)], betas=(0.9, -0.1)), "betas"),
        (lambda V: LinearDecay(SGD([V(0.0)]), 1.0, 0.1, steps=0), "steps"),
        (lambda V: StepLR(SGD([V(0.0)]), step_size=0), "step_size"),
        (lambda V: ReduceLROnPlateau(SGD([V(0.0)]), factor=0.0), "factor"),
        (lambda V: ReduceLROnPlateau(SGD([V(0.0)]), factor=1.0), "factor"),
        (lambda V: ReduceLROnPlateau(SGD([V(0.0)]), factor=1.5), "factor"),
        (lambda V: clip_grad_value([V(0.0)], -1.0), "limit"),
    ],
)
def test_invalid_arguments_raise_value_error(V, build, match):
    with pytest.raises(ValueError, match=match):
        build(V)


def test_negative_hyper_parameters_are_rejected(V):
    from scalargrad.optim import SGD, Adam, ReduceLROnPlateau, clip_grad_norm

    p = V(1.0)
    p.grad = 2.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([p], -1.0)
    assert p.grad == 2.0
    with pytest.raises(ValueError, match="weight_decay"):
        SGD([p], lr=0.1, weight_decay=-1e-3)
    with pytest.raises(ValueError, match="eps"):
        Adam([p], eps=-1e-8)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam([p], weight_decay=-1.0)
    with pytest.raises(ValueError, match="patience"):
        ReduceLROnPlateau(SGD([p], lr=0.1), patience=-1)
