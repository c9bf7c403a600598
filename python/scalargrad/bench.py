"""Benchmark workloads (DESIGN.md section 7), measured side by side in one process.

Each workload returns rows of ``{"workload", "engine", "metric", "value", "unit"}``:
``value`` is the median of the samples taken, ``min`` and ``max`` their extremes and
``n`` their number. Engines are timed in alternating rounds (one sample of each per
round), so that all of them sample the same stretches of a shared machine's time.
``vs_baseline`` is a row's ratio to the baseline engine's row of the same metric
(``value / baseline value`` for times), its ``ratio`` label says which way round.

micrograd, PyTorch and JAX join the comparison when installed
(``pip install micrograd torch jax``); nothing here needs them. The moons and digits
workloads need scikit-learn (``pip install 'scalargrad[datasets]'``).

Run ``scalargrad bench`` (or ``python benches/run.py``); ``--quick`` for a short run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import math
import random
import statistics
import subprocess
import sys
import time
import timeit
from typing import Any, Callable, Optional

import scalargrad

Row = dict[str, Any]


def engines() -> dict[str, type]:
    """The Value classes to compare: rust, reference, and micrograd when installed."""
    out = {name: scalargrad.backend_module(name).Value for name in scalargrad.BACKENDS}
    with contextlib.suppress(ImportError):
        out["micrograd"] = importlib.import_module("micrograd.engine").Value
    return out


def _optional(name: str) -> Any:
    """The module ``name`` if it is installed, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def num_threads() -> int:
    """The thread count scalargrad trains with (``scalargrad.get_num_threads()``
    where it exists, else 1): PyTorch is given the same."""
    get = getattr(scalargrad, "get_num_threads", None)
    return int(get()) if get is not None else 1


def _torch() -> Any:
    """PyTorch if installed, set to scalargrad's thread count; else None."""
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(num_threads())
    return torch


def _settle() -> None:
    """Collects whatever garbage earlier measurements left (micrograd's graphs are
    reference cycles, freed only by the collector), so that none of its cost falls
    on the engine measured next."""
    gc.collect()


def _rounds(runners: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Calls every runner once per round, in turn (``a, b, a, b, ...``), and returns
    each one's samples (what it returned)."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            _settle()
            samples[name].append(fn())
    return samples


# ---- 1. moons-eager: micrograd's own nn code over each engine's Value ----------------


def micrograd_mlp(Value: type, seed: int = 1337) -> Any:
    """micrograd's ``nn.py`` (per-element ``wi*xi`` summed with ``sum``, ReLU),
    defined over ``Value``."""
    rng = random.Random(seed)

    class Neuron:
        def __init__(self, nin: int, nonlin: bool = True) -> None:
            self.w = [Value(rng.uniform(-1, 1)) for _ in range(nin)]
            self.b = Value(0)
            self.nonlin = nonlin

        def __call__(self, x):
            act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
            return act.relu() if self.nonlin else act

        def parameters(self):
            return self.w + [self.b]

    class Layer:
        def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
            self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

        def __call__(self, x):
            out = [n(x) for n in self.neurons]
            return out[0] if len(out) == 1 else out

        def parameters(self):
            return [p for n in self.neurons for p in n.parameters()]

    class MLP:
        def __init__(self, nin: int, nouts: list[int]) -> None:
            sz = [nin] + nouts
            self.layers = [
                Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1) for i in range(len(nouts))
            ]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

        def parameters(self):
            return [p for layer in self.layers for p in layer.parameters()]

    return MLP(2, [16, 16, 1])


@functools.cache
def _moons_n(n: int) -> tuple[Any, Any]:
    """``n`` moons (noise 0.1, seed 1) as NumPy arrays, made once per size."""
    from scalargrad.datasets import moons

    return moons(n_samples=n, noise=0.1, seed=1)


def _moons() -> tuple[list[list[float]], list[int]]:
    """The demo's 100 moons, as lists."""
    X, y = _moons_n(100)
    return X.tolist(), y.tolist()


def _eager_stepper(Value: type) -> Callable[[], float]:
    """One step of micrograd's demo loop per call, on a model made once; returns the
    seconds it took (GC on, as users run it)."""
    X, y = _moons()
    model = micrograd_mlp(Value)
    params = model.parameters()
    k = 0

    def step() -> float:
        nonlocal k
        t = time.perf_counter()
        inputs = [list(map(Value, row)) for row in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in params)
        total = data_loss + reg_loss
        for p in params:
            p.grad = 0
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in params:
            p.data -= lr * p.grad
        k += 1
        return time.perf_counter() - t

    return step


def moons_eager_step_times(Value: type, steps: int) -> list[float]:
    """Seconds of each of ``steps`` steps of micrograd's demo loop, run back to back
    after one untimed warm-up step."""
    _settle()
    step = _eager_stepper(Value)
    step()
    return [step() for _ in range(steps)]


def moons_eager(quick: bool) -> list[Row]:
    # rust and the reference take turns, a block of steps each per round, so both
    # sample the same stretches of a shared machine's time (its slow spells last
    # seconds, longer than one engine's whole run); neither makes cyclic garbage,
    # so neither's turn leaves work for the other's. micrograd's graphs are cycles
    # freed by the collector: it runs its steps back to back, as users run the
    # demo, so that its collections are part of its figure, and then the garbage
    # is collected before anything else is timed. (Taking turns step by step was
    # tried: it charges every engine with cold caches.) A round's sample is the
    # median of its block.
    rounds = 2 if quick else 7
    blocks = {"rust": 2 if quick else 5, "reference": 1}
    steppers = {}
    for name in blocks:
        steppers[name] = _eager_stepper(scalargrad.backend_module(name).Value)
        steppers[name]()  # warm-up
    times = _rounds(
        {
            name: functools.partial(
                lambda s, n: statistics.median(s() for _ in range(n)), steppers[name], n
            )
            for name, n in blocks.items()
        },
        rounds,
    )
    rows = [_row("moons-eager", name, "time per step", ts, "s") for name, ts in times.items()]
    if "micrograd" in engines():
        ts = moons_eager_step_times(engines()["micrograd"], 3 if quick else 4)
        rows.append(_row("moons-eager", "micrograd", "time per step", ts, "s"))
        _settle()
    return _ratios(rows, baseline="rust")


# ---- shared by moons-fast, scale and digits: fit against an idiomatic PyTorch loop ----

#: The ``seed`` of ``fit``'s shuffle in ``scale`` and ``digits`` (PyTorch gets the same
#: batches, see ``fit_batches``).
SEED = 0

# What a training runner returns for one round: seconds per epoch (the first epoch,
# which records the graph, included), the final epoch loss and the final accuracy.
Trained = tuple[float, float, float]


def fit_batches(n: int, batch_size: Optional[int], epochs: int, seed: int) -> list[list[list[int]]]:
    """The batches ``fit(..., batch_size=batch_size, seed=seed)`` trains on, epoch by
    epoch, as lists of sample indices. They are read off ``fit`` itself (a one-weight
    model, targets that are the sample indices, and a loss function that notes the
    targets it is given), so that PyTorch is fed exactly the batches ``fit`` uses,
    however ``fit`` shuffles."""
    from scalargrad.nn import Neuron
    from scalargrad.optim import SGD

    seen: list[list[int]] = []

    def note(outs: list, targets: list) -> Any:
        seen.append([int(t) for t in targets])
        return scalargrad.sum(outs) * 0.0

    model = Neuron(1, nonlin=False, seed=0, backend="rust")
    scalargrad.fit(
        model,
        [[0.0]] * n,
        list(range(n)),
        loss=note,
        optimizer=SGD(model.parameters(), lr=1e-3),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
        seed=seed,
        replay=False,
    )
    per_epoch = len(seen) // epochs if epochs else 0
    return [seen[e * per_epoch : (e + 1) * per_epoch] for e in range(epochs)]


def torch_mlp(torch: Any, model: Any) -> Any:
    """A ``torch.nn.Sequential`` of float64 ``Linear`` layers with ReLU between them,
    holding a copy of the weights of the scalargrad ``MLP`` ``model`` (ReLU hidden
    layers, linear output)."""
    layers: list[Any] = []
    for i, layer in enumerate(model.layers):
        nin, nout = layer.nin, len(layer.neurons)
        lin = torch.nn.Linear(nin, nout).double()
        w = scalargrad.get_data([v for neuron in layer.neurons for v in neuron.w])
        b = scalargrad.get_data([neuron.b for neuron in layer.neurons])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.reshape(nout, nin)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i != len(model.layers) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _fit_runner(
    make_model: Callable[[], Any], train: Callable[[Any], Any], epochs: int
) -> Callable[[], Trained]:
    """One round of ``train(model)`` (a call of ``fit``) on a fresh model."""

    def run() -> Trained:
        model = make_model()
        t = time.perf_counter()
        hist = train(model)
        dt = time.perf_counter() - t
        return dt / epochs, hist.loss[-1], hist.accuracy[-1]

    return run


def _torch_runner(
    torch: Any,
    init: Any,
    X: Any,
    y: Any,
    *,
    loss: str,
    make_optimizer: Callable[[Any], Any],
    epochs: int,
    batch_size: Optional[int],
    lr_at: Optional[Callable[[int], float]] = None,
    shown_penalty: float = 0.0,
    threads: Optional[int] = None,
) -> Callable[[], Trained]:
    """One round of the idiomatic PyTorch loop on a fresh copy of ``init`` (a
    scalargrad MLP): ``fit``'s batches in ``fit``'s order, ``loss`` (``"hinge"`` or
    ``"softmax_cross_entropy"``) as a mean over the batch, ``opt.zero_grad()``,
    ``backward()``, ``opt.step()``; the epoch loss and accuracy counted as ``fit``
    counts them. ``lr_at(k)`` sets the learning rate of epoch ``k``.
    ``shown_penalty``: ``fit`` records a loss with an ``l2`` penalty in it, which
    PyTorch applies as ``weight_decay``; the last epoch's loss then adds
    ``shown_penalty * sum(p*p)`` so that the two are the same quantity.
    ``threads``: PyTorch's thread count during the round (default: as set)."""
    import numpy as np

    n = len(y)
    full = batch_size is None or batch_size >= n
    orders = [[list(range(n))]] * epochs if full else fit_batches(n, batch_size, epochs, SEED)
    idx = [[torch.as_tensor(b) for b in epoch] for epoch in orders]
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64 if loss == "hinge" else np.int64))
    F = torch.nn.functional

    def run() -> Trained:
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return train()
        finally:
            torch.set_num_threads(before)

    def train() -> Trained:
        model = torch_mlp(torch, init)
        opt = make_optimizer(model.parameters())
        total = right = 0.0
        t = time.perf_counter()
        for k, epoch in enumerate(idx):
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_at(k)
            total, right = 0.0, 0
            for b in epoch:
                xb, yb = (Xt, yt) if full else (Xt[b], yt[b])
                out = model(xb)
                if loss == "hinge":
                    out = out.squeeze(1)
                    lossv = F.relu(1 - yb * out).mean()
                    correct = ((out > 0) == (yb > 0)).sum()
                else:
                    lossv = F.cross_entropy(out, yb)
                    correct = (out.argmax(1) == yb).sum()
                opt.zero_grad()
                lossv.backward()
                value = lossv.item()
                if shown_penalty and k == epochs - 1:
                    with torch.no_grad():
                        value += shown_penalty * sum(
                            float((p * p).sum()) for p in model.parameters()
                        )
                opt.step()
                total += value * len(yb)
                right += int(correct)
        dt = time.perf_counter() - t
        return dt / epochs, total / n, right / n

    return run


def _torch_runners(torch: Any, *args: Any, **kwargs: Any) -> dict[str, Callable[[], Trained]]:
    """``torch``: PyTorch on scalargrad's thread count; and, when that is more than
    one, ``torch 1 thread`` as well: on a busy machine PyTorch's worker threads can
    make it many times slower than on one thread, and the comparison then shows
    both."""
    out = {"torch": _torch_runner(torch, *args, threads=num_threads(), **kwargs)}
    if num_threads() > 1:
        out["torch 1 thread"] = _torch_runner(torch, *args, threads=1, **kwargs)
    return out


def _fit_and_torch(
    torch: Any,
    make: Callable[[], Any],
    X: Any,
    y: Any,
    *,
    loss: str,
    optimizer: Callable[[Any], Any],
    torch_optimizer: Callable[[Any], Any],
    epochs: int,
    batch_size: Optional[int],
) -> dict[str, Callable[[], Trained]]:
    """The runners of one training cell: ``fit`` of a fresh ``make()`` with
    ``optimizer(parameters)``, and (when PyTorch is installed) its idiomatic loop on
    a copy of the same model, with ``torch_optimizer``, the same loss and batches."""

    def train(model: Any) -> Any:
        return scalargrad.fit(
            model,
            X,
            y,
            loss=loss,
            optimizer=optimizer(model.parameters()),
            epochs=epochs,
            batch_size=batch_size,
            progress=False,
            seed=SEED,
        )

    runners = {"rust fit": _fit_runner(make, train, epochs)}
    if torch is not None:
        runners.update(
            _torch_runners(
                torch,
                make(),
                X,
                y,
                loss=loss,
                make_optimizer=torch_optimizer,
                epochs=epochs,
                batch_size=batch_size,
            )
        )
    return runners


def _train_rows(
    workload: str, metric: str, runners: dict[str, Callable[[], Trained]], rounds: int
) -> list[Row]:
    """Runs the training ``runners`` in alternating rounds; one row per runner with
    its seconds per epoch, its final loss and accuracy, and, beside ``torch``, the
    relative difference of the two final losses (which shows both did the same
    work) and ``torch/ours``, PyTorch's time over ``fit``'s."""
    last: dict[str, Trained] = {}

    def timed(name: str) -> float:
        last[name] = runners[name]()
        return last[name][0]

    samples = _rounds({name: functools.partial(timed, name) for name in runners}, rounds)
    rows = []
    for name, ts in samples.items():
        _, final, acc = last[name]
        rows.append(_row(workload, name, metric, ts, "s", final_loss=final, accuracy=acc))
    rows = _ratios(rows, baseline="rust fit")
    ours = last.get("rust fit")
    for r in rows:
        if r["engine"].startswith("torch") and ours is not None:
            r["ratio"] = "torch/ours"
            r["loss_rel_diff"] = _rel_diff(ours[1], r["final_loss"])
            r["threads"] = 1 if r["engine"] == "torch 1 thread" else num_threads()
    return rows


def _rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


# ---- 2. moons-fast: micrograd's recipe through fit, against eager, micrograd and torch --


def moons_fast(quick: bool) -> list[Row]:
    """micrograd's demo recipe (``fit_like_micrograd``: 100 full-batch epochs of SGD
    with the rate falling from 1.0 to 0.1, hinge plus ``1e-4`` L2) through ``fit`` on
    each backend, and PyTorch's idiomatic loop (the penalty as ``weight_decay``),
    in alternating rounds; then micrograd's demo step, eager, on rust and micrograd."""
    from scalargrad.nn import MLP
    from scalargrad.train import fit_like_micrograd

    X, y = _moons()
    epochs = 100

    def model_on(backend: str) -> Callable[[], Any]:
        return lambda: MLP(2, [16, 16, 1], seed=1337, backend=backend)

    def train(model: Any) -> Any:
        return fit_like_micrograd(model, X, y, epochs=epochs)

    runners = {f"{b} fit": _fit_runner(model_on(b), train, epochs) for b in scalargrad.BACKENDS}
    torch = _torch()
    if torch is not None:
        runners.update(
            _torch_runners(
                torch,
                model_on("rust")(),
                X,
                y,
                loss="hinge",
                make_optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0, weight_decay=2e-4),
                epochs=epochs,
                batch_size=None,
                lr_at=lambda k: 1.0 - 0.9 * min(k, 100) / 100,
                shown_penalty=1e-4,
            )
        )
    runners["rust fit"]()  # warm-up
    rows = _train_rows("moons-fast", "time per epoch", runners, 2 if quick else 5)
    eager = moons_eager_step_times(scalargrad.backend_module("rust").Value, 3 if quick else 20)
    rows.append(_row("moons-fast", "rust eager", "time per epoch", eager, "s"))
    if "micrograd" in engines():
        ts = moons_eager_step_times(engines()["micrograd"], 2 if quick else 4)
        rows.append(_row("moons-fast", "micrograd", "time per epoch", ts, "s"))
        _settle()
    return _ratios(rows, baseline="rust fit")


# ---- 3. scale: fit against PyTorch over data and width -----------------------------------

#: The grid of ``scale``: samples, hidden widths (``MLP(2, [w, w, 1])``), batch sizes
#: (None: full batch).
SCALE_NS = (100, 1000)
SCALE_WIDTHS = (8, 16, 32, 64, 128)
SCALE_BATCHES: tuple[Optional[int], ...] = (None, 32)
#: Its training: hinge loss, SGD with momentum and weight decay (on both sides).
SCALE_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


def _cell(n: int, width: int, batch: Optional[int]) -> str:
    return f"N={n} w={width} " + ("full" if batch is None else f"b{batch}")


def scale(
    quick: bool,
    ns: Optional[tuple[int, ...]] = None,
    widths: Optional[tuple[int, ...]] = None,
    batches: Optional[tuple[Optional[int], ...]] = None,
) -> list[Row]:
    """``fit`` against PyTorch on the moons, one cell per (N, width, batch): each
    side trains a fresh ``MLP(2, [w, w, 1])`` from the same initial weights with
    ``SCALE_SGD`` on the same batches, in alternating rounds. ``--quick`` runs
    N=100 with widths 8 and 32."""
    from scalargrad.nn import MLP
    from scalargrad.optim import SGD

    ns = ns or ((100,) if quick else SCALE_NS)
    widths = widths or ((8, 32) if quick else SCALE_WIDTHS)
    batches = batches or SCALE_BATCHES
    epochs, rounds = (2, 2) if quick else (10, 5)
    torch = _torch()
    rows: list[Row] = []
    for n in ns:
        X, y = _moons_n(n)
        for w in widths:
            for batch in batches:
                runners = _fit_and_torch(
                    torch,
                    functools.partial(MLP, 2, [w, w, 1], seed=1337, backend="rust"),
                    X,
                    y,
                    loss="hinge",
                    optimizer=lambda ps: SGD(ps, **SCALE_SGD),
                    torch_optimizer=lambda ps: torch.optim.SGD(ps, **SCALE_SGD),
                    epochs=epochs,
                    batch_size=batch,
                )
                rows += _train_rows("scale", _cell(n, w, batch), runners, rounds)
    return rows


# ---- 3b. threads: one batched run on 1 thread and on all of them ---------------------

#: ``threads``: the width and rows of its batch (issue 10's thread target).
LANE_THREADS_WIDTH, LANE_THREADS_ROWS = 128, 1000


def lane_threads(quick: bool) -> list[Row]:
    """``BatchTape.run`` (forward and backward) of ``MLP(2, [128, 128, 1])`` with
    a hinge term per row over 1000 moons, on 1 thread and on ``get_num_threads()``
    threads in alternating rounds, one run a sample, back to back as in a training
    loop (no garbage collection between them); the row of the threads says how
    many times faster they are, and whether the gradients have the same bits."""
    import numpy as np

    from scalargrad import BatchTape
    from scalargrad.nn import MLP

    V = scalargrad.backend_module("rust").Value
    X, y = _moons_n(LANE_THREADS_ROWS)
    w = LANE_THREADS_WIDTH
    model = MLP(2, [w, w, 1], seed=1337, backend="rust")
    x, t = [V(0.0), V(0.0)], V(0.0)
    tape = BatchTape((1 - t * model(x)).relu(), [*x, t])
    data = np.column_stack([X, 2.0 * y - 1.0])
    params = model.parameters()
    most = num_threads()

    def timed(threads: int) -> float:
        scalargrad.set_num_threads(threads)
        start = time.perf_counter()
        tape.run(data)
        return time.perf_counter() - start

    def grads(threads: int) -> list[float]:
        scalargrad.set_num_threads(threads)
        for p in params:
            p.grad = 0.0
        tape.run(data)
        return [p.grad for p in params]

    counts = sorted({1, most})
    samples: dict[int, list[float]] = {k: [] for k in counts}
    try:
        for k in counts:
            timed(k)  # warm-up: the threads and their buffers
        for _ in range(41 if quick else 201):
            for k in counts:
                samples[k].append(timed(k))
        same = grads(1) == grads(most)
    finally:
        scalargrad.set_num_threads(most)
    metric = f"BatchTape.run w={w} N={LANE_THREADS_ROWS}"
    rows = [
        _row("threads", f"rust {k} thread{'s' if k > 1 else ''}", metric, ts, "s")
        for k, ts in samples.items()
    ]
    rows = _ratios(rows, baseline="rust 1 thread")
    for r in rows:
        if r["engine"] != "rust 1 thread":
            r["same_bits"] = same
    return rows


# ---- 4. digits: scikit-learn's digits, softmax cross-entropy, Adam -------------------------

#: ``digits``' Adam settings (both sides).
DIGITS_ADAM = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8}


@functools.cache
def _digits() -> tuple[Any, Any]:
    """scikit-learn's 1797 8x8 digits, pixels scaled to [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target


def digits(
    quick: bool, batches: Optional[tuple[Optional[int], ...]] = None, n: Optional[int] = None
) -> list[Row]:
    """``fit`` of ``MLP(64, [32, 10])`` on the digits with softmax cross-entropy and
    Adam, full batch and batches of 32, against PyTorch in alternating rounds (same
    initial weights, same batches). ``--quick`` trains on the first 300 digits."""
    from scalargrad.nn import MLP
    from scalargrad.optim import Adam

    X, y = _digits()
    n = n or (300 if quick else len(y))
    X, y = X[:n], y[:n]
    epochs, rounds = (2, 2) if quick else (5, 5)
    torch = _torch()
    rows: list[Row] = []
    for batch in batches or (None, 32):
        runners = _fit_and_torch(
            torch,
            functools.partial(MLP, 64, [32, 10], seed=1337, backend="rust"),
            X,
            y,
            loss="softmax_cross_entropy",
            optimizer=lambda ps: Adam(ps, **DIGITS_ADAM),
            torch_optimizer=lambda ps: torch.optim.Adam(ps, **DIGITS_ADAM),
            epochs=epochs,
            batch_size=batch,
        )
        metric = f"N={n} " + ("full" if batch is None else f"b{batch}")
        rows += _train_rows("digits", metric, runners, rounds)
    return rows


# ---- 5. small-graphs: BurTorch's tiny and small expressions, build + backward ----------


def _relu(v: Any) -> Any:
    return v.relu()


def tiny_expression(a: Any, b: Any, relu: Callable[[Any], Any] = _relu) -> Any:
    """The "tiny" graph: ``((((a*b + a) * b).relu() + a) * b) ** 2 + b``, 10 nodes
    (the two inputs and 8 ops)."""
    return ((relu((a * b + a) * b) + a) * b) ** 2 + b


def small_expression(a: Any, b: Any, relu: Callable[[Any], Any] = _relu) -> Any:
    """The "small" graph: micrograd's README expression (the first example of this
    project's README), ``g`` of ``a = -4, b = 2``."""
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + relu(b + a)
    d += 3 * d + relu(b - a)
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    return g


#: The small-graph inputs ``(a, b)`` of each expression.
SMALL_GRAPHS: dict[str, tuple[Callable[..., Any], float, float]] = {
    "tiny": (tiny_expression, 1.5, 0.5),
    "small": (small_expression, -4.0, 2.0),
}


def _graph_iterations(expr: Callable[..., Any], a0: float, b0: float) -> dict[str, timeit.Timer]:
    """One iteration (build the graph from its two inputs, then backward) per engine,
    as a statement in ``timeit``'s loop (what a user's loop runs per step), and
    ``python floats``: the expression on plain floats, forward only, the floor for any
    engine whose graph is built by Python operators."""
    out: dict[str, timeit.Timer] = {}
    for name, V in engines().items():
        label = "rust eager" if name == "rust" else name
        out[label] = timeit.Timer(
            "expr(V(a0), V(b0)).backward()", globals={"expr": expr, "V": V, "a0": a0, "b0": b0}
        )
    core = scalargrad.backend_module("rust")
    a, b = core.Value(a0), core.Value(b0)
    tape = core.Tape(expr(a, b), inputs=[a, b])
    out["rust Tape"] = timeit.Timer("tape.run(data)", globals={"tape": tape, "data": [a0, b0]})
    floor = {"expr": expr, "a0": a0, "b0": b0, "relu": functools.partial(max, 0.0)}
    out["python floats"] = timeit.Timer("expr(a0, b0, relu)", globals=floor)
    torch = _torch()
    if torch is not None:
        out["torch"] = timeit.Timer(
            "expr(tensor(a0, dtype=f64, requires_grad=True), "
            "tensor(b0, dtype=f64, requires_grad=True), relu).backward()",
            globals={
                "expr": expr,
                "tensor": torch.tensor,
                "f64": torch.float64,
                "relu": torch.relu,
                "a0": a0,
                "b0": b0,
            },
        )
    jax = _optional("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        grad = jax.jit(jax.grad(lambda x, y: expr(x, y, jax.nn.relu), argnums=(0, 1)))
        ja, jb = jax.numpy.float64(a0), jax.numpy.float64(b0)
        jax.block_until_ready(grad(ja, jb))  # compiles
        out["jax jit"] = timeit.Timer(
            "ready(grad(ja, jb))",
            globals={"ready": jax.block_until_ready, "grad": grad, "ja": ja, "jb": jb},
        )
    return out


def small_graphs(quick: bool) -> list[Row]:
    """Per-iteration time of building each expression and running backward, for
    every engine, in alternating rounds (a round times a block of iterations per
    engine, sized to take about 20 ms); ratios against micrograd when installed,
    else against the reference backend."""
    rounds = 3 if quick else 9
    budget = 0.005 if quick else 0.02
    rows = []
    for graph, (expr, a0, b0) in SMALL_GRAPHS.items():
        blocks = {}
        for name, timer in _graph_iterations(expr, a0, b0).items():
            t = timer.timeit(number=10) / 10
            blocks[name] = functools.partial(_per_call, timer, max(10, int(budget / max(t, 1e-9))))
        for name, ts in _rounds(blocks, rounds).items():
            rows.append(_row("small-graphs", name, f"{graph}: build + backward", ts, "s"))
    return _ratios(rows, baseline="micrograd" if "micrograd" in engines() else "reference")


def _per_call(timer: timeit.Timer, number: int) -> float:
    return timer.timeit(number=number) / number


# ---- 6. ops: per-op cost, backward throughput, bytes per node ------------------------


def ops(quick: bool) -> list[Row]:
    rows = []
    n = 50_000 if quick else 200_000
    for name, V in engines().items():
        _settle()
        env = {"a": V(1.5), "b": V(2.5)}
        for stmt in ("a*b", "a+1.0", "a.relu()", "a.tanh()"):
            if not hasattr(env["a"], stmt[2:-2]) and stmt.endswith("()"):
                continue  # micrograd 0.1.0 has no tanh
            ts = [t / n for t in timeit.repeat(stmt, globals=env, number=n, repeat=5)]
            rows.append(_row("ops", name, stmt, ts, "s"))
    size = 200_000 if quick else 1_000_000
    for name in scalargrad.BACKENDS:
        V = scalargrad.backend_module(name).Value
        x = V(0.5)
        y = x
        for i in range(size):
            y = y * 1.0001 if i % 2 else y + 0.5
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            y.backward()
            rates.append((2 * size + 1) / (time.perf_counter() - t))
        rows.append(_row("ops", name, "backward nodes/s", rates, "1/s"))
        del x, y
    stats = scalargrad._core.stats()
    rows.append(_row("ops", "rust", "arena bytes per node", stats["bytes_per_node"], "B"))
    per_node = [rss_bytes_per_node(100 if quick else 400) for _ in range(3)]
    rows.append(_row("ops", "rust", "RSS bytes per node (MLP graph)", per_node, "B"))
    return _ratios(rows, baseline="rust")


_RSS_PROBE = """
import sys
import scalargrad
from scalargrad import bench, losses
from scalargrad.nn import MLP

n, width = int(sys.argv[1]), 64
model = MLP(2, [width, width, 1], seed=0, backend="rust")
X = [[0.01 * i, -0.02 * i] for i in range(n)]
before, nodes = bench._rss_mib(), scalargrad._core.stats()["live_nodes"]
outs = [model(x) for x in X]
loss = losses.hinge(outs, [1] * n)
loss.backward()
after, nodes_after = bench._rss_mib(), scalargrad._core.stats()["live_nodes"]
print((after - before) * 2**20 / (nodes_after - nodes))
"""


def rss_bytes_per_node(samples: int) -> float:
    """Resident bytes per node of an eager ``MLP(2, [64, 64, 1])`` graph over
    ``samples`` inputs with its hinge loss, built and differentiated in a fresh
    process: the growth of its RSS over the growth of the arena's live nodes (each
    sample adds about 4,400 nodes). NaN where RSS cannot be read."""
    r = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(samples)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(r.stdout.split()[-1])


# ---- 7. deep: a 1,000,000-deep chain ----------------------------------------------------


def deep(quick: bool) -> list[Row]:
    rows = []
    depth = 200_000 if quick else 1_000_000
    repeats = 2 if quick else 3
    for name, V in engines().items():
        times: dict[str, list[float]] = {"build": [], "backward": [], "free": []}
        try:
            for _ in range(repeats):
                x = V(0.5)
                y = x
                t = time.perf_counter()
                for _ in range(depth):
                    y = y * 1.0
                times["build"].append(time.perf_counter() - t)
                t = time.perf_counter()
                y.backward()
                times["backward"].append(time.perf_counter() - t)
                gc.collect()  # whatever else is pending, so that the timing below is the chain's
                t = time.perf_counter()
                del x, y
                times["free"].append(time.perf_counter() - t)
        except RecursionError:
            rows.append(_row("deep", name, "backward", math.nan, "s", note="RecursionError"))
            gc.collect()
            continue
        rows += [_row("deep", name, metric, ts, "s") for metric, ts in times.items()]
    rows = _ratios(rows, baseline="rust")
    if not quick:
        # Freeing a 10,000,000-node graph (rust only: the others take minutes to build).
        V = scalargrad.backend_module("rust").Value
        frees = []
        for _ in range(3):
            y = V(0.5)
            for _ in range(10_000_000 - 1):
                y = y + y  # one node each
            t = time.perf_counter()
            del y
            frees.append(time.perf_counter() - t)
        rows.append(_row("deep", "rust", "free 10M-node graph", frees, "s"))
    return rows


# ---- 8. memory: RSS across many training steps --------------------------------------------


def _rss_mib() -> float:
    """The resident set size in MiB; NaN where it cannot be read (no ``resource``
    module, as on Windows, or no ``/proc``, as on macOS): the table then shows n/a."""
    try:
        import resource  # POSIX only

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (ImportError, OSError):
        return math.nan
    return pages * resource.getpagesize() / 2**20


def memory(quick: bool) -> list[Row]:
    """RSS growth over the three thirds of a run of training steps (after a tenth
    of them as warm-up), per backend."""
    from scalargrad.nn import MLP

    rows = []
    steps = 1000 if quick else 10_000
    for name in scalargrad.BACKENDS:
        steps_here = steps // 5 if name == "reference" and not quick else steps
        V = scalargrad.backend_module(name).Value
        model = MLP(2, [8, 8, 1], seed=0, backend=name)
        params = model.parameters()
        xs = [[V(0.1 * i), V(-0.2 * i)] for i in range(8)]
        warm = steps_here // 10
        window = (steps_here - warm) // 3
        marks = {warm + i * window for i in range(4)}
        rss = []
        for k in range(warm + 3 * window + 1):
            if k in marks:
                gc.collect()
                rss.append(_rss_mib())
            if k == warm + 3 * window:
                break
            loss = scalargrad.sum((model(x) - 1.0) ** 2 for x in xs)
            for p in params:
                p.grad = 0.0
            loss.backward()
            for p in params:
                p.data -= 1e-3 * p.grad
        growth = [b - a for a, b in zip(rss, rss[1:])]
        rows.append(_row("memory", name, f"RSS growth per {window} steps", growth, "MiB"))
    return rows


# ---- table -----------------------------------------------------------------------------


def _row(workload: str, engine: str, metric: str, value: Any, unit: str, **extra: Any) -> Row:
    """A row; ``value`` is one figure or a list of samples (the row then holds their
    median, min, max and count)."""
    row: Row = {"workload": workload, "engine": engine, "metric": metric, "unit": unit}
    if isinstance(value, (list, tuple)):
        finite = [v for v in value if not math.isnan(v)]
        row["value"] = statistics.median(finite) if finite else math.nan
        row["min"] = min(finite) if finite else math.nan
        row["max"] = max(finite) if finite else math.nan
        row["n"] = len(value)
    else:
        row["value"] = value
    row.update(extra)
    return row


def _ratios(rows: list[Row], baseline: str) -> list[Row]:
    """Adds ``vs_baseline``: how many times the baseline engine beats each row (for
    times: the row's median over the baseline's), or each row's share of the
    baseline (for throughputs), same metric."""
    base = {r["metric"]: r["value"] for r in rows if r["engine"] == baseline}
    for r in rows:
        b = base.get(r["metric"])
        if b and r["value"] and not math.isnan(r["value"]):
            r["vs_baseline"] = r["value"] / b if r["unit"] == "s" else b / r["value"]
            r["baseline"] = baseline
    return rows


WORKLOADS = {
    "moons-eager": moons_eager,
    "moons-fast": moons_fast,
    "scale": scale,
    "threads": lane_threads,
    "digits": digits,
    "small-graphs": small_graphs,
    "ops": ops,
    "deep": deep,
    "memory": memory,
}


def _fmt_value(v: float, unit: str) -> str:
    if unit == "s":
        if v < 1e-5:
            return f"{v * 1e9:.0f} ns"
        return f"{v * 1e3:.3f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "1/s":
        return f"{v / 1e6:.1f} M/s"
    return f"{v:.1f} {unit}"


def _fmt(r: Row) -> str:
    v, unit = r["value"], r["unit"]
    if isinstance(v, float) and math.isnan(v):
        s = r.get("note", "n/a")
    else:
        s = _fmt_value(v, unit)
        if r.get("n", 1) > 1:
            s += f" [{_fmt_value(r['min'], unit)} .. {_fmt_value(r['max'], unit)}]"
    ratio = r.get("vs_baseline")
    if ratio is not None and r["engine"] != r.get("baseline"):
        if "ratio" in r:
            s += f"   {r['ratio']} {ratio:.2f}"
        elif ratio >= 1:
            s += f"   ({ratio:,.1f}x slower than {r['baseline']})"
        else:
            s += f"   ({1 / ratio:,.2f}x faster than {r['baseline']})"
    if "final_loss" in r:
        s += f"   loss {r['final_loss']:.7g}"
    if "loss_rel_diff" in r:
        s += f" (rel. diff {r['loss_rel_diff']:.1e})"
    if "accuracy" in r:
        s += f"   accuracy {r['accuracy']:.2f}"
    if "same_bits" in r:
        s += "   same bits" if r["same_bits"] else "   NOT the same bits"
    if "threads" in r:
        s += f"   {r['threads']} thread{'s' if r['threads'] != 1 else ''}"
    return s


def run(names: Optional[list[str]] = None, quick: bool = False, out: Any = print) -> list[Row]:
    """Runs the workloads (all by default), printing a table; returns all rows.
    Figures are medians, ``[min .. max]`` beside them."""
    rows: list[Row] = []
    for name in names or list(WORKLOADS):
        out(f"\n{name}")
        for r in WORKLOADS[name](quick):
            rows.append(r)
            out(f"  {r['engine']:<14} {r['metric']:<30} {_fmt(r)}")
    return rows
