"""Optimizers, learning-rate schedules and gradient clipping over Values.

>>> from scalargrad.nn import MLP
>>> from scalargrad.optim import SGD, LinearDecay
>>> model = MLP(2, [4, 1], seed=0)
>>> opt = SGD(model.parameters(), lr=1.0)
>>> sched = LinearDecay(opt, start=1.0, end=0.1, steps=100)  # micrograd's 1.0 - 0.9*k/100
>>> [round(sched.lr_at(k), 3) for k in (0, 50, 100)]
[1.0, 0.55, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from scalargrad._backend import param_group

__all__ = [
    "SGD",
    "Adam",
    "LinearDecay",
    "Optimizer",
    "ReduceLROnPlateau",
    "StepLR",
    "clip_grad_norm",
    "clip_grad_value",
]


class Optimizer:
    """Base class: holds the parameters and the learning rate ``lr``."""

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimize")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.lr = float(lr)
        # A backend that offers a parameter group (rust) steps in one call, with the
        # same formulas in the same order as the Python loops below, so both
        # backends agree bit for bit.
        self._group = param_group(self.params)

    def zero_grad(self) -> None:
        if self._group is not None:
            self._group.zero_grad()
            return
        for p in self.params:
            p.grad = 0.0

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """``p -= lr * g`` with ``g = grad + weight_decay * p``, and heavy-ball momentum
    ``v = momentum * v + g; p -= lr * v`` when ``momentum > 0``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self._velocity = [0.0] * len(self.params)

    @property
    def velocity(self) -> list[float]:
        """The momentum buffer, one entry per parameter."""
        return list(self._group.state()[0]) if self._group is not None else self._velocity

    def step(self) -> None:
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        if self._group is not None:
            self._group.sgd(lr, mu, wd)
            return
        for i, p in enumerate(self.params):
            g = p.grad
            if wd:
                g = g + wd * p.data
            if mu:
                g = self._velocity[i] = mu * self._velocity[i] + g
            p.data -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds ``wd * p`` to
    the gradient (L2, not decoupled)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be positive, got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"Adam: weight_decay must be >= 0, got {weight_decay}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self._m = [0.0] * len(self.params)
        self._v = [0.0] * len(self.params)
        self.t = 0

    @property
    def m(self) -> list[float]:
        """First-moment estimates, one per parameter."""
        return list(self._group.state()[0]) if self._group is not None else self._m

    @property
    def v(self) -> list[float]:
        """Second-moment estimates, one per parameter."""
        return list(self._group.state()[1]) if self._group is not None else self._v

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        if self._group is not None:
            self._group.adam(self.lr, b1, b2, self.eps, self.weight_decay, self.t)
            return
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        lr, eps, wd = self.lr, self.eps, self.weight_decay
        m, v = self._m, self._v
        for i, p in enumerate(self.params):
            g = p.grad
            if wd:
                g = g + wd * p.data
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * (g * g)
            p.data -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)


# ---- schedules ---------------------------------------------------------------------


class _Schedule:
    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.steps_done = 0

    def lr_at(self, k: int) -> float:
        raise NotImplementedError

    def step(self, metric: Optional[float] = None) -> None:
        """Advances one epoch and sets the optimizer's ``lr`` for the next."""
        self.steps_done += 1
        self.optimizer.lr = self.lr_at(self.steps_done)


class LinearDecay(_Schedule):
    """``lr = start + (end - start) * k / steps`` at step ``k``, then ``end``.
    micrograd's demo schedule ``1.0 - 0.9*k/100`` is ``LinearDecay(opt, 1.0, 0.1, 100)``."""

    def __init__(self, optimizer: Optimizer, start: float, end: float, steps: int) -> None:
        super().__init__(optimizer)
        if steps < 1:
            raise ValueError(f"LinearDecay: steps must be >= 1, got {steps}")
        self.start, self.end, self.steps = float(start), float(end), int(steps)
        optimizer.lr = self.lr_at(0)

    def lr_at(self, k: int) -> float:
        if k >= self.steps:
            return self.end
        return self.start - (self.start - self.end) * k / self.steps


class StepLR(_Schedule):
    """Multiplies the initial ``lr`` by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.base, self.step_size, self.gamma = optimizer.lr, int(step_size), float(gamma)

    def lr_at(self, k: int) -> float:
        return self.base * self.gamma ** (k // self.step_size)


class ReduceLROnPlateau(_Schedule):
    """Multiplies ``lr`` by ``factor`` when the metric (the epoch loss) has not
    improved by more than ``threshold`` (relative) for ``patience`` steps."""

    def __init__(
        self,
        optimizer: Optimizer,
        patience: int = 10,
        factor: float = 0.1,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(optimizer)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise ValueError(f"ReduceLROnPlateau: patience must be >= 0, got {patience}")
        self.patience, self.factor = int(patience), float(factor)
        self.threshold, self.min_lr = float(threshold), float(min_lr)
        self.best = math.inf
        self.bad = 0

    def lr_at(self, k: int) -> float:
        return self.optimizer.lr

    def step(self, metric: Optional[float] = None) -> None:
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step needs the metric (the epoch loss)")
        self.steps_done += 1
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.bad = 0


# ---- clipping ------------------------------------------------------------------------


def clip_grad_norm(params: Sequence[Any], max_norm: float) -> float:
    """Scales all gradients so their joint L2 norm is at most ``max_norm``; returns
    the norm before clipping."""
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    params = list(params)
    norm = math.sqrt(sum(p.grad * p.grad for p in params))
    if norm > max_norm:
        scale = max_norm / (norm + 1e-12)
        for p in params:
            p.grad = p.grad * scale
    return norm


def clip_grad_value(params: Sequence[Any], limit: float) -> None:
    """Clips every gradient into ``[-limit, limit]``."""
    if not limit >= 0:
        raise ValueError(f"clip_grad_value: limit must be >= 0, got {limit}")
    for p in params:
        p.grad = min(max(p.grad, -limit), limit)
