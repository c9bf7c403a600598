"""The README's way with a mistake on each line marked ``# mistake``: mypy must
report an error on each of those lines and on no other."""

import scalargrad
from scalargrad import Tape, Value, evaluate, fit
from scalargrad.nn import MLP

a = Value(-4.0)
b = Value(2.0)
X = [[0.0, 1.0], [1.0, 0.0]]
y = [1, -1]
model = MLP(2, [4, 1], seed=0)
Value("1.5")  # mistake
a.data.upper()  # mistake
scalargrad.sum(a)  # mistake
fit(model, X, y, epochs="10")  # mistake
fit(model, X, y, optimizer="adam")  # mistake
model([1.0, 2.0]).bakward()  # mistake
Tape(1.0)  # mistake
fit(model, X, y).accuracy.upper()  # mistake
evaluate(model, X, y)["loss"].append(1)  # mistake
a._prev.append(b)  # mistake
scalargrad.dot([a], 3.0)  # mistake
model.parameters()[0].data = "x"  # mistake
(a + b).relu().grad.append(0)  # mistake
print(scalargrad.softmax([a, b]).data)  # mistake
