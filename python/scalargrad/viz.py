"""Pictures of the graph with Graphviz.

The ``viz`` extra installs the Python package ``graphviz``
(``pip install 'scalargrad[viz]'``); turning a graph into SVG or PNG also needs
Graphviz's ``dot`` program, which comes from Graphviz itself (see ``render``).
Everything here uses only the ``Value`` API, so it works on both backends, and
``graphviz`` is imported only when a picture is made.

>>> from scalargrad import Value
>>> from scalargrad.viz import draw_dot
>>> x = Value(2.0, label="x")
>>> y = (x * x).tanh()
>>> y.backward()
>>> g = draw_dot(y)          # a graphviz.Digraph; Jupyter shows it inline
>>> print(g.body[0].strip())
n0 [label="{ data 0.9993 | grad 1.0000 }" shape=record]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["INSTALL_GRAPHVIZ", "draw_before_after", "draw_dot", "render", "trace"]

#: The message of the ``RuntimeError`` that ``render`` raises when ``dot`` is missing.
INSTALL_GRAPHVIZ = (
    "Graphviz's `dot` program was not found on PATH. The Python package `graphviz` "
    "(pip install 'scalargrad[viz]') alone is not enough: it only writes the graph's "
    "source and runs `dot` to lay it out. Install Graphviz itself: "
    "`sudo apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` (macOS), "
    "`conda install -c conda-forge graphviz`, or see https://graphviz.org/download/"
)

# `color_by_grad`: |grad| / max|grad| from 0 to 1 runs from white to dark orange;
# a non-finite gradient (nan, inf) is red, apart from the scale.
_WHITE, _ORANGE, _NONFINITE = (255, 255, 255), (230, 115, 0), "#e02020"

# Characters with a meaning inside a Graphviz record label.
_RECORD_SPECIAL = str.maketrans({c: "\\" + c for c in '\\{}|<>"'})


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError:
        raise ImportError(
            "scalargrad.viz needs the graphviz Python package: pip install 'scalargrad[viz]'"
        ) from None
    return graphviz


_DIGRAPH: Any = None  # made by `_digraph_class` on first use, so graphviz loads lazily


def _mimebundle(self: Any, include: Any = None, exclude: Any = None, **kw: Any) -> Any:
    """Jupyter's display hook: graphviz's SVG, or, when Graphviz's ``dot`` program
    is missing, the one-line install hint and the DOT source as text (instead of
    graphviz's ``ExecutableNotFound`` traceback)."""
    graphviz = _graphviz()
    try:
        return graphviz.Digraph._repr_mimebundle_(self, include, exclude, **kw)
    except graphviz.ExecutableNotFound:
        return {"text/plain": f"{INSTALL_GRAPHVIZ}\n\n{self.source}"}


def _reduce(self: Any) -> Any:
    # Pickles by a module function, as the class is made at run time.
    return (_new_digraph, (), self.__dict__.copy())


def _new_digraph() -> Any:
    cls = _digraph_class()
    return cls.__new__(cls)


def _digraph_class() -> Any:
    """The ``graphviz.Digraph`` subclass that ``draw_dot`` returns: the same graph,
    with a notebook display that survives a missing ``dot``."""
    global _DIGRAPH
    graphviz = _graphviz()  # each time: the clear ImportError when the package is missing
    if _DIGRAPH is None:
        _DIGRAPH = type(
            "Digraph",
            (graphviz.Digraph,),
            {
                "__module__": __name__,
                "__doc__": "A ``graphviz.Digraph`` that Jupyter shows as an SVG, or without "
                "Graphviz's ``dot`` as the install hint and the DOT source.",
                "_repr_mimebundle_": _mimebundle,
                "__reduce__": _reduce,
            },
        )
    return _DIGRAPH


def trace(root: Any) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """The nodes and edges of the graph under ``root``.

    ``nodes`` lists every Value reachable from ``root`` once, in the order a
    depth-first walk from ``root`` first meets them, operands in operand order
    (so ``nodes[0]`` is ``root``). ``edges`` has one ``(operand, result)`` pair
    per operand slot, in the same walk's order: ``x * x`` gives two
    ``(x, x*x)`` edges. The walk is iterative, so a 100,000-deep chain is fine.

    >>> from scalargrad import Value
    >>> a, b = Value(1.0, label="a"), Value(2.0, label="b")
    >>> nodes, edges = trace(a * b + a)
    >>> [n.label or n._op for n in nodes]
    ['+', '*', 'a', 'b']
    >>> len(edges)
    4
    """
    seen = {root}
    nodes: list[Any] = [root]
    edges: list[tuple[Any, Any]] = []
    stack: list[tuple[Any, Iterator[Any]]] = [(root, iter(root._prev))]
    while stack:
        parent, operands = stack[-1]
        child = next(operands, None)
        if child is None:
            stack.pop()
            continue
        edges.append((child, parent))
        if child not in seen:
            seen.add(child)
            nodes.append(child)
            stack.append((child, iter(child._prev)))
    return nodes, edges


def _fill(g: float, top: float) -> str:
    """The fill colour for gradient ``g`` when the largest finite |grad| is ``top``."""
    if not math.isfinite(g):
        return _NONFINITE
    t = min(abs(g) / top, 1.0) if top > 0 else 0.0
    r, gr, b = (round(w + t * (o - w)) for w, o in zip(_WHITE, _ORANGE))
    return f"#{r:02x}{gr:02x}{b:02x}"


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _check_size(nodes: list[Any], max_nodes: int) -> None:
    if len(nodes) > max_nodes:
        raise ValueError(
            f"the graph has {len(nodes)} nodes, more than max_nodes={max_nodes}; Graphviz "
            "would take very long to lay it out. Draw a smaller sub-expression, or pass a "
            "larger max_nodes"
        )


def _add_graph(
    dot: Any,
    nodes: list[Any],
    edges: list[tuple[Any, Any]],
    prefix: str,
    grads: list[float],
    show_grad: bool,
    color_by_grad: bool,
    top: float,
) -> dict[Any, str]:
    """Adds records, op nodes and edges to ``dot``; returns the record names."""
    names = {v: f"{prefix}n{i}" for i, v in enumerate(nodes)}
    for v, g in zip(nodes, grads):
        name = names[v]
        fields = [v.label.translate(_RECORD_SPECIAL)] if v.label else []
        fields.append(f"data {_fmt(v.data)}")
        if show_grad:
            fields.append(f"grad {_fmt(g)}")
        attrs = {"label": "{ " + " | ".join(fields) + " }", "shape": "record"}
        if color_by_grad:
            attrs.update(style="filled", fillcolor=_fill(g, top))
        dot.node(name, **attrs)
        if v._op:
            dot.node(name + "_op", label=v._op)
            dot.edge(name + "_op", name)
    for child, parent in edges:
        dot.edge(names[child], names[parent] + "_op")
    return names


def _top(*grad_lists: list[float]) -> float:
    return max((abs(g) for gs in grad_lists for g in gs if math.isfinite(g)), default=0.0)


def draw_dot(
    root: Any,
    rankdir: str = "LR",
    show_grad: bool = True,
    color_by_grad: bool = False,
    max_nodes: int = 2000,
    fmt: str = "svg",
) -> Any:
    """The graph under ``root`` as a ``graphviz.Digraph``, drawn as micrograd draws it.

    Each Value is a record ``{ label | data 1.2346 | grad 0.5000 }`` (the label
    field only when the label is non-empty, the grad field only with
    ``show_grad``); each op result gets a small node naming its op (``+``, ``*``,
    ``ReLU``, ``**2``, ``sum``, ``dot``, ...) with arrows from the operands into
    the op and from the op into the result. Graphviz nodes are named ``n0``,
    ``n1``, ... in ``trace`` order (``n3_op`` for the op of ``n3``), so the
    source is the same from run to run.

    ``color_by_grad=True`` fills every record by ``|grad| / max |grad|`` over the
    graph's finite gradients, from white (0) to dark orange (the largest); a
    nan or inf gradient is filled red. ``rankdir`` is ``"LR"`` (left to right)
    or ``"TB"`` (top to bottom); ``fmt`` is the Digraph's output format. A graph
    of more than ``max_nodes`` Values raises ``ValueError``.

    In Jupyter the returned Digraph (a ``graphviz.Digraph`` subclass) displays
    inline by itself as an SVG; elsewhere write it with ``render(graph, "g.svg")``.
    Both need Graphviz's ``dot`` program; ``graph.source`` does not. Without
    ``dot``, Jupyter shows the install hint and the DOT source instead of an SVG.

    >>> from scalargrad import Value
    >>> a, b = Value(-4.0, label="a"), Value(2.0, label="b")
    >>> c = (a * b).relu()
    >>> c.backward()
    >>> g = draw_dot(c, color_by_grad=True)
    >>> g.source.count("shape=record"), g.source.count("->")
    (4, 5)
    """
    nodes, edges = trace(root)
    _check_size(nodes, max_nodes)
    dot = _digraph_class()(format=fmt, graph_attr={"rankdir": rankdir})
    grads = [v.grad for v in nodes]
    _add_graph(dot, nodes, edges, "", grads, show_grad, color_by_grad, _top(grads))
    return dot


def draw_before_after(root: Any, **kw: Any) -> Any:
    """Calls ``root.backward()`` and draws the graph twice, side by side.

    The left cluster, titled "before backward()", shows the gradients the nodes
    had when this was called (zero for a fresh graph); the right one, "after
    backward()", shows them after this call's ``backward()``. Note that this
    **runs backward**, which adds into every reachable node's grad; called on a
    graph that already had a backward pass, the "after" picture shows the
    accumulated gradients, as a second ``backward()`` would leave them.

    Keywords are ``draw_dot``'s (``rankdir``, ``show_grad``, ``color_by_grad``,
    ``max_nodes``, ``fmt``); with ``color_by_grad`` both pictures share one
    scale, the largest |grad| in either. Node names are prefixed ``b_`` and
    ``a_`` to keep the copies apart.

    >>> from scalargrad import Value
    >>> x = Value(3.0, label="x")
    >>> g = draw_before_after(x * x)
    >>> "x | data 3.0000 | grad 0.0000" in g.source, x.grad
    (True, 6.0)
    """
    unknown = set(kw) - {"rankdir", "show_grad", "color_by_grad", "max_nodes", "fmt"}
    if unknown:
        raise TypeError(f"draw_before_after() got unexpected keywords: {sorted(unknown)}")
    rankdir = kw.get("rankdir", "LR")
    show_grad = kw.get("show_grad", True)
    color_by_grad = kw.get("color_by_grad", False)
    nodes, edges = trace(root)
    _check_size(nodes, kw.get("max_nodes", 2000))
    Digraph = _digraph_class()  # before backward(), so a missing package changes nothing
    before = [v.grad for v in nodes]
    root.backward()
    after = [v.grad for v in nodes]
    top = _top(before, after)

    dot = Digraph(format=kw.get("fmt", "svg"), graph_attr={"rankdir": rankdir})
    for prefix, title, grads in (
        ("b_", "before backward()", before),
        ("a_", "after backward()", after),
    ):
        with dot.subgraph(name=f"cluster_{prefix.rstrip('_')}") as sub:
            sub.attr(label=title)
            _add_graph(sub, nodes, edges, prefix, grads, show_grad, color_by_grad, top)
    # Invisible edges from the left picture's root to the right picture's leaves
    # rank the second copy after the first, so they sit side by side.
    for i, v in enumerate(nodes):
        if not v._prev:
            dot.edge("b_n0", f"a_n{i}", style="invis")
    return dot


def render(graph: Any, path: Union[str, os.PathLike], fmt: Optional[str] = None) -> Path:
    """Writes ``graph`` (a ``graphviz.Digraph``) to ``path`` with Graphviz's ``dot``.

    The format is ``fmt``, else the suffix of ``path`` (``.svg``, ``.png``,
    ``.pdf``, ...), else the graph's own format. Only ``path`` is written (no
    ``.gv`` source file beside it). Returns ``path`` as a ``pathlib.Path``.

    Raises ``RuntimeError`` saying how to install Graphviz when the ``dot``
    program is missing (the Python package alone is not enough), and
    ``ImportError`` when the ``graphviz`` Python package is missing.

    >>> from scalargrad import Value
    >>> import tempfile, pathlib
    >>> out = render(draw_dot(Value(1.0) + 2.0), pathlib.Path(tempfile.mkdtemp()) / "g.svg")
    >>> b"<svg" in out.read_bytes()
    True
    """
    graphviz = _graphviz()
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower() or getattr(graph, "format", None) or "svg"
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(INSTALL_GRAPHVIZ) from None
    path.write_bytes(data)
    return path
