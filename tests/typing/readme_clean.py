"""A user script written the README's way: mypy must pass it with no error (and it
runs). ``test_typing.py`` checks it, and checks that what it builds is typed."""

import scalargrad
from scalargrad import Tape, Value, evaluate, fit, predict
from scalargrad.datasets import moons
from scalargrad.nn import MLP
from scalargrad.optim import SGD, LinearDecay

a = Value(-4.0)
b = Value(2.0)
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
print(f"{g.data:.4f}")
g.backward()
print(f"{a.grad:.4f}", f"{b.grad:.4f}")
parents: tuple[Value, ...] = g._prev

s = scalargrad.sum([a, b, 1.0])
t = Tape(s)
a.data = 1.0
print(t.run(), scalargrad.get_data([a, b]))

X, y = moons(n_samples=20, noise=0.1)
model = MLP(2, [16, 16, 1], seed=1337)
opt = SGD(model.parameters(), lr=1.0)
hist = scalargrad.fit(
    model,
    X,
    y,
    loss="hinge",
    l2=1e-4,
    optimizer=opt,
    schedule=LinearDecay(opt, start=1.0, end=0.1, steps=100),
    epochs=3,
    progress=False,
)
acc: float = hist.accuracy[-1]
print(acc, evaluate(model, X, y)["loss"], len(predict(model, X)))
hist2 = fit(model, X, y, epochs=1, progress=False)
print(hist2.loss[-1])

out = model([1.0, -2.0])
assert not isinstance(out, list)  # one output: a Value
out.backward()
score: float = out.data
probs = scalargrad.softmax([a, b])
print(score, probs[0].data)
