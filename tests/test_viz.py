"""scalargrad.viz: graph pictures with Graphviz, on both backends."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import scalargrad
from graphviz import Digraph
from scalargrad import viz

_NAME = r'("(?:[^"\\]|\\.)*"|[^\s\[\]"]+)'
_EDGE = re.compile(rf"^\s*{_NAME} -> {_NAME}(?: \[(.*)\])?$")
_NODE = re.compile(rf"^\s*{_NAME} \[(.*)\]$")


def parse(graph):
    """The nodes ``{name: attributes}`` and edges ``[(tail, head, attributes)]`` of
    a Digraph, read from its source lines (names unquoted)."""
    nodes, edges = {}, []
    for line in graph.body:
        line = line.rstrip("\n")
        if m := _EDGE.match(line):
            edges.append((m[1].strip('"'), m[2].strip('"'), m[3] or ""))
        elif (m := _NODE.match(line)) and m[1] not in ("graph", "node", "edge"):
            nodes[m[1].strip('"')] = m[2]
    return nodes, edges


def records(graph):
    return {n: a for n, a in parse(graph)[0].items() if "shape=record" in a}


def ops(graph):
    return {n: a for n, a in parse(graph)[0].items() if "shape=record" not in a}


def fill(attrs):
    return re.search(r'fillcolor="([^"]+)"', attrs)[1]


def neuron(V):
    """micrograd's neuron: o = tanh(x*w + b), labelled."""
    x, w, b = V(2.0, label="x"), V(-3.0, label="w"), V(0.5, label="b")
    o = (x * w + b).tanh()
    o.label = "o"
    return x, w, b, o


# -- trace --


def test_trace_order_and_edges(V):
    a, b = V(1.0, label="a"), V(2.0, label="b")
    m = a * b
    root = m + a
    nodes, edges = viz.trace(root)
    # depth-first from the root, operands in order, each node once
    assert [n is e for n, e in zip(nodes, [root, m, a, b])] == [True] * 4
    assert len(nodes) == 4
    # one edge per operand slot, (operand, result)
    assert [(c.label or c._op, p._op) for c, p in edges] == [
        ("*", "+"),
        ("a", "*"),
        ("b", "*"),
        ("a", "+"),
    ]
    sq = a * a
    nodes, edges = viz.trace(sq)
    assert len(nodes) == 2 and len(edges) == 2
    assert all(c is a and p is sq for c, p in edges)


def test_trace_of_a_leaf(V):
    x = V(1.0)
    nodes, edges = viz.trace(x)
    assert len(nodes) == 1 and nodes[0] is x and edges == []


def test_trace_is_iterative(V):
    # A recursive walk would hit Python's recursion limit (1,000) long before this.
    y = V(1.0)
    for _ in range(100_000):
        y = y * 1.0
    nodes, edges = viz.trace(y)
    assert len(nodes) == 200_001 and len(edges) == 200_000
    assert nodes[0] is y and nodes[-1].data == 1.0 and nodes[-1]._op == ""


# -- draw_dot --


def test_draw_dot_structure(V):
    x, w, b, o = neuron(V)
    o.backward()
    g = viz.draw_dot(o)
    assert isinstance(g, Digraph) and hasattr(g, "_repr_mimebundle_")
    assert "rankdir=LR" in g.source and g.format == "svg"
    nodes, edges = parse(g)
    recs, opn = records(g), ops(g)
    assert len(recs) == 6  # x, w, x*w, b, x*w + b, o
    assert sorted(re.search(r"label=(\S+)", a)[1] for a in opn.values()) == [
        '"*"',
        '"+"',
        "tanh",
    ]
    # 5 operand -> op arrows, 3 op -> result arrows, all between declared nodes
    assert len(edges) == 8
    assert all(t in nodes and h in nodes for t, h, _ in edges)
    assert sum(t in opn for t, _, _ in edges) == 3
    assert sum(h in opn for _, h, _ in edges) == 5
    src = g.source
    assert f"{{ x | data 2.0000 | grad {x.grad:.4f} }}" in src
    assert f"{{ w | data -3.0000 | grad {w.grad:.4f} }}" in src
    assert f"{{ o | data {o.data:.4f} | grad 1.0000 }}" in src
    assert "{ data -6.0000 | grad" in src  # unlabelled x*w: no label field


def test_draw_dot_names_by_counter_not_id(V):
    x, w, b, o = neuron(V)
    g = viz.draw_dot(o)
    names = set(parse(g)[0])
    assert names == {f"n{i}" for i in range(6)} | {"n0_op", "n1_op", "n2_op"}
    assert str(id(o)) not in g.source
    # the same expression built again draws the same source
    assert viz.draw_dot(neuron(V)[3]).source == g.source


def test_draw_dot_ops_of_the_op_table(V, backend):
    x = V(1.5, label="x")
    y = backend.sum([x.relu(), x**2, backend.dot([x, 2.0], [3.0, x])])
    labels = {re.search(r"label=(\S+)", a)[1].strip('"') for a in ops(viz.draw_dot(y)).values()}
    assert labels == {"sum", "ReLU", "**2", "dot"}


def test_draw_dot_options(V):
    x, w, b, o = neuron(V)
    o.backward()
    assert "grad" not in viz.draw_dot(o, show_grad=False).source
    assert "data 2.0000" in viz.draw_dot(o, show_grad=False).source
    assert "rankdir=TB" in viz.draw_dot(o, rankdir="TB").source
    assert viz.draw_dot(o, fmt="png").format == "png"


def test_record_labels_are_escaped(V, tmp_path):
    x = V(1.0, label='a|b {c} <d> "e"')
    g = viz.draw_dot(x + 1.0)
    assert r"\|b \{c\} \<d\> \"e\"" in g.source
    # dot accepts it and shows the label as written
    assert "a|b {c} &lt;d&gt; &quot;e&quot;" in viz.render(g, tmp_path / "g.svg").read_text()


def test_color_by_grad(V):
    x, w, b, o = neuron(V)
    o.backward()
    assert "fillcolor" not in viz.draw_dot(o).source
    g = viz.draw_dot(o, color_by_grad=True)
    recs = records(g)
    assert all("style=filled" in a for a in recs.values())
    colour = {n: fill(a) for n, a in recs.items()}
    assert colour["n0"] == "#e67300"  # o: the largest |grad| (1.0) is darkest
    assert len(set(colour.values())) > 1
    # differing |grad| gives differing colours, larger |grad| darker (smaller blue part)
    nodes, _ = viz.trace(o)
    by_grad = sorted((abs(v.grad), int(colour[f"n{i}"][5:], 16)) for i, v in enumerate(nodes))
    blues = [blue for _, blue in by_grad]
    assert blues == sorted(blues, reverse=True)
    assert colour["n1"] != colour["n0"]  # tanh' * 1 vs 1


def test_color_by_grad_zero_and_nonfinite(V):
    x = V(1.0)
    y = x * 2.0
    g = viz.draw_dot(y, color_by_grad=True)  # no backward: all zero -> all white
    assert {fill(a) for a in records(g).values()} == {"#ffffff"}
    y.backward()
    x.grad = float("nan")
    colour = {n: fill(a) for n, a in records(viz.draw_dot(y, color_by_grad=True)).items()}
    assert colour["n1"] == "#e02020"  # x: nan, red
    assert colour["n0"] == "#e67300"  # y: grad 1, the largest finite one


def test_max_nodes(V):
    y = V(1.0)
    for _ in range(10):
        y = y + 1.0
    assert len(viz.trace(y)[0]) == 21
    viz.draw_dot(y, max_nodes=21)
    with pytest.raises(ValueError, match=r"21 nodes, more than max_nodes=20"):
        viz.draw_dot(y, max_nodes=20)
    with pytest.raises(ValueError, match="max_nodes"):
        viz.draw_before_after(y, max_nodes=20)
    assert y.grad == 0.0  # the refusal came before backward()


def test_max_nodes_default_on_a_deep_chain(V):
    y = V(1.0)
    for _ in range(100_000):
        y = y * 1.0
    with pytest.raises(ValueError, match="max_nodes=2000"):
        viz.draw_dot(y)


# -- draw_before_after --


def test_draw_before_after(V):
    x, w, b, o = neuron(V)
    g = viz.draw_before_after(o)
    assert x.grad != 0.0  # it ran backward()
    src = g.source
    assert 'label="before backward()"' in src and 'label="after backward()"' in src
    assert "subgraph cluster_b" in src and "subgraph cluster_a" in src
    recs = records(g)
    assert len(recs) == 12
    assert {n[:2] for n in recs} == {"b_", "a_"}
    before = {n: a for n, a in recs.items() if n.startswith("b_")}
    after = {n: a for n, a in recs.items() if n.startswith("a_")}
    assert all("grad 0.0000 }" in a for a in before.values())
    assert "{ w | data -3.0000 | grad 0.0000 }" in before["b_n4"]
    assert f"{{ x | data 2.0000 | grad {x.grad:.4f} }}" in after["a_n3"]
    assert f"{{ w | data -3.0000 | grad {w.grad:.4f} }}" in after["a_n4"]
    assert "grad 1.0000" in after["a_n0"]
    nodes, edges = parse(g)
    visible = [e for e in edges if "invis" not in e[2]]
    assert len(visible) == 16 and all(t in nodes and h in nodes for t, h, _ in edges)
    # invisible edges put the second picture after the first (root -> each leaf)
    assert sorted(h for t, h, a in edges if "invis" in a) == ["a_n3", "a_n4", "a_n5"]


def test_draw_before_after_options_and_shared_scale(V):
    x, w, b, o = neuron(V)
    g = viz.draw_before_after(o, color_by_grad=True, rankdir="TB", show_grad=False)
    recs = records(g)
    assert "rankdir=TB" in g.source and "grad" not in g.source.replace("backward", "")
    assert {fill(a) for n, a in recs.items() if n.startswith("b_")} == {"#ffffff"}
    assert fill(recs["a_n0"]) == "#e67300"
    with pytest.raises(TypeError, match="colour_by_grad"):
        viz.draw_before_after(o, colour_by_grad=True)


# -- render --


def test_render_svg_and_png(V, tmp_path):
    *_, o = neuron(V)
    o.backward()
    g = viz.draw_dot(o)
    svg = viz.render(g, tmp_path / "g.svg")
    png = viz.render(g, str(tmp_path / "g.png"))
    assert svg == tmp_path / "g.svg" and png == tmp_path / "g.png"
    text = svg.read_text()
    assert (text.startswith("<?xml") or "<svg" in text) and "data 2.0000" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # fmt wins over the suffix
    other = viz.render(g, tmp_path / "graph.out", fmt="svg")
    assert "<svg" in other.read_text()
    # only the requested files, no .gv source beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g.svg", "graph.out"]


def test_render_before_after(V, tmp_path):
    *_, o = neuron(V)
    out = viz.render(viz.draw_before_after(o, color_by_grad=True), tmp_path / "ba.svg")
    text = out.read_text()
    assert "before backward()" in text and "after backward()" in text


def test_render_without_dot(V, tmp_path, monkeypatch):
    *_, o = neuron(V)
    g = viz.draw_dot(o)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RuntimeError, match="apt-get install graphviz") as info:
        viz.render(g, tmp_path / "g.svg")
    message = str(info.value)
    for hint in (
        "sudo apt-get install graphviz",
        "brew install graphviz",
        "conda install -c conda-forge graphviz",
        "https://graphviz.org/download/",
        "alone is not enough",
    ):
        assert hint in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_without_the_graphviz_package(V, monkeypatch, tmp_path):
    *_, o = neuron(V)
    g = viz.draw_dot(o)
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` fails
    with pytest.raises(ImportError, match=r"pip install 'scalargrad\[viz\]'"):
        viz.draw_dot(o)
    with pytest.raises(ImportError, match=r"scalargrad\[viz\]"):
        viz.draw_before_after(o)
    assert o.grad == 0.0  # failed before backward()
    with pytest.raises(ImportError, match=r"scalargrad\[viz\]"):
        viz.render(g, tmp_path / "g.svg")


def test_import_needs_neither_graphviz_nor_matplotlib():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["graphviz"] = None
        sys.modules["matplotlib"] = None
        import scalargrad.viz, scalargrad.plot
        from scalargrad import Value
        nodes, edges = scalargrad.viz.trace(Value(1.0) * 2.0)
        assert len(nodes) == 3 and len(edges) == 2
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- micrograd's own helper --


# micrograd's trace_graph.ipynb helper (github.com/karpathy/micrograd, MIT licence),
# copied verbatim. It names nodes by id() and keys its sets by the Value, so it
# only draws a connected graph if `_prev` gives back the same object for the same
# node each time and Values hash by node.
# fmt: off
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

def draw_dot(root, format='svg', rankdir='LR'):
    """
    format: png | svg | ...
    rankdir: TB (top to bottom graph) | LR (left to right)
    """
    assert rankdir in ['LR', 'TB']
    nodes, edges = trace(root)
    dot = Digraph(format=format, graph_attr={'rankdir': rankdir}) #, node_attr={'rankdir': 'TB'})

    for n in nodes:
        dot.node(name=str(id(n)), label = "{ data %.4f | grad %.4f }" % (n.data, n.grad), shape='record')  # noqa: E501, UP031
        if n._op:
            dot.node(name=str(id(n)) + n._op, label=n._op)
            dot.edge(str(id(n)) + n._op, str(id(n)))

    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)

    return dot
# fmt: on


def check_micrograd_helper(root, tmp_path):
    dot = draw_dot(root)
    nodes, edges = parse(dot)
    assert edges and all(t in nodes and h in nodes for t, h, _ in edges)
    mg_nodes, mg_edges = trace(root)
    ours, our_edges = viz.trace(root)
    assert len(mg_nodes) == len(ours)
    assert len(records(dot)) == len(ours)
    assert len(mg_edges) == len({(id(c), id(p)) for c, p in our_edges})
    # and dot lays it out as one connected picture
    assert "<svg" in viz.render(dot, tmp_path / "mg.svg").read_text()


def test_micrograd_helper_simple(V, tmp_path):
    # the notebook's first example
    x = V(1.0)
    y = (x * 2 + 1).relu()
    y.backward()
    check_micrograd_helper(y, tmp_path)


def test_micrograd_helper_reused_and_deeper_nodes(V, backend, tmp_path):
    x = V(1.0)
    y = x * x + x  # x reached three times
    y = (y.relu() * 2.0 + backend.sum([x, y, 3.0])).tanh()
    y.backward()
    check_micrograd_helper(y, tmp_path)
    # operands fetched again, after the first wrappers were dropped, are still one node
    a = (V(2.0) * V(3.0))._prev
    check_micrograd_helper(a[0] * a[1] + a[0], tmp_path)


def test_micrograd_helper_neuron(V, tmp_path):
    # the notebook's second example, a 2-input ReLU neuron written out
    w1, w2, b = V(0.2), V(-0.4), V(0.0)
    x = [V(1.0), V(-2.0)]
    y = (w1 * x[0] + w2 * x[1] + b).relu()
    y.backward()
    check_micrograd_helper(y, tmp_path)


def test_both_backends_draw_alike():
    sources = []
    for name in scalargrad.BACKENDS:
        V = scalargrad.backend_module(name).Value
        *_, o = neuron(V)
        o.backward()
        sources.append(viz.draw_dot(o, color_by_grad=True).source)
    assert sources[0] == sources[1]


class _FreshHandles:
    """A Value handle whose `_prev` makes new handle objects on every call (equal and
    hashing by node): the engine behaviour the check above must catch."""

    def __init__(self, v):
        self.v = v

    data = property(lambda self: self.v.data)
    grad = property(lambda self: self.v.grad)
    _op = property(lambda self: self.v._op)
    _prev = property(lambda self: tuple(_FreshHandles(c) for c in self.v._prev))

    def __hash__(self):
        return hash(self.v)

    def __eq__(self, other):
        return self.v is other.v


def test_micrograd_helper_check_catches_fresh_handles(tmp_path):
    x = scalargrad.backend_module("reference").Value(1.0)
    with pytest.raises(AssertionError):
        check_micrograd_helper(_FreshHandles(x * x + x), tmp_path)
