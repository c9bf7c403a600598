"""Build an expression, differentiate it, and compare the two backends."""

import scalargrad
from scalargrad import Value


def expression(V):
    a = V(-4.0, label="a")
    b = V(2.0, label="b")
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
    return a, b, g


if __name__ == "__main__":
    for name in scalargrad.BACKENDS:
        a, b, g = expression(scalargrad.backend_module(name).Value)
        print(f"{name:>9}: g = {g.data:.4f}, dg/da = {a.grad:.4f}, dg/db = {b.grad:.4f}")
    print("default backend:", scalargrad.backend, Value)
