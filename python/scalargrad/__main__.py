"""The ``scalargrad`` command line: ``scalargrad demo`` (the moons MLP) and
``scalargrad bench`` (the backend comparison)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import scalargrad


def _neuron_graph(V: type):
    """micrograd's neuron example: ``tanh(x1*w1 + x2*w2 + b)``, differentiated."""
    x1, x2 = V(2.0, label="x1"), V(0.0, label="x2")
    w1, w2 = V(-3.0, label="w1"), V(1.0, label="w2")
    b = V(6.8813735870195432, label="b")
    x1w1 = x1 * w1
    x1w1.label = "x1*w1"
    x2w2 = x2 * w2
    x2w2.label = "x2*w2"
    n = x1w1 + x2w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    o.backward()
    return o


def demo(out: Path, backend: str, epochs: int, progress: bool, seed: int) -> int:
    from scalargrad import datasets, plot, viz
    from scalargrad.nn import MLP
    from scalargrad.train import fit_like_micrograd

    out.mkdir(parents=True, exist_ok=True)
    X, y = datasets.moons(n_samples=100, noise=0.1, seed=1)
    model = MLP(2, [16, 16, 1], seed=seed, backend=backend)
    print(f"scalargrad {scalargrad.__version__} demo: two moons, {backend} backend")
    print(model.summary())
    t0 = time.perf_counter()
    hist = fit_like_micrograd(model, X, y, epochs=epochs, progress=progress, seed=seed)
    dt = time.perf_counter() - t0
    acc = hist.accuracy[-1] if hist.accuracy else float("nan")
    loss = hist.loss[-1] if hist.loss else float("nan")
    per = dt / max(epochs, 1) * 1e3
    print(f"trained {epochs} epochs in {dt:.2f} s ({per:.1f} ms/epoch): loss {loss:.4f}")
    print(f"accuracy: {acc:.3f}")

    boundary = out / "moons_decision_boundary.png"
    plot.decision_boundary(model, X, y, path=boundary, title=f"moons, accuracy {acc:.2f}")
    curves = out / "training_curves.png"
    plot.history(hist, path=curves, title="moons training")
    graph = out / "neuron_graph.svg"
    V = scalargrad.backend_module(backend).Value
    dot = viz.draw_dot(_neuron_graph(V))
    try:
        viz.render(dot, graph)
    except RuntimeError as e:  # Graphviz's `dot` is missing: keep the source, say why
        graph = out / "neuron_graph.gv"
        graph.write_text(dot.source)
        print(f"note: {e}", file=sys.stderr)
    for p in (boundary, curves, graph):
        print(f"wrote {p}")
    return 0


def bench(names: list, quick: bool, json_path: Optional[Path], parser) -> int:
    import json
    import os
    import platform

    # NumPy's BLAS only makes the dataset here; its idle worker threads would
    # otherwise spin on the core the engines are measured on.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    from scalargrad import bench as benchmarks

    unknown = [n for n in names if n not in benchmarks.WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload {unknown[0]!r}; choose from {', '.join(benchmarks.WORKLOADS)}"
        )
    print(
        f"scalargrad {scalargrad.__version__}, Python {platform.python_version()}, "
        f"engines: {', '.join(benchmarks.engines())}; ratios are measured in this run"
    )
    rows = benchmarks.run(names or None, quick=quick)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1))
        print(f"wrote {json_path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scalargrad", description=scalargrad.__doc__.splitlines()[0]
    )
    parser.add_argument("--version", action="version", version=scalargrad.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train micrograd's moons MLP; write plots and a graph")
    d.add_argument("--out", type=Path, default=Path("scalargrad-demo"), help="output directory")
    d.add_argument("--backend", choices=scalargrad.BACKENDS, default=scalargrad.backend)
    d.add_argument("--epochs", type=int, default=100)
    d.add_argument("--seed", type=int, default=1337)
    d.add_argument("--no-progress", action="store_true", help="no progress bar")

    b = sub.add_parser("bench", help="compare rust, reference, micrograd and torch side by side")
    b.add_argument("workloads", nargs="*", help="some of: moons-eager moons-fast ops deep memory")
    b.add_argument("--quick", action="store_true", help="fewer repetitions, smaller graphs")
    b.add_argument("--json", type=Path, help="also write the results as JSON")

    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench(args.workloads, args.quick, args.json, parser)
    if args.command == "demo":
        if args.epochs < 0:
            parser.error("--epochs must be >= 0")
        return demo(args.out, args.backend, args.epochs, not args.no_progress, args.seed)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
