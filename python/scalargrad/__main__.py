"""The ``scalargrad`` command line: ``scalargrad demo`` (the moons MLP) and
``scalargrad bench`` (the backend comparison)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
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


# What `scalargrad demo` imports, and what each is called on PyPI; all come with
# the `demo` extra. Graphviz's `dot` program is optional: without it the demo
# writes the graph's DOT source and says how to install it.
_DEMO_NEEDS = (
    ("sklearn.datasets", "scikit-learn"),
    ("matplotlib.figure", "matplotlib"),
    ("graphviz", "graphviz"),
)


def _missing(needs: Sequence[tuple[str, str]]) -> list[str]:
    """The PyPI names of the modules in ``needs`` that cannot be imported."""
    missing = []
    for module, name in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(name)
    return missing


def _and(names: Sequence[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _make_out_dir(out: Path) -> Optional[str]:
    """Creates ``out`` (and its parents) and checks that files can be written into
    it; returns what is wrong with it, or None."""
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"--out {out}: cannot create the directory ({e.strerror or e})"
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        return f"--out {out}: cannot write into the directory ({e.strerror or e})"
    return None


def _check_writable_file(path: Path) -> Optional[str]:
    """What keeps ``path`` from being written, or None; leaves no file behind."""
    if path.is_dir():
        return f"{path}: is a directory"
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        return f"{path}: cannot write the file ({e.strerror or e})"
    if not existed:
        path.unlink()
    return None


def demo(out: Path, backend: str, epochs: int, progress: bool, seed: int, parser) -> int:
    missing = _missing(_DEMO_NEEDS)
    if missing:
        print(
            f"scalargrad demo needs {_and(missing)}, not installed here: "
            "pip install 'scalargrad[demo]'",
            file=sys.stderr,
        )
        return 1
    problem = _make_out_dir(out)
    if problem:
        parser.error(problem)

    from scalargrad import datasets, plot, viz
    from scalargrad.nn import MLP
    from scalargrad.train import fit_like_micrograd

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
    title = f"two moons, MLP(2, [16, 16, 1]): training accuracy {acc:.2f}"
    plot.decision_boundary(model, X, y, path=boundary, title=title)
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
    import platform

    from scalargrad import bench as benchmarks

    unknown = [n for n in names if n not in benchmarks.WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload {unknown[0]!r}; choose from {', '.join(benchmarks.WORKLOADS)}"
        )
    problem = json_path and _check_writable_file(json_path)
    if problem:
        parser.error(f"--json {problem}")
    print(
        f"scalargrad {scalargrad.__version__}, Python {platform.python_version()}, "
        f"engines: {', '.join(benchmarks.engines())}; ratios are measured in this run"
    )
    rows = benchmarks.run(names or None, quick=quick)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1))
        print(f"wrote {json_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scalargrad`` argument parser, with its ``demo`` and ``bench`` subparsers."""
    from scalargrad.bench import WORKLOADS

    parser = argparse.ArgumentParser(
        prog="scalargrad", description=scalargrad.__doc__.splitlines()[0]
    )
    parser.add_argument("--version", action="version", version=scalargrad.__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench}")

    d = sub.add_parser(
        "demo",
        help="train micrograd's moons MLP; write plots and a graph",
        description="Trains micrograd's MLP(2, [16, 16, 1]) on 100 two-moons points "
        "(hinge loss, full-batch SGD) and writes the decision boundary, the training "
        "curves and a graph of one neuron into DIR. Needs the demo extra: "
        "pip install 'scalargrad[demo]'.",
    )
    d.add_argument(
        "--out",
        type=Path,
        default=Path("scalargrad-demo"),
        metavar="DIR",
        help="directory to write the pictures into, created if missing (default: %(default)s)",
    )
    d.add_argument(
        "--backend",
        choices=scalargrad.BACKENDS,
        default=scalargrad.backend,
        help="engine to train on (default: %(default)s; the SCALARGRAD_BACKEND "
        "environment variable sets the default)",
    )
    d.add_argument(
        "--epochs",
        type=int,
        default=100,
        metavar="N",
        help="full-batch training steps, >= 0 (default: %(default)s)",
    )
    d.add_argument(
        "--seed",
        type=int,
        default=1337,
        help="seed of the initial weights (default: %(default)s)",
    )
    d.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (default: shown)",
    )
    d.set_defaults(subparser=d)

    b = sub.add_parser(
        "bench",
        help="compare rust, reference, micrograd and torch side by side",
        description="Runs the benchmark workloads side by side in one process and prints "
        "the ratios measured in this run. micrograd and PyTorch join when installed.",
    )
    b.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"workloads to run, any of: {', '.join(WORKLOADS)} (default: all of them)",
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and smaller graphs (default: the full run)",
    )
    b.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the results to FILE as JSON (default: only the printed table)",
    )
    b.set_defaults(subparser=b)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # NumPy's BLAS only makes data sets here; its idle worker threads would
    # otherwise spin on the cores the engines are measured on. Set before the
    # first `import numpy`.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    sub = args.subparser  # errors show the subcommand's usage
    if extra:
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "bench":
        return bench(args.workloads, args.quick, args.json, sub)
    if args.command == "demo":
        if args.epochs < 0:
            sub.error(f"--epochs must be >= 0, got {args.epochs}")
        return demo(args.out, args.backend, args.epochs, not args.no_progress, args.seed, sub)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
