"""Graph drawing and plots, on both backends."""

from __future__ import annotations

import pytest
from graphviz import Digraph
from scalargrad import plot, viz


def _neuron(V):
    x, w, b = V(2.0, label="x"), V(-3.0, label="w"), V(0.5, label="b")
    o = (x * w + b).tanh()
    o.label = "o"
    return x, w, o


def test_draw_dot_records_ops_and_edges(V):
    x, w, o = _neuron(V)
    o.backward()
    g = viz.draw_dot(o)
    src = g.source
    assert src.count("shape=record") == 6  # x, w, x*w, b, +, tanh
    assert src.count("->") == 5 + 3  # operand -> op (5) and op -> result (3)
    for text in ("x | data 2.0000 | grad", "label=tanh", 'label="*"', 'label="+"'):
        assert text in src
    assert "grad" not in viz.draw_dot(o, show_grad=False).source
    colored = viz.draw_dot(o, color_by_grad=True).source
    assert colored.count("fillcolor") == 6 and len(set(colored.split("fillcolor")[1:])) > 1


def test_trace_is_iterative_and_max_nodes(V):
    y = V(1.0)
    for _ in range(100_000):
        y = y * 1.0
    nodes, edges = viz.trace(y)
    assert len(nodes) == 200_001 and len(edges) == 200_000
    with pytest.raises(ValueError, match="max_nodes"):
        viz.draw_dot(y)


def test_before_after(V):
    x, w, o = _neuron(V)
    g = viz.draw_before_after(o)
    src = g.source
    assert "before backward()" in src and "after backward()" in src
    assert f"grad {w.grad:.4f}" in src and "w | data -3.0000 | grad 0.0000" in src


def test_render_svg_png_and_missing_dot(V, tmp_path, monkeypatch):
    _, _, o = _neuron(V)
    g = viz.draw_dot(o)
    svg = viz.render(g, tmp_path / "g.svg")
    png = viz.render(g, tmp_path / "g.png")
    assert "<svg" in svg.read_text() and png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g.svg"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.render(g, tmp_path / "h.svg")


# micrograd's trace_graph.ipynb helper, verbatim: it names nodes by id(), so it only
# draws a connected graph if `_prev` gives back the same object for the same node.
def trace(root):
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)

    build(root)
    return nodes, edges


def draw_dot(root, format="svg", rankdir="LR"):
    assert rankdir in ["LR", "TB"]
    nodes, edges = trace(root)
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
    for n in nodes:
        dot.node(
            name=str(id(n)),
            label="{ data %.4f | grad %.4f }" % (n.data, n.grad),  # noqa: UP031 shape="record"
        )
        if n._op:
            dot.node(name=str(id(n)) + n._op, label=n._op)
            dot.edge(str(id(n)) + n._op, str(id(n)))
    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)
    return dot


def test_micrograd_draw_dot_helper_unchanged(V):
    x = V(1.0)
    y = x * x + x  # x reached three times
    y = y.relu() * 2.0
    y.backward()
    dot = draw_dot(y)
    declared = {line.split()[0] for line in dot.body if "label=" in line}
    used = {t for line in dot.body if "->" in line for t in line.split("->")}
    assert {t.strip() for t in used} <= declared
    assert len(trace(y)[0]) == 6


def test_plots(V, tmp_path):
    X = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    y = [1, -1, 1, -1]
    fig = plot.decision_boundary(lambda p: V(p[1]) - V(p[0]), X, y, path=tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert ax.collections  # the contour and the scatter
    f2 = plot.history({"loss": [1.0, 0.5], "accuracy": [0.5, 1.0]}, path=tmp_path / "h.png")
    assert len(f2.axes) == 2 and (tmp_path / "h.png").exists()
    assert len(plot.history({"loss": [1.0, 0.5], "accuracy": []}).axes) == 1
