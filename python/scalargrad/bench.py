"""Benchmark workloads (DESIGN.md section 7), measured side by side in one process.

Each workload returns rows of ``{"workload", "engine", "metric", "value", "unit"}``
plus ratios against a baseline. micrograd and PyTorch join the comparison when
installed (``pip install micrograd torch``); nothing here needs them.

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
import time
import timeit
from typing import Any, Callable, Optional

import scalargrad

Row = dict[str, Any]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def engines() -> dict[str, type]:
    """The Value classes to compare: rust, reference, and micrograd when installed."""
    out = {name: scalargrad.backend_module(name).Value for name in scalargrad.BACKENDS}
    with contextlib.suppress(ImportError):
        out["micrograd"] = importlib.import_module("micrograd.engine").Value
    return out


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


def _settle() -> None:
    """Collects whatever garbage earlier measurements left (micrograd's graphs are
    reference cycles, freed only by the collector), so that none of its cost falls
    on the engine measured next."""
    gc.collect()


@functools.cache
def _moons() -> tuple[list[list[float]], list[int]]:
    """The demo's 100 moons (made once; callers only read them)."""
    from scalargrad.datasets import moons

    X, y = moons(n_samples=100, noise=0.1, seed=1)
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


def moons_eager_step_time(Value: type, steps: int) -> float:
    """Median seconds per step of micrograd's demo loop over ``steps`` steps, after
    one untimed warm-up step."""
    _settle()
    step = _eager_stepper(Value)
    step()
    return statistics.median(step() for _ in range(steps))


def moons_eager(quick: bool) -> list[Row]:
    # rust and the reference take turns, a block of steps each per round, so both
    # sample the same stretches of a shared machine's time (its slow spells last
    # seconds, longer than one engine's whole run); neither makes cyclic garbage,
    # so neither's turn leaves work for the other's. micrograd's graphs are cycles
    # freed by the collector: it runs its steps back to back, as users run the
    # demo, so that its collections are part of its figure, and then the garbage
    # is collected before anything else is timed. (Taking turns step by step was
    # tried: it charges every engine with cold caches.)
    rounds = 2 if quick else 7
    blocks = {"rust": 2 if quick else 5, "reference": 1}
    times: dict[str, list[float]] = {name: [] for name in blocks}
    steppers = {}
    for name in blocks:
        steppers[name] = _eager_stepper(scalargrad.backend_module(name).Value)
        steppers[name]()  # warm-up
    for _ in range(rounds):
        for name, n in blocks.items():
            _settle()
            block = [steppers[name]() for _ in range(n)]
            times[name].append(statistics.median(block))
    rows = [
        _row("moons-eager", name, "time per step", statistics.median(ts), "s")
        for name, ts in times.items()
    ]
    if "micrograd" in engines():
        t = moons_eager_step_time(engines()["micrograd"], 3 if quick else 4)
        rows.append(_row("moons-eager", "micrograd", "time per step", t, "s"))
        _settle()
    return _ratios(rows, baseline="rust")


# ---- 2. moons-fast: scalargrad.fit (fused layers, replay) against eager and torch -----


def moons_fit_step_time(backend: str, epochs: int = 100, repeats: int = 1) -> tuple[float, float]:
    """(seconds per epoch, final accuracy) of ``fit`` on the moons, micrograd's recipe:
    the median over ``repeats`` whole runs (each from a fresh model, the first epoch
    that records the graph included)."""
    from scalargrad.nn import MLP
    from scalargrad.train import fit_like_micrograd

    X, y = _moons()
    times, acc = [], math.nan
    for _ in range(repeats):
        _settle()
        model = MLP(2, [16, 16, 1], seed=1337, backend=backend)
        t = time.perf_counter()
        hist = fit_like_micrograd(model, X, y, epochs=epochs)
        times.append((time.perf_counter() - t) / epochs)
        acc = hist.accuracy[-1]
    return statistics.median(times), acc


def torch_step_time(epochs: int = 100, repeats: int = 1) -> Optional[tuple[float, float]]:
    """The same model and recipe in PyTorch (CPU, float64, one thread), if installed:
    the median over ``repeats`` whole runs, as for ``fit``."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    X, y = _moons()
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    times, acc = [], math.nan
    for _ in range(repeats):
        _settle()
        torch.manual_seed(1337)
        model = torch.nn.Sequential(
            torch.nn.Linear(2, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 1),
        ).double()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        t = time.perf_counter()
        for k in range(epochs):
            for g in opt.param_groups:
                g["lr"] = 1.0 - 0.9 * k / 100
            scores = model(Xt).squeeze(1)
            loss = torch.relu(1 - yt * scores).mean()
            loss = loss + 1e-4 * sum((p * p).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append((time.perf_counter() - t) / epochs)
        acc = float(((model(Xt).squeeze(1) > 0) == (yt > 0)).double().mean())
    return statistics.median(times), acc


def moons_fast(quick: bool) -> list[Row]:
    rows = []
    for name in scalargrad.BACKENDS:
        repeats = 1 if quick else (7 if name == "rust" else 3)
        t, acc = moons_fit_step_time(name, repeats=repeats)
        rows.append(_row("moons-fast", f"{name} fit", "time per step", t, "s", accuracy=acc))
    eager = moons_eager_step_time(scalargrad.backend_module("rust").Value, 3 if quick else 20)
    rows.append(_row("moons-fast", "rust eager", "time per step", eager, "s"))
    if "micrograd" in engines():
        t = moons_eager_step_time(engines()["micrograd"], 2 if quick else 4)
        rows.append(_row("moons-fast", "micrograd", "time per step", t, "s"))
    tt = torch_step_time(repeats=1 if quick else 7)
    if tt is not None:
        rows.append(_row("moons-fast", "torch", "time per step", tt[0], "s", accuracy=tt[1]))
    return _ratios(rows, baseline="rust fit")


# ---- 3. ops: per-op cost, backward throughput, bytes per node ------------------------


def ops(quick: bool) -> list[Row]:
    rows = []
    n = 50_000 if quick else 200_000
    for name, V in engines().items():
        _settle()
        env = {"a": V(1.5), "b": V(2.5)}
        for stmt in ("a*b", "a+1.0", "a.relu()", "a.tanh()"):
            if not hasattr(env["a"], stmt[2:-2]) and stmt.endswith("()"):
                continue  # micrograd 0.1.0 has no tanh
            t = min(timeit.repeat(stmt, globals=env, number=n, repeat=5)) / n
            rows.append(_row("ops", name, stmt, t, "s"))
    size = 200_000 if quick else 1_000_000
    for name in scalargrad.BACKENDS:
        V = scalargrad.backend_module(name).Value
        x = V(0.5)
        y = x
        for i in range(size):
            y = y * 1.0001 if i % 2 else y + 0.5
        t = _median_time(y.backward, 3)
        rows.append(_row("ops", name, "backward nodes/s", (2 * size + 1) / t, "1/s"))
        del x, y
    stats = scalargrad._core.stats()
    rows.append(_row("ops", "rust", "arena bytes per node", stats["bytes_per_node"], "B"))
    return _ratios(rows, baseline="rust")


# ---- 4. deep: a 1,000,000-deep chain ----------------------------------------------------


def deep(quick: bool) -> list[Row]:
    rows = []
    depth = 200_000 if quick else 1_000_000
    for name, V in engines().items():
        x = V(0.5)
        y = x
        t = time.perf_counter()
        try:
            for _ in range(depth):
                y = y * 1.0
            build = time.perf_counter() - t
            t = time.perf_counter()
            y.backward()
            bw = time.perf_counter() - t
        except RecursionError:
            rows.append(_row("deep", name, "backward", math.nan, "s", note="RecursionError"))
            continue
        gc.collect()  # whatever else is pending, so that the timing below is the chain's
        t = time.perf_counter()
        del y
        free = time.perf_counter() - t
        rows.append(_row("deep", name, "build", build, "s"))
        rows.append(_row("deep", name, "backward", bw, "s"))
        rows.append(_row("deep", name, "free", free, "s"))
    rows = _ratios(rows, baseline="rust")
    if not quick:
        # Freeing a 10,000,000-node graph (rust only: the others take minutes to build).
        V = scalargrad.backend_module("rust").Value
        y = V(0.5)
        for _ in range(10_000_000 - 1):
            y = y + y  # one node each
        t = time.perf_counter()
        del y
        rows.append(_row("deep", "rust", "free 10M-node graph", time.perf_counter() - t, "s"))
    return rows


# ---- 5. memory: RSS across many training steps --------------------------------------------


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
    rows = []
    steps = 1000 if quick else 10_000
    for name in scalargrad.BACKENDS:
        steps_here = steps // 5 if name == "reference" and not quick else steps
        from scalargrad.nn import MLP

        V = scalargrad.backend_module(name).Value
        model = MLP(2, [8, 8, 1], seed=0, backend=name)
        params = model.parameters()
        xs = [[V(0.1 * i), V(-0.2 * i)] for i in range(8)]
        warm = steps_here // 10
        start = 0.0
        for k in range(steps_here):
            if k == warm:
                gc.collect()
                start = _rss_mib()
            loss = scalargrad.sum((model(x) - 1.0) ** 2 for x in xs)
            for p in params:
                p.grad = 0.0
            loss.backward()
            for p in params:
                p.data -= 1e-3 * p.grad
        gc.collect()
        rows.append(
            _row(
                "memory",
                name,
                f"RSS growth over {steps_here - warm} steps",
                _rss_mib() - start,
                "MiB",
            )
        )
    return rows


# ---- table -----------------------------------------------------------------------------


def _row(workload: str, engine: str, metric: str, value: float, unit: str, **extra: Any) -> Row:
    return {
        "workload": workload,
        "engine": engine,
        "metric": metric,
        "value": value,
        "unit": unit,
        **extra,
    }


def _ratios(rows: list[Row], baseline: str) -> list[Row]:
    """Adds ``vs_baseline``: how many times the baseline engine beats each row (for
    times), or each row's share of the baseline (for throughputs), same metric."""
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
    "ops": ops,
    "deep": deep,
    "memory": memory,
}


def _fmt(r: Row) -> str:
    v, unit = r["value"], r["unit"]
    if isinstance(v, float) and math.isnan(v):
        s = r.get("note", "n/a")
    elif unit == "s":
        s = f"{v * 1e9:.0f} ns" if v < 1e-5 else f"{v * 1e3:.3f} ms" if v < 1 else f"{v:.2f} s"
    elif unit == "1/s":
        s = f"{v / 1e6:.1f} M/s"
    else:
        s = f"{v:.1f} {unit}"
    ratio = r.get("vs_baseline")
    if ratio is not None and r["engine"] != r.get("baseline"):
        s += (
            f"   ({ratio:,.1f}x slower than {r['baseline']})"
            if ratio >= 1
            else (f"   ({1 / ratio:,.2f}x faster than {r['baseline']})")
        )
    if "accuracy" in r:
        s += f"   accuracy {r['accuracy']:.2f}"
    return s


def run(names: Optional[list[str]] = None, quick: bool = False, out: Any = print) -> list[Row]:
    """Runs the workloads (all by default), printing a table; returns all rows."""
    rows: list[Row] = []
    for name in names or list(WORKLOADS):
        out(f"\n{name}")
        for r in WORKLOADS[name](quick):
            rows.append(r)
            out(f"  {r['engine']:<16} {r['metric']:<28} {_fmt(r)}")
    return rows
