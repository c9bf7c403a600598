"""The benchmark workloads in quick mode: the rows they give, the figures' spread,
ratios consistent with the figures they compare, and the same work on the sides
compared. No timing is asserted."""

from __future__ import annotations

import functools
import math

import pytest
import scalargrad
from scalargrad import bench
from scalargrad.nn import MLP
from scalargrad.optim import SGD


def check_figure(r: dict, rounds: int) -> None:
    """A row's figure: the median of ``rounds`` samples, between their min and max."""
    assert r["n"] == rounds, r
    assert r["min"] <= r["value"] <= r["max"], r
    assert r["min"] > 0, r


def check_ratio(rows: list, r: dict, baseline: str) -> None:
    """``vs_baseline`` is the row's median over the baseline's (same metric)."""
    base = next(b for b in rows if b["engine"] == baseline and b["metric"] == r["metric"])
    assert r["baseline"] == baseline
    assert r["vs_baseline"] == pytest.approx(r["value"] / base["value"])


# ---- rows -----------------------------------------------------------------------------------


def test_row_of_samples_holds_median_min_max_and_count():
    r = bench._row("w", "e", "m", [3.0, 1.0, 2.0, 10.0], "s")
    assert (r["value"], r["min"], r["max"], r["n"]) == (2.5, 1.0, 10.0, 4)
    assert bench._row("w", "e", "m", 41, "B")["value"] == 41
    nan = bench._row("w", "e", "m", [math.nan, math.nan], "B")
    assert math.isnan(nan["value"]) and nan["n"] == 2


def test_printed_figure_shows_median_min_max_ratio_and_loss():
    rows = [
        bench._row("scale", "rust fit", "N=100 w=8 full", [2e-3, 1e-3, 3e-3], "s", final_loss=0.5),
        bench._row("scale", "torch", "N=100 w=8 full", [4e-3, 5e-3, 6e-3], "s", final_loss=0.5),
    ]
    rows = bench._ratios(rows, baseline="rust fit")
    rows[1]["ratio"] = "torch/ours"
    rows[1]["loss_rel_diff"] = 0.0
    rows[1]["threads"] = 2
    assert bench._fmt(rows[0]) == "2.000 ms [1.000 ms .. 3.000 ms]   loss 0.5"
    assert bench._fmt(rows[1]) == (
        "5.000 ms [4.000 ms .. 6.000 ms]   torch/ours 2.50   loss 0.5 (rel. diff 0.0e+00)"
        "   2 threads"
    )


def test_rounds_alternate_between_engines():
    calls = []
    samples = bench._rounds(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3
    )
    assert calls == ["a", "b"] * 3
    assert samples == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_train_rows_ratio_is_torch_over_ours_and_losses_compared():
    runners = {
        "rust fit": lambda: (2.0, 0.25, 1.0),
        "torch": lambda: (3.0, 0.25 + 1e-9, 1.0),
        "torch 1 thread": lambda: (1.0, 0.25, 1.0),
    }
    rows = bench._train_rows("scale", "cell", runners, rounds=2)
    ours, torch, torch1 = rows
    check_figure(ours, 2)
    assert torch["ratio"] == "torch/ours" and torch["vs_baseline"] == pytest.approx(1.5)
    assert torch["loss_rel_diff"] == pytest.approx(4e-9, rel=1e-3)
    assert torch["threads"] == bench.num_threads() >= 1
    assert torch1["ratio"] == "torch/ours" and torch1["vs_baseline"] == pytest.approx(0.5)
    assert torch1["threads"] == 1 and torch1["loss_rel_diff"] == 0.0
    assert "ratio" not in ours and "loss_rel_diff" not in ours


# ---- the batches PyTorch is fed are fit's -----------------------------------------------------


def test_fit_batches_are_the_batches_fit_trains_on(backend):
    """A hand-written loop over ``fit_batches`` ends with the parameters ``fit`` ends
    with (to rounding: ``fit`` may sum a batch's gradients in another order)."""
    from scalargrad import losses

    X, y = [[0.1 * i, (-1) ** i * 0.3] for i in range(70)], [(-1) ** (i // 3) for i in range(70)]
    batches = bench.fit_batches(70, 32, 3, seed=0)
    assert [[len(b) for b in epoch] for epoch in batches] == [[32, 32, 6]] * 3
    for epoch in batches:
        assert sorted(i for b in epoch for i in b) == list(range(70))
    assert batches[0] != batches[1]

    fitted = MLP(2, [4, 1], seed=5, backend=backend)
    opt = SGD(fitted.parameters(), lr=0.1)
    scalargrad.fit(fitted, X, y, optimizer=opt, epochs=3, batch_size=32, progress=False, seed=0)
    model = MLP(2, [4, 1], seed=5, backend=backend)
    opt = SGD(model.parameters(), lr=0.1)
    for epoch in batches:
        for idx in epoch:
            loss = losses.hinge(
                [model([backend.Value(v) for v in X[i]]) for i in idx], [y[i] for i in idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    got, want = model.state_dict(), fitted.state_dict()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert any(abs(got[k] - v) > 1e-6 for k, v in MLP(2, [4, 1], seed=5).state_dict().items())


# ---- workloads, quick --------------------------------------------------------------------------


def test_scale_quick_rows():
    rows = bench.scale(True, ns=(100,), widths=(8,), batches=(None, 32))
    cells = {(r["engine"], r["metric"]) for r in rows}
    assert {("rust fit", "N=100 w=8 full"), ("rust fit", "N=100 w=8 b32")} <= cells
    for r in rows:
        assert r["workload"] == "scale" and r["unit"] == "s"
        check_figure(r, 2)
        assert math.isfinite(r["final_loss"]) and 0 <= r["accuracy"] <= 1
        if r["engine"].startswith("torch"):
            check_ratio(rows, r, "rust fit")
            assert r["loss_rel_diff"] < 1e-6


@pytest.mark.parametrize("threads", [1, 2])
def test_lane_threads_quick_rows(threads):
    before = scalargrad.get_num_threads()
    scalargrad.set_num_threads(threads)
    try:
        rows = bench.lane_threads(True)
        assert scalargrad.get_num_threads() == threads  # put back after the 1-thread rounds
    finally:
        scalargrad.set_num_threads(before)
    by = {r["engine"]: r for r in rows}
    names = {"rust 1 thread"} | ({"rust 2 threads"} if threads == 2 else set())
    assert set(by) == names
    for r in rows:
        assert (r["workload"], r["metric"], r["unit"]) == (
            "threads",
            "BatchTape.run w=128 N=1000",
            "s",
        )
        check_figure(r, 41)
    if threads == 2:
        assert by["rust 2 threads"]["same_bits"] is True
        check_ratio(rows, by["rust 2 threads"], "rust 1 thread")
        assert "same bits" in bench._fmt(by["rust 2 threads"])


def test_digits_quick_rows():
    rows = bench.digits(True, batches=(None, 32), n=100)
    assert {r["metric"] for r in rows} == {"N=100 full", "N=100 b32"}
    for r in rows:
        check_figure(r, 2)
        assert math.isfinite(r["final_loss"]) and 0 <= r["accuracy"] <= 1
        if r["engine"].startswith("torch"):
            check_ratio(rows, r, "rust fit")


def test_moons_fast_quick_rows_same_work_on_both_backends():
    rows = bench.moons_fast(True)
    by = {r["engine"]: r for r in rows}
    assert {"rust fit", "reference fit", "rust eager"} <= set(by)
    assert by["rust fit"]["final_loss"] == by["reference fit"]["final_loss"]
    assert by["rust fit"]["accuracy"] == 1.0
    for r in rows:
        check_figure(r, r["n"])
        if r["engine"] != "rust fit":
            check_ratio(rows, r, "rust fit")


def test_small_graphs_quick_rows():
    rows = bench.small_graphs(True)
    baseline = "micrograd" if "micrograd" in bench.engines() else "reference"
    for graph in ("tiny", "small"):
        got = {r["engine"]: r for r in rows if r["metric"] == f"{graph}: build + backward"}
        assert {"rust eager", "rust Tape", "reference", "python floats"} <= set(got)
        for r in got.values():
            check_figure(r, 3)
            check_ratio(rows, r, baseline)


def test_small_graph_expressions(backend):
    """The tiny graph has 10 nodes; the small one is micrograd's README example; a
    Tape replay after setting the inputs gives the eager gradients."""
    V = backend.Value
    a, b = V(1.5), V(0.5)
    out = bench.tiny_expression(a, b)
    seen, stack = set(), [out]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(v._prev)
    assert len(seen) == 10
    a, b = V(-4.0), V(2.0)
    g = bench.small_expression(a, b)
    g.backward()
    assert (f"{g.data:.4f}", f"{a.grad:.4f}", f"{b.grad:.4f}") == (
        "24.7041",
        "138.8338",
        "645.5773",
    )
    tape = backend.Tape(g, inputs=[a, b])
    a.data = b.data = 0.0
    assert tape.run([-4.0, 2.0]) == g.data
    assert (f"{a.grad:.4f}", f"{b.grad:.4f}") == ("138.8338", "645.5773")
    # the floor row: the same expression on plain floats
    assert bench.small_expression(-4.0, 2.0, functools.partial(max, 0.0)) == g.data


def test_memory_quick_rows_per_window():
    rows = bench.memory(True)
    assert {r["engine"] for r in rows} == set(scalargrad.BACKENDS)
    for r in rows:
        assert r["metric"] == "RSS growth per 300 steps" and r["n"] == 3
        assert r["value"] < 2


def test_rss_bytes_per_node_of_an_mlp_graph():
    per_node = bench.rss_bytes_per_node(50)
    if math.isnan(bench._rss_mib()):
        assert math.isnan(per_node)
    else:
        # at least the arena's own record per node, well under a kilobyte
        assert scalargrad._core.stats()["bytes_per_node"] <= per_node < 1024
