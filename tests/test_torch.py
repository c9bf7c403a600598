"""Values and gradients against PyTorch (float64), on both backends. PyTorch is not
a test dependency: this file runs where it is installed (`pip install torch`)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def expression(V, s, d, a, b):
    """Uses every op of the op table; ``s``/``d`` are the backend's sum and dot."""
    c = a * b + b**3 - a / b + (-a) + 2 ** (b * 0.1) + a ** (b * 0.5)
    e = (c * 0.01).tanh() + (a * 0.3).sigmoid() + (b * 0.2).exp() + (b * b).log()
    f = (a - b).relu() + abs(a * 0.7) + (a * 0.5).clamp(-1.0, 0.5)
    return s([e, f, c * 0.001]) + d([a, b, e], [f, c * 0.01, b])


def torch_expression(a, b):
    c = a * b + b**3 - a / b + (-a) + 2 ** (b * 0.1) + a ** (b * 0.5)
    e = torch.tanh(c * 0.01) + torch.sigmoid(a * 0.3) + torch.exp(b * 0.2) + torch.log(b * b)
    f = torch.relu(a - b) + torch.abs(a * 0.7) + torch.clamp(a * 0.5, -1.0, 0.5)
    return (e + f + c * 0.001) + (a * f + b * (c * 0.01) + e * b)


# a > 0 throughout, so that a ** b is real
@pytest.mark.parametrize("x, y", [(1.3, 2.1), (0.4, -1.7), (2.5, 0.6), (0.9, 3.3)])
def test_every_op_matches_torch(backend, x, y):
    V = backend.Value
    a, b = V(x), V(y)
    out = expression(V, backend.sum, backend.dot, a, b)
    out.backward()
    ta = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    tout = torch_expression(ta, tb)
    tout.backward()
    assert out.data == pytest.approx(tout.item(), rel=1e-10)
    assert a.grad == pytest.approx(ta.grad.item(), rel=1e-10)
    assert b.grad == pytest.approx(tb.grad.item(), rel=1e-10)


def test_micrograd_sanity_check_and_more_ops(V):
    # micrograd's test_engine.py, against our Value.
    x = V(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xt = torch.tensor([-4.0], dtype=torch.float64, requires_grad=True)
    zt = 2 * xt + 2 + xt
    qt = zt.relu() + zt * xt
    ht = (zt * zt).relu()
    yt = ht + qt + qt * xt
    yt.backward()
    assert y.data == yt.item() and x.grad == xt.grad.item()

    a, b = V(-4.0), V(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    at = torch.tensor([-4.0], dtype=torch.float64, requires_grad=True)
    bt = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    ct = at + bt
    dt = at * bt + bt**3
    ct = ct + ct + 1
    ct = ct + 1 + ct + (-at)
    dt = dt + dt * 2 + (bt + at).relu()
    dt = dt + 3 * dt + (bt - at).relu()
    et = ct - dt
    ft = et**2
    gt = ft / 2.0
    gt = gt + 10.0 / ft
    gt.backward()
    tol = 1e-6
    assert abs(g.data - gt.item()) < tol
    assert abs(a.grad - at.grad.item()) < tol and abs(b.grad - bt.grad.item()) < tol
