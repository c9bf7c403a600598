"""What a notebook or REPL shows: ``draw_dot`` without Graphviz's ``dot``, the
model summary, and the decision boundary's labels and legend."""

from __future__ import annotations

import pickle

import graphviz
import numpy as np
import pytest
from IPython.core.formatters import DisplayFormatter
from scalargrad import plot, viz
from scalargrad.nn import MLP


def neuron(V):
    x, w, b = V(2.0, label="x"), V(-3.0, label="w"), V(0.5, label="b")
    o = (x * w + b).tanh()
    o.label = "o"
    return o


# ---- draw_dot in Jupyter ------------------------------------------------------------------


@pytest.mark.parametrize("draw", [viz.draw_dot, viz.draw_before_after])
def test_notebook_display_with_dot(V, draw):
    g = draw(neuron(V))
    assert isinstance(g, graphviz.Digraph)
    data, _ = DisplayFormatter().format(g)  # what Jupyter does with a cell's value
    assert data["image/svg+xml"].lstrip().startswith("<?xml")
    assert "<svg" in data["image/svg+xml"]


@pytest.mark.parametrize("draw", [viz.draw_dot, viz.draw_before_after])
def test_notebook_display_without_dot_shows_hint_and_source(V, draw, monkeypatch):
    g = draw(neuron(V))
    monkeypatch.setenv("PATH", "")  # no `dot` to run
    with pytest.raises(graphviz.ExecutableNotFound):
        graphviz.Digraph.pipe(g)  # what graphviz's own display hook runs into
    bundle = g._repr_mimebundle_()
    assert list(bundle) == ["text/plain"]
    hint, source = bundle["text/plain"].split("\n\n", 1)
    assert hint == viz.INSTALL_GRAPHVIZ and "\n" not in hint
    assert source == g.source and "digraph" in source
    data, _ = DisplayFormatter().format(g)
    assert data == {"text/plain": bundle["text/plain"]}
    # other mimetypes requested explicitly fall back the same way
    assert g._repr_mimebundle_(include=["image/png"]) == bundle
    assert g._repr_mimebundle_(include=[]) == {}


def test_drawn_graph_copies_and_pickles(V):
    g = viz.draw_dot(neuron(V))
    for h in (g.copy(), pickle.loads(pickle.dumps(g))):
        assert type(h) is type(g) and h.source == g.source


# ---- summary ------------------------------------------------------------------------------


def test_summary_repr_is_the_table(backend):
    s = MLP(2, [4, 1], seed=0, backend=backend.Value._backend).summary()
    assert isinstance(s, str)
    lines = repr(s).splitlines()  # what a REPL echoes for `model.summary()`
    assert lines[0] == "MLP" and lines[-1] == "total parameters: 17"
    assert repr(s) == str(s) and "\\n" not in repr(s)
    assert s.splitlines() == lines and s + "" == str(s)  # still usable as a string
    assert type(str(s)) is str and pickle.loads(pickle.dumps(s)) == s


# ---- decision boundary labels -------------------------------------------------------------


def legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


@pytest.mark.parametrize(
    "y, names",
    [
        ([1, -1, 1, -1], ["class -1", "class 1"]),
        ([1, 0, 1, 0], ["class 0", "class 1"]),
        ([0.5, -0.2, 2.0, -1.0], ["y <= 0", "y > 0"]),
    ],
)
def test_decision_boundary_legend_names_the_classes(V, y, names):
    X = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    fig = plot.decision_boundary(lambda p: V(p[1]) - V(p[0]), X, y, h=0.1)
    assert legend(fig) == names
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x[0]", "x[1]")
    markers = ax.get_legend().get_lines()
    assert [m.get_markerfacecolor() for m in markers] == ["#ca0020", "#0571b0"]


def test_decision_boundary_names_and_labels_given(V):
    X = np.array([[0.0, 0.0], [1.0, 1.0]])
    fig = plot.decision_boundary(
        lambda p: V(p[0]) - 0.5,
        X,
        [0, 1],
        h=0.1,
        class_names=("cat", "dog"),
        xlabel="width",
        ylabel="height",
    )
    assert legend(fig) == ["cat", "dog"]
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("width", "height")
    for bad in ("ab", ["only one"], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="decision_boundary: class_names must be two"):
            plot.decision_boundary(lambda p: V(p[0]), X, [0, 1], h=0.1, class_names=bad)
