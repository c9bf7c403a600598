"""scalargrad.plot: decision boundary and training curves, on both backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from scalargrad import plot
from scalargrad.train import History

PNG = b"\x89PNG\r\n\x1a\n"
X4 = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
Y4 = [1, -1, 1, -1]


def contour_and_scatter(ax):
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    scatters = [c for c in ax.collections if type(c) is PathCollection]
    return contours, scatters


def test_decision_boundary_png_and_artists(V, tmp_path):
    model = lambda p: V(p[1]) - V(p[0])  # noqa: E731  class 1 above the diagonal
    fig = plot.decision_boundary(model, X4, Y4, path=tmp_path / "b.png", title="diag")
    assert isinstance(fig, Figure)
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    contours, scatters = contour_and_scatter(ax)
    assert len(contours) == 1 and len(scatters) == 1
    assert contours[0].levels.tolist() == [-0.5, 0.5, 1.5]
    np.testing.assert_array_equal(scatters[0].get_offsets(), X4)
    # class 1 points (y=1) dark blue, the others dark red
    colours = [to_hex(c) for c in scatters[0].get_facecolors()]
    assert colours == ["#0571b0", "#ca0020", "#0571b0", "#ca0020"]
    assert ax.get_title() == "diag"
    assert ax.get_xlim() == pytest.approx((-0.5, 1.5)) and ax.get_ylim() == pytest.approx(
        (-0.5, 1.5)
    )


def test_decision_boundary_evaluates_the_model_on_a_grid(V):
    calls = []

    def model(p):
        calls.append(p)
        return V(p[0]) + V(p[1]) - 1.0

    X = np.array([[-1.0, 0.0], [2.0, 1.0]])
    plot.decision_boundary(model, X, np.array([0, 1]), h=0.25, margin=0.5)
    assert all(isinstance(p, list) and len(p) == 2 for p in calls)
    assert all(type(a) is float and type(b) is float for a, b in calls)
    xs, ys = sorted({a for a, _ in calls}), sorted({b for _, b in calls})
    assert len(calls) == len(xs) * len(ys) == 17 * 9
    assert (xs[0], xs[-1]) == pytest.approx((-1.5, 2.5))
    assert (ys[0], ys[-1]) == pytest.approx((-0.5, 1.5))


def test_decision_boundary_regions_follow_the_sign(V):
    # the sign flips on x0 = 0.5: the contour's filled region for class 1 lies right of it
    fig = plot.decision_boundary(lambda p: V(p[0]) - 0.5, X4, [0, 1, 0, 1], h=0.1)
    (cs,), _ = contour_and_scatter(fig.axes[0])
    class1 = np.concatenate([p.vertices for p in cs.get_paths()[1:]])
    class0 = cs.get_paths()[0].vertices
    assert class1[:, 0].min() == pytest.approx(0.5, abs=0.11)
    assert class0[:, 0].max() == pytest.approx(0.5, abs=0.11)


def test_decision_boundary_accepts_floats_and_labels_01(V):
    fig = plot.decision_boundary(lambda p: p[1] - p[0], np.array(X4), np.array([1, 0, 1, 0]))
    _, (sc,) = contour_and_scatter(fig.axes[0])
    assert to_hex(sc.get_facecolors()[1]) == "#ca0020"


def test_decision_boundary_into_given_axes(V, tmp_path):
    fig = Figure()
    left, right = fig.subplots(1, 2)
    out = plot.decision_boundary(lambda p: V(p[1]) - V(p[0]), X4, Y4, ax=right)
    assert out is fig and not left.collections and right.collections


def test_decision_boundary_moons_grid_size(V):
    # moons spans about [-1.5, 2.5] x [-1, 1.5]: the default grid stays under 10k calls
    n = 0

    def model(p):
        nonlocal n
        n += 1
        return V(p[0])

    plot.decision_boundary(model, [[-1.5, -1.0], [2.5, 1.5]], [0, 1])
    assert n <= 10_000


def test_decision_boundary_rejects_bad_input(V):
    model = lambda p: V(p[0])  # noqa: E731
    with pytest.raises(ValueError, match="n x 2"):
        plot.decision_boundary(model, [[0.0, 0.0, 0.0]], [1])
    with pytest.raises(ValueError, match="y has 1"):
        plot.decision_boundary(model, X4, [1])
    with pytest.raises(ValueError, match="larger h"):
        plot.decision_boundary(model, X4, Y4, h=1e-4)


def test_decision_boundary_of_an_mlp(backend, tmp_path):
    from scalargrad.nn import MLP

    model = MLP(2, [4, 1], seed=0, backend=backend)
    fig = plot.decision_boundary(model, X4, Y4, path=tmp_path / "mlp.png", h=0.1)
    assert (tmp_path / "mlp.png").read_bytes()[:8] == PNG and len(fig.axes) == 1


def test_history_with_accuracy(tmp_path):
    hist = History(loss=[1.0, 0.5, 0.25], accuracy=[0.5, 0.75, 1.0])
    fig = plot.history(hist, path=tmp_path / "h.png", title="run")
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    assert len(fig.axes) == 2  # loss, and accuracy on a twin axis
    loss_ax, acc_ax = fig.axes
    (loss_line,) = loss_ax.get_lines()
    (acc_line,) = acc_ax.get_lines()
    assert list(loss_line.get_xdata()) == [1, 2, 3] and list(loss_line.get_ydata()) == hist.loss
    assert list(acc_line.get_ydata()) == hist.accuracy
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    assert loss_ax.get_xlabel() == "epoch" and loss_ax.get_title() == "run"


def test_history_without_accuracy():
    for hist in (History(loss=[1.0, 0.5]), {"loss": [1.0, 0.5], "accuracy": []}, {"loss": [3.0]}):
        fig = plot.history(hist)
        assert len(fig.axes) == 1
        assert list(fig.axes[0].get_lines()[0].get_ydata()) == list(
            hist["loss"] if isinstance(hist, dict) else hist.loss
        )


def test_history_from_a_dict_with_accuracy():
    fig = plot.history({"loss": [0.9, 0.4], "accuracy": [0.6, 0.9]})
    assert len(fig.axes) == 2


def test_plots_never_import_pyplot(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from scalargrad import Value, plot
        plot.decision_boundary(lambda p: Value(p[0]), [[0.0, 0.0], [1.0, 1.0]], [0, 1],
                               path={str(tmp_path / "b.png")!r})
        plot.history({{"loss": [1.0], "accuracy": [0.5]}}, path={str(tmp_path / "h.png")!r})
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "h.png"]


def test_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'scalargrad\[plot\]'"):
        plot.history({"loss": [1.0]})
