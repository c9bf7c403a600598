"""Pictures of the graph with Graphviz (the ``viz`` extra installs the Python
package; the ``dot`` program comes from Graphviz itself).

>>> from scalargrad import Value
>>> from scalargrad.viz import draw_dot
>>> x = Value(2.0, label="x")
>>> y = (x * x).tanh()
>>> y.backward()
>>> g = draw_dot(y)          # a graphviz.Digraph; Jupyter shows it inline
>>> g.body[0].split("[")[0].strip()
'n0'
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["draw_before_after", "draw_dot", "render", "trace"]

INSTALL_GRAPHVIZ = (
    "Graphviz's `dot` program was not found on PATH; the Python package `graphviz` "
    "alone is not enough. Install Graphviz: `sudo apt-get install graphviz` (Debian, "
    "Ubuntu), `brew install graphviz` (macOS), `conda install -c conda-forge graphviz`, "
    "or see https://graphviz.org/download/"
)


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError:
        raise ImportError("scalargrad.viz needs graphviz: pip install 'scalargrad[viz]'") from None
    return graphviz


def trace(root: Any) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """All nodes under ``root`` (depth-first from the root, operands in order) and
    the ``(operand, result)`` edges. Iterative: any depth works."""
    seen = {root}
    nodes, edges = [root], []
    stack = [root]
    while stack:
        v = stack.pop()
        for child in v._prev:
            edges.append((child, v))
            if child not in seen:
                seen.add(child)
                nodes.append(child)
                stack.append(child)
    return nodes, edges


def _colour(g: float, top: float) -> str:
    if not math.isfinite(g):
        return "#ff4d4d"
    t = 0.0 if top == 0 else min(abs(g) / top, 1.0)
    # white -> orange
    r, gr, b = 255, int(255 - t * (255 - 140)), int(255 - t * 255)
    return f"#{r:02x}{gr:02x}{b:02x}"


def _add(
    dot: Any,
    root: Any,
    prefix: str,
    show_grad: bool,
    color_by_grad: bool,
    max_nodes: int,
    grads: Optional[dict] = None,
) -> None:
    nodes, edges = trace(root)
    if len(nodes) > max_nodes:
        raise ValueError(
            f"draw_dot: the graph has {len(nodes)} nodes, more than max_nodes={max_nodes}; "
            "draw a smaller part of it or raise max_nodes"
        )
    names = {v: f"{prefix}n{i}" for i, v in enumerate(nodes)}

    def grad_of(v: Any) -> float:
        return grads[v] if grads is not None else v.grad

    top = max((abs(grad_of(v)) for v in nodes if math.isfinite(grad_of(v))), default=0.0)
    for v in nodes:
        parts = [v.label] if v.label else []
        parts.append(f"data {v.data:.4f}")
        if show_grad:
            parts.append(f"grad {grad_of(v):.4f}")
        attrs = {"label": "{ " + " | ".join(parts) + " }", "shape": "record"}
        if color_by_grad:
            attrs.update(style="filled", fillcolor=_colour(grad_of(v), top))
        dot.node(names[v], **attrs)
        if v._op:
            dot.node(names[v] + "_op", label=v._op)
            dot.edge(names[v] + "_op", names[v])
    for child, parent in edges:
        dot.edge(names[child], names[parent] + "_op")


def draw_dot(
    root: Any,
    rankdir: str = "LR",
    show_grad: bool = True,
    color_by_grad: bool = False,
    max_nodes: int = 2000,
    fmt: str = "svg",
) -> Any:
    """The graph under ``root`` as a ``graphviz.Digraph``, drawn as micrograd draws
    it: a record ``{ label | data | grad }`` per node and a small node for each op.
    ``color_by_grad`` fills records from white to orange by ``|grad|`` relative to
    the largest in the graph (non-finite gradients in red). Jupyter displays the
    returned object inline; ``render`` writes it to a file."""
    dot = _graphviz().Digraph(format=fmt, graph_attr={"rankdir": rankdir})
    _add(dot, root, "", show_grad, color_by_grad, max_nodes)
    return dot


def draw_before_after(
    root: Any,
    rankdir: str = "LR",
    color_by_grad: bool = True,
    max_nodes: int = 1000,
    fmt: str = "svg",
) -> Any:
    """Calls ``root.backward()`` and draws the graph twice side by side: with the
    gradients it had before (left) and after (right)."""
    nodes, _ = trace(root)
    before = {v: v.grad for v in nodes}
    root.backward()
    dot = _graphviz().Digraph(format=fmt, graph_attr={"rankdir": rankdir})
    for prefix, title, grads in (
        ("b_", "before backward()", before),
        ("a_", "after backward()", None),
    ):
        with dot.subgraph(name=f"cluster_{prefix}") as sub:
            sub.attr(label=title)
            _add(sub, root, prefix, True, color_by_grad, max_nodes, grads)
    return dot


def render(graph: Any, path: Union[str, os.PathLike], fmt: Optional[str] = None) -> Path:
    """Writes ``graph`` to ``path`` (SVG, PNG, PDF: from the suffix unless ``fmt``)
    with Graphviz's ``dot``; returns the path."""
    graphviz = _graphviz()
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".") or "svg"
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(INSTALL_GRAPHVIZ) from None
    path.write_bytes(data)
    return path
