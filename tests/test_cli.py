"""The ``scalargrad`` command line as a user meets it: help texts and defaults, errors
with the subcommand's usage and no traceback, missing extras found before any work,
and the demo's plot."""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest
import scalargrad
from scalargrad import __main__ as cli

DEMO_HINT = "pip install 'scalargrad[demo]'"


def run_cli(args, *, block=(), env=None):
    """``scalargrad ARGS`` in a fresh interpreter in which importing each module of
    ``block`` fails, as if it were not installed."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in {list(block)!r}:
            sys.modules[name] = None  # `import name` raises ModuleNotFoundError
        from scalargrad.__main__ import main
        sys.exit(main({list(args)!r}))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def help_text(capsys, command):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def under_a_file(tmp_path):
    """A path under a regular file, and the OS's reason for not creating it."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    try:
        (afile / "probe").mkdir()
    except OSError as e:
        return afile, e.strerror  # "Not a directory" on Linux and macOS
    raise AssertionError("created a directory under a regular file")


def main_error(capsys, args):
    """Runs ``main(args)``, expecting argparse's exit 2; returns stderr's lines."""
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()


# ---- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, defaults",
    [
        (
            "demo",
            {
                "--out": "(default: scalargrad-demo)",
                "--backend": f"(default: {scalargrad.backend};",
                "--epochs": "(default: 100)",
                "--seed": "(default: 1337)",
                "--no-progress": "(default: shown)",
            },
        ),
        (
            "bench",
            {
                "workloads": "(default: all of them)",
                "--quick": "(default: the full run)",
                "--json": "(default: only the printed table)",
            },
        ),
    ],
)
def test_every_option_has_help_showing_its_default(capsys, command, defaults):
    text = help_text(capsys, command)
    sub = cli.build_parser().parse_args([command]).subparser
    options = {(a.option_strings or [a.dest])[-1] for a in sub._actions} - {"--help"}
    assert options == set(defaults)  # a new option needs its help checked here
    for option, default in defaults.items():
        assert default in text, (option, text)
    # the workloads are listed, in the order they run
    if command == "bench":
        from scalargrad.bench import WORKLOADS

        assert f"any of: {', '.join(WORKLOADS)} (default" in text


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--epochs", "-1"], "--epochs must be >= 0, got -1"),
        (["demo", "--backend", "gpu"], "invalid choice: 'gpu'"),
        (["demo", "--epochs", "many"], "invalid int value: 'many'"),
        (["bench", "warp-speed"], "unknown workload 'warp-speed'"),
        (["bench", "--quick", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_errors_show_the_subcommands_usage(capsys, args, message):
    err = main_error(capsys, args)
    assert err[0].startswith(f"usage: scalargrad {args[0]} [-h]")
    assert err[-1].startswith(f"scalargrad {args[0]}: error: ") and message in err[-1]


def test_bad_out_is_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "scalargrad.train.fit_like_micrograd", lambda *a, **k: pytest.fail("trained")
    )
    afile, reason = under_a_file(tmp_path)
    err = main_error(capsys, ["demo", "--out", str(afile / "sub")])
    assert err[-1] == (
        f"scalargrad demo: error: --out {afile / 'sub'}: cannot create the directory ({reason})"
    )
    err = main_error(capsys, ["demo", "--out", str(afile)])
    assert err[-1] == f"scalargrad demo: error: --out {afile}: exists and is not a directory"
    assert afile.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_unwritable_out_is_one_line(capsys, tmp_path, monkeypatch):
    # A directory that exists but takes no files. (chmod alone does not stop root,
    # so the probe file's creation fails as it does for a read-only directory.)
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(
        "scalargrad.train.fit_like_micrograd", lambda *a, **k: pytest.fail("trained")
    )
    err = main_error(capsys, ["demo", "--out", str(tmp_path)])
    assert err[-1] == (
        f"scalargrad demo: error: --out {tmp_path}: cannot write into the directory "
        "(Permission denied)"
    )


def test_bad_out_from_the_command_line_has_no_traceback(tmp_path):
    afile, reason = under_a_file(tmp_path)
    r = run_cli(["demo", "--out", str(afile / "demo")])
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if "error" in line] == [
        f"scalargrad demo: error: --out {afile / 'demo'}: cannot create the directory ({reason})"
    ]


def test_bench_checks_json_path_before_running(capsys, tmp_path, monkeypatch):
    from scalargrad import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("benchmarks ran"))
    afile, reason = under_a_file(tmp_path)
    err = main_error(capsys, ["bench", "ops", "--json", str(afile / "b.json")])
    assert err[0].startswith("usage: scalargrad bench")
    assert err[-1] == (
        f"scalargrad bench: error: --json {afile / 'b.json'}: cannot write the file ({reason})"
    )
    err = main_error(capsys, ["bench", "ops", "--json", str(tmp_path)])
    assert err[-1] == f"scalargrad bench: error: --json {tmp_path}: is a directory"


def test_bench_json_check_leaves_no_file_and_writes_results(tmp_path, monkeypatch, capsys):
    from scalargrad import bench

    out = tmp_path / "b.json"
    seen = []

    def fake_run(names, quick):
        seen.append(out.exists())  # the writability probe has removed its file
        return [{"workload": "ops", "engine": "rust", "metric": "m", "value": 1.0}]

    monkeypatch.setattr(bench, "run", fake_run)
    assert cli.main(["bench", "ops", "--quick", "--json", str(out)]) == 0
    assert seen == [False]
    assert '"engine": "rust"' in out.read_text()
    assert f"wrote {out}" in capsys.readouterr().out


# ---- missing extras ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block, names",
    [
        (["matplotlib"], "matplotlib"),
        (["sklearn"], "scikit-learn"),
        (["graphviz"], "graphviz"),
        (["sklearn", "matplotlib", "graphviz"], "scikit-learn, matplotlib and graphviz"),
    ],
)
def test_demo_without_an_extra_says_so_in_one_line(tmp_path, block, names):
    out = tmp_path / "demo-out"
    r = run_cli(["demo", "--out", str(out)], block=block)
    assert r.returncode == 1
    assert r.stdout == ""  # nothing trained, nothing printed
    assert r.stderr.splitlines() == [
        f"scalargrad demo needs {names}, not installed here: {DEMO_HINT}"
    ]
    assert not out.exists()


def test_numpy_is_a_core_dependency():
    requires = importlib.metadata.requires("scalargrad") or []
    core = [r for r in requires if "extra ==" not in r]
    assert any(re.match(r"numpy\b", r) for r in core), requires


def test_bulk_io_needs_no_extra(backend):
    # `get_data`, `get_grad` and `set_data` use NumPy, which comes with the core install.
    xs = [backend.Value(1.5), backend.Value(-2.0)]
    scalargrad.set_data(xs, [3.0, 4.0])
    assert scalargrad.get_data(xs).tolist() == [3.0, 4.0]
    assert scalargrad.get_grad(xs).tolist() == [0.0, 0.0]


# ---- bench on a platform without `resource` ------------------------------------------------


def test_bench_without_the_resource_module():
    code = textwrap.dedent(
        """
        import math, sys
        sys.modules["resource"] = None  # as on Windows
        import scalargrad.bench as bench
        assert math.isnan(bench._rss_mib())
        from scalargrad.__main__ import main
        main(["bench", "--help"])
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert r.returncode == 0, r.stderr
    assert "usage: scalargrad bench" in r.stdout


def test_rss_is_read_where_available():
    from scalargrad import bench

    rss = bench._rss_mib()
    if os.path.exists("/proc/self/statm"):
        assert rss > 1  # this interpreter holds more than 1 MiB
    else:  # macOS, Windows: the table says n/a
        assert math.isnan(rss)


# ---- the demo's pictures -------------------------------------------------------------------


def test_demo_plot_has_labels_legend_and_training_accuracy(tmp_path, monkeypatch, capsys):
    from scalargrad import plot

    figures = []
    draw = plot.decision_boundary

    def keep(*args, **kwargs):
        figures.append(draw(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(plot, "decision_boundary", keep)
    code = cli.main(["demo", "--out", str(tmp_path), "--epochs", "3", "--no-progress"])
    assert code == 0
    acc = float(re.search(r"accuracy: ([0-9.]+)", capsys.readouterr().out)[1])
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x[0]" and ax.get_ylabel() == "x[1]"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class -1", "class 1"]
    assert f"training accuracy {acc:.2f}" in ax.get_title()
    assert (tmp_path / "moons_decision_boundary.png").stat().st_size > 0
